"""nnback.MLPClassifier and nnback.MLPRegressor: scikit-learn's MLPs, trained by nnback.

The reference is scikit-learn itself: with the same random_state and float64 data the
estimators follow scikit-learn's training step for step, so loss curves, weights and
predictions are compared with sklearn.neural_network's at rounding-level tolerances.
scikit-learn's own estimator checks run in test_estimator_checks.py.
"""
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn import neural_network  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import nnback as nb  # noqa: E402
from nnback import MLPClassifier, MLPRegressor  # noqa: E402
from nnback import estimators  # noqa: E402
from nnback.backend import Backend  # noqa: E402
from nnback.training import Trainer  # noqa: E402

from conftest import PARITY_RTOL, TRAINING_RTOL, assert_close  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# float64 runs of the same steps as scikit-learn agree to about 1e-15 relative (1e-12 after
# a few dozen L-BFGS iterations); 1e-9 leaves three orders of magnitude of headroom while
# any change of semantics (a missing L2 term, another epsilon, another batch order) moves
# the loss curve in its third digit or earlier.
SKLEARN_RTOL = 1e-9
SKLEARN_ATOL = 1e-12
# Across backends a fit's loss curve agrees within TRAINING_RTOL (conftest); the predicted
# probabilities after a few dozen Adam steps within these absolute tolerances.
BACKEND_PROBA_ATOL = {"float32": 1e-4, "float64": 1e-10}

DIGITS_X, DIGITS_Y = load_digits(return_X_y=True)
DIGITS_X = DIGITS_X / 16.0
X_SMALL, Y_SMALL = DIGITS_X[:240], DIGITS_Y[:240]
RNG = np.random.default_rng(0)
X_REG = RNG.normal(size=(150, 6))
Y_REG = np.stack([X_REG[:, 0] - 2 * X_REG[:, 1], np.sin(X_REG[:, 2]), X_REG[:, 3] ** 2], axis=1)
Y_MULTILABEL = np.stack([X_REG[:, 0] > 0, X_REG[:, 1] + X_REG[:, 2] > 0,
                         X_REG[:, 4] > 0.5], axis=1).astype(int)

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def pair(kind, **params):
    """(nnback estimator, scikit-learn estimator) with the same parameters."""
    ours = {"classifier": MLPClassifier, "regressor": MLPRegressor}[kind]
    theirs = {"classifier": neural_network.MLPClassifier,
              "regressor": neural_network.MLPRegressor}[kind]
    return ours(backend="numpy", **params), theirs(**params)


# -- the same training as scikit-learn ----------------------------------------------------------
DIGITS = (X_SMALL, Y_SMALL)
BINARY = (X_SMALL, Y_SMALL % 2)
REGRESSION = (X_REG, Y_REG)
MULTILABEL = (X_REG, Y_MULTILABEL)
PARITY_CASES = {
    "adam": ("classifier", DIGITS, dict()),
    "sgd-nesterov": ("classifier", DIGITS, dict(solver="sgd", learning_rate_init=0.1)),
    "sgd-momentum": ("classifier", DIGITS, dict(solver="sgd", nesterovs_momentum=False,
                                               learning_rate_init=0.05, batch_size=64)),
    "sgd-plain-no-shuffle": ("classifier", DIGITS, dict(solver="sgd", momentum=0.0,
                                                        shuffle=False, learning_rate_init=0.3)),
    "sgd-invscaling": ("classifier", DIGITS, dict(solver="sgd", learning_rate="invscaling",
                                                  learning_rate_init=0.5, power_t=0.3)),
    "sgd-adaptive": ("classifier", DIGITS, dict(solver="sgd", learning_rate="adaptive",
                                                learning_rate_init=0.2, n_iter_no_change=1,
                                                tol=0.05)),
    "early-stopping-multiclass": ("classifier", DIGITS, dict(early_stopping=True,
                                                             learning_rate_init=0.01)),
    "early-stopping-binary-logistic": ("classifier", BINARY, dict(
        early_stopping=True, activation="logistic", solver="sgd", learning_rate_init=0.1,
        validation_fraction=0.2)),
    "tol-stops-training": ("classifier", DIGITS, dict(tol=0.5, n_iter_no_change=2)),
    "two-hidden-tanh-alpha": ("classifier", DIGITS, dict(hidden_layer_sizes=(20, 10),
                                                          activation="tanh", alpha=0.5)),
    "lbfgs-classifier": ("classifier", DIGITS, dict(solver="lbfgs", hidden_layer_sizes=(16,))),
    "multilabel": ("classifier", MULTILABEL, dict(solver="sgd", learning_rate_init=0.1,
                                                  batch_size=32)),
    "regression-multioutput": ("regressor", REGRESSION, dict(learning_rate_init=0.01,
                                                             alpha=0.1)),
    "regression-identity-early-stopping": ("regressor", (X_REG, Y_REG[:, 0]), dict(
        activation="identity", early_stopping=True, solver="sgd", learning_rate_init=0.01)),
    "lbfgs-regressor": ("regressor", REGRESSION, dict(solver="lbfgs")),
}
FITTED_FLOATS = ("loss_", "best_loss_", "best_validation_score_")


