"""scikit-learn estimators: MLPClassifier and MLPRegressor, trained by nnback on any backend.

They take scikit-learn's MLP parameters with the same meanings, plus ``backend`` and
``dtype``, and follow scikit-learn's training loop step for step: the same Glorot
initialisation drawn from ``random_state``, the same mini-batch order, the same loss (with
the L2 term), learning-rate schedules, early stopping and stopping rule. With a fixed
``random_state`` and ``solver="sgd"`` they reproduce scikit-learn's loss curve to rounding.

The network lives on the backend (a ``nnback.MLP``): X and y move to the device once per
fit, mini-batches are cut there, and the loss comes back once per epoch. The fitted
attributes ``coefs_`` and ``intercepts_`` are read-only host NumPy copies; assign new arrays
to change the weights. A pickle holds host NumPy arrays only, so an estimator fitted on a
GPU unpickles on a machine without one (see ``docs/estimators.md``).

Needs scikit-learn (``pip install 'nnback[sklearn]'``).
"""
import functools
import numbers
import threading
import warnings
import weakref

import numpy

from .backend import (BackendUnavailableError, backend_of, check_dtype, get_backend,
                      is_array_object)

_INSTALL_HINT = "pip install 'nnback[sklearn]'"
_MIN_SKLEARN = (1, 6)

try:
    import sklearn
except ImportError as exc:
    raise ImportError(
        f"nnback.MLPClassifier and nnback.MLPRegressor need scikit-learn, which is not "
        f"installed: {_INSTALL_HINT}"
    ) from exc
if tuple(int(part) for part in sklearn.__version__.split(".")[:2]) < _MIN_SKLEARN:
    raise ImportError(
        f"nnback's estimators need scikit-learn >= {'.'.join(map(str, _MIN_SKLEARN))}, found "
        f"{sklearn.__version__}; pip install -U 'nnback[sklearn]'"
    )

import scipy.optimize
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_array, check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from . import threads
from .losses import BinaryLogLoss, HalfSquaredError, SoftmaxCrossEntropy
from .model import MLP
from .optim import SGD, Adam
from .threads import ModelGuard
from .training import Checkpoint, DivergenceError, NoImprovement, Trainer
from .validation import (check_choice, check_fraction, check_positive_int,
                         check_positive_number)

__all__ = ["MLPClassifier", "MLPRegressor"]

_STOCHASTIC_SOLVERS = ("sgd", "adam")
_SOLVERS = ("lbfgs",) + _STOCHASTIC_SOLVERS
# scikit-learn's activation names -> nnback's
_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
_OUTPUT_ACTIVATIONS = {"softmax": "softmax", "logistic": "sigmoid", "identity": "identity"}
_FLOAT_DTYPES = (numpy.float64, numpy.float32)  # float32/float64 kept, others -> float64
_HOST_MODULES = ("numpy", "cupy", "array_api_strict")


class _SklearnAdam(Adam):
    """Adam with scikit-learn's epsilon, added to √v (nnback's Adam, like PyTorch's, adds it
    to the bias-corrected √v̂). Setting eps = epsilon/√(1 − β₂ᵗ) before each step makes
    the two updates equal."""

    def __init__(self, lr, betas, epsilon):
        super().__init__(lr=lr, betas=betas, eps=epsilon)
        self.epsilon = epsilon

    def step(self, params, grads):
        self.eps = self.epsilon / (1.0 - self.betas[1] ** (self.iterations + 1)) ** 0.5
        super().step(params, grads)


class _SampleOrder:
    """scikit-learn's mini-batch order: each epoch shuffles the previous epoch's order with
    random_state (sklearn.utils.shuffle of the index array), so one random_state gives the
    batches scikit-learn's MLP sees. Trainer.epoch calls permutation() once per epoch."""

    def __init__(self, random_state, n_samples):
        self.random_state = random_state
        self.order = numpy.arange(n_samples)

    def permutation(self, n_samples):
        self.order = self.order[self.random_state.permutation(n_samples)]
        return self.order


