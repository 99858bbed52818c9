"""Callbacks of Sequential.fit: EarlyStopping counts as scikit-learn does and goes back to
the best epoch, ModelCheckpoint keeps the best model in a file, bad settings fail before
any training, and a custom Callback can stop a fit."""
import numpy as np
import pytest

import nnback as nb
from nnback.training import History

RNG = np.random.default_rng(0)
X = RNG.normal(size=(80, 4))
Y = X[:, 0] - 2 * X[:, 1] + RNG.normal(0, 1.5, size=80)  # noisy: a wide net overfits
TRAIN, VALID = (X[:60], Y[:60]), (X[60:], Y[60:])


def wide_model(backend="numpy"):
    return nb.MLP([4, 64, 64, 1], activation="relu", output="identity", backend=backend,
                  seed=0, dtype="float64")


def fit(model, epochs, callbacks=(), **options):
    options = {"optimizer": "adam", "lr": 0.02, "batch_size": 10, "shuffle": False,
               "validation_data": VALID, **options}
    return model.fit(*TRAIN, epochs=epochs, callbacks=list(callbacks), **options)


def assert_same_weights(first, second):
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def history_of(losses):
    history = History()
    history.loss.extend(losses)
    history.epoch.extend(range(1, len(losses) + 1))
    return history


@pytest.mark.parametrize("losses, stopped, best", [
    ([5, 4, 3, 3, 3, 3], 6, 3),           # 3 epochs without improvement: > 2, stop
    ([5, 4, 3, 2.99995, 3, 2.9999], 6, 6),  # better by less than tol counts as no change
    ([5, 4, 3, 3, 2, 3, 3], None, 5),      # an improvement resets the count
])
def test_early_stopping_counts_epochs_as_scikit_learn_does(losses, stopped, best):
    model = wide_model()
    stopper = nb.EarlyStopping(monitor="loss", n_iter_no_change=2, tol=1e-4,
                               restore_best_weights=False)
    stopper.on_fit_begin(model, has_validation=False)
    stops = [stopper.on_epoch_end(model, epoch, history_of(losses[:epoch]))
             for epoch in range(1, len(losses) + 1)]
    assert stopper.stopped_epoch == stopped and stopper.best_epoch == best
    assert stops == [epoch == stopped for epoch in range(1, len(losses) + 1)]


def test_early_stopping_restores_the_weights_of_the_best_epoch(backend):
    model = wide_model(backend)
    stopper = nb.EarlyStopping(n_iter_no_change=3)
    history = fit(model, 300, [stopper])
    assert stopper.monitor_ == "val_loss"
    assert stopper.stopped_epoch == len(history) < 300  # it overfits, then stops
    assert stopper.best_epoch == int(np.argmin(history.val_loss)) + 1
    assert stopper.best == min(history.val_loss)
    assert stopper.stopped_epoch - stopper.best_epoch == 4  # more than 3 epochs
    exact = wide_model(backend)  # a fit of exactly the best epoch's length ends there
    fit(exact, stopper.best_epoch)
    assert_same_weights(model.get_weights(), exact.get_weights())
    assert model.evaluate(*VALID) == pytest.approx(stopper.best, rel=1e-12)


def test_model_checkpoint_keeps_the_best_model_so_far(tmp_path):
    path = tmp_path / "best.nnb"
    model = wide_model()
    checkpoint = nb.ModelCheckpoint(path, extra={"note": "best"})
    history = fit(model, 40, [checkpoint])
    best_epoch = int(np.argmin(history.val_loss)) + 1
    assert checkpoint.saved_epoch == best_epoch and checkpoint.best == min(history.val_loss)
    exact = wide_model()
    fit(exact, best_epoch)
    saved, extra = nb.load(path, return_extra=True)
    assert extra == {"note": "best"}
    assert_same_weights(saved.get_weights(), exact.get_weights())
    every = nb.ModelCheckpoint(tmp_path / "last.nnb", save_best_only=False)
    fit(model, 3, [every])
    assert every.saved_epoch == 3
    assert_same_weights(nb.load(tmp_path / "last.nnb").get_weights(), model.get_weights())


@pytest.mark.parametrize("callbacks, error, message", [
    (lambda tmp: [nb.EarlyStopping(monitor="val_loss")], ValueError,
     r"EarlyStopping\(monitor='val_loss'\) needs validation_data in fit"),
    (lambda tmp: [nb.EarlyStopping(monitor="accuracy")], ValueError,
     "EarlyStopping: unknown monitor 'accuracy'; valid names: 'loss', 'val_loss'"),
    (lambda tmp: [nb.ModelCheckpoint(tmp / "no" / "m.nnb")], FileNotFoundError,
     "ModelCheckpoint path .*m.nnb: the folder .*no does not exist"),
    (lambda tmp: [nb.ModelCheckpoint(tmp)], IsADirectoryError, "is a folder"),
    (lambda tmp: [print], TypeError,
     r"callbacks\[0\] \(builtin_function_or_method\) is not a callback: it has none of "
     "on_fit_begin, on_epoch_end, on_fit_end"),
    (lambda tmp: nb.EarlyStopping(), TypeError, "callbacks must be a list of callbacks"),
], ids=["val_loss without validation", "unknown monitor", "missing folder", "a folder",
        "not a callback", "not a list"])
def test_bad_callbacks_fail_before_any_training(tmp_path, callbacks, error, message):
    model = wide_model()
    fit(model, 2)
    before, history = model.get_weights(), model.history
    with pytest.raises(error, match=message):
        model.fit(*TRAIN, epochs=5, callbacks=callbacks(tmp_path))
    assert_same_weights(model.get_weights(), before)
    assert model.history is history


@pytest.mark.parametrize("options, message", [
    ({"n_iter_no_change": 0}, "n_iter_no_change must be a positive integer, got 0"),
    ({"tol": -1.0}, r"tol must be a number in \[0.0, inf\), got -1.0"),
    ({"restore_best_weights": "yes"}, "restore_best_weights must be True or False"),
])
def test_early_stopping_settings_are_checked(options, message):
    with pytest.raises((TypeError, ValueError), match=message):
        nb.EarlyStopping(**options)


class StopAtThree(nb.Callback):
    def __init__(self):
        self.seen, self.ended = [], False

    def on_epoch_end(self, model, epoch, history):
        self.seen.append((epoch, len(history)))
        return epoch == 3

    def on_fit_end(self, model):
        self.ended = True


def test_a_custom_callback_sees_each_epoch_and_can_stop_the_fit():
    first, second = StopAtThree(), StopAtThree()
    history = fit(wide_model(), 10, [first, second])
    assert len(history) == 3
    assert first.seen == second.seen == [(1, 1), (2, 2), (3, 3)]  # every callback is called
    assert first.ended and second.ended