def assert_same_fit(ours, theirs, X):
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.t_ == theirs.t_
    assert ours.out_activation_ == theirs.out_activation_
    for name in ("loss_curve_", "validation_scores_") + FITTED_FLOATS:
        mine, reference = getattr(ours, name, None), getattr(theirs, name, None)
        if reference is None:
            assert mine is None, name
        else:
            assert_close(mine, reference, SKLEARN_RTOL, SKLEARN_ATOL, what=name)
    for mine, reference in zip(ours.coefs_ + ours.intercepts_,
                               theirs.coefs_ + theirs.intercepts_):
        assert mine.shape == reference.shape
        assert_close(mine, reference, SKLEARN_RTOL, SKLEARN_ATOL, what="weights")
    if isinstance(theirs, neural_network.MLPRegressor):
        assert_close(ours.predict(X), theirs.predict(X), SKLEARN_RTOL, SKLEARN_ATOL)
    else:
        np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    if hasattr(theirs, "predict_proba"):
        assert_close(ours.predict_proba(X), theirs.predict_proba(X), SKLEARN_RTOL,
                     SKLEARN_ATOL, what="predict_proba")


@pytest.mark.parametrize("case", PARITY_CASES)
def test_fit_reproduces_sklearn_step_for_step(case):
    kind, (X, y), params = PARITY_CASES[case]
    ours, theirs = pair(kind, random_state=3, max_iter=12, **params)
    ours.fit(X, y)
    theirs.fit(X, y)
    assert_same_fit(ours, theirs, X)


def test_warm_start_continues_like_sklearn():
    ours, theirs = pair("classifier", random_state=0, max_iter=4, warm_start=True,
                        solver="sgd", learning_rate_init=0.1)
    for _ in range(3):
        ours.fit(X_SMALL, Y_SMALL)
        theirs.fit(X_SMALL, Y_SMALL)
    assert len(ours.loss_curve_) == 3 * 4
    assert_same_fit(ours, theirs, X_SMALL)


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_partial_fit_continues_like_sklearn(solver):
    ours, theirs = pair("classifier", random_state=0, solver=solver)
    classes = np.unique(Y_SMALL)
    for start in range(0, 240, 80):
        batch = slice(start, start + 80)
        ours.partial_fit(X_SMALL[batch], Y_SMALL[batch], classes=classes)
        theirs.partial_fit(X_SMALL[batch], Y_SMALL[batch], classes=classes)
    assert ours.t_ == 240
    assert_same_fit(ours, theirs, X_SMALL)


def test_partial_fit_regressor_continues_like_sklearn():
    ours, theirs = pair("regressor", random_state=0, solver="sgd", learning_rate_init=0.01)
    for start in range(0, 150, 50):
        ours.partial_fit(X_REG[start:start + 50], Y_REG[start:start + 50])
        theirs.partial_fit(X_REG[start:start + 50], Y_REG[start:start + 50])
    assert_same_fit(ours, theirs, X_REG)