# -- arrays from other libraries ----------------------------------------------------------------
def _is_foreign_array(value, backend):
    """True for an array of an array library other than NumPy that ``backend`` cannot use
    as it is (torch tensors, array_api_strict or CuPy arrays on the numpy backend, ...)."""
    if value is None or isinstance(value, numpy.ndarray) or backend.is_array(value):
        return False
    return is_array_object(value) or hasattr(value, "__dlpack__")


def _to_host(value, name):
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


def _dispatch_output(result, X):
    """With sklearn.set_config(array_api_dispatch=True), ``result`` (host NumPy) as an array
    of X's namespace and device, as scikit-learn does; otherwise ``result`` itself."""
    if not sklearn.get_config()["array_api_dispatch"] or isinstance(X, numpy.ndarray) \
            or not (is_array_object(X) or hasattr(X, "__dlpack__")) \
            or result.dtype.kind not in "biuf":
        return result
    from sklearn.utils._array_api import get_namespace_and_device

    xp, _, device = get_namespace_and_device(X)
    return xp.asarray(result, device=device)


# -- threads --------------------------------------------------------------------------------------
# Each estimator's ModelGuard (nnback.threads), kept beside it rather than in it, so that it
# is neither cloned, pickled nor compared by scikit-learn.
_GUARDS = weakref.WeakKeyDictionary()
_GUARDS_LOCK = threading.Lock()
_MODEL_LOCK = threading.RLock()  # while an estimator's network is (re)built for prediction


def _guard_of(estimator):
    with _GUARDS_LOCK:
        guard = _GUARDS.get(estimator)
        if guard is None:
            guard = _GUARDS[estimator] = ModelGuard()
        return guard


_training = functools.partial(threads.training, guard_of=_guard_of)
_predicting = functools.partial(threads.predicting, guard_of=_guard_of)


