"""Input checks shared by models, losses, estimators and the command line: one place, one
wording. Everything here runs at the public edge, before anything is changed, so a call that
fails leaves the model as it was.

Host-side checks work on NumPy copies of what the user passed (labels are checked here,
before they reach a GPU, where an out-of-range index silently reads another element).
"""
import numbers
import os

import numpy

from .backend import all_finite, backend_of, is_array_object, is_host_sparse


class ShapeError(ValueError):
    """An array has the wrong shape for where it is used (a ValueError)."""


def check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_positive_number(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0 \
            or not numpy.isfinite(value):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_fraction(name, value, low=0.0, high=1.0, high_open=True):
    if type(value) is float and low <= value < high:  # the common case, quickly
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value \
            or not (value < high if high_open else value <= high):
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be a number in [{low}, {high}{bracket}, got {value!r}")
    return float(value)


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"unknown {name} {value!r}; valid names: {', '.join(map(str, choices))}"
        )
    return value


def check_bool(name, value):
    if not isinstance(value, (bool, numpy.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_verbose(name, value):
    """Keras's values: 0 (or False) for nothing, 1 (or True) for a progress bar, 2 for one
    line per epoch; returned as an int."""
    if isinstance(value, (bool, numpy.bool_)) or (
            isinstance(value, numbers.Integral) and value in (0, 1, 2)):
        return int(value)
    raise ValueError(f"{name} must be 0 (or False), 1 (or True: a progress bar) or 2 (a line "
                     f"per epoch), got {value!r}")


def check_seed(name, seed):
    """``seed`` for a host NumPy Generator: None, a non-negative integer, or a NumPy
    Generator / SeedSequence (used as it is)."""
    if seed is None or isinstance(seed, (numpy.random.Generator, numpy.random.SeedSequence)):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be None or a non-negative integer, got {seed!r}")
    if seed < 0:
        raise ValueError(f"{name} must be None or a non-negative integer, got {seed!r}")
    return int(seed)


def check_path(path, name="path"):
    """``path`` as a non-empty str (a str, bytes or os.PathLike); TypeError/ValueError
    otherwise."""
    try:
        path = os.fsdecode(os.fspath(path))
    except TypeError:
        raise TypeError(
            f"{name} must be a file name (str or os.PathLike), got {type(path).__name__}"
        ) from None
    if not path:
        raise ValueError(f"{name} is empty; give a file name such as 'model.nnb'")
    return path


def check_writable(path, name, example="model.nnb"):
    """``path`` (as check_path gives it) if a file can be written there, checked before any
    work: its folder exists and is writable, and ``path`` is not a folder. Otherwise
    FileNotFoundError, IsADirectoryError or PermissionError whose message names ``name``
    (the parameter or option that gave the path)."""
    path = check_path(path, name)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"{name} {path} is a folder; give a file name such as "
                                f"{os.path.join(path, example)}")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{name} {path}: the folder {folder} does not exist; create "
                                "it first or choose another path")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and
                                          not os.access(path, os.W_OK)):
        raise PermissionError(f"{name} {path}: no permission to write there")
    return path


def _foreign_array_error(name, value, backend):
    owner = type(value).__module__.split(".")[0]
    if owner == getattr(backend.module, "__name__", "").split(".")[0]:
        return TypeError(
            f"{name} lives on device {getattr(value, 'device', None)} but the model's arrays "
            f"are on {backend.device_name()}; move it there first or pass a NumPy array"
        )
    return TypeError(
        f"{name} is an array of {owner} but the model runs on the {backend.name} backend; "
        f"convert it first (nb.get_backend({owner!r}).to_numpy({name}), or pass a NumPy array)"
    )


def to_host(backend, value, name):
    """(host NumPy array, device array or None): ``value`` as NumPy for checking, keeping a
    device array of ``backend`` to reuse. Arrays of another backend or device: TypeError."""
    if isinstance(value, (numpy.ndarray, numpy.generic)):
        return numpy.asarray(value), None
    if backend.is_array(value):
        return backend.to_numpy(value), value
    if is_array_object(value):
        raise _foreign_array_error(name, value, backend)
    if value is None:
        raise TypeError(f"{name} must be an array of numbers, got None")
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be an array of numbers, got a string {value[:20]!r}")
    try:
        host = numpy.asarray(value)
    except (ValueError, TypeError) as exc:
        hint = "; are its rows of different lengths?" if "inhomogeneous" in str(exc) else ""
        raise ValueError(f"{name} could not be read as an array ({exc}){hint}") from None
    return host, None