def test_initial_weights_are_sklearn_glorot_with_factor_two_for_logistic():
    # max_iter=1 with a learning rate too small to move them keeps the initial draw visible
    for activation, factor in (("logistic", 2.0), ("relu", 6.0)):
        clf = MLPClassifier(hidden_layer_sizes=(7,), activation=activation, random_state=4,
                            max_iter=1, solver="sgd", learning_rate_init=1e-12)
        clf.fit(X_SMALL, Y_SMALL)
        random_state = np.random.RandomState(4)
        bound = np.sqrt(factor / (64 + 7))
        assert_close(clf.coefs_[0], random_state.uniform(-bound, bound, (64, 7)), 1e-9,
                     what="first layer")


# -- fitted attributes and outputs --------------------------------------------------------------
@pytest.mark.parametrize("y, out_activation, n_outputs", [
    (Y_SMALL, "softmax", 10),
    (Y_SMALL % 2, "logistic", 1),
    (np.stack([Y_SMALL % 2, Y_SMALL > 4], axis=1).astype(int), "logistic", 2),
])
def test_classifier_fitted_attributes(y, out_activation, n_outputs):
    clf = MLPClassifier(hidden_layer_sizes=(9, 5), max_iter=3, random_state=0).fit(X_SMALL, y)
    assert clf.out_activation_ == out_activation
    assert clf.n_outputs_ == n_outputs
    assert clf.n_layers_ == 4
    assert clf.n_features_in_ == 64
    assert [coef.shape for coef in clf.coefs_] == [(64, 9), (9, 5), (5, n_outputs)]
    assert [b.shape for b in clf.intercepts_] == [(9,), (5,), (n_outputs,)]
    assert all(type(array) is np.ndarray for array in clf.coefs_ + clf.intercepts_)
    assert clf.t_ == 3 * X_SMALL.shape[0]
    assert len(clf.loss_curve_) == clf.n_iter_ == 3
    assert clf.loss_ == clf.loss_curve_[-1]
    assert clf.best_loss_ == min(clf.loss_curve_)
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None
    probabilities = clf.predict_proba(X_SMALL)
    n_columns = 2 if n_outputs == 1 else n_outputs
    assert probabilities.shape == (X_SMALL.shape[0], n_columns)
    assert_close(clf.predict_log_proba(X_SMALL), np.log(probabilities), 1e-12)


def test_early_stopping_records_validation_scores_and_keeps_the_best_weights():
    clf = MLPClassifier(early_stopping=True, max_iter=15, random_state=0,
                        learning_rate_init=0.01).fit(X_SMALL, Y_SMALL)
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.best_loss_ is None


def test_string_and_non_contiguous_labels():
    # labels in the order of 0..9, so classes_ (sorted) lines them up with the digits and
    # the network trains exactly as on 0..9
    names = np.array(["ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen", "ibis", "jay"])
    numbers = np.array([-5, 3, 7, 10, 11, 42, 99, 1000, 1001, 5000])
    reference = MLPClassifier(max_iter=20, random_state=0).fit(X_SMALL, Y_SMALL)
    expected = reference.predict(X_SMALL)
    for labels in (names, numbers):
        clf = MLPClassifier(max_iter=20, random_state=0).fit(X_SMALL, labels[Y_SMALL])
        np.testing.assert_array_equal(clf.classes_, labels)
        np.testing.assert_array_equal(clf.predict(X_SMALL), labels[expected])
        assert clf.score(X_SMALL, labels[Y_SMALL]) == reference.score(X_SMALL, Y_SMALL)


def test_multilabel_predicts_an_indicator_matrix():
    clf = MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.01, random_state=0)
    clf.fit(X_REG, Y_MULTILABEL)
    predicted = clf.predict(X_REG)
    assert predicted.shape == Y_MULTILABEL.shape
    assert set(np.unique(predicted)) <= {0, 1}
    assert_close(predicted, clf.predict_proba(X_REG) > 0.5, 0)
    # subset accuracy (every label right); the labels are linear in X, chance is 1/8
    assert clf.score(X_REG, Y_MULTILABEL) > 0.9


def test_multioutput_regression_predicts_one_column_per_target():
    reg = MLPRegressor(hidden_layer_sizes=(32,), max_iter=300, random_state=0,
                       learning_rate_init=0.01).fit(X_REG, Y_REG)
    assert reg.predict(X_REG).shape == Y_REG.shape
    assert reg.n_outputs_ == 3 and reg.out_activation_ == "identity"
    assert reg.score(X_REG, Y_REG) > 0.9
    single = MLPRegressor(max_iter=5, random_state=0).fit(X_REG, Y_REG[:, 0])
    assert single.predict(X_REG).shape == (X_REG.shape[0],)


