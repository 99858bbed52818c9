"""Sequential and MLP: building, forward and backward, the weights, predict and evaluate,
and thin ``train_step``/``fit`` over the one training loop (nnback.training).

A model is a list of layers bound to one Backend and one dtype. Data crosses between host
and device only at the edges: inputs once per call (once per fit), predictions and the
per-epoch loss on the way out.
"""
import functools
import operator
import threading
import weakref
from contextlib import nullcontext

from .backend import check_dtype, get_backend
from .callbacks import CallbackList
from .flat import FlatParameters
from .layers import (Dense, Layer, activation_layer, activation_name, backward_through,
                     build_layers, forward_through, infer_through)
from .losses import get_loss
from .optim import get_optimizer
from .training import (DeviceErrors, DivergenceError, History, Progress, Trainer,
                       prediction_loss)
from . import fileformat, threads, validation
from .threads import ModelGuard
from .validation import (ShapeError, check_bool, check_positive_int, check_seed,
                         check_verbose)

__all__ = ["Sequential", "MLP", "History", "DivergenceError"]  # the last two: from training

_training = functools.partial(threads.training, guard_of=operator.attrgetter("_guard"))
_predicting = functools.partial(threads.predicting, guard_of=operator.attrgetter("_guard"))


class Sequential:
    """Layers applied in order.

    layers: Dense and activation layers; consecutive Dense sizes must chain.
    backend: "auto" | "numpy" | "cupy" or a Backend. dtype: "float32" (default) or "float64".
    seed: seeds the host generator the initial weights are drawn from, so one seed gives the
    same weights on every backend. Dense layers with init="auto" get He initialisation before
    a ReLU/LeakyReLU and Glorot otherwise. allow_tf32: let float32 matrix products use TF32
    tensor cores on cupy (faster, less exact; see get_backend); not saved with the model.

    Threads: any number may predict at once (predict, evaluate, forward(training=False));
    one at a time trains (fit, train_step) or drives forward/backward by hand, and
    predictions wait for no one but are refused while another thread trains (see
    nnback.threads and docs/threads.md).
    """

    gradient_scale = None  # the factor in the last backward's gradients (see get_gradients)

    def __init__(self, layers, backend="auto", dtype="float32", seed=None, allow_tf32=False):
        layers, dense_layers = _checked_layers(layers)
        self.backend = get_backend(backend, allow_tf32=check_bool("allow_tf32", allow_tf32))
        self.xp = self.backend.xp
        self.dtype = check_dtype(dtype)
        self.seed = check_seed("seed", seed)
        self.layers = layers
        self.dense_layers = dense_layers  # the Dense layers of ``layers``, in order
        self.history = None
        build_layers(layers, self.backend, self.dtype, self.backend.host_rng(seed))
        for layer in layers:
            layer._owner = weakref.ref(self)
        self._pack_parameters()
        self._start_threading()

    def _start_threading(self):
        """The guard that keeps threads apart and each thread's prediction buffers (made
        anew, not copied, when a model is copied or unpickled)."""
        self._guard = ModelGuard()
        self._per_thread = threading.local()
        self._stepper = None  # train_step's Trainer
        # a layer without its own infer (a custom one) keeps state in its forward: then
        # predictions take turns
        self._serial_predictions = threading.Lock() if any(
            type(layer).infer is Layer.infer for layer in self.layers) else None

    def __getstate__(self):
        """A copy or pickle holds the layers, arrays and backend (by name); not the guard,
        the threads' buffers or the module ``xp``, which are made anew."""
        state = dict(self.__dict__)
        for name in ("_guard", "_per_thread", "_serial_predictions", "xp", "_flat", "_stepper"):
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.xp = self.backend.xp
        for layer in self.layers:
            layer._owner = weakref.ref(self)
        self._pack_parameters()  # a copy's layers hold arrays of their own, not views
        self._start_threading()

    # -- description ------------------------------------------------------------------------
    @property
    def n_features_in(self):
        """Number of input features (the first Dense layer's n_in)."""
        return self.dense_layers[0].n_in

    @property
    def n_outputs(self):
        return self.dense_layers[-1].n_out

    @property
    def layer_sizes(self):
        return [self.n_features_in] + [layer.n_out for layer in self.dense_layers]

    def __repr__(self):
        inner = ", ".join(map(repr, self.layers))
        return (f"{type(self).__name__}([{inner}], backend={self.backend.name!r}, "
                f"dtype={self.dtype!r})")

    def get_config(self):
        """JSON-ready description that load() rebuilds the model from."""
        return {"class": "Sequential",
                "layers": [{"type": layer.kind, "config": layer.get_config()}
                           for layer in self.layers]}

    # -- forward and backward ---------------------------------------------------------------
    def forward(self, X, training=True):
        """Output of the network for X: (n_samples, n_features) -> (n_samples, n_outputs), a
        backend array of its own (a copy: the next forward pass does not change it). A 1-D X
        of n_features values is one sample and gives (n_outputs,). A backend array is used
        where it is (its shape and dtype are checked; its values are not, to avoid a device
        sync).

        training=True keeps what ``backward`` needs (forward/backward by hand take turns
        between threads); training=False only predicts, as ``predict`` does, from any
        number of threads at once."""
        x, single = validation.prepare_input(self.backend, X, self.n_features_in, self.dtype,
                                             check_values=False)
        out = self._forward_by_hand(x, single) if training else self._predict_on_device(x)
        return out[0, ...] if single else out

    __call__ = forward

    @_training("forward")
    def _forward_by_hand(self, x, single):
        self._last_forward = None  # a forward that fails half-way leaves nothing to backward
        with DeviceErrors(self, x.shape[0], training=False):
            # a copy: the layers reuse their output buffers
            out = self.backend.copy(forward_through(self.layers, x))
        self._last_forward = (tuple(out.shape), single)
        return out

    @_predicting("forward(training=False)")
    def _predict_on_device(self, x):
        with DeviceErrors(self, x.shape[0], training=False):
            return self.backend.copy(self.infer(x))

    def infer(self, x, stop=None):
        """Output of layers[:stop] for a prepared backend array x (nothing checked), saving
        nothing: each layer writes into this thread's own buffers, so threads predict at
        once. The result is valid until this thread's next prediction."""
        try:
            buffers = self._per_thread.buffers
        except AttributeError:
            buffers = self._per_thread.buffers = [self.backend.buffers(self.dtype).get
                                                  for _ in self.layers]
        layers = self.layers if stop is None else self.layers[:stop]
        if self._serial_predictions is None:
            return infer_through(layers, buffers, x)
        with self._serial_predictions:
            return infer_through(layers, buffers, x)

    @_training("backward")
    def backward(self, grad_out):
        """Backpropagate dLoss/doutput (a backend array of the shape forward returned)
        through every layer; fills each layer's gradients and returns dLoss/dX (the shape of
        the X given to forward)."""
        if getattr(self, "_last_forward", None) is None:
            raise RuntimeError("backward needs a forward pass first: call model.forward(X)")
        shape, single = self._last_forward
        grad = validation.prepare_grad_out(self.backend, grad_out, shape, single, self.dtype)
        self.trainable_arrays()  # the gradients go where training puts them
        self.gradient_scale = 1.0  # these gradients are the plain ones
        grad_in = self.backend.copy(backward_through(self.layers, grad, need_input_grad=True))
        return grad_in[0, ...] if single else grad_in

    # -- parameters -------------------------------------------------------------------------
    def parameters(self):
        """The parameter arrays on the backend: [W1, b1, W2, b2, ...] (no b for bias=False)."""
        return [param for layer in self.layers for param in layer.parameters()]

    def gradients(self):
        return [grad for layer in self.layers for grad in layer.gradients()]

    def parameter_names(self):
        """"W of Dense layer 1", "b of Dense layer 1", ... in the order of parameters()."""
        return [f"{name} of Dense layer {layer.number}" for layer in self.dense_layers
                for name in ("W", "b")[:len(layer.parameters())]]

    def get_weights(self):
        """[W1, b1, W2, b2, ...] as host NumPy arrays (copies); W: (n_in, n_out), b: (n_out,)."""
        return [self.backend.to_numpy(param) for param in self.parameters()]

    def set_weights(self, weights):
        """Replace the parameters with ``weights`` (the order and shapes of get_weights),
        cast to the model's dtype. Nothing changes unless every array fits."""
        params = self.parameters()
        converted = validation.prepare_weights(self.backend, self.dtype, weights, params,
                                               self.parameter_names())
        for param, value in zip(params, converted):
            param[...] = value

    def get_gradients(self):
        """The gradients of the last backward pass, as host NumPy arrays in get_weights order."""
        if self.gradient_scale is None:
            raise RuntimeError("no gradients yet: call model.backward(grad) after forward")
        grads = [self.backend.to_numpy(grad) for grad in self.gradients()]
        if self.gradient_scale != 1.0:  # a training step folded a factor in (see Trainer)
            return [grad / self.gradient_scale for grad in grads]
        return grads

    def trainable_arrays(self):
        """(params, grads): what an optimizer updates. Where the backend's reshaped slices
        are views (numpy, cupy), every parameter lives in one flat array and every gradient
        in another (FlatArrays, see nnback.flat.FlatParameters), so that an optimizer
        updates each in one pass."""
        if self._flat is None:
            return self.parameters(), self.gradients()
        return self._flat.params, self._flat.gradients()

    def _pack_parameters(self):
        """Move the parameters into one flat array, keeping their values (when the model is
        made or copied); only Dense layers have parameters to pack."""
        self._flat = None
        if self.backend.flat_views and all(
                isinstance(layer, Dense) for layer in self.layers if layer.parameters()):
            self._flat = FlatParameters(self.backend, self.dtype, self.dense_layers)

    # -- prediction -------------------------------------------------------------------------
    @_predicting("predict")
    def predict(self, X):
        """Host NumPy predictions: X (n_samples, n_features) -> (n_samples, n_outputs); a
        single 1-D sample (n_features,) -> (n_outputs,). Safe from any number of threads."""
        x, single = validation.prepare_input(self.backend, X, self.n_features_in, self.dtype)
        with DeviceErrors(self, x.shape[0], training=False):
            out = self.backend.to_numpy(self.infer(x))
        return out[0] if single else out

    @_predicting("evaluate")
    def evaluate(self, X, y, loss="mse"):
        """The loss of the model on (X, y), as a float (no training; safe from any number
        of threads)."""
        loss = get_loss(loss)
        x, _ = validation.prepare_input(self.backend, X, self.n_features_in, self.dtype)
        target = loss.prepare_target(self.backend, y, (x.shape[0], self.n_outputs), self.dtype)
        with DeviceErrors(self, x.shape[0], training=False):
            return self.backend.scalars_to_host(prediction_loss(self, x, target, loss))[0]

    # -- training ---------------------------------------------------------------------------
    @_training("train_step")
    def train_step(self, X, y, loss, optimizer, alpha=0.0):
        """One forward pass, loss, backward pass and optimizer update on (X, y); returns the
        loss before the update as a float. alpha: L2 penalty as in scikit-learn."""
        loss = get_loss(loss)
        optimizer = get_optimizer(optimizer)
        alpha = validation.check_fraction("alpha", alpha, high=float("inf"))
        x, _ = validation.prepare_input(self.backend, X, self.n_features_in, self.dtype)
        target = loss.prepare_target(self.backend, y, (x.shape[0], self.n_outputs), self.dtype)
        self._last_forward = None  # the layers' saved inputs are about to be replaced
        trainer = self._stepper  # kept between calls with the same loss, optimizer, alpha
        if trainer is None or (trainer.loss, trainer.optimizer, trainer.alpha) != (
                loss, optimizer, alpha):
            trainer = self._stepper = Trainer(self, loss, optimizer, alpha)
        with DeviceErrors(self, x.shape[0]):
            return self.backend.scalars_to_host(trainer.step(x, target))[0]

    @_training("fit")
    def fit(self, X, y, loss="mse", optimizer="sgd", lr=None, epochs=100, batch_size=None,
            shuffle=True, seed=None, validation_data=None, verbose=False, alpha=0.0,
            distributed=False, sample_weight=None, callbacks=None):
        """Train with mini-batches; returns a History (also kept as ``model.history``).

        X: (n_samples, n_features); y: (n_samples, n_outputs), (n_samples,) for one output,
        or integer labels for SoftmaxCrossEntropy. loss: a Loss or a name ("mse", "sse",
        "bce", "crossentropy", "poisson"). optimizer: an Optimizer (its state carries over
        between fits) or a name ("sgd", "adam") built with ``lr`` (default: 0.1 for SGD,
        1e-3 for Adam). batch_size: None for the whole set each step. shuffle: a new order
        each epoch, drawn from ``seed``. validation_data: (X_val, y_val) or (X_val, y_val,
        w_val), evaluated after every epoch. verbose: 1 (True) a progress bar (tqdm, else a
        line per epoch), 2 a line per epoch, 0 nothing. alpha: L2 penalty on the weights as
        in scikit-learn. sample_weight: a weight >= 0 per row of X; each batch's loss is
        their weighted mean (as scikit-learn's and Keras's). distributed: True (or a
        DataParallel) for data-parallel training under ``mpiexec -n N`` (nnback.distributed).
        callbacks: a list of nnback.callbacks objects (EarlyStopping, ModelCheckpoint, ...).

        X and y move to the device once; mini-batches are cut on the device, and the loss
        comes back once per epoch. If the loss becomes NaN or infinite, the weights of the
        last finite epoch are restored and DivergenceError is raised. A first Ctrl-C stops
        after the current step with a consistent model (a second one at once, back to the
        last completed epoch), and History holds the completed epochs.
        """
        loss, optimizer = get_loss(loss), get_optimizer(optimizer, lr)
        epochs = check_positive_int("epochs", epochs)
        if batch_size is not None:
            batch_size = check_positive_int("batch_size", batch_size)
        shuffle, verbose = check_bool("shuffle", shuffle), check_verbose("verbose", verbose)
        seed = check_seed("seed", seed)
        alpha = validation.check_fraction("alpha", alpha, high=float("inf"))
        x, target, weights = self._prepared(loss, X, y, sample_weight)
        if validation_data is not None:
            validation_data = self._prepared(
                loss, *validation.unpack_validation_data(validation_data), suffix="_val")
        hooks = CallbackList(self, callbacks, validation_data is not None)
        end_of_epoch = hooks.begin()  # before any change: a bad setting fails here
        self.history = History()
        self._last_forward = None  # the layers' saved inputs are about to be replaced
        replicated, seed, verbose = _replicated(self, distributed, x, target, loss, optimizer,
                                                seed, verbose, weights)
        with replicated as sharding:  # sharding: what splits the batches between ranks
            Trainer(self, loss, optimizer, alpha, parallel=sharding).fit(
                x, target, epochs, min(batch_size or x.shape[0], x.shape[0]),
                self.backend.host_rng(seed) if shuffle else None, validation_data,
                end_of_epoch, Progress(epochs, verbose), self.history, weights)
        hooks.end()
        return self.history

    def _prepared(self, loss, X, y, sample_weight=None, suffix=""):
        """(x, target, weights or None) checked and on the device, as fit trains on them."""
        x, _ = validation.prepare_input(self.backend, X, self.n_features_in, self.dtype,
                                        name="X" + suffix)
        return x, loss.prepare_target(self.backend, y, (x.shape[0], self.n_outputs),
                                      self.dtype), validation.prepare_sample_weight(
            self.backend, sample_weight, x.shape[0], self.dtype, "sample_weight" + suffix)

    def save(self, path, extra=None):
        """Write the model to ``path`` atomically: arrays plus JSON metadata, never a pickle
        (nnback.fileformat); ``nb.load`` reads it on any backend. extra: an optional
        JSON-ready dict kept in the file (``nb.load(path, return_extra=True)``)."""
        fileformat.write(path, self.layers, self.get_config(), self.dtype,
                         list(zip(self.parameter_names(), self.get_weights())), extra)