def check_numeric(host, name, allow_bool=False):
    """ValueError/TypeError unless ``host`` holds real numbers (no NaN or infinity)."""
    kind = host.dtype.kind
    if kind == "b" and not allow_bool:
        raise TypeError(f"{name} has dtype bool; numbers are needed (cast with .astype(float))")
    if kind == "c":
        raise TypeError(f"{name} has complex dtype {host.dtype}; real numbers are needed")
    if kind not in "biuf":
        if kind != "O":
            raise TypeError(f"{name} has dtype {host.dtype}; numbers are needed")
        host = _object_to_float(host, name)
    if host.size == 0:
        raise ValueError(f"{name} is empty (shape {host.shape}); at least one sample is needed")
    if kind in "fO" and not numpy.logical_and.reduce(numpy.isfinite(host), axis=None):
        bad = numpy.argwhere(~numpy.isfinite(host))[0]
        raise ValueError(
            f"{name} contains NaN or infinity (first at index {tuple(int(i) for i in bad)}); "
            "remove or impute those values"
        )
    return host


def _object_to_float(host, name):
    """A float64 copy of an object array that holds only real numbers; TypeError naming the
    first thing that is not one, ValueError for an integer too large for a float."""
    for index, item in zip(numpy.ndindex(host.shape), host.flat):
        if isinstance(item, (bool, numpy.bool_)) or not isinstance(item, numbers.Real):
            raise TypeError(
                f"{name} holds {type(item).__name__} {str(item)[:20]!r} at index {index}; "
                "numbers are needed"
            )
    try:
        return host.astype(numpy.float64)
    except OverflowError:
        raise ValueError(f"{name} holds an integer too large for a float") from None


_ITEMSIZE = {"float32": 4, "float64": 8}  # of the model dtypes (check_dtype's names)


def _ready_floats(host, dtype):
    """Whether the host array ``host`` passes check_numeric and check_fits at a glance:
    finite floats, not empty, no wider than ``dtype`` (the common case, checked in one
    pass; anything else takes the full checks, which name the problem)."""
    return host.dtype.kind == "f" and host.size and \
        host.dtype.itemsize <= (_ITEMSIZE.get(dtype) or numpy.dtype(dtype).itemsize) and \
        all_finite(host)


def check_fits(host, dtype, name):
    """ValueError when a value of the host array ``host`` would become infinite in ``dtype``
    (a float64 value beyond float32's range, e.g. 1e39)."""
    if host.dtype.kind != "f" or host.dtype.itemsize <= numpy.dtype(dtype).itemsize:
        return host  # every value fits
    limit = float(numpy.finfo(dtype).max)
    if host.size and float(numpy.max(numpy.abs(host))) > limit:
        index = tuple(int(i) for i in numpy.argwhere(numpy.abs(host) > limit)[0])
        raise ValueError(
            f"{name} holds {host[index]:.4g} at index {index}, beyond what {dtype} can hold "
            f"(±{limit:.4g}); scale the data or use dtype='float64'"
        )
    return host


def check_device_array(backend, array, name, float_only=False):
    """TypeError unless ``array`` (an array of ``backend``) holds real numbers (floating
    point when ``float_only``); returns its dtype name."""
    dtype_name = backend.dtype_name(array.dtype)
    allowed = ("float",) if float_only else ("float", "int", "uint")
    if not dtype_name.startswith(allowed):
        expected = "float32 or float64" if float_only else "numbers"
        raise TypeError(f"{name} has dtype {dtype_name}; {expected} are needed")
    return dtype_name