def test_loss_includes_the_l2_term():
    # With alpha the reported loss is the data loss plus alpha/2 · Σ‖W‖² / n_samples of the
    # weights the epoch started from: one full-batch epoch, recomputed by hand.
    alpha = 3.0
    reg = MLPRegressor(hidden_layer_sizes=(4,), alpha=alpha, solver="sgd", max_iter=1,
                       batch_size=150, random_state=0, learning_rate_init=1e-3)
    reg.fit(X_REG, Y_REG)
    start = MLPRegressor(hidden_layer_sizes=(4,), solver="sgd", max_iter=1, batch_size=150,
                         random_state=0, learning_rate_init=1e-300).fit(X_REG, Y_REG)
    hidden = np.maximum(X_REG @ start.coefs_[0] + start.intercepts_[0], 0)
    output = hidden @ start.coefs_[1] + start.intercepts_[1]
    data_loss = 0.5 * np.mean((output - Y_REG) ** 2)
    penalty = 0.5 * alpha * sum(np.sum(w * w) for w in start.coefs_) / X_REG.shape[0]
    assert_close(reg.loss_, data_loss + penalty, 1e-12)


# -- dtype and backends -------------------------------------------------------------------------
@pytest.mark.parametrize("input_dtype, dtype, expected", [
    ("float32", None, "float32"), ("float64", None, "float64"), ("int64", None, "float64"),
    ("float64", "float32", "float32"), ("float32", "float64", "float64"),
])
def test_dtype_keeps_float_inputs_or_forces_one(input_dtype, dtype, expected):
    X = (DIGITS_X[:100] * 16).astype(input_dtype)
    clf = MLPClassifier(max_iter=2, dtype=dtype, random_state=0).fit(X, DIGITS_Y[:100])
    assert all(array.dtype == expected for array in clf.coefs_ + clf.intercepts_)
    assert clf.predict_proba(X).dtype == expected
    # a later input of another dtype is cast to the network's at the edge
    assert clf.predict_proba(X.astype("float64")).dtype == expected


def estimator_backend(backend):
    """The backend name an estimator takes; the generic torch backend of the tests has none."""
    if type(backend) is Backend:
        pytest.skip("the estimators take a backend by name; torch is a generic test backend")
    return backend.name


def test_backends_train_alike(backend, dtype):
    params = dict(max_iter=8, random_state=0, dtype=dtype, batch_size=50)
    reference = MLPClassifier(backend="numpy", **params).fit(X_SMALL, Y_SMALL)
    clf = MLPClassifier(backend=estimator_backend(backend), **params).fit(X_SMALL, Y_SMALL)
    assert_close(clf.loss_curve_, reference.loss_curve_, TRAINING_RTOL, what="loss curve")
    assert_close(clf.predict_proba(X_SMALL), reference.predict_proba(X_SMALL),
                 TRAINING_RTOL, BACKEND_PROBA_ATOL[dtype], what="predict_proba")


def test_device_input_is_checked_on_the_device(backend):
    if backend.name == "numpy":
        pytest.skip("NumPy input takes scikit-learn's host checks")
    X = backend.asarray(X_SMALL)
    clf = MLPClassifier(max_iter=2, random_state=0, backend=estimator_backend(backend)).fit(X, Y_SMALL)
    assert clf.n_features_in_ == 64
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is expecting 64"):
        clf.predict(X[:, :3])
    with pytest.raises(ValueError, match="Expected a 2D array, got a 1D array"):
        clf.predict(X[0, :])
    with pytest.raises(ValueError, match="y has 239 samples but X has 240"):
        clf.fit(X, Y_SMALL[1:])
    with_nan = backend.asarray(np.where(np.eye(240, 64) == 1, np.nan, X_SMALL))
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        clf.predict(with_nan)
    assert_close(clf.predict_proba(X), clf.predict_proba(X_SMALL), 0, what="device vs host")


