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
import threading
import warnings
import weakref

import numpy

from .backend import BackendUnavailableError, backend_of, get_backend

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
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import check_is_fitted, column_or_1d

from . import threads
from .losses import BinaryLogLoss, HalfSquaredError, PoissonDeviance, SoftmaxCrossEntropy
from .model import MLP
from .optim import SGD, Adam
from .sklearn_input import (ACTIVATIONS, OUTPUT_ACTIVATIONS, STOCHASTIC_SOLVERS, check_params,
                            dispatch_output, from_sklearn, input_dtype, sample_weights,
                            split_validation, to_sklearn, validate_X)
from .threads import ModelGuard
from .training import Checkpoint, DivergenceError, NoImprovement, Trainer

__all__ = ["MLPClassifier", "MLPRegressor"]

# scikit-learn's own sentence when training ends with NaN or infinite weights (nnback's
# advice follows it), so that code matching scikit-learn's message keeps working
_NON_FINITE = ("Solver produced non-finite parameter weights. The input data may contain "
               "large values and need to be preprocessed.")


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


class _SklearnEpochs:
    """scikit-learn's bookkeeping after each epoch of a stochastic solver, as the Trainer's
    end_of_epoch hook: n_iter_, t_, loss_, loss_curve_ and the verbose lines; the
    NoImprovement rule on the training loss, or with early stopping on the validation
    score, keeping the best weights (``best``, restored after the fit); the optimizer's
    schedule (iteration_ends) and plateau rule (trigger_stopping); the max_iter warning.
    Returns True to stop (always after one epoch of partial_fit)."""

    def __init__(self, estimator, model, validation_set, n_samples, incremental):
        self.estimator, self.model = estimator, model
        self.validation_set = validation_set
        self.n_samples, self.incremental = n_samples, incremental
        self.best = None if validation_set is None else \
            Checkpoint(model.backend, model.trainable_arrays()[0])
        self.rule = NoImprovement(
            estimator.tol, estimator.n_iter_no_change, estimator._no_improvement_count,
            -estimator.best_loss_ if validation_set is None
            else estimator.best_validation_score_)

    def __call__(self, epoch, history):
        estimator, rule = self.estimator, self.rule
        estimator.n_iter_ += 1
        estimator.loss_ = history.loss[-1]
        estimator.t_ += self.n_samples
        estimator.loss_curve_.append(estimator.loss_)
        if estimator.verbose:
            print(f"Iteration {estimator.n_iter_}, loss = {estimator.loss_:.8f}")
        if self.validation_set is None:
            rule.update(-estimator.loss_)  # a loss: lower is better
            estimator.best_loss_ = -rule.best
        else:
            if rule.update(self._validation_score()):
                self.best.save()
            estimator.best_validation_score_ = rule.best
        estimator._no_improvement_count = rule.count
        optimizer = estimator._optimizer
        optimizer.iteration_ends(estimator.t_)
        if rule.stalled:
            what = "Validation score" if estimator.early_stopping else "Training loss"
            if optimizer.trigger_stopping(
                    f"{what} did not improve more than tol={estimator.tol:f} for "
                    f"{estimator.n_iter_no_change} consecutive epochs.", estimator.verbose):
                return True
            rule.count = estimator._no_improvement_count = 0
        if not self.incremental and estimator.n_iter_ == estimator.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({estimator.max_iter}) "
                          "reached and the optimization hasn't converged yet.",
                          ConvergenceWarning)
        return self.incremental  # partial_fit: one epoch

    def diverged(self, error):
        """After a DivergenceError: scikit-learn's ValueError (its sentence, then what
        happened), or with early stopping a warning, the best validated weights being kept
        as scikit-learn keeps them."""
        what = "the weights became NaN or infinite" if error.loss is None \
            else f"the training loss became {error.loss}"
        if self.best is None:
            raise ValueError(
                f"{_NON_FINITE} ({what} in iteration {error.epoch} with learning rate "
                f"{error.lr}: scale the data, e.g. with StandardScaler, or lower "
                "learning_rate_init)") from None
        warnings.warn(f"{what} in iteration {error.epoch} (learning rate {error.lr}); "
                      "training stopped, and the weights with the best validation score "
                      f"({self.estimator.best_validation_score_:g}) are kept",
                      ConvergenceWarning)

    def _validation_score(self):
        x_val, y_val, weights_val = self.validation_set
        output = self.model.backend.to_numpy(self.model.forward(x_val, training=False))
        score = self.estimator._score_output(output, y_val, weights_val) \
            if numpy.all(numpy.isfinite(output)) else numpy.nan
        self.estimator.validation_scores_.append(score)
        if self.estimator.verbose:
            print(f"Validation score: {score:f}")
        return score