def prepare_input(backend, X, n_features, dtype, name="X", check_values=True):
    """(X as a (n_samples, n_features) backend array of ``dtype``, single) where ``single``
    says that a 1-D X of length n_features was taken as one sample.

    X: (n_samples, n_features), or (n_features,) for a single sample; a model with one input
    feature also takes (n_samples,). A device array is checked where it lives; with
    ``check_values=False`` only its shape and dtype are (no device sync). A NumPy array
    is checked on the host (no copy where it already has ``dtype``)."""
    if type(X) is numpy.ndarray and X.ndim == 2 and X.shape[1] == n_features and \
            _ready_floats(X, dtype):  # the common case, quickly: the checks below agree
        return backend.asarray(X, dtype), False
    if backend.is_sparse(X) or is_host_sparse(X):
        return _prepare_sparse(backend, X, n_features, dtype, name, check_values), False
    if backend.is_array(X) and not isinstance(X, numpy.ndarray):
        check_device_array(backend, X, name)
        shape, single = _input_shape(tuple(X.shape), n_features, name)
        if 0 in shape:
            raise ValueError(f"{name} is empty (shape {tuple(X.shape)}); at least one sample "
                             "is needed")
        X = X if tuple(X.shape) == shape else backend.xp.reshape(X, shape)
        if check_values:
            _check_device_values(backend, X, dtype, name)
        return backend.astype(X, dtype), single
    host, _ = to_host(backend, X, name)
    if not _ready_floats(host, dtype):
        host = check_fits(check_numeric(host, name), dtype, name)
    shape, single = _input_shape(host.shape, n_features, name)
    return backend.asarray(host if host.shape == shape else host.reshape(shape), dtype), single


def _prepare_sparse(backend, X, n_features, dtype, name, check_values):
    """A sparse X (n_samples, n_features) checked (shape, dtype, its stored values) and made
    the backend's CSR matrix of ``dtype``; never densified."""
    shape = tuple(X.shape)
    if len(shape) != 2 or shape[1] != n_features:
        raise ShapeError(f"Dense layer 1 expects {n_features} features, got sparse {name} "
                         f"with shape {shape}")
    if 0 in shape:
        raise ValueError(f"{name} is empty (shape {shape}); at least one sample is needed")
    x = backend.sparse_rows(X, dtype)
    if not backend.dtype_name(X.dtype).startswith(("float", "int", "uint")):
        raise TypeError(f"{name} has dtype {backend.dtype_name(X.dtype)}; numbers are needed")
    if check_values:
        data = x.data
        if not bool(backend.to_numpy(backend.xp.all(backend.xp.isfinite(data)))):
            raise ValueError(f"{name} contains NaN or infinity among its stored values; "
                             "remove or impute those values")
    return x


def _check_device_values(backend, X, dtype, name):
    """ValueError for NaN or infinity in the device array X, or values that ``dtype``
    cannot hold (one reduction each, brought over as a scalar)."""
    if not backend.dtype_name(X.dtype).startswith("float"):
        return
    xp = backend.xp
    if not bool(backend.to_numpy(xp.all(xp.isfinite(X)))):
        raise ValueError(f"{name} contains NaN or infinity; remove or impute those values")
    limit = float(numpy.finfo(dtype).max)
    if numpy.finfo(backend.dtype_name(X.dtype)).max > limit and \
            float(backend.to_numpy(xp.max(xp.abs(X)))) > limit:
        check_fits(backend.to_numpy(X), dtype, name)


def _input_shape(shape, n_features, name):
    """(2-D shape, single) for an input of ``shape``; ShapeError when it cannot fit."""
    if len(shape) == 1:
        if shape[0] == n_features:
            return (1, n_features), True
        if n_features == 1:
            return (shape[0], 1), False
        raise ShapeError(
            f"Dense layer 1 expects {n_features} features, got 1-D {name} with shape "
            f"{shape}; pass (n_samples, {n_features}) or one sample of {n_features} values"
        )
    if len(shape) == 2:
        if shape[1] != n_features:
            raise ShapeError(
                f"Dense layer 1 expects {n_features} features, got {name} with shape {shape}"
            )
        return shape, False
    raise ShapeError(
        f"{name} must be 2-D (n_samples, {n_features}), got {len(shape)}-D with shape {shape}"
    )