def _record_transfers(monkeypatch, backend):
    """Every host->device (asarray) and device->host (to_numpy) transfer of ``backend``, as
    (direction, shape) pairs."""
    transfers = []
    original_asarray, original_to_numpy = backend.asarray, backend.to_numpy

    def asarray(x, dtype=None):
        if not backend.is_array(x):
            transfers.append(("to device", np.shape(x)))
        return original_asarray(x, dtype)

    def to_numpy(array):
        transfers.append(("to host", tuple(array.shape)))
        return original_to_numpy(array)

    monkeypatch.setattr(backend, "asarray", asarray)
    monkeypatch.setattr(backend, "to_numpy", to_numpy)
    return transfers


@pytest.mark.parametrize("device_input", [False, True])
def test_fit_moves_the_data_once_and_the_loss_once_per_epoch(backend, monkeypatch,
                                                             device_input):
    if backend.name == "numpy":
        pytest.skip("NumPy arrays already live on the host: there is no transfer to count")
    n_samples, batch_size, epochs = X_SMALL.shape[0], 30, 5  # 8 steps per epoch
    X = backend.asarray(X_SMALL) if device_input else X_SMALL
    transfers = _record_transfers(monkeypatch, backend)
    clf = MLPClassifier(hidden_layer_sizes=(8,), batch_size=batch_size, max_iter=epochs,
                        random_state=0, backend=estimator_backend(backend)).fit(X, Y_SMALL)
    assert clf.n_iter_ == epochs
    data_moves = [shape for direction, shape in transfers
                  if direction == "to device" and len(shape) == 2 and shape[0] == n_samples]
    assert data_moves == ([] if device_input else [X_SMALL.shape]) + [(n_samples, 10)]
    assert not [shape for direction, shape in transfers
                if direction == "to host" and shape[:1] == (n_samples,)]
    scalars_back = [shape for direction, shape in transfers
                    if direction == "to host" and shape in ((), (2,))]
    # one transfer per epoch (the loss and the weights' finiteness together), and for
    # device input the one finiteness check of X
    assert len(scalars_back) == epochs + device_input


def test_set_params_backend_after_fit_predicts_on_the_new_backend():
    clf = MLPClassifier(max_iter=5, random_state=0, backend="numpy").fit(X_SMALL, Y_SMALL)
    expected = clf.predict_proba(X_SMALL)
    clf.set_params(backend="array_api_strict")
    assert_close(clf.predict_proba(X_SMALL), expected, PARITY_RTOL["float64"], 1e-15)
    assert clf._model.backend.name == "array_api_strict"


def test_coefs_are_read_only_and_assigning_new_ones_changes_the_network():
    clf = MLPClassifier(hidden_layer_sizes=(6,), max_iter=3, random_state=0)
    clf.fit(X_SMALL, Y_SMALL)
    with pytest.raises(ValueError, match="read-only"):
        clf.coefs_[1][0, 0] = 1.0
    # zero output weights and biases: every class gets the same logit, so 1/10 each
    clf.coefs_ = [clf.coefs_[0], np.zeros((6, 10))]
    clf.intercepts_ = [clf.intercepts_[0], np.zeros(10)]
    assert_close(clf.predict_proba(X_SMALL[:5]), np.full((5, 10), 0.1), 1e-12)


# -- scikit-learn tools -------------------------------------------------------------------------
def test_clone_pipeline_grid_search_and_cross_val_score():
    X, y = DIGITS_X[:300], DIGITS_Y[:300]
    params = dict(hidden_layer_sizes=(16,), max_iter=15, learning_rate_init=0.01,
                  random_state=0)
    clf = MLPClassifier(**params, backend="numpy", dtype="float32")
    copy = clone(clf)
    assert copy.get_params() == clf.get_params() and not hasattr(copy, "coefs_")
    scores = cross_val_score(make_pipeline(StandardScaler(), clf), X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.5  # ten classes: chance is 0.1
    search = GridSearchCV(clf, {"alpha": [1e-4, 1.0], "batch_size": [32, 64]}, cv=2).fit(X, y)
    assert set(search.cv_results_["param_alpha"]) == {1e-4, 1.0}
    assert search.best_estimator_.n_iter_ == 15


def test_feature_names_in_from_a_dataframe():
    pandas = pytest.importorskip("pandas")
    columns = [f"pixel_{i}" for i in range(64)]
    frame = pandas.DataFrame(X_SMALL, columns=columns)
    clf = MLPClassifier(max_iter=2, random_state=0).fit(frame, Y_SMALL)
    np.testing.assert_array_equal(clf.feature_names_in_, columns)
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        from_array = clf.predict(X_SMALL)
    np.testing.assert_array_equal(clf.predict(frame), from_array)


def test_pickle_round_trip_keeps_host_arrays_only():
    clf = MLPClassifier(max_iter=5, random_state=0).fit(X_SMALL, Y_SMALL)
    state = clf.__getstate__()
    assert "_model" not in state
    host_arrays = state["coefs_"] + state["intercepts_"] + state["_optimizer_host_state"]
    assert all(type(array) is np.ndarray for array in host_arrays)
    assert state["_optimizer"].state is None
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X_SMALL), clf.predict_proba(X_SMALL))