class MLP(Sequential):
    """A multilayer perceptron: Dense layers of ``layer_sizes`` with ``activation`` between
    them and ``output`` after the last one.

    layer_sizes: [n_features, hidden..., n_outputs], e.g. [2, 3, 1].
    activation, output: "sigmoid", "tanh", "relu", "leaky_relu", "softmax" or "identity".
    bias: whether the Dense layers have biases. init: see Dense. allow_tf32: see Sequential.
    """

    def __init__(self, layer_sizes, activation="sigmoid", output="sigmoid", bias=True,
                 backend="auto", dtype="float32", seed=None, init="auto", allow_tf32=False):
        try:
            sizes = list(layer_sizes)
        except TypeError:
            raise TypeError(
                f"layer_sizes must be a list like [2, 3, 1], got {layer_sizes!r}") from None
        if len(sizes) < 2:
            raise ValueError(
                f"layer_sizes needs at least an input and an output size, got {sizes}")
        for position, size in enumerate(sizes):
            check_positive_int(f"layer_sizes[{position}]", size)
        layers = []
        for position, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
            layers.append(Dense(n_in, n_out, bias=bias, init=init))
            is_last = position == len(sizes) - 2
            layers.append(activation_layer(output if is_last else activation))
        self.activation = activation_name(activation)  # checked even where no layer uses it
        self.output = activation_name(output)
        self.bias = bool(bias)
        super().__init__(layers, backend=backend, dtype=dtype, seed=seed,
                         allow_tf32=allow_tf32)

    def get_config(self):
        config = super().get_config()
        config["class"] = "MLP"
        config["mlp"] = {"activation": self.activation, "output": self.output}
        return config