def prepare_target(backend, target, pred_shape, dtype, loss, name="y"):
    """``target`` as a backend array of ``pred_shape`` and ``dtype`` for ``loss``.

    pred_shape: (n_samples, n_outputs). Accepted: exactly pred_shape; (n_samples,) when
    n_outputs is 1; integer class labels (n_samples,) for a loss of target_kind "classes"
    (turned into one-hot rows). Anything else is a ShapeError naming both shapes: a (3, 1)
    target never broadcasts against a (4, 1) prediction."""
    if type(target) is numpy.ndarray and target.shape == pred_shape and \
            getattr(loss, "target_kind", "values") == "values" and _ready_floats(target, dtype):
        return backend.asarray(target, dtype)  # the common case, quickly
    host, device = to_host(backend, target, name)
    if not _ready_floats(host, dtype):
        host = check_fits(check_numeric(host, name, allow_bool=True), dtype, name)
    n_samples, n_outputs = pred_shape
    kind = getattr(loss, "target_kind", "values")
    if kind == "classes" and host.ndim == 1 and host.shape[0] == n_samples:
        return _one_hot(backend, host, n_outputs, dtype, name)
    if host.shape == pred_shape:
        shape = pred_shape
    elif host.ndim == 1 and n_outputs == 1 and host.shape[0] == n_samples:
        shape = pred_shape
    else:
        hint = ""
        if host.shape[:1] != pred_shape[:1]:
            hint = f"; {name} has {host.shape[0] if host.ndim else 0} rows but X has {n_samples}"
        elif kind == "classes":
            hint = "; pass integer class labels (n_samples,) or one-hot rows"
        raise ShapeError(
            f"{name} has shape {host.shape} but the model's output has shape {pred_shape}"
            f"{hint}"
        )
    if kind == "counts" and host.min() < 0:
        raise ValueError(  # scikit-learn's sentence for its Poisson models, then the detail
            f"Some value(s) of y are negative which is not allowed for Poisson regression. "
            f"({type(loss).__name__} needs {name} >= 0; the smallest is {host.min()})")
    if kind == "probabilities" and (host.min() < 0 or host.max() > 1):
        raise ValueError(
            f"{type(loss).__name__} needs targets in [0, 1]; {name} ranges from "
            f"{host.min()} to {host.max()}"
        )
    if device is not None and host.dtype.kind == "f":
        reshaped = device if host.shape == shape else backend.xp.reshape(device, shape)
        return backend.astype(reshaped, dtype)
    return backend.asarray(host.reshape(shape), dtype)


def _one_hot(backend, labels, n_classes, dtype, name):
    """One-hot rows (n_samples, n_classes) from integer labels, checked here on the host: on a
    GPU an out-of-range index would silently read another element."""
    if labels.dtype.kind == "f" and not numpy.all(labels == numpy.round(labels)):
        raise ValueError(f"class labels in {name} must be whole numbers, got {labels[:5]}")
    low, high = labels.min(), labels.max()
    if low < 0 or high >= n_classes:
        raise ValueError(
            f"class labels in {name} must be in [0, {n_classes - 1}] for a model with "
            f"{n_classes} outputs, got labels from {low} to {high}"
        )
    labels = labels.astype(numpy.int64)
    one_hot = numpy.zeros((labels.shape[0], n_classes), dtype=dtype)
    one_hot[numpy.arange(labels.shape[0]), labels] = 1
    return backend.asarray(one_hot, dtype)


def unpack_validation_data(validation_data):
    """(X_val, y_val, sample_weight_val or None) from fit's validation_data."""
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
        raise ValueError("validation_data must be a pair (X_val, y_val) or a triple "
                         "(X_val, y_val, sample_weight_val)")
    return tuple(validation_data) + (None,) * (3 - len(validation_data))


