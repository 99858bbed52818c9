"""The scikit-learn side of nnback's estimators: their parameters checked as scikit-learn
checks them, X and y validated (scikit-learn's validate_data on the host, or checks on the
device for an array already there), sample and class weights, arrays of other libraries
moved to the host once, the early-stopping split, predictions handed back in the input's
namespace under ``array_api_dispatch``, and fitted estimators converted to and from
scikit-learn's own MLPs. Functions of an estimator, as scikit-learn's own validate_data.

Needs scikit-learn (nnback.estimators checks that it is installed before importing this).
"""
import numbers

import numpy
import sklearn
from sklearn.base import is_classifier
from sklearn.model_selection import train_test_split
from sklearn.utils import check_array
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from .backend import backend_of, check_dtype, is_array_object
from .validation import (check_choice, check_fraction, check_positive_int,
                         check_positive_number)

STOCHASTIC_SOLVERS = ("sgd", "adam")
SOLVERS = ("lbfgs",) + STOCHASTIC_SOLVERS
# scikit-learn's activation names -> nnback's
ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
OUTPUT_ACTIVATIONS = {"softmax": "softmax", "logistic": "sigmoid", "identity": "identity",
                      "exp": "exp"}
FLOAT_DTYPES = (numpy.float64, numpy.float32)  # float32/float64 kept, others -> float64
_HOST_MODULES = ("numpy", "cupy", "array_api_strict")


def check_params(estimator):
    """The validated hidden layer sizes; ValueError naming any parameter out of range."""
    sizes = estimator.hidden_layer_sizes
    if isinstance(sizes, numbers.Integral) and not isinstance(sizes, bool):
        sizes = [sizes]
    try:
        if isinstance(sizes, str):
            raise TypeError
        sizes = [check_positive_int(f"hidden_layer_sizes[{position}]", size)
                 for position, size in enumerate(sizes)]
    except TypeError:
        raise ValueError(f"hidden_layer_sizes must be a positive integer or a list of them, "
                         f"got {estimator.hidden_layer_sizes!r}") from None
    check_choice("activation", estimator.activation, tuple(ACTIVATIONS))
    check_choice("solver", estimator.solver, SOLVERS)
    if hasattr(estimator, "loss"):
        check_choice("loss", estimator.loss, ("squared_error", "poisson"))
    check_fraction("alpha", estimator.alpha, high=float("inf"))
    if estimator.batch_size != "auto":
        check_positive_int("batch_size (or 'auto')", estimator.batch_size)
    check_choice("learning_rate", estimator.learning_rate, ("constant", "invscaling", "adaptive"))
    check_positive_number("learning_rate_init", estimator.learning_rate_init)
    check_fraction("power_t", estimator.power_t, high=float("inf"))
    check_positive_int("max_iter", estimator.max_iter)
    check_fraction("tol", estimator.tol, high=float("inf"))
    # nnback's SGD takes momentum in [0, 1); 1 never converges anyway
    check_fraction("momentum", estimator.momentum)
    check_fraction("validation_fraction", estimator.validation_fraction)
    check_fraction("beta_1", estimator.beta_1)
    check_fraction("beta_2", estimator.beta_2)
    check_positive_number("epsilon", estimator.epsilon)
    if estimator.n_iter_no_change != numpy.inf:
        check_positive_int("n_iter_no_change (or numpy.inf)", estimator.n_iter_no_change)
    check_positive_int("max_fun", estimator.max_fun)
    for name in ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping"):
        if not isinstance(getattr(estimator, name), (bool, numpy.bool_)):
            raise ValueError(f"{name} must be True or False, got {getattr(estimator, name)!r}")
    if estimator.dtype is not None:
        check_dtype(estimator.dtype)
    return sizes


def input_dtype(estimator, first_pass):
    """What X is cast to: the fitted network's dtype when training continues, else the
    ``dtype`` asked for, or float32/float64 kept as they come (others become float64)."""
    if not first_pass:
        return estimator.coefs_[0].dtype
    if estimator.dtype is not None:
        return numpy.dtype(check_dtype(estimator.dtype))
    return FLOAT_DTYPES