def test_pickling_leaves_the_estimator_as_it_was():
    clf = MLPClassifier(max_iter=3, random_state=0).fit(X_SMALL, Y_SMALL)
    before = dict(clf.__dict__)
    pickle.dumps(clf)
    assert clf.__dict__.keys() == before.keys()
    assert all(clf.__dict__[key] is value for key, value in before.items())
    assert clf._optimizer.state is not None


def test_unpickling_where_the_fit_backend_is_unavailable_predicts_on_numpy(monkeypatch):
    clf = MLPClassifier(max_iter=5, random_state=0, backend="numpy").fit(X_SMALL, Y_SMALL)
    expected = clf.predict_proba(X_SMALL)
    state = clf.__getstate__()
    state["backend"] = "cupy"  # as if fitted on a GPU
    payload = pickle.dumps(state)

    real_get_backend = estimators.get_backend

    def cpu_only(name="auto"):  # this machine has no GPU, whatever the test machine has
        if name == "cupy":
            raise nb.BackendUnavailableError("CuPy finds no working CUDA GPU (simulated)")
        return real_get_backend(name)

    monkeypatch.setattr(estimators, "get_backend", cpu_only)
    restored = MLPClassifier.__new__(MLPClassifier)
    restored.__setstate__(pickle.loads(payload))
    with pytest.warns(UserWarning, match="backend='cupy' is unavailable here"):
        probabilities = restored.predict_proba(X_SMALL)
    np.testing.assert_array_equal(probabilities, expected)
    assert restored._model.backend.name == "numpy"
    with pytest.raises(nb.BackendUnavailableError, match="simulated"):
        restored.fit(X_SMALL, Y_SMALL)


def test_pickled_partial_fit_carries_the_optimizer_state():
    classes = np.unique(Y_SMALL)
    clf = MLPClassifier(random_state=0)
    clf.partial_fit(X_SMALL[:120], Y_SMALL[:120], classes=classes)
    restored = pickle.loads(pickle.dumps(clf))
    restored.set_params(backend="array_api_strict")  # and it moves to another backend
    for estimator in (clf, restored):
        estimator.partial_fit(X_SMALL[120:], Y_SMALL[120:])
    assert_close(restored.loss_curve_, clf.loss_curve_, PARITY_RTOL["float64"])
    for mine, reference in zip(restored.coefs_, clf.coefs_):
        assert_close(mine, reference, PARITY_RTOL["float64"], 1e-15)
    # without the Adam moments the second step would differ
    fresh = pickle.loads(pickle.dumps(clf))
    fresh._optimizer_host_state = None
    fresh._optimizer.reset()
    fresh.partial_fit(X_SMALL[120:], Y_SMALL[120:])
    assert not np.allclose(fresh.coefs_[0], clf.coefs_[0])