def _parameters(arguments):
    """An estimator's parameters from its __init__'s ``locals()``."""
    return {name: value for name, value in arguments.items()
            if name not in ("self", "__class__")}


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

    def __init__(self, **parameters):
        # each subclass's __init__ names every parameter (what scikit-learn's get_params
        # reads) and hands them here, to be stored as they are, as scikit-learn requires
        for name, value in parameters.items():
            setattr(self, name, value)

    # -- backends and the device model ------------------------------------------------------
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
                    activation=ACTIVATIONS[self.activation],
                    output=OUTPUT_ACTIVATIONS[self.out_activation_], backend=backend,
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

    # -- fitting ----------------------------------------------------------------------------
    @_training("fit")
    def fit(self, X, y, sample_weight=None):
        """Fit the network to X (n_samples, n_features) and y (class labels for the
        classifier, numbers for the regressor; 2-D for multilabel / multi-output).
        sample_weight: (n_samples,) weights; each batch's loss is their weighted mean, as
        in scikit-learn. Returns self."""
        return self._fit(X, y, incremental=False, sample_weight=sample_weight)

    def _check_solver(self):
        if self.solver not in STOCHASTIC_SOLVERS:
            raise AttributeError(f"partial_fit is only available for the stochastic solvers "
                                 f"('sgd', 'adam'); solver={self.solver!r} is not one")
        return True

    def _fit(self, X, y, incremental, sample_weight=None):
        hidden = check_params(self)
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        backend = get_backend(self.backend)  # or BackendUnavailableError saying why
        x, y = validate_X(self, X, backend, input_dtype(self, first_pass), reset=first_pass,
                          y=y, fit=True)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        weights = sample_weights(self, sample_weight, x.shape[0], y)
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
        if weights is not None:
            weights = backend.asarray(weights.reshape(-1, 1), model.dtype)
        trainer = Trainer(model, loss, alpha=self.alpha)
        try:
            if self.solver in STOCHASTIC_SOLVERS:
                self._fit_stochastic(trainer, x, target, y, incremental, weights)
            else:
                self._fit_lbfgs(trainer, x, target, weights)
        finally:
            self._publish(model)
        if not all(numpy.all(numpy.isfinite(array)) for array in self.coefs_ + self.intercepts_):
            raise ValueError(_NON_FINITE + f" (solver={self.solver!r}: scale the data, e.g. "
                             "with StandardScaler, or lower learning_rate_init)")
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
        if self.solver in STOCHASTIC_SOLVERS:
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

    def _fit_stochastic(self, trainer, x, target, y, incremental, weights=None):
        """scikit-learn's stochastic solvers through the Trainer, with its batch order
        (_SampleOrder) and its bookkeeping after each epoch (_SklearnEpochs)."""
        if not incremental or getattr(self, "_optimizer", None) is None:
            self._optimizer = self._make_optimizer()
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True; set "
                             "early_stopping=False or use fit")
        trainer.optimizer = self._optimizer
        validation_set = None
        if self.early_stopping:
            validation_set, x, target, weights = split_validation(
                self, trainer.backend, x, target, y, weights)
        n_samples = x.shape[0]
        batch_size = min(200 if self.batch_size == "auto" else self.batch_size, n_samples)
        if self.batch_size != "auto" and self.batch_size > n_samples:
            warnings.warn(f"batch_size={self.batch_size} is larger than the {n_samples} "
                          "training samples; it is clipped to the sample count")
        order = _SampleOrder(self._random_state, n_samples) if self.shuffle else None
        epochs = _SklearnEpochs(self, trainer.model, validation_set, n_samples, incremental)
        self.n_iter_ = 0
        try:
            trainer.fit(x, target, self.max_iter, batch_size, order, end_of_epoch=epochs,
                        sample_weight=weights)
        except DivergenceError as error:
            epochs.diverged(error)
        except KeyboardInterrupt:  # Ctrl-C stops after a step, as in scikit-learn
            warnings.warn("Training interrupted by user.")
        if epochs.best is not None:
            epochs.best.restore()

    def _fit_lbfgs(self, trainer, x, target, weights=None):
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
            value, _ = trainer.compute_gradients(x, target, weights=weights)
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
        x, _ = validate_X(self, X, model.backend, numpy.dtype(model.dtype), reset=False)
        return model.backend.to_numpy(model.forward(x, training=False))

    def __sklearn_is_fitted__(self):
        return hasattr(self, "coefs_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # CSR/CSC X, kept sparse
        return tags

    def to_sklearn(self):
        """This fitted estimator as scikit-learn's own MLPClassifier/MLPRegressor: the same
        parameters (all but backend, dtype and class_weight), coefs_, intercepts_, classes
        and fitted attributes, predicting the same to float rounding. For deployment where
        only scikit-learn is installed (and on to ONNX with skl2onnx)."""
        return to_sklearn(self)

    @classmethod
    def from_sklearn(cls, model, backend="auto", dtype=None):
        """A fitted scikit-learn MLP of this kind as an nnback estimator on ``backend``,
        with its parameters and weights: it predicts as ``model`` does and goes on training
        with warm_start=True or partial_fit (the optimizer's state starts afresh)."""
        return from_sklearn(cls, model, backend, dtype)


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

    class_weight: None, "balanced" or {class: weight} (a list of them for multilabel y),
        as scikit-learn's other classifiers take it: each sample's weight in the loss is
        multiplied by its class's (sklearn.utils.class_weight.compute_sample_weight).
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 backend="auto", dtype=None, class_weight=None):
        super().__init__(**_parameters(locals()))

    def _encode_targets(self, y, incremental):
        """scikit-learn's rules for classes_ (fit, warm_start, partial_fit), and its
        messages; returns the indicator matrix the network is trained on."""
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as in "
                        f"the previous call to fit. Previously got {self.classes_}, `y` "
                        f"has {classes}")
            elif len(numpy.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError("`y` has classes not in `self.classes_`. `self.classes_` "
                                 f"has {self.classes_}. 'y' has {classes}.")
        return self._label_binarizer.transform(y).astype(bool)

    def _output_activation(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _make_loss(self):
        return SoftmaxCrossEntropy() if self.out_activation_ == "softmax" else BinaryLogLoss()

    def _labels(self, output):
        if self.n_outputs_ == 1:
            output = output.ravel()
        return self._label_binarizer.inverse_transform(output)

    def _score_output(self, output, y_encoded, sample_weight=None):
        return accuracy_score(self._label_binarizer.inverse_transform(y_encoded),
                              self._labels(output), sample_weight=sample_weight)

    @available_if(lambda estimator: estimator._check_solver())
    @_training("partial_fit")
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y). sample_weight: as in fit. classes: every class label that
        will ever appear (needed on the first call; y need not contain them all). Returns
        self."""
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
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def predict(self, X):
        """Class labels (n_samples,), or an indicator matrix (n_samples, n_labels) for
        multilabel problems."""
        return dispatch_output(self._labels(self._forward_output(X)), X)

    def predict_proba(self, X):
        """Probabilities (n_samples, n_classes) in the order of classes_ (for multilabel
        problems, each label's probability)."""
        return dispatch_output(self._probabilities(X), X)

    def _probabilities(self, X):
        output = self._forward_output(X)
        if self.n_outputs_ == 1:
            return numpy.hstack([1 - output, output])
        return output

    def predict_log_proba(self, X):
        """log(predict_proba(X))."""
        probabilities = self._probabilities(X)
        with numpy.errstate(divide="ignore"):
            return dispatch_output(numpy.log(probabilities, out=probabilities), X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor trained by nnback on NumPy or CuPy.

    scikit-learn's ``sklearn.neural_network.MLPRegressor`` with the same parameters and
    meanings, plus ``backend`` and ``dtype`` as in MLPClassifier. A 2-D y gives one output
    per column.

    loss: "squared_error" (half the squared error; a linear output) or "poisson" (half the
        Poisson deviance, with an exponential output: predictions are positive means, for
        counts or rates y >= 0; a negative y is refused with scikit-learn's message for its
        Poisson models).
    """

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 backend="auto", dtype=None):
        super().__init__(**_parameters(locals()))

    def _encode_targets(self, y, incremental):
        return y

    def _output_activation(self):
        return "exp" if self.loss == "poisson" else "identity"

    def _make_loss(self):
        return PoissonDeviance() if self.loss == "poisson" else HalfSquaredError()

    def _score_output(self, output, y, sample_weight=None):
        return r2_score(y, output, sample_weight=sample_weight)

    @available_if(lambda estimator: estimator._check_solver())
    @_training("partial_fit")
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), weighted by sample_weight as in fit. Returns self."""
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def predict(self, X):
        """Predictions (n_samples,), or (n_samples, n_outputs) for a 2-D y."""
        output = self._forward_output(X)
        return dispatch_output(output.ravel() if output.shape[1] == 1 else output, X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