# -- the shared estimator -----------------------------------------------------------------------
class _BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share: parameters, fitting, prediction, pickling.
    Subclasses say how targets are encoded (``_encode_targets``), which output activation
    and loss they train with, and how a validation set is scored."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 backend="auto", dtype=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend
        self.dtype = dtype

    # -- parameters -------------------------------------------------------------------------
    def _check_params(self):
        """The validated hidden layer sizes; ValueError naming any parameter out of range."""
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, numbers.Integral) and not isinstance(sizes, bool):
            sizes = [sizes]
        try:
            if isinstance(sizes, str):
                raise TypeError
            sizes = [check_positive_int(f"hidden_layer_sizes[{position}]", size)
                     for position, size in enumerate(sizes)]
        except TypeError:
            raise ValueError(f"hidden_layer_sizes must be a positive integer or a list of them, "
                             f"got {self.hidden_layer_sizes!r}") from None
        check_choice("activation", self.activation, tuple(_ACTIVATIONS))
        check_choice("solver", self.solver, _SOLVERS)
        check_fraction("alpha", self.alpha, high=float("inf"))
        if self.batch_size != "auto":
            check_positive_int("batch_size (or 'auto')", self.batch_size)
        check_choice("learning_rate", self.learning_rate, ("constant", "invscaling", "adaptive"))
        check_positive_number("learning_rate_init", self.learning_rate_init)
        check_fraction("power_t", self.power_t, high=float("inf"))
        check_positive_int("max_iter", self.max_iter)
        check_fraction("tol", self.tol, high=float("inf"))
        # nnback's SGD takes momentum in [0, 1); 1 never converges anyway
        check_fraction("momentum", self.momentum)
        check_fraction("validation_fraction", self.validation_fraction)
        check_fraction("beta_1", self.beta_1)
        check_fraction("beta_2", self.beta_2)
        check_positive_number("epsilon", self.epsilon)
        if self.n_iter_no_change != numpy.inf:
            check_positive_int("n_iter_no_change (or numpy.inf)", self.n_iter_no_change)
        check_positive_int("max_fun", self.max_fun)
        for name in ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping"):
            if not isinstance(getattr(self, name), (bool, numpy.bool_)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.dtype is not None:
            check_dtype(self.dtype)
        return sizes

    # -- backends and the device model ------------------------------------------------------
    def _fit_backend(self):
        """The backend to train on: the one named, or BackendUnavailableError saying why."""
        return get_backend(self.backend)

    def _predict_backend(self):
        """The backend to predict on: the one named, or numpy (with a warning) where it is
        unavailable, e.g. an estimator fitted on a GPU and unpickled on a CPU-only machine."""
        try:
            return get_backend(self.backend)
        except BackendUnavailableError as exc:
            warnings.warn(
                f"backend={self.backend!r} is unavailable here ({exc}); predicting on numpy "
                "instead. set_params(backend='numpy') silences this.", UserWarning,
                stacklevel=3)
            return get_backend("numpy")

    def _build_model(self, backend, dtype, coefs, intercepts):
        model = MLP([coefs[0].shape[0]] + [coef.shape[1] for coef in coefs],
                    activation=_ACTIVATIONS[self.activation],
                    output=_OUTPUT_ACTIVATIONS[self.out_activation_], backend=backend,
                    dtype=dtype, init="zeros")
        model.set_weights([array for pair in zip(coefs, intercepts) for array in pair])
        return model

    def _model_on(self, backend):
        """The network on ``backend``, built from coefs_/intercepts_ unless the one at hand
        was built from exactly these arrays (coefs_ are read-only: replacing them is the
        only way to change them). Optimizer state follows the model to the backend."""
        with _MODEL_LOCK:  # threads predicting for the first time build it once
            model = getattr(self, "_model", None)
            current = tuple(self.coefs_) + tuple(self.intercepts_)
            if (model is not None and model.backend is backend
                    and len(current) == len(self._published)
                    and all(mine is theirs for mine, theirs in zip(current, self._published))):
                return model
            model = self._build_model(backend, self.coefs_[0].dtype.name, self.coefs_,
                                      self.intercepts_)
            self._model = model
            self._published = current
            self._move_optimizer_state(model)
            return model

    def _publish(self, model):
        """coefs_ and intercepts_ from the device: read-only host copies (one transfer)."""
        weights = model.get_weights()
        for array in weights:
            array.flags.writeable = False
        self.coefs_ = weights[0::2]
        self.intercepts_ = weights[1::2]
        self._model = model
        self._published = tuple(self.coefs_) + tuple(self.intercepts_)

    def _move_optimizer_state(self, model):
        """Give the optimizer's moments/velocities to ``model``'s parameters (after a
        rebuild on another backend or an unpickle, where they come as host arrays)."""
        optimizer = getattr(self, "_optimizer", None)
        if optimizer is None:
            return
        host_state = getattr(self, "_optimizer_host_state", None)
        if host_state is None:
            if optimizer.state is None:
                return
            host_state = [backend_of(array).to_numpy(array) for array in
                          optimizer.state_arrays()]
        optimizer.state = optimizer.initial_state(model.parameters())
        for array, value in zip(optimizer.state_arrays(), host_state):
            array[...] = model.backend.asarray(value, model.dtype)
        self._optimizer_host_state = None

    def __getstate__(self):
        """Host NumPy arrays only: the device model is rebuilt on first use, on whatever
        backend the unpickling machine has."""
        state = dict(super().__getstate__())  # a copy: object.__getstate__ gives __dict__
        state.pop("_model", None)
        state.pop("_published", None)
        optimizer = state.get("_optimizer")
        if optimizer is not None and optimizer.state is not None:
            state["_optimizer_host_state"] = [backend_of(array).to_numpy(array)
                                              for array in optimizer.state_arrays()]
            host_optimizer = object.__new__(type(optimizer))
            host_optimizer.__dict__.update(optimizer.__dict__, state=None)
            state["_optimizer"] = host_optimizer
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._published = ()  # forces _model_on to rebuild

    # -- input ------------------------------------------------------------------------------
    def _input_dtype(self, first_pass):
        """What X is cast to: the fitted network's dtype when training continues, else the
        ``dtype`` asked for, or float32/float64 kept as they come (others become float64)."""
        if not first_pass:
            return self.coefs_[0].dtype
        if self.dtype is not None:
            return numpy.dtype(check_dtype(self.dtype))
        return _FLOAT_DTYPES

    def _validate_X(self, X, backend, dtype, reset, y=None, fit=False):
        """(x on ``backend``, y as host NumPy or None). An array of the backend's own device
        stays there (shape, dtype and finiteness checked on the device); anything else goes
        through scikit-learn's validate_data on the host and then to the device once."""
        if _is_foreign_array(y, backend) or (backend.name != "numpy" and backend.is_array(y)):
            y = _to_host(y, "y")
        if backend.name != "numpy" and backend.is_array(X):
            x = self._validate_device_X(X, backend, dtype, reset)
            if fit:
                y = self._validate_host_y(y, x.shape[0])
            return x, y
        if _is_foreign_array(X, backend):
            X = _to_host(X, "X")
        if fit:
            X, y = validate_data(self, X, y, multi_output=True, dtype=dtype, order="C",
                                 y_numeric=not is_classifier(self), reset=reset)
        else:
            X = validate_data(self, X, dtype=dtype, order="C", reset=reset)
        return backend.asarray(X, X.dtype.name), y

    def _validate_device_X(self, X, backend, dtype, reset):
        xp = backend.xp
        name = type(self).__name__
        if X.ndim != 2:
            raise ValueError(f"Expected a 2D array, got a {X.ndim}D array of shape "
                             f"{tuple(X.shape)} instead; reshape it to (n_samples, n_features)")
        dtype_name = backend.dtype_name(X.dtype)
        if not dtype_name.startswith(("float", "int", "uint")):
            raise TypeError(f"X has dtype {dtype_name}; numbers are needed")
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"Found array with shape {tuple(X.shape)} while {name} needs at "
                             "least one sample and one feature")
        if not bool(backend.to_numpy(xp.all(xp.isfinite(X)))):
            raise ValueError("Input X contains NaN or infinity; remove or impute those values")
        if reset:
            self.n_features_in_ = int(X.shape[1])
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {name} is expecting "
                             f"{self.n_features_in_} features as input.")
        if isinstance(dtype, tuple):
            dtype = dtype_name if dtype_name in ("float32", "float64") else "float64"
        return backend.astype(X, numpy.dtype(dtype).name)

    def _validate_host_y(self, y, n_samples):
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target "
                             "y is None")
        y = check_array(y, ensure_2d=False, dtype=None if is_classifier(self) else "numeric",
                        input_name="y")
        if y.shape[0] != n_samples:
            raise ValueError(f"y has {y.shape[0]} samples but X has {n_samples}; they must "
                             "match")
        return y

    # -- fitting ----------------------------------------------------------------------------
    @_training("fit")
    def fit(self, X, y):
        """Fit the network to X (n_samples, n_features) and y (class labels for the
        classifier, numbers for the regressor; 2-D for multilabel / multi-output).
        Returns self."""
        return self._fit(X, y, incremental=False)

    def _check_solver(self):
        if self.solver not in _STOCHASTIC_SOLVERS:
            raise AttributeError(f"partial_fit is only available for the stochastic solvers "
                                 f"('sgd', 'adam'); solver={self.solver!r} is not one")
        return True

    def _fit(self, X, y, incremental):
        hidden = self._check_params()
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        backend = self._fit_backend()
        x, y = self._validate_X(X, backend, self._input_dtype(first_pass), reset=first_pass,
                                y=y, fit=True)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        y = self._encode_targets(y, incremental)
        y = y.reshape(-1, 1) if y.ndim == 1 else y
        layer_units = [x.shape[1]] + hidden + [y.shape[1]]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            model = self._initialize(y, layer_units, backend, backend.dtype_name(x.dtype))
        else:
            model = self._model_on(backend)
            if model.layer_sizes != layer_units:
                raise ValueError(
                    f"warm_start and partial_fit continue the fitted network of layer sizes "
                    f"{model.layer_sizes}, but the parameters and data now give {layer_units}; "
                    "fit without warm_start to start over")
        x = backend.astype(x, model.dtype)
        loss = self._make_loss()
        target = loss.prepare_target(backend, y, (x.shape[0], y.shape[1]), model.dtype)
        trainer = Trainer(model, loss, alpha=self.alpha)
        try:
            if self.solver in _STOCHASTIC_SOLVERS:
                self._fit_stochastic(trainer, x, target, y, incremental)
            else:
                self._fit_lbfgs(trainer, x, target)
        finally:
            self._publish(model)
        if not all(numpy.all(numpy.isfinite(array)) for array in self.coefs_ + self.intercepts_):
            raise ValueError(f"solver={self.solver!r} produced NaN or infinite weights; the "
                             "input data may contain large values: scale it (e.g. "
                             "StandardScaler) or lower learning_rate_init")
        return self

    def _initialize(self, y, layer_units, backend, dtype):
        """Fresh fitted state and a network initialised as scikit-learn does (Glorot uniform,
        factor 2 for logistic, biases from the same range, drawn from random_state)."""
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._output_activation()
        coefs, intercepts = [], []
        factor = 2.0 if self.activation == "logistic" else 6.0
        for fan_in, fan_out in zip(layer_units, layer_units[1:]):
            bound = numpy.sqrt(factor / (fan_in + fan_out))
            coefs.append(self._random_state.uniform(-bound, bound, (fan_in, fan_out)))
            intercepts.append(self._random_state.uniform(-bound, bound, fan_out))
        self._optimizer = None
        self._optimizer_host_state = None
        if self.solver in _STOCHASTIC_SOLVERS:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -numpy.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = numpy.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None
        return self._build_model(backend, dtype, coefs, intercepts)

    def _make_optimizer(self):
        if self.solver == "adam":
            return _SklearnAdam(self.learning_rate_init, (self.beta_1, self.beta_2),
                                self.epsilon)
        return SGD(lr=self.learning_rate_init, momentum=self.momentum,
                   nesterov=bool(self.nesterovs_momentum) and self.momentum > 0,
                   schedule=self.learning_rate, power_t=self.power_t)

    def _split_validation(self, backend, x, target, y):
        """scikit-learn's early-stopping split: ((x_val, y_val as host labels), x_train,
        target_train), stratified for single-output classifiers."""
        stratify = y if is_classifier(self) and self.n_outputs_ == 1 else None
        train_rows, val_rows = train_test_split(
            numpy.arange(x.shape[0]), random_state=self._random_state,
            test_size=self.validation_fraction, stratify=stratify)
        if val_rows.shape[0] < 2:
            raise ValueError(
                f"The validation set is too small: validation_fraction="
                f"{self.validation_fraction} of {x.shape[0]} samples gives "
                f"{val_rows.shape[0]}; increase validation_fraction or the data set")
        validation_set = (backend.take_rows(x, backend.asarray(val_rows)), y[val_rows])
        train_rows = backend.asarray(train_rows)
        return validation_set, backend.take_rows(x, train_rows), \
            backend.take_rows(target, train_rows)

    def _fit_stochastic(self, trainer, x, target, y, incremental):
        """scikit-learn's stochastic solvers through the Trainer: its batch order, stopping
        rule (NoImprovement, the optimizer's trigger_stopping), learning-rate schedules
        (the optimizer's iteration_ends) and early stopping on a validation score."""
        if not incremental or getattr(self, "_optimizer", None) is None:
            self._optimizer = self._make_optimizer()
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True; set "
                             "early_stopping=False or use fit")
        model = trainer.model
        trainer.optimizer = optimizer = self._optimizer
        validation_set = None
        if self.early_stopping:
            validation_set, x, target = self._split_validation(model.backend, x, target, y)
        n_samples = x.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn(f"batch_size={self.batch_size} is larger than the {n_samples} "
                              "training samples; it is clipped to the sample count")
            batch_size = min(self.batch_size, n_samples)
        order = _SampleOrder(self._random_state, n_samples) if self.shuffle else None
        best = Checkpoint(model.backend, model.trainable_arrays()[0]) \
            if self.early_stopping else None
        rule = NoImprovement(self.tol, self.n_iter_no_change, self._no_improvement_count,
                             self.best_validation_score_ if self.early_stopping
                             else -self.best_loss_)
        self.n_iter_ = 0

        def end_of_epoch(epoch, history):
            self.n_iter_ += 1
            self.loss_ = history.loss[-1]
            self.t_ += n_samples
            self.loss_curve_.append(self.loss_)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
            if validation_set is None:
                rule.update(-self.loss_)  # a loss: lower is better
                self.best_loss_ = -rule.best
            else:
                output = model.backend.to_numpy(model.forward(validation_set[0],
                                                              training=False))
                score = self._score_output(output, validation_set[1]) \
                    if numpy.all(numpy.isfinite(output)) else numpy.nan
                self.validation_scores_.append(score)
                if self.verbose:
                    print(f"Validation score: {score:f}")
                if rule.update(score):
                    best.save()
                self.best_validation_score_ = rule.best
            self._no_improvement_count = rule.count
            optimizer.iteration_ends(self.t_)
            if rule.stalled:
                what = "Validation score" if self.early_stopping else "Training loss"
                if optimizer.trigger_stopping(
                        f"{what} did not improve more than tol={self.tol:f} for "
                        f"{self.n_iter_no_change} consecutive epochs.", self.verbose):
                    return True
                rule.count = self._no_improvement_count = 0
            if not incremental and self.n_iter_ == self.max_iter:
                warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                              "reached and the optimization hasn't converged yet.",
                              ConvergenceWarning)
            return incremental  # partial_fit: one epoch

        try:
            trainer.fit(x, target, self.max_iter, batch_size, order,
                        end_of_epoch=end_of_epoch)
        except DivergenceError as error:
            what = "the weights became NaN or infinite" if error.loss is None \
                else f"the training loss became {error.loss}"
            raise ValueError(
                f"{what} in iteration {error.epoch} "
                f"(learning rate {error.lr}); the input data may contain large values: "
                "scale it (e.g. StandardScaler) or lower learning_rate_init") from None
        except KeyboardInterrupt:  # Ctrl-C stops after a step, as in scikit-learn
            warnings.warn("Training interrupted by user.")
        if best is not None:
            best.restore()

    def _fit_lbfgs(self, trainer, x, target):
        """scipy's L-BFGS-B on the flat parameter vector (coefs then intercepts, float64 on
        the host, as scikit-learn orders them); each evaluation is one full-batch forward
        and backward pass of the Trainer on the backend, so parameters go over and
        gradients come back once per evaluation."""
        model, backend = trainer.model, trainer.backend
        params = model.parameters()
        ordered = params[0::2] + params[1::2]
        shapes = [tuple(param.shape) for param in ordered]
        bounds = numpy.cumsum([0] + [int(numpy.prod(shape)) for shape in shapes])

        def set_parameters(flat):
            for param, start, stop, shape in zip(ordered, bounds, bounds[1:], shapes):
                param[...] = backend.asarray(flat[start:stop].reshape(shape), model.dtype)

        def loss_and_gradient(flat):
            set_parameters(flat)
            value, _ = trainer.compute_gradients(x, target)
            grads = model.gradients()
            gradient = numpy.concatenate([backend.to_numpy(grad).ravel()
                                          for grad in grads[0::2] + grads[1::2]])
            return float(backend.to_numpy(value)), gradient.astype(numpy.float64)

        start = numpy.concatenate([backend.to_numpy(param).ravel() for param in ordered])
        result = scipy.optimize.minimize(
            loss_and_gradient, start.astype(numpy.float64), method="L-BFGS-B", jac=True,
            options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol})
        if result.status != 0:
            warnings.warn(
                f"lbfgs failed to converge after {result.nit} iteration(s) (status="
                f"{result.status}): {result.message}. Increase max_iter (or max_fun) or "
                "scale the data (e.g. StandardScaler).", ConvergenceWarning)
        self.n_iter_ = min(int(result.nit), self.max_iter)
        self.loss_ = float(result.fun)
        if self.verbose:
            print(f"lbfgs: {self.n_iter_} iterations, loss = {self.loss_:.8f}, "
                  f"{result.message}")
        set_parameters(result.x)

    # -- prediction -------------------------------------------------------------------------
    @_predicting("predict")
    def _forward_output(self, X):
        """The network's output for X as host NumPy (n_samples, n_outputs); from any
        number of threads at once, refused while another thread fits this estimator."""
        check_is_fitted(self)
        model = self._model_on(self._predict_backend())
        x, _ = self._validate_X(X, model.backend, numpy.dtype(model.dtype), reset=False)
        return model.backend.to_numpy(model.forward(x, training=False))

    def __sklearn_is_fitted__(self):
        return hasattr(self, "coefs_")


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained by nnback on NumPy or CuPy.

    scikit-learn's ``sklearn.neural_network.MLPClassifier`` with the same parameters and
    meanings, plus:

    backend: "auto" (CuPy when a GPU works, else NumPy), "numpy", "cupy" or
        "array_api_strict" (a test stand-in).
    dtype: None (float32 and float64 inputs keep their dtype, others become float64),
        "float32" (the fast choice on GPUs) or "float64".

    The output is a softmax over the classes (multiclass) or a logistic unit per output
    (binary: one output; multilabel: one per label). Fitted attributes as scikit-learn's:
    classes_, coefs_, intercepts_ (read-only host NumPy; coefs_[i] has shape (n_in, n_out)),
    loss_, loss_curve_, best_loss_, validation_scores_, best_validation_score_, n_iter_,
    n_layers_, n_outputs_, out_activation_, n_features_in_, feature_names_in_, t_.
    """

    def _encode_targets(self, y, incremental):
        """scikit-learn's rules for classes_ (fit, warm_start, partial_fit); returns the
        indicator matrix the network is trained on."""
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        f"warm_start needs y with the classes of the previous fit: "
                        f"classes_ is {self.classes_}, y has {classes}")
            elif len(numpy.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"y has classes not in classes_: classes_ is "
                                 f"{self.classes_}, y has {classes}")
        return self._label_binarizer.transform(y).astype(bool)

    def _output_activation(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _make_loss(self):
        return SoftmaxCrossEntropy() if self.out_activation_ == "softmax" else BinaryLogLoss()

    def _labels(self, output):
        if self.n_outputs_ == 1:
            output = output.ravel()
        return self._label_binarizer.inverse_transform(output)

    def _score_output(self, output, y_encoded):
        return accuracy_score(self._label_binarizer.inverse_transform(y_encoded),
                              self._labels(output))

    @available_if(lambda estimator: estimator._check_solver())
    @_training("partial_fit")
    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y). classes: every class label that will ever appear (needed
        on the first call; y need not contain them all). Returns self."""
        if getattr(self, "classes_", None) is None:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit "
                                 "(every label that will appear, e.g. numpy.unique(y_all))")
            self.classes_ = unique_labels(classes)
            target = y if type_of_target(y).startswith("multilabel") else classes
            self._label_binarizer = LabelBinarizer().fit(target)
        elif classes is not None and not numpy.array_equal(self.classes_,
                                                           unique_labels(classes)):
            raise ValueError(f"classes={classes!r} differs from the first call to "
                             f"partial_fit, which gave classes_ {self.classes_}")
        return self._fit(X, y, incremental=True)

    def predict(self, X):
        """Class labels (n_samples,), or an indicator matrix (n_samples, n_labels) for
        multilabel problems."""
        return _dispatch_output(self._labels(self._forward_output(X)), X)

    def predict_proba(self, X):
        """Probabilities (n_samples, n_classes) in the order of classes_ (for multilabel
        problems, each label's probability)."""
        return _dispatch_output(self._probabilities(X), X)

    def _probabilities(self, X):
        output = self._forward_output(X)
        if self.n_outputs_ == 1:
            return numpy.hstack([1 - output, output])
        return output

    def predict_log_proba(self, X):
        """log(predict_proba(X))."""
        probabilities = self._probabilities(X)
        with numpy.errstate(divide="ignore"):
            return _dispatch_output(numpy.log(probabilities, out=probabilities), X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor trained by nnback on NumPy or CuPy.

    scikit-learn's ``sklearn.neural_network.MLPRegressor`` with the same parameters and
    meanings (it minimises the squared error; the output is linear), plus ``backend`` and
    ``dtype`` as in MLPClassifier. A 2-D y gives one output per column.
    """

    def _encode_targets(self, y, incremental):
        return y

    def _output_activation(self):
        return "identity"

    def _make_loss(self):
        return HalfSquaredError()

    def _score_output(self, output, y):
        return r2_score(y, output)

    @available_if(lambda estimator: estimator._check_solver())
    @_training("partial_fit")
    def partial_fit(self, X, y):
        """One epoch over (X, y). Returns self."""
        return self._fit(X, y, incremental=True)

    def predict(self, X):
        """Predictions (n_samples,), or (n_samples, n_outputs) for a 2-D y."""
        output = self._forward_output(X)
        return _dispatch_output(output.ravel() if output.shape[1] == 1 else output, X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
