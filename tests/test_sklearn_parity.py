"""scikit-learn 1.9's MLP features, side by side with scikit-learn: sample_weight (fit,
partial_fit, early stopping, L-BFGS), loss="poisson", its messages and behaviour on
divergence, and what nnback adds: class_weight."""
import re
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn import neural_network  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.utils.class_weight import compute_sample_weight  # noqa: E402

import nnback as nb  # noqa: E402
from nnback import MLPClassifier, MLPRegressor  # noqa: E402
from test_estimators import (DIGITS, REGRESSION, X_REG, X_SMALL, Y_REG, Y_SMALL,  # noqa: E402
                             assert_same_fit, pair)

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
RNG = np.random.default_rng(11)
WEIGHTS = RNG.uniform(0, 3, size=X_SMALL.shape[0]) * (RNG.uniform(size=X_SMALL.shape[0]) > 0.1)
REG_WEIGHTS = RNG.uniform(0.2, 2, size=X_REG.shape[0])
WEIGHTED_CASES = {
    "adam": ("classifier", DIGITS, WEIGHTS, dict()),
    "sgd-nesterov-alpha": ("classifier", DIGITS, WEIGHTS, dict(
        solver="sgd", learning_rate_init=0.1, alpha=0.3)),
    "sgd-plain": ("classifier", DIGITS, WEIGHTS, dict(solver="sgd", momentum=0.0,
                                                      learning_rate_init=0.2)),
    "early-stopping": ("classifier", DIGITS, WEIGHTS, dict(early_stopping=True,
                                                           learning_rate_init=0.01)),
    "lbfgs": ("classifier", DIGITS, WEIGHTS, dict(solver="lbfgs", hidden_layer_sizes=(16,))),
    "regressor": ("regressor", REGRESSION, REG_WEIGHTS, dict(learning_rate_init=0.01,
                                                             alpha=0.1)),
    "regressor-early-stopping": ("regressor", REGRESSION, REG_WEIGHTS, dict(
        early_stopping=True, solver="sgd", learning_rate_init=0.01)),
}


@pytest.mark.parametrize("case", WEIGHTED_CASES)
def test_sample_weight_trains_as_sklearn(case):
    kind, (X, y), weights, params = WEIGHTED_CASES[case]
    ours, theirs = pair(kind, random_state=3, max_iter=12, **params)
    ours.fit(X, y, sample_weight=weights)
    theirs.fit(X, y, sample_weight=weights)
    assert_same_fit(ours, theirs, X)


def test_partial_fit_takes_sample_weight_as_sklearn():
    ours, theirs = pair("classifier", random_state=0, solver="sgd", learning_rate_init=0.1)
    classes = np.unique(Y_SMALL)
    for start in range(0, 240, 80):
        rows = slice(start, start + 80)
        ours.partial_fit(X_SMALL[rows], Y_SMALL[rows], WEIGHTS[rows], classes=classes)
        theirs.partial_fit(X_SMALL[rows], Y_SMALL[rows], WEIGHTS[rows], classes=classes)
    assert_same_fit(ours, theirs, X_SMALL)