# -- warnings, messages and errors --------------------------------------------------------------
def test_convergence_warning_only_when_max_iter_ends_the_fit():
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(3\) reached"):
        MLPClassifier(max_iter=3, random_state=0).fit(X_SMALL, Y_SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf = MLPClassifier(max_iter=50, tol=10.0, n_iter_no_change=1, random_state=0)
        clf.fit(X_SMALL, Y_SMALL)
    assert clf.n_iter_ < 50


def test_ctrl_c_stops_after_the_current_step_with_a_usable_estimator(monkeypatch):
    steps = []
    real_step = Trainer.step

    def step_then_ctrl_c(self, *args, **kwargs):
        steps.append(1)
        value = real_step(self, *args, **kwargs)
        if len(steps) == 3:
            signal.raise_signal(signal.SIGINT)
        return value

    monkeypatch.setattr(Trainer, "step", step_then_ctrl_c)
    clf = MLPClassifier(batch_size=20, max_iter=5, random_state=0)
    with pytest.warns(UserWarning, match="Training interrupted by user"):
        clf.fit(X_SMALL, Y_SMALL)
    assert len(steps) == 3 and clf.n_iter_ == 0  # interrupted inside the first epoch
    assert clf.predict(X_SMALL).shape == Y_SMALL.shape


def test_lbfgs_warns_when_it_stops_at_max_iter():
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
        MLPRegressor(solver="lbfgs", max_iter=2, random_state=0).fit(X_REG, Y_REG)


def test_verbose_prints_each_iteration(capsys):
    MLPClassifier(max_iter=2, verbose=True, random_state=0).fit(X_SMALL, Y_SMALL)
    printed = capsys.readouterr().out
    assert re.search(r"Iteration 1, loss = \d+\.\d{8}\nIteration 2, loss = ", printed)


@pytest.mark.parametrize("name, value, message", [
    ("alpha", -1.0, "alpha must be a number in [0.0, inf), got -1.0"),
    ("hidden_layer_sizes", (10, 0), "hidden_layer_sizes[1] must be a positive integer, got 0"),
    ("hidden_layer_sizes", "big", "hidden_layer_sizes must be a positive integer or a list"),
    ("solver", "newton", "unknown solver 'newton'; valid names: lbfgs, sgd, adam"),
    ("activation", "softmax", "unknown activation 'softmax'; valid names: identity, logistic"),
    ("batch_size", 0, "batch_size (or 'auto') must be a positive integer, got 0"),
    ("learning_rate", "cyclic", "unknown learning_rate 'cyclic'"),
    ("learning_rate_init", 0.0, "learning_rate_init must be a positive finite number, got 0.0"),
    ("max_iter", 0, "max_iter must be a positive integer, got 0"),
    ("momentum", 1.0, "momentum must be a number in [0.0, 1.0), got 1.0"),
    ("validation_fraction", 1.0, "validation_fraction must be a number in [0.0, 1.0)"),
    ("n_iter_no_change", 0, "n_iter_no_change (or numpy.inf) must be a positive integer"),
    ("early_stopping", "yes", "early_stopping must be True or False, got 'yes'"),
    ("dtype", "float16", "dtype must be one of float32, float64, got 'float16'"),
    ("backend", "tpu", "unknown backend 'tpu'"),
])
def test_invalid_parameters_name_the_parameter_and_the_value(name, value, message):
    clf = MLPClassifier(**{name: value})  # __init__ only stores
    with pytest.raises(ValueError, match=re.escape(message)):
        clf.fit(X_SMALL, Y_SMALL)


def test_partial_fit_errors():
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        MLPClassifier().partial_fit(X_SMALL, Y_SMALL)
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
        MLPRegressor(early_stopping=True).partial_fit(X_REG, Y_REG)
    clf = MLPClassifier().partial_fit(X_SMALL[:50], Y_SMALL[:50], classes=np.arange(10))
    with pytest.raises(ValueError, match=r"`y` has classes not in `self.classes_`"):
        clf.partial_fit(X_SMALL[:50], Y_SMALL[:50] + 10)
    with pytest.raises(ValueError, match="differs from the first call"):
        clf.partial_fit(X_SMALL[:50], Y_SMALL[:50], classes=np.arange(5))
    for estimator in (MLPClassifier(solver="lbfgs"), MLPRegressor(solver="lbfgs")):
        assert not hasattr(estimator, "partial_fit")
        with pytest.raises(AttributeError) as raised:
            estimator.partial_fit(X_REG, Y_REG)
        assert "solver='lbfgs' is not one" in str(raised.value.__cause__)


def test_warm_start_with_another_architecture_says_what_to_do():
    clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=2, warm_start=True, random_state=0)
    clf.fit(X_SMALL, Y_SMALL)
    clf.set_params(hidden_layer_sizes=(6,))
    with pytest.raises(ValueError, match=r"layer sizes \[64, 5, 10\].*\[64, 6, 10\]"):
        clf.fit(X_SMALL, Y_SMALL)


