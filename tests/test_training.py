"""The one training loop (nnback.training): Trainer's step, epoch (with an injected order),
fit (end_of_epoch, checkpoint, divergence), Checkpoint, NoImprovement, and the
learning-rate schedules that live in the optimizer (scikit-learn's hooks)."""
import copy
import pickle
import warnings

import numpy as np
import pytest

import nnback as nb
from nnback.training import Checkpoint, DivergenceError, NoImprovement, Trainer

RNG = np.random.default_rng(5)


def prepared(backend, sizes=(3, 4, 2), n=12, dtype="float64", loss=None):
    """(model, loss, x, target) on ``backend``: a small MLP and data already there."""
    model = nb.MLP(list(sizes), backend=backend, dtype=dtype, seed=0)
    loss = loss or nb.MSE()
    x = backend.asarray(RNG.normal(size=(n, sizes[0])), dtype)
    target = loss.prepare_target(backend, RNG.uniform(size=(n, sizes[-1])), (n, sizes[-1]),
                                 dtype)
    return model, loss, x, target


class RecordedOrder:
    """An injected sample order: reversed rows, recording each call."""

    def __init__(self):
        self.calls = []

    def permutation(self, n_samples):
        self.calls.append(n_samples)
        return np.arange(n_samples)[::-1].copy()


def test_an_injected_order_decides_the_batches(backend):
    model, loss, x, target = prepared(backend)
    reference = copy.deepcopy(model)
    order = RecordedOrder()
    Trainer(model, loss, nb.SGD(lr=0.1)).epoch(x, target, batch_size=5, order=order)
    assert order.calls == [12]  # once per epoch
    host_x, host_t = backend.to_numpy(x), backend.to_numpy(target)
    for start in (0, 5, 10):  # the same batches by hand, rows reversed
        rows = np.arange(12)[::-1][start:start + 5]
        reference.train_step(host_x[rows], host_t[rows], loss, nb.SGD(lr=0.1))
    for got, expected in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


def test_fit_stops_when_end_of_epoch_says_so_and_keeps_the_history(backend):
    model, loss, x, target = prepared(backend)
    seen = []

    def end_of_epoch(epoch, history):
        seen.append((epoch, len(history)))
        return epoch == 3

    history = Trainer(model, loss, nb.SGD(lr=0.1)).fit(x, target, epochs=10, batch_size=4,
                                                      end_of_epoch=end_of_epoch)
    assert seen == [(1, 1), (2, 2), (3, 3)] and history.epoch == [1, 2, 3]
    assert all(np.isfinite(history.loss))


def test_step_returns_the_loss_before_the_update_and_get_gradients_unfolds_the_rate(backend):
    model, loss, x, target = prepared(backend)
    before = float(backend.to_numpy(loss.forward(model.forward(x), target)))
    plain = copy.deepcopy(model)
    value = Trainer(model, loss, nb.SGD(lr=0.5)).step(x, target)  # −lr folded in
    assert float(backend.to_numpy(value)) == pytest.approx(before, rel=1e-12)
    Trainer(plain, loss).compute_gradients(x, target)
    for folded, unfolded in zip(model.get_gradients(), plain.get_gradients()):
        np.testing.assert_allclose(folded, unfolded, rtol=1e-10, atol=1e-14)