def test_unit_weights_change_nothing_and_zero_weights_drop_rows():
    plain = MLPClassifier(random_state=0, max_iter=5, backend="numpy").fit(X_SMALL, Y_SMALL)
    ones = MLPClassifier(random_state=0, max_iter=5, backend="numpy").fit(
        X_SMALL, Y_SMALL, sample_weight=np.ones(len(Y_SMALL)))
    for a, b in zip(plain.coefs_, ones.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # weight 0 for the rows of class 9: the network never learns to predict it
    zero = np.where(Y_SMALL == 9, 0.0, 1.0)
    clf = MLPClassifier(random_state=0, max_iter=30, backend="numpy").fit(
        X_SMALL, Y_SMALL, sample_weight=zero)
    assert (clf.predict(X_SMALL) == 9).mean() < 0.02


@pytest.mark.parametrize("weights, message", [
    (np.ones(3), r"sample_weight.shape == \(3,\), expected \(240,\)"),
    (np.full(240, np.nan), r"Input sample_weight contains NaN"),
])
def test_sample_weight_errors_are_sklearns(weights, message):
    assert len(Y_SMALL) == 240
    for estimator in (MLPClassifier(max_iter=2), neural_network.MLPClassifier(max_iter=2)):
        with pytest.raises(ValueError, match=message):
            estimator.fit(X_SMALL, Y_SMALL, sample_weight=weights)


def test_class_weight_balanced_equals_the_balanced_sample_weights():
    y = np.where(Y_SMALL < 8, 0, 1)  # imbalanced: about 4 to 1
    settings = dict(random_state=0, max_iter=8, backend="numpy", solver="sgd",
                    learning_rate_init=0.1)
    by_class = MLPClassifier(class_weight="balanced", **settings).fit(X_SMALL, y)
    by_sample = MLPClassifier(**settings).fit(X_SMALL, y, sample_weight=compute_sample_weight(
        "balanced", y))
    for a, b in zip(by_class.coefs_, by_sample.coefs_):
        np.testing.assert_array_equal(a, b)
    plain = MLPClassifier(**settings).fit(X_SMALL, y)
    recall = [((est.predict(X_SMALL) == 1) & (y == 1)).sum() / (y == 1).sum()
              for est in (plain, by_class)]
    assert recall[1] >= recall[0]  # the rare class counts more
    weighted = MLPClassifier(class_weight={0: 1.0, 1: 4.0}, **settings).fit(X_SMALL, y)
    assert weighted.get_params()["class_weight"] == {0: 1.0, 1: 4.0}


def test_poisson_regression_matches_sklearn():
    rate = np.exp(0.3 * X_REG[:, :1] - 0.2 * X_REG[:, 1:2]).ravel()
    counts = np.random.default_rng(0).poisson(rate).astype(float)
    ours, theirs = pair("regressor", loss="poisson", random_state=1, max_iter=15,
                        solver="sgd", learning_rate_init=0.01)
    ours.fit(X_REG, counts)
    theirs.fit(X_REG, counts)
    assert ours.out_activation_ == "exp"
    assert_same_fit(ours, theirs, X_REG)
    assert (ours.predict(X_REG) > 0).all()


def test_poisson_refuses_negative_targets_with_sklearns_sentence():
    with pytest.raises(ValueError, match=re.escape(
            "Some value(s) of y are negative which is not allowed for Poisson regression.")):
        MLPRegressor(loss="poisson", max_iter=2).fit(X_REG, Y_REG[:, 0] - 100)
    with pytest.raises(ValueError, match=r"unknown loss 'huber'"):
        MLPRegressor(loss="huber").fit(X_REG, Y_REG)


def test_the_poisson_loss_is_a_named_loss_of_the_core_api():
    X = RNG.normal(size=(200, 3))
    y = RNG.poisson(np.exp(0.5 * X[:, :1]))
    model = nb.MLP([3, 8, 1], activation="tanh", output="exp", dtype="float64", seed=0)
    history = model.fit(X, y, loss="poisson", optimizer="adam", lr=0.01, epochs=60,
                        batch_size=50)
    assert history.loss[-1] < history.loss[0]
    assert nb.gradcheck(model, X[:5], y[:5], loss="poisson") < 1e-6
    unfolded = nb.MLP([3, 8, 1], activation="tanh", output="sigmoid", dtype="float64",
                      seed=0)  # a positive output that the loss does not fold: its gradient
    assert nb.gradcheck(unfolded, X[:5], y[:5], loss="poisson") < 1e-6


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_with_early_stopping_keeps_the_best_weights_as_sklearn():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    settings = dict(solver="sgd", activation="identity", learning_rate_init=1,
                    early_stopping=True, max_iter=50, random_state=0)
    theirs = neural_network.MLPRegressor(**settings).fit(X, y)  # no error in scikit-learn
    with pytest.warns(ConvergenceWarning, match="weights with the best validation score"):
        ours = MLPRegressor(backend="numpy", **settings).fit(X, y)
    assert all(np.isfinite(w).all() for w in ours.coefs_ + ours.intercepts_)
    assert all(np.isfinite(w).all() for w in theirs.coefs_ + theirs.intercepts_)
    assert np.isfinite(ours.predict(X)).all()
    assert ours.best_validation_score_ == max(ours.validation_scores_)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_without_early_stopping_raises_sklearns_sentence():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    settings = dict(solver="sgd", activation="identity", learning_rate_init=1, max_iter=50,
                    random_state=0)
    sentence = ("Solver produced non-finite parameter weights. The input data may contain "
                "large values and need to be preprocessed.")
    with pytest.raises(ValueError, match=re.escape(sentence)):
        neural_network.MLPRegressor(**settings).fit(X, y)
    with pytest.raises(ValueError, match=re.escape(sentence) + r" \(the training loss"):
        MLPRegressor(backend="numpy", **settings).fit(X, y)


def test_warm_start_class_errors_are_sklearns():
    for estimator in (MLPClassifier(max_iter=2, warm_start=True),
                      neural_network.MLPClassifier(max_iter=2, warm_start=True)):
        estimator.fit(X_SMALL, Y_SMALL)
        with pytest.raises(ValueError, match=re.escape(
                "warm_start can only be used where `y` has the same classes as in the "
                "previous call to fit.")):
            estimator.fit(X_SMALL, Y_SMALL % 5)
    for estimator in (MLPClassifier(max_iter=2), neural_network.MLPClassifier(max_iter=2)):
        estimator.partial_fit(X_SMALL, Y_SMALL % 5, classes=np.arange(5))
        with pytest.raises(ValueError, match=re.escape(
                "`y` has classes not in `self.classes_`.")):
            estimator.partial_fit(X_SMALL, Y_SMALL)


def test_model_fit_takes_sample_weight_like_keras():
    X = RNG.normal(size=(60, 3))
    y = (X[:, :1] > 0).astype(float)
    weights = RNG.uniform(0, 2, size=60)
    model = nb.MLP([3, 4, 1], dtype="float64", seed=0)
    twin = nb.MLP([3, 4, 1], dtype="float64", seed=0)
    model.fit(X, y, loss="bce", lr=0.5, epochs=3, batch_size=60, sample_weight=weights,
              validation_data=(X[:10], y[:10], weights[:10]))
    # one full batch per epoch: weighting rows by w·n/Σw is the same as repeating them
    scaled = weights * 60 / weights.sum()
    for _ in range(3):
        twin.train_step(X, y, _RowScaled(nb.BinaryCrossEntropy(), scaled), nb.SGD(lr=0.5))
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-10)
    assert len(model.history.val_loss) == 3
    with pytest.raises(ValueError, match=r"sample_weight must hold finite numbers >= 0"):
        model.fit(X, y, sample_weight=-weights)
    with pytest.raises(nb.ShapeError, match=r"one weight per sample \(60,\), got shape"):
        model.fit(X, y, sample_weight=weights[:5])