def validate_X(estimator, X, backend, dtype, reset, y=None, fit=False):
    """(x on ``backend``, y as host NumPy or None). An array of the backend's own device
    stays there (shape, dtype and finiteness checked on the device); anything else goes
    through scikit-learn's validate_data on the host and then to the device once."""
    if is_foreign_array(y, backend) or (backend.name != "numpy" and backend.is_array(y)):
        y = to_host(y, "y")
    if backend.name != "numpy" and (backend.is_array(X) or backend.is_sparse(X)):
        x = _validate_device_X(estimator, X, backend, dtype, reset)
        if fit:
            y = _validate_host_y(estimator, y, x.shape[0])
        return x, y
    if is_foreign_array(X, backend):
        X = to_host(X, "X")
    sparse = ("csr", "csc")  # kept sparse: the first layer multiplies it as it is
    if fit:
        X, y = validate_data(estimator, X, y, multi_output=True, dtype=dtype, order="C",
                             y_numeric=not is_classifier(estimator), reset=reset,
                             accept_sparse=sparse)
    else:
        X = validate_data(estimator, X, dtype=dtype, order="C", reset=reset,
                          accept_sparse=sparse)
    return backend.asarray(X, X.dtype.name), y


def _validate_device_X(estimator, X, backend, dtype, reset):
    """A dense or sparse X of the backend's own device, checked there as scikit-learn's
    validate_data checks a host X (shape, dtype, NaN/infinity: of the stored values of a
    sparse X) and cast to ``dtype``."""
    xp = backend.xp
    name = type(estimator).__name__
    if len(X.shape) != 2:
        raise ValueError(f"Expected a 2D array, got a {len(X.shape)}D array of shape "
                         f"{tuple(X.shape)} instead; reshape it to (n_samples, n_features)")
    dtype_name = backend.dtype_name(X.dtype)
    if not dtype_name.startswith(("float", "int", "uint")):
        raise TypeError(f"X has dtype {dtype_name}; numbers are needed")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"Found array with shape {tuple(X.shape)} while {name} needs at "
                         "least one sample and one feature")
    values = backend.sparse_rows(X).data if backend.is_sparse(X) else X
    if not bool(backend.to_numpy(xp.all(xp.isfinite(values)))):
        raise ValueError("Input X contains NaN or infinity; remove or impute those values")
    if reset:
        estimator.n_features_in_ = int(X.shape[1])
        if hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
    elif X.shape[1] != estimator.n_features_in_:
        raise ValueError(f"X has {X.shape[1]} features, but {name} is expecting "
                         f"{estimator.n_features_in_} features as input.")
    if isinstance(dtype, tuple):
        dtype = dtype_name if dtype_name in ("float32", "float64") else "float64"
    return backend.astype(X, numpy.dtype(dtype).name)


def _validate_host_y(estimator, y, n_samples):
    if y is None:
        raise ValueError(f"{type(estimator).__name__} requires y to be passed, but the target "
                         "y is None")
    y = check_array(y, ensure_2d=False, dtype=None if is_classifier(estimator) else "numeric",
                    input_name="y")
    if y.shape[0] != n_samples:
        raise ValueError(f"y has {y.shape[0]} samples but X has {n_samples}; they must "
                         "match")
    return y


def sample_weights(estimator, sample_weight, n_samples, y):
    """The rows' weights as host NumPy (n_samples,), or None: ``sample_weight`` checked as
    scikit-learn checks it (its own _check_sample_weight, so its messages), times the class
    weights of a classifier's ``class_weight`` (compute_sample_weight on the labels y)."""
    if sample_weight is not None:
        sample_weight = _check_sample_weight(sample_weight, numpy.empty((n_samples, 0)))
    class_weight = getattr(estimator, "class_weight", None)
    if class_weight is None:
        return sample_weight
    by_class = compute_sample_weight(class_weight, y)
    return by_class if sample_weight is None else sample_weight * by_class


def split_validation(estimator, backend, x, target, y, weights=None):
    """scikit-learn's early-stopping split: ((x_val, y_val as host labels, host weights_val
    or None), x_train, target_train, weights_train or None), stratified for single-output
    classifiers; sample weights follow their rows."""
    stratify = y if is_classifier(estimator) and estimator.n_outputs_ == 1 else None
    train_rows, val_rows = train_test_split(
        numpy.arange(x.shape[0]), random_state=estimator._random_state,
        test_size=estimator.validation_fraction, stratify=stratify)
    if val_rows.shape[0] < 2:
        raise ValueError(
            f"The validation set is too small: validation_fraction="
            f"{estimator.validation_fraction} of {x.shape[0]} samples gives "
            f"{val_rows.shape[0]}; increase validation_fraction or the data set")
    weights_val = None if weights is None else \
        backend.to_numpy(weights).ravel()[val_rows]
    validation_set = (backend.take_rows(x, backend.asarray(val_rows)), y[val_rows],
                      weights_val)
    train_rows = backend.asarray(train_rows)
    return validation_set, backend.take_rows(x, train_rows), \
        backend.take_rows(target, train_rows), \
        None if weights is None else backend.take_rows(weights, train_rows)