def test_a_diverging_fit_restores_the_last_finite_epoch_and_says_what_diverged():
    backend = nb.get_backend("numpy")
    model = nb.MLP([3, 4, 2], activation="tanh", output="identity", backend=backend,
                   dtype="float64", seed=0)
    loss = nb.MSE()
    x = backend.asarray(RNG.normal(size=(12, 3)), "float64")
    target = loss.prepare_target(backend, RNG.normal(size=(12, 2)), (12, 2), "float64")
    optimizer = nb.SGD(lr=0.05, momentum=0.5)
    trainer = Trainer(model, loss, optimizer)
    trainer.fit(x, target, epochs=2, batch_size=4)
    kept = model.get_weights()
    kept_state = [array.copy() for array in optimizer.state_arrays()]
    optimizer.lr = 1e200
    with pytest.raises(DivergenceError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        trainer.fit(x, target, epochs=5, batch_size=4)
    error = info.value
    assert error.epoch == 1 and error.lr == 1e200
    assert error.loss is None or not np.isfinite(error.loss)
    assert "from before this fit" in str(error)
    for got, expected in zip(model.get_weights(), kept):
        np.testing.assert_array_equal(got, expected)
    for got, expected in zip(optimizer.state_arrays(), kept_state):
        np.testing.assert_array_equal(got, expected)


def test_checkpoint_restores_weights_and_optimizer_state(backend):
    model, loss, x, target = prepared(backend)
    optimizer = nb.Adam(lr=0.01)
    trainer = Trainer(model, loss, optimizer)
    checkpoint = Checkpoint(backend, model.trainable_arrays()[0], optimizer)  # no state yet
    trainer.step(x, target)
    checkpoint.restore()
    assert optimizer.state is None and optimizer.iterations == 0
    trainer.step(x, target)
    checkpoint.save()
    saved = model.get_weights()
    trainer.step(x, target)
    checkpoint.restore()
    assert optimizer.iterations == 1
    for got, expected in zip(model.get_weights(), saved):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("values, counts, best", [
    ([1.0, 1.05, 1.1, 1.25], [0, 1, 2, 0], [1.0, 1.05, 1.1, 1.25]),  # tol 0.1: small gains count
    ([1.0, 0.5, 0.4, 0.3], [0, 1, 2, 3], [1.0, 1.0, 1.0, 1.0]),
])
def test_no_improvement_counts_as_scikit_learn_does(values, counts, best):
    rule = NoImprovement(tol=0.1, n_iter_no_change=2)
    seen_counts, seen_best = [], []
    for value in values:
        rule.update(value)
        seen_counts.append(rule.count)
        seen_best.append(rule.best)
    assert seen_counts == counts and seen_best == best
    assert rule.stalled == (counts[-1] > 2)


def test_invscaling_lowers_the_rate_after_each_epoch_and_rescales_the_velocity():
    optimizer = nb.SGD(lr=0.5, momentum=0.9, schedule="invscaling", power_t=0.5)
    optimizer.state = {"velocity": [np.ones(3)]}
    optimizer.iteration_ends(time_step=99)
    assert optimizer.lr == pytest.approx(0.5 / 100 ** 0.5)
    # the step lr·v stays what it was (scikit-learn's velocity holds the old rate)
    np.testing.assert_allclose(optimizer.lr * optimizer.state["velocity"][0], 0.5)


def test_adaptive_divides_the_rate_by_5_until_it_is_tiny(capsys):
    optimizer = nb.SGD(lr=1e-5, schedule="adaptive")
    assert optimizer.trigger_stopping("Training loss did not improve.", verbose=True) is False
    assert optimizer.lr == pytest.approx(2e-6)
    assert optimizer.trigger_stopping("Again.", verbose=True) is False
    assert optimizer.trigger_stopping("Again.", verbose=True) is True
    printed = capsys.readouterr().out
    assert "Setting learning rate to 0.000002" in printed and "Learning rate too small" in printed
    assert nb.SGD(lr=0.1).trigger_stopping("Stalled.") is True  # constant: stop at once


def test_a_schedule_must_be_known():
    with pytest.raises(ValueError, match="schedule must be one of constant, invscaling, "
                                         "adaptive, got 'cosine'"):
        nb.SGD(schedule="cosine")


def test_a_built_optimizer_refuses_a_learning_rate_beside_it():
    with pytest.raises(ValueError, match=r"lr is for an optimizer given by name"):
        nb.MLP([2, 1]).fit(np.zeros((2, 2)), np.zeros(2), optimizer=nb.SGD(lr=0.1), lr=0.5)


def test_a_gradient_that_misses_the_fast_path_still_lands_in_the_flat_array():
    """A batch whose dtype is NumPy's float64 but another object than the one the fast
    paths compare with by identity (an unpickled array) takes the generic matmul; its
    gradient is still written into the model's flat gradient array, and trains the same."""
    backend = nb.get_backend("numpy")
    model, loss, x, target = prepared(backend)
    twin = copy.deepcopy(model)
    odd_x, odd_target = pickle.loads(pickle.dumps(x)), pickle.loads(pickle.dumps(target))
    assert odd_x.dtype is not np.dtype("float64") and odd_x.dtype == np.dtype("float64")
    plain, odd = Trainer(model, loss, nb.Adam(lr=0.01)), Trainer(twin, loss, nb.Adam(lr=0.01))
    for _ in range(3):
        plain.step(x, target)
        odd.step(odd_x, odd_target)
    for ours, theirs in zip(twin.get_weights(), model.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
    params, grads = twin.trainable_arrays()
    assert all(layer.dW.base is grads.flat for layer in twin.dense_layers)
    assert all(layer.W.base is params.flat for layer in twin.dense_layers)


def test_an_unpickled_estimator_continues_training_as_the_original():
    """The estimator's data comes back from a pickle with dtype objects of its own: its
    partial_fit must still train as the original's does."""
    pytest.importorskip("sklearn")
    from nnback import MLPClassifier

    X = RNG.normal(size=(200, 6)).astype("float32")
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    settings = dict(hidden_layer_sizes=(8,), batch_size=50, random_state=0, backend="numpy")
    original = MLPClassifier(**settings).partial_fit(X, y, classes=[0, 1, 2])
    travelled = pickle.loads(pickle.dumps(original))
    for _ in range(3):
        original.partial_fit(X, y)
        travelled = pickle.loads(pickle.dumps(travelled)).partial_fit(X, y)
    assert travelled.loss_ == pytest.approx(original.loss_, rel=1e-6)
    for ours, theirs in zip(travelled.coefs_, original.coefs_):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


class NegativeZeroLoss(nb.MSE):
    """A loss of exactly -0.0, as a cross-entropy on perfectly predicted rows gives it."""

    def value(self, xp, pred, target, weights=None):
        return -xp.sum(pred * 0.0)


def test_a_loss_of_minus_zero_is_recorded_as_zero():
    import math

    X, y = nb.datasets.xor()
    history = nb.MLP([2, 3, 1], seed=0).fit(X, y, loss=NegativeZeroLoss(), epochs=2,
                                            validation_data=(X, y))
    assert [math.copysign(1.0, value) for value in history.loss + history.val_loss] == \
        [1.0] * 4  # "loss 0", not "loss -0", in the progress lines and the CLI summary