def _replicated(model, distributed, x, target, loss, optimizer, seed, verbose, weights):
    """(context the fit runs in, seed, verbose): for distributed=True (or a DataParallel),
    the data-parallel group attached to ``model`` (the seed agreed by the ranks, progress on
    rank 0 only); else nothing to enter."""
    if not distributed:
        return nullcontext(), seed, verbose
    from .distributed import data_parallel

    if weights is not None:
        raise ValueError("sample_weight is not supported with distributed=True yet")
    parallel = data_parallel(distributed)
    seed = parallel.attach(model, x, target, loss, optimizer, seed)
    return (parallel.training(shared_errors=(DivergenceError,)), seed,
            verbose if parallel.is_root else 0)


def _checked_layers(layers):
    """(layers as a list, its Dense layers) after checking that they make a model: nnback
    layers, each used once and in no other model, Dense sizes that chain."""
    try:
        layers = list(layers)
    except TypeError:
        raise TypeError(f"layers must be a list of nnback layers, got "
                        f"{type(layers).__name__}") from None
    if not layers:
        raise ValueError("Sequential needs at least one layer")
    for position, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(
                f"layer {position} must be an nnback layer (nb.Dense, nb.ReLU, ...), "
                f"got {type(layer).__name__}"
            )
        if any(layer is earlier for earlier in layers[:position]):
            raise ValueError(f"layer {position} ({layer!r}) is the same object as an "
                             "earlier layer; give each position its own layer")
        if _in_another_model(layer):
            raise ValueError(
                f"layer {position} ({layer!r}) already belongs to a model, and building "
                f"another model with it would re-initialise it there; make a new one"
            )
    dense_layers = [layer for layer in layers if isinstance(layer, Dense)]
    if not dense_layers:
        raise ValueError("Sequential needs at least one Dense layer")
    for number, (lower, upper) in enumerate(zip(dense_layers, dense_layers[1:]), start=2):
        if upper.n_in != lower.n_out:
            raise ShapeError(
                f"Dense layer {number} expects {upper.n_in} inputs but Dense layer "
                f"{number - 1} gives {lower.n_out}; make them equal"
            )
    return layers, dense_layers


def _in_another_model(layer):
    """Whether ``layer`` is itself one of the layers of a model that still exists (building
    another model would re-initialise it there). A copy of such a layer is free to use."""
    owner = getattr(layer, "_owner", None)
    model = owner() if owner is not None else None
    return model is not None and any(layer is other for other in model.layers)