# -- conversion to and from scikit-learn's own MLPs ---------------------------------------
# What a fitted MLP holds in both libraries (the same names and meanings); a classifier
# also has classes_ and _label_binarizer.
FITTED = ("coefs_", "intercepts_", "n_features_in_", "feature_names_in_", "n_outputs_",
          "n_layers_", "out_activation_", "n_iter_", "t_", "loss_", "loss_curve_",
          "best_loss_", "validation_scores_", "best_validation_score_",
          "_no_improvement_count", "classes_", "_label_binarizer")
NNBACK_ONLY = ("backend", "dtype", "class_weight")


def copy_fitted(source, target, writeable):
    """Copy the fitted attributes of ``source`` to ``target`` (arrays and lists as copies;
    coefs_ and intercepts_ read-only unless ``writeable``)."""
    for name in FITTED:
        if not hasattr(source, name):
            continue
        value = getattr(source, name)
        if name in ("coefs_", "intercepts_"):
            value = [numpy.array(array, copy=True) for array in value]
            for array in value:
                array.flags.writeable = writeable
        elif isinstance(value, (list, numpy.ndarray)):
            value = value.copy()
        setattr(target, name, value)


def to_sklearn(estimator):
    """A fitted sklearn.neural_network MLP with ``estimator``'s parameters (those scikit-
    learn has) and fitted weights and attributes."""
    from sklearn import neural_network

    check_is_fitted(estimator)
    kind = "MLPClassifier" if is_classifier(estimator) else "MLPRegressor"
    parameters = {name: value for name, value in estimator.get_params().items()
                  if name not in NNBACK_ONLY}
    model = getattr(neural_network, kind)(**parameters)
    copy_fitted(estimator, model, writeable=True)
    return model


def from_sklearn(cls, model, backend, dtype):
    """An nnback estimator of class ``cls`` holding the fitted scikit-learn MLP ``model``
    (its parameters and weights), to predict with or go on training (warm_start,
    partial_fit) on ``backend``."""
    from sklearn import neural_network

    kind = getattr(neural_network, cls.__name__)
    if not isinstance(model, kind):
        raise TypeError(f"{cls.__name__}.from_sklearn expects a fitted "
                        f"sklearn.neural_network.{cls.__name__}, got {type(model).__name__}")
    check_is_fitted(model)
    estimator = cls(**model.get_params(), backend=backend, dtype=dtype)
    copy_fitted(model, estimator, writeable=False)
    return estimator


# -- arrays from other libraries --------------------------------------------------------
def is_foreign_array(value, backend):
    """True for an array of an array library other than NumPy that ``backend`` cannot use
    as it is (torch tensors, array_api_strict or CuPy arrays on the numpy backend, ...)."""
    if value is None or isinstance(value, numpy.ndarray) or backend.is_array(value):
        return False
    return is_array_object(value) or hasattr(value, "__dlpack__")


def to_host(value, name):
    """A host NumPy copy of an array of another library (moved once, at the edge)."""
    module = type(value).__module__.split(".")[0]
    if module in _HOST_MODULES:
        return backend_of(value).to_numpy(value)
    try:
        return numpy.from_dlpack(value)
    except (BufferError, RuntimeError, TypeError, ValueError) as exc:
        raise TypeError(
            f"{name} is a {module} array that NumPy cannot read ({exc}); move it to the CPU "
            "first or pass a NumPy array"
        ) from None


def dispatch_output(result, X):
    """With sklearn.set_config(array_api_dispatch=True), ``result`` (host NumPy) as an array
    of X's namespace and device, as scikit-learn does; otherwise ``result`` itself."""
    if not sklearn.get_config()["array_api_dispatch"] or isinstance(X, numpy.ndarray) \
            or not (is_array_object(X) or hasattr(X, "__dlpack__")) \
            or result.dtype.kind not in "biuf":
        return result
    from sklearn.utils._array_api import get_namespace_and_device

    xp, _, device = get_namespace_and_device(X)
    return xp.asarray(result, device=device)