def prepare_sample_weight(backend, sample_weight, n_samples, dtype, name="sample_weight"):
    """``sample_weight`` (None, a number for every row, or one non-negative finite number
    per row) as a (n_samples, 1) backend array of ``dtype``, or None. Refuses weights that
    are all 0: nothing would be learnt."""
    if sample_weight is None:
        return None
    host, _ = to_host(backend, sample_weight, name)
    host = check_numeric(host, name, allow_bool=False) if host.ndim else host
    if host.ndim == 0:
        host = numpy.full(n_samples, float(host))
    if host.ndim != 1 or host.shape[0] != n_samples:
        raise ShapeError(f"{name} must be 1-D with one weight per sample ({n_samples},), "
                         f"got shape {host.shape}")
    if not numpy.all(numpy.isfinite(host)) or host.min() < 0:
        raise ValueError(f"{name} must hold finite numbers >= 0, got values from "
                         f"{host.min()} to {host.max()}")
    if not host.any():
        raise ValueError(f"{name} is 0 for every sample: nothing would be learnt")
    return backend.asarray(host.reshape(n_samples, 1), dtype)


def prepare_weights(backend, dtype, weights, params, names):
    """``weights`` (host or backend arrays in the order of ``params``, named ``names``)
    checked against the parameters' count and shapes and cast to ``dtype`` on
    ``backend``: a new list, so that nothing changes unless every array fits."""
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__iter__"):
        raise TypeError(f"set_weights expects a list of {len(params)} arrays "
                        f"({', '.join(names)}), got {type(weights).__name__}")
    weights = list(weights)
    if len(weights) != len(params):
        raise ValueError(
            f"set_weights expects {len(params)} arrays ({', '.join(names)}), got "
            f"{len(weights)}"
        )
    converted = []
    for name, param, value in zip(names, params, weights):
        host, _ = to_host(backend, value, name)
        host = check_fits(check_numeric(host, name), dtype, name)
        if tuple(host.shape) != tuple(param.shape):
            raise ShapeError(
                f"set_weights: {name} must have shape {tuple(param.shape)}, got "
                f"{tuple(host.shape)}"
            )
        converted.append(backend.asarray(host, dtype))
    return converted


def prepare_grad_out(backend, grad_out, shape, single, dtype):
    """``grad_out`` (dLoss/doutput given to backward) checked against the output ``shape``
    of the last forward pass ((n_outputs,) when ``single``: one sample) and made a
    ``shape`` array of ``dtype``."""
    check_same_backend(backend, grad_out, "grad_out")
    check_device_array(backend, grad_out, "grad_out", float_only=True)
    shown = shape[1:] if single else shape
    if tuple(grad_out.shape) != shown:
        raise ShapeError(f"grad_out has shape {tuple(grad_out.shape)} but the last forward "
                         f"pass gave an output of shape {shown}")
    grad = backend.xp.reshape(grad_out, shape) if single else grad_out
    return backend.astype(grad, dtype)


def check_same_backend(backend, array, name):
    """TypeError unless ``array`` is an array of ``backend`` (and on its device)."""
    if not backend.is_array(array):
        if is_array_object(array):
            raise _foreign_array_error(name, array, backend)
        raise TypeError(f"{name} must be an array of the {backend.name} backend, got "
                        f"{type(array).__name__}")
    return array


def prepare_prediction(pred, loss, name="pred"):
    """The Backend of ``pred`` for a loss's public forward/backward, after checking that
    ``pred`` is a 2-D float32/float64 array (n_samples, n_outputs) of numpy, cupy or
    array_api_strict with finite values, in [0, 1] for a loss of probabilities."""
    try:
        backend = backend_of(pred)
    except TypeError:
        raise TypeError(
            f"{name} must be an array of numpy, cupy or array_api_strict (what model.forward "
            f"returns), got {type(pred).__name__}"
        ) from None
    check_same_backend(backend, pred, name)
    check_device_array(backend, pred, name, float_only=True)
    shape = tuple(pred.shape)
    if len(shape) != 2:
        raise ShapeError(f"{name} must be 2-D (n_samples, n_outputs), got shape {shape}")
    if 0 in shape:
        raise ValueError(f"{name} is empty (shape {shape})")
    host = backend.to_numpy(pred)
    if not numpy.all(numpy.isfinite(host)):
        raise ValueError(f"{name} contains NaN or infinity")
    if getattr(loss, "pred_kind", "values") == "probabilities" and \
            (host.min() < 0 or host.max() > 1):
        raise ValueError(
            f"{type(loss).__name__} needs {name} to be probabilities in [0, 1] (a sigmoid "
            f"output); {name} ranges from {host.min()} to {host.max()}"
        )
    return backend