class _RowScaled(nb.Loss):
    """``loss`` with each row's terms multiplied by fixed factors (a reference for sample
    weights, computed by hand)."""

    def __init__(self, loss, factors):
        self.loss, self.factors = loss, factors.reshape(-1, 1)
        self.target_kind = loss.target_kind

    def value(self, xp, pred, target, weights=None):
        return self.loss.value(xp, pred, target, self.factors)

    def gradient(self, xp, pred, target, weights=None):
        return self.loss.gradient(xp, pred, target, self.factors)


EXPORT_CASES = {
    "multiclass": (MLPClassifier, DIGITS, dict()),
    "binary-float32": (MLPClassifier, (X_SMALL, Y_SMALL % 2), dict(dtype="float32")),
    "multilabel": (MLPClassifier, (X_REG, (Y_REG > 0).astype(int)), dict()),
    "regressor": (MLPRegressor, REGRESSION, dict()),
    "poisson": (MLPRegressor, (X_REG, np.abs(np.round(Y_REG[:, 0]))), dict(loss="poisson")),
}


@pytest.mark.parametrize("case", EXPORT_CASES)
def test_to_sklearn_gives_a_fitted_sklearn_model_predicting_the_same(case):
    cls, (X, y), params = EXPORT_CASES[case]
    ours = cls(hidden_layer_sizes=(12,), max_iter=10, random_state=0, backend="numpy",
               **params).fit(X, y)
    theirs = ours.to_sklearn()
    assert type(theirs).__module__.startswith("sklearn.neural_network")
    assert type(theirs).__name__ == cls.__name__
    for name in ("n_iter_", "out_activation_", "n_layers_", "n_outputs_", "loss_"):
        assert getattr(theirs, name) == getattr(ours, name), name
    expected = ours.predict(X)
    if cls is MLPClassifier:
        np.testing.assert_array_equal(theirs.predict(X), expected)
        np.testing.assert_allclose(theirs.predict_proba(X), ours.predict_proba(X),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(theirs.classes_, ours.classes_)
    else:
        np.testing.assert_allclose(theirs.predict(X), expected, rtol=1e-5, atol=1e-6)
    theirs.coefs_[0][0, 0] += 1.0  # its own writeable copies: ours are untouched
    assert ours.coefs_[0][0, 0] != theirs.coefs_[0][0, 0]
    again = cls.from_sklearn(theirs, backend="numpy")
    assert again.get_params()["backend"] == "numpy"
    np.testing.assert_array_equal(again.coefs_[0], theirs.coefs_[0])


def test_from_sklearn_continues_training_a_sklearn_model():
    theirs = neural_network.MLPClassifier(hidden_layer_sizes=(16,), max_iter=5,
                                          random_state=0).fit(X_SMALL, Y_SMALL)
    ours = MLPClassifier.from_sklearn(theirs, backend="numpy")
    np.testing.assert_array_equal(ours.predict(X_SMALL), theirs.predict(X_SMALL))
    before = ours.loss_
    ours.set_params(warm_start=True, max_iter=10).fit(X_SMALL, Y_SMALL)
    assert ours.loss_ < before and len(ours.loss_curve_) == 15
    ours.partial_fit(X_SMALL, Y_SMALL)
    with pytest.raises(TypeError, match=r"MLPRegressor.from_sklearn expects a fitted "
                                        r"sklearn.neural_network.MLPRegressor"):
        MLPRegressor.from_sklearn(theirs)
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        MLPClassifier.from_sklearn(neural_network.MLPClassifier())


@pytest.mark.gpu
@pytest.mark.parametrize("case", ["sgd-plain", "adam", "early-stopping"])
def test_sample_weight_on_the_cupy_backend_equals_numpy(cupy_backend, case):
    """Weighted batches on the GPU path: (output − target) times per-row factors in the
    scaled-difference kernel, the weights gathered with the rows."""
    kind, (X, y), weights, params = WEIGHTED_CASES[case]
    settings = dict(random_state=3, max_iter=6, dtype="float64", **params)
    on_cupy = MLPClassifier(backend="cupy", **settings).fit(X, y, sample_weight=weights)
    on_numpy = MLPClassifier(backend="numpy", **settings).fit(X, y, sample_weight=weights)
    for a, b in zip(on_cupy.coefs_ + on_cupy.intercepts_,
                    on_numpy.coefs_ + on_numpy.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.gpu
def test_poisson_on_the_cupy_backend_equals_numpy(cupy_backend):
    counts = np.abs(np.round(Y_REG[:, 0]))
    settings = dict(loss="poisson", hidden_layer_sizes=(8,), random_state=1, max_iter=8,
                    solver="sgd", learning_rate_init=0.01, dtype="float64")
    on_cupy = MLPRegressor(backend="cupy", **settings).fit(X_REG, counts,
                                                          sample_weight=REG_WEIGHTS)
    on_numpy = MLPRegressor(backend="numpy", **settings).fit(X_REG, counts,
                                                            sample_weight=REG_WEIGHTS)
    np.testing.assert_allclose(on_cupy.predict(X_REG), on_numpy.predict(X_REG), rtol=1e-9)
    np.testing.assert_allclose(on_cupy.loss_curve_, on_numpy.loss_curve_, rtol=1e-9)