def test_predict_with_the_wrong_number_of_features():
    clf = MLPClassifier(max_iter=2, random_state=0).fit(X_SMALL, Y_SMALL)
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is expecting 64"):
        clf.predict(X_SMALL[:, :3])


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_a_diverging_fit_raises_naming_the_learning_rate():
    with pytest.raises(ValueError, match=r"training loss became inf .*learning rate 10000"):
        MLPRegressor(solver="sgd", learning_rate_init=1e4, max_iter=20,
                     random_state=0).fit(X_REG * 100, Y_REG)


def test_import_nnback_without_sklearn_names_the_extra():
    script = textwrap.dedent("""
        import sys
        sys.modules["sklearn"] = None  # as if scikit-learn were not installed
        import nnback
        nnback.MLP([2, 1])
        try:
            from nnback import MLPClassifier
        except ImportError as error:
            print(error)
        else:
            print("imported")
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "pip install 'nnback[sklearn]'" in result.stdout


def test_array_api_dispatch_inputs_come_back_in_their_namespace():
    # array_api_dispatch needs SCIPY_ARRAY_API=1 before scipy is imported: a fresh process
    script = textwrap.dedent("""
        import warnings
        import numpy as np
        import array_api_strict as xps
        import sklearn
        from sklearn.datasets import load_digits
        from sklearn.utils.estimator_checks import check_array_api_input
        from nnback import MLPClassifier, MLPRegressor
        warnings.simplefilter("ignore")

        # scikit-learn's check for estimators without their own array API namespace
        for estimator in (MLPClassifier(max_iter=20), MLPRegressor(max_iter=20)):
            check_array_api_input(type(estimator).__name__, estimator,
                                  array_namespace="numpy", expect_only_array_outputs=False)

        X, y = load_digits(return_X_y=True)
        X, y = X[:200] / 16.0, y[:200]
        reference = MLPClassifier(max_iter=5, random_state=0).fit(X, y)
        device = xps.Device("device1")
        inputs = {"array_api_strict": (xps.asarray(X, device=device),
                                       xps.asarray(y, device=device))}
        try:
            import torch
            inputs["torch"] = (torch.asarray(X), torch.asarray(y))
        except ImportError:
            pass
        for name, (X_in, y_in) in inputs.items():
            with sklearn.config_context(array_api_dispatch=True):
                clf = MLPClassifier(max_iter=5, random_state=0).fit(X_in, y_in)
                probabilities = clf.predict_proba(X_in)
                labels = clf.predict(X_in)
            assert type(probabilities) is type(X_in) and type(labels) is type(X_in), name
            assert probabilities.device == X_in.device, name
            assert type(clf.coefs_[0]) is np.ndarray
            host = np.from_dlpack(probabilities) if name == "torch" else np.asarray(
                probabilities.to_device(xps.Device("CPU_DEVICE")))
            np.testing.assert_allclose(host, reference.predict_proba(X), rtol=1e-12)
            print(name, "ok")
    """)
    env = dict(os.environ, SCIPY_ARRAY_API="1")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "array_api_strict ok" in result.stdout


# -- quality --------------------------------------------------------------------------------
@pytest.mark.slow
def test_digits_accuracy_matches_sklearn():
    # the bar: hidden (100,), adam, 5-fold mean accuracy >= 0.97 and within 0.5
    # points of scikit-learn's MLPClassifier; nnback in float32, so the two do not run the
    # same arithmetic
    ours, theirs = pair("classifier", hidden_layer_sizes=(100,), solver="adam",
                        random_state=0)
    ours.set_params(dtype="float32")
    folds = StratifiedKFold(5, shuffle=True, random_state=0)  # the file is ordered by writer
    our_score = cross_val_score(ours, DIGITS_X, DIGITS_Y, cv=folds).mean()
    their_score = cross_val_score(theirs, DIGITS_X, DIGITS_Y, cv=folds).mean()
    assert our_score >= 0.97
    assert abs(our_score - their_score) <= 0.005
