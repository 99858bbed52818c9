"""Sequential and MLP: forward, backward, train_step, fit, predict, and History.

A model is a list of layers bound to one Backend and one dtype. Data crosses between host
and device only at the edges: inputs once per call (once per fit), predictions and the
per-epoch loss on the way out.
"""
import functools
import math
import operator
import signal
import threading
import weakref
from contextlib import contextmanager, nullcontext

from .backend import check_dtype, get_backend
from .layers import (ACTIVATIONS, Dense, Layer, LeakyReLU, ReLU, activation_layer,
                     activation_name)
from .losses import get_loss
from .flat import pack, size_of, views_of
from .optim import Optimizer, get_optimizer
from . import fileformat, validation
from . import threads
from .threads import ModelGuard
from .validation import ShapeError, check_bool, check_positive_int, check_seed


class DivergenceError(FloatingPointError):
    """The training loss became NaN or infinite; the model holds the weights of the last
    finite epoch (``epoch`` and ``lr`` say where and with what learning rate)."""

    def __init__(self, message, epoch=None, lr=None):
        super().__init__(message)
        self.epoch = epoch
        self.lr = lr


class History:
    """What fit recorded, one entry per completed epoch (Keras's History).

    loss: mean training loss of each epoch (each mini-batch's loss weighted by its size).
    val_loss: loss on validation_data after each epoch (empty without validation data).
    """

    def __init__(self):
        self.loss = []
        self.val_loss = []
        self.epoch = []

    @property
    def history(self):
        """{"loss": [...], "val_loss": [...]} (Keras's History.history)."""
        record = {"loss": self.loss}
        if self.val_loss:
            record["val_loss"] = self.val_loss
        return record

    def __len__(self):
        return len(self.epoch)

    def __repr__(self):
        last = f", last loss {self.loss[-1]:.6g}" if self.loss else ""
        return f"<History: {len(self)} epochs{last}>"


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

    _parallel = None  # a nnback.distributed.DataParallel while a distributed fit trains

    def __init__(self, layers, backend="auto", dtype="float32", seed=None, allow_tf32=False):
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
        self.backend = get_backend(backend, allow_tf32=check_bool("allow_tf32", allow_tf32))
        self.xp = self.backend.xp
        self.dtype = check_dtype(dtype)
        self.seed = check_seed("seed", seed)
        self.layers = layers
        self.history = None
        rng = self.backend.host_rng(seed)
        for number, layer in enumerate(dense_layers, start=1):
            layer.number = number
        for position, layer in enumerate(layers):
            if isinstance(layer, Dense):
                following = layers[position + 1] if position + 1 < len(layers) else None
                layer.build(self.backend, self.dtype, rng, init=self._auto_init(layer, following))
            else:
                layer.build(self.backend, self.dtype)
            layer._owner = weakref.ref(self)
        self._mark_fused_pairs()
        self._pack(gradients=False)  # parameters in one flat array from the start: _trainable
        self._start_threading()

    def _start_threading(self):
        """The guard that keeps threads apart and each thread's prediction buffers (made
        anew, not copied, when a model is copied or unpickled)."""
        self._guard = ModelGuard()
        self._per_thread = threading.local()
        # a layer without its own infer (a custom one) keeps state in its forward: then
        # predictions take turns
        self._serial_predictions = threading.Lock() if any(
            type(layer).infer is Layer.infer for layer in self.layers) else None

    def __getstate__(self):
        """A copy or pickle holds the layers, arrays and backend (by name); not the guard,
        the threads' buffers or the module ``xp``, which are made anew."""
        state = dict(self.__dict__)
        for name in ("_guard", "_per_thread", "_serial_predictions", "xp"):
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.xp = self.backend.xp
        for layer in self.layers:
            layer._owner = weakref.ref(self)
        self._start_threading()

    def _mark_fused_pairs(self):
        """Let each Dense layer apply the activation right after it where the backend fuses
        the bias add with that activation (cupy: one kernel after the GEMM)."""
        fusable = self.backend.fused_dense_activations
        names = {cls: name for name, cls in ACTIVATIONS.items()}
        for layer, following in zip(self.layers, self.layers[1:]):
            if isinstance(layer, Dense):
                name = names.get(type(following))
                fused = name in fusable
                layer.fused_activation = name if fused else None
                following.applied_by_dense = fused

    @staticmethod
    def _auto_init(layer, following):
        if layer.init != "auto":
            return layer.init
        return "he_uniform" if isinstance(following, (ReLU, LeakyReLU)) else "glorot_uniform"

    # -- description ------------------------------------------------------------------------
    @property
    def dense_layers(self):
        return [layer for layer in self.layers if isinstance(layer, Dense)]

    @property
    def n_features_in(self):
        """Number of input features (the first Dense layer's n_in)."""
        return self.dense_layers[0].n_in

    @property
    def n_outputs(self):
        return self.dense_layers[-1].n_out

    @property
    def layer_sizes(self):
        dense = self.dense_layers
        return [dense[0].n_in] + [layer.n_out for layer in dense]

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
        with self._device_errors(x.shape[0], training=False):
            out = self.backend.copy(self._forward(x))  # the layers reuse their output buffers
        self._last_forward = (tuple(out.shape), single)
        return out

    @_predicting("forward(training=False)")
    def _predict_on_device(self, x):
        with self._device_errors(x.shape[0], training=False):
            return self.backend.copy(self._infer(x))

    def _forward(self, x):
        """The training forward pass: each layer keeps what its backward needs."""
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def _infer(self, x, stop=None):
        """Output of layers[:stop] for a prepared backend array x, saving nothing: each
        layer writes into this thread's own buffers, so threads predict at once. The
        result is valid until this thread's next prediction."""
        try:
            buffers = self._per_thread.buffers
        except AttributeError:
            buffers = self._per_thread.buffers = [self.backend.buffers(self.dtype).get
                                                  for _ in self.layers]
        layers = self.layers if stop is None else self.layers[:stop]
        if self._serial_predictions is None:
            return _infer_through(layers, buffers, x)
        with self._serial_predictions:
            return _infer_through(layers, buffers, x)

    @_training("backward")
    def backward(self, grad_out):
        """Backpropagate dLoss/doutput (a backend array of the shape forward returned)
        through every layer; fills each layer's gradients and returns dLoss/dX (the shape of
        the X given to forward)."""
        if getattr(self, "_last_forward", None) is None:
            raise RuntimeError("backward needs a forward pass first: call model.forward(X)")
        validation.check_same_backend(self.backend, grad_out, "grad_out")
        validation.check_device_array(self.backend, grad_out, "grad_out", float_only=True)
        shape, single = self._last_forward
        shown = shape[1:] if single else shape
        if tuple(grad_out.shape) != shown:
            raise ShapeError(
                f"grad_out has shape {tuple(grad_out.shape)} but the last forward pass gave "
                f"an output of shape {shown}"
            )
        grad = self.xp.reshape(grad_out, shape) if single else grad_out
        grad = self.backend.astype(grad, self.dtype)
        self._gradient_scale = 1.0  # these gradients are the plain ones (see _step)
        grad_in = self.backend.copy(self._backward(grad, len(self.layers), need_input_grad=True))
        return grad_in[0, ...] if single else grad_in

    def _backward(self, grad, stop, need_input_grad=False):
        """Backward through layers[:stop], top to bottom; returns dLoss/dinput or None."""
        for position in range(stop - 1, -1, -1):
            layer = self.layers[position]
            if position == 0 and isinstance(layer, Dense):
                grad = layer.backward(grad, need_input_grad=need_input_grad)
            else:
                grad = layer.backward(grad)
        return grad

    # -- parameters -------------------------------------------------------------------------
    def parameters(self):
        """The parameter arrays on the backend: [W1, b1, W2, b2, ...] (no b for bias=False)."""
        return [param for layer in self.layers for param in layer.parameters()]

    def gradients(self):
        return [grad for layer in self.layers for grad in layer.gradients()]

    def _parameter_names(self):
        names = []
        for layer in self.dense_layers:
            names.append(f"W of Dense layer {layer.number}")
            if layer.bias:
                names.append(f"b of Dense layer {layer.number}")
        return names

    def get_weights(self):
        """[W1, b1, W2, b2, ...] as host NumPy arrays (copies); W: (n_in, n_out), b: (n_out,)."""
        return [self.backend.to_numpy(param) for param in self.parameters()]

    def set_weights(self, weights):
        """Replace the parameters with ``weights`` (the order and shapes of get_weights),
        cast to the model's dtype. Nothing changes unless every array fits."""
        params = self.parameters()
        names = self._parameter_names()
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
            host, _ = validation.to_host(self.backend, value, name)
            host = validation.check_fits(validation.check_numeric(host, name), self.dtype, name)
            if tuple(host.shape) != tuple(param.shape):
                raise ShapeError(
                    f"set_weights: {name} must have shape {tuple(param.shape)}, got "
                    f"{tuple(host.shape)}"
                )
            converted.append(self.backend.asarray(host, self.dtype))
        for param, value in zip(params, converted):
            param[...] = value

    def get_gradients(self):
        """The gradients of the last backward pass, as host NumPy arrays in get_weights order."""
        grads = self.gradients()
        if any(grad is None for grad in grads):
            raise RuntimeError("no gradients yet: call model.backward(grad) after forward")
        scale = getattr(self, "_gradient_scale", 1.0)  # a training step may fold one in
        if scale != 1.0:
            return [self.backend.to_numpy(grad) / scale for grad in grads]
        return [self.backend.to_numpy(grad) for grad in grads]

    def _snapshot(self, optimizer, into=None):
        """What fit restores when an epoch fails: device copies of the parameters and of
        ``optimizer``'s state, and its step count. Copies into ``into``'s arrays when it
        has the same layout (the state appears on the optimizer's first step)."""
        arrays = self.parameters() + optimizer.state_arrays()
        if into is not None and len(into[0]) == len(arrays):
            copies = into[0]
            for saved, array in zip(copies, arrays):
                saved[...] = array
        else:
            copies = [self.backend.copy(array) for array in arrays]
        return copies, optimizer.iterations, optimizer.state is not None

    def _restore(self, snapshot, optimizer):
        copies, iterations, had_state = snapshot
        if not had_state:
            optimizer.reset()
        for array, saved in zip(self.parameters() + optimizer.state_arrays(), copies):
            array[...] = saved
        optimizer.iterations = iterations

    def _parameters_finite(self):
        """Whether every parameter is finite (one reduction brought to the host)."""
        return bool(self.backend.to_numpy(self._finite_on_device()))

    def _finite_on_device(self):
        """A 0-d backend bool array: whether every parameter is finite (no sync)."""
        xp = self.xp
        return xp.all(xp.stack([xp.all(xp.isfinite(param)) for param in self.parameters()]))

    def _epoch_result(self, total, n_samples):
        """(mean loss of the epoch, whether the weights are finite) from the epoch's summed
        loss ``total`` (a 0-d backend array): both cross to the host in one transfer."""
        total, finite = self.backend.scalars_to_host(total, self._finite_on_device())
        return total / n_samples, bool(finite)

    def _memory_estimate(self, batch_size, training=True):
        """Rough bytes a step on ``batch_size`` rows needs on the device: the parameters
        (with gradients and up to two optimizer state arrays when training) and every
        layer's output for the batch (with its gradient when training)."""
        itemsize = 4 if self.dtype == "float32" else 8
        n_params = sum(int(math.prod(param.shape)) for param in self.parameters())
        widths = self.n_features_in + sum(layer.n_out for layer in self.dense_layers) * 2
        copies = 2 if training else 1
        return itemsize * (batch_size * widths * copies + n_params * (4 if training else 1))

    @contextmanager
    def _device_errors(self, batch_size, training=True):
        """Within the block, a backend's own error that it can explain (a GPU out of memory)
        comes out as the nnback error it translates to, naming the batch size and the
        memory the step needs."""
        try:
            yield
        except Exception as exc:
            error = self.backend.translate_error(
                exc, batch_size, self._memory_estimate(batch_size, training))
            if error is None:
                raise
            raise error from exc

    # -- prediction -------------------------------------------------------------------------
    @_predicting("predict")
    def predict(self, X):
        """Host NumPy predictions: X (n_samples, n_features) -> (n_samples, n_outputs); a
        single 1-D sample (n_features,) -> (n_outputs,). Safe from any number of threads."""
        x, single = validation.prepare_input(self.backend, X, self.n_features_in, self.dtype)
        with self._device_errors(x.shape[0], training=False):
            out = self.backend.to_numpy(self._infer(x))
        return out[0] if single else out

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
        with self._device_errors(x.shape[0]):
            value = self._step(x, target, loss, optimizer, alpha)
            return float(self.backend.to_numpy(value))

    def _loss_and_gradient(self, out, target, loss, factor=1.0):
        """(loss value, factor · dLoss/d(input of layers[stop-1]), stop). A loss with a fused
        output activation (Sigmoid + BCE, Softmax + SoftmaxCrossEntropy) takes the gradient
        with respect to the logits in one stable expression and skips that layer's
        backward."""
        xp = self.xp
        last = self.layers[-1]
        if loss.output_activation is not None and type(last) is loss.output_activation:
            pred = last.x if self._reads_logits(loss) else out
            value = loss.value(xp, pred, target)
            # (output − target)·scale, the plain-SGD factor folded into the scale
            grad = self.backend.scaled_difference(
                out, target, loss.gradient_scale(out) * factor,
                out=last.buffer("grad_logits", tuple(out.shape)))
            return value, grad, len(self.layers) - 1
        grad = loss.gradient(xp, out, target)
        return loss.value(xp, out, target), grad if factor == 1.0 else grad * factor, \
            len(self.layers)

    def _step(self, x, target, loss, optimizer, alpha=0.0):
        """Train on one prepared batch; returns the loss as a 0-d backend array (no sync).
        In a distributed fit this rank trains on its shard of the batch and the gradients
        and loss become the whole batch's before the update (nnback.distributed)."""
        packed = getattr(self, "_packed", None)
        if packed is None or packed and packed[1] is None:
            self._pack(gradients=True)  # room for the gradients before the first backward
        n_rows = x.shape[0]
        if self._parallel is not None:
            x, target = self._parallel.shard(x, target)
        # An optimizer whose update is a fixed multiple of the gradient (plain SGD: −lr)
        # has it folded into the loss gradient: everything backpropagated is linear in it,
        # so the "gradients" computed are then the update itself, and the optimizer adds
        # them in one pass. get_gradients() divides the factor out again.
        fold = optimizer.folded_scale()
        self._gradient_scale = 1.0 if fold is None else fold
        out = self._forward(x)
        value, grad, stop = self._loss_and_gradient(out, target, loss, self._gradient_scale)
        self._backward(grad, stop)
        if self._parallel is not None:
            value = self._parallel.reduce(value, self.gradients())
        if alpha:
            value = value + self._add_l2(alpha / n_rows)
        params, grads = self._trainable()
        if fold is None:
            optimizer.step(params, grads)
        else:
            optimizer.step_folded(params, grads)
        return value

    def _trainable(self):
        """(params, grads): the lists the optimizer updates (the gradients are those of the
        last backward pass).

        Where the backend's reshaped slices are views (numpy), every parameter lives in one
        flat array and every gradient in another, each layer's W, b, dW, db being views
        of them; the lists are FlatArrays, so the optimizer (its state made alike) updates
        each flat array in one pass instead of making a few calls per parameter, most of a
        small network's step. The parameters are packed when the model is made, so that
        arrays others hold (model.parameters()) stay the model's; the gradients on the
        first training step. A layer whose arrays were replaced (Dense.set_parameters) is
        packed again, keeping its values."""
        packed = getattr(self, "_packed", None)
        if packed is False:
            return self.parameters(), self.gradients()
        if packed is not None and packed[1] is not None and self._still_packed(packed, True):
            return packed[0], packed[1]
        return self._pack(gradients=True)

    def _still_packed(self, packed, with_gradients):
        """Whether every layer still holds the views in ``packed`` (its W and b, and its dW
        and db if ``with_gradients``)."""
        params, _, layers = packed
        if layers[0][0].W.base is not params.flat:  # a copy or unpickling turns views
            return False                           # into arrays of their own
        for layer, (W, b, dW, db) in layers:
            if layer.W is not W or layer.b is not b or with_gradients and (
                    layer.dW is not dW or layer.db is not db):
                return False
        return True

    def _pack(self, gradients):
        """Move the parameters (unless still packed) and, with ``gradients``, the gradients
        into flat arrays, keeping their values; returns (params, grads) as _trainable."""
        layers = [layer for layer in self.layers if layer.parameters()]
        if not self.backend.flat_views or not all(isinstance(layer, Dense) for layer in layers):
            self._packed = False  # not packable, and no need to try again
            return self.parameters(), self.gradients()
        packed = getattr(self, "_packed", None)
        params = self.parameters()
        shapes = [tuple(param.shape) for param in params]
        if packed is not None and self._still_packed(packed, False):
            param_views = packed[0]
        else:
            param_views = self._flat_copy(params, shapes)
        grad_views = None
        if gradients:
            grads = self.gradients()
            grad_views = self._flat_copy(  # none before the first backward pass
                grads if all(grad is not None for grad in grads) else None, shapes)
        start = 0
        for layer in layers:
            stop = start + len(layer.parameters())
            layer.use_arrays(param_views[start:stop],
                             None if grad_views is None else grad_views[start:stop])
            start = stop
        self._packed = (param_views, grad_views,
                        [(layer, (layer.W, layer.b, layer.dW, layer.db)) for layer in layers])
        return param_views, grad_views

    def _flat_copy(self, arrays, shapes):
        """FlatArrays of ``shapes`` over one new flat array, holding the values of
        ``arrays`` (zeros when it is None)."""
        flat = self.backend.zeros((size_of(shapes),), self.dtype)
        if arrays is not None:
            pack(arrays, flat)
        return views_of(flat, shapes)

    def _add_l2(self, scale):
        """Add scale·W to each dW (weights only, not biases; times the factor folded into
        the gradients, see _step); returns ½·scale·Σ‖W‖²."""
        penalty = 0.0
        folded = scale * getattr(self, "_gradient_scale", 1.0)
        for layer in self.dense_layers:
            self.backend.scaled_add(layer.dW, layer.W, folded)
            penalty = penalty + self.xp.sum(layer.W * layer.W)
        return 0.5 * scale * penalty

    @_predicting("evaluate")
    def evaluate(self, X, y, loss="mse"):
        """The loss of the model on (X, y), as a float (no training; safe from any number
        of threads)."""
        loss = get_loss(loss)
        x, _ = validation.prepare_input(self.backend, X, self.n_features_in, self.dtype)
        target = loss.prepare_target(self.backend, y, (x.shape[0], self.n_outputs), self.dtype)
        with self._device_errors(x.shape[0], training=False):
            return float(self.backend.to_numpy(self._loss_value(x, target, loss)))

    def _loss_value(self, x, target, loss):
        """The loss on a prepared batch, by the prediction path (nothing saved). A loss that
        takes logits from a fused Softmax reads the output of the layers below it."""
        if self._reads_logits(loss):
            return loss.value(self.xp, self._infer(x, stop=len(self.layers) - 1), target)
        return loss.value(self.xp, self._infer(x), target)

    def _reads_logits(self, loss):
        """Whether ``loss`` takes the logits, the input of this model's last layer (a
        Softmax it folds into its gradient), rather than the model's output."""
        return getattr(loss, "takes_logits", False) and \
            type(self.layers[-1]) is loss.output_activation

    @_training("fit")
    def fit(self, X, y, loss="mse", optimizer="sgd", lr=None, epochs=100, batch_size=None,
            shuffle=True, seed=None, validation_data=None, verbose=False, alpha=0.0,
            distributed=False):
        """Train with mini-batches; returns a History (also kept as ``model.history``).

        X: (n_samples, n_features); y: (n_samples, n_outputs), (n_samples,) for one output,
        or integer labels for SoftmaxCrossEntropy. loss: a Loss or a name ("mse", "sse",
        "bce", "crossentropy"). optimizer: an Optimizer (its state carries over between fits)
        or a name ("sgd", "adam") built with ``lr`` (default: the optimizer's own, 0.1 for
        SGD, 1e-3 for Adam). batch_size: None for the whole set each step. shuffle: a new
        order each epoch, drawn from ``seed``. validation_data: (X_val, y_val), evaluated
        after every epoch. verbose: a progress bar (tqdm when installed, else one line per
        epoch). alpha: L2 penalty on the weights as in scikit-learn. distributed: True (or an
        nb.distributed.DataParallel) for data-parallel training under ``mpiexec -n N``: every
        rank passes the same arguments, trains on its shard of each batch, and only rank 0
        shows progress (see nnback.distributed).

        X and y move to the device once; mini-batches are cut on the device, and the loss
        comes back once per epoch. If the loss becomes NaN or infinite, the weights of the
        last finite epoch are restored and DivergenceError is raised. Ctrl-C stops after the
        current step with a consistent model, and History holds the completed epochs.
        """
        loss = get_loss(loss)
        if isinstance(optimizer, Optimizer):
            if lr is not None:
                raise ValueError("lr is for an optimizer given by name; set the learning rate "
                                 "on the optimizer you built (nb.SGD(lr=...))")
        optimizer = get_optimizer(optimizer, lr)
        epochs = check_positive_int("epochs", epochs)
        if batch_size is not None:
            batch_size = check_positive_int("batch_size", batch_size)
        shuffle = check_bool("shuffle", shuffle)
        seed = check_seed("seed", seed)
        verbose = check_bool("verbose", verbose)
        alpha = validation.check_fraction("alpha", alpha, high=float("inf"))
        x, _ = validation.prepare_input(self.backend, X, self.n_features_in, self.dtype)
        n_samples = x.shape[0]
        target = loss.prepare_target(self.backend, y, (n_samples, self.n_outputs), self.dtype)
        validation_set = None
        if validation_data is not None:
            try:
                X_val, y_val = validation_data
            except (TypeError, ValueError):
                raise ValueError("validation_data must be a pair (X_val, y_val)") from None
            x_val, _ = validation.prepare_input(self.backend, X_val, self.n_features_in,
                                                self.dtype, name="X_val")
            validation_set = (x_val, loss.prepare_target(
                self.backend, y_val, (x_val.shape[0], self.n_outputs), self.dtype, ))
        batch_size = min(batch_size or n_samples, n_samples)
        parallel = None
        if distributed:
            from .distributed import data_parallel

            parallel = data_parallel(distributed)
            seed = parallel.attach(self, x, target, loss, optimizer, seed)
            verbose = verbose and parallel.is_root
        history = History()
        self.history = history
        self._last_forward = None  # the layers' saved inputs are about to be replaced
        rng = self.backend.host_rng(seed)
        snapshot = self._snapshot(optimizer)
        progress = _Progress(epochs, verbose)
        replicated = (nullcontext() if parallel is None
                      else parallel.training(self, shared_errors=(DivergenceError,)))
        with _deferred_interrupt() as interrupted, progress, replicated:
            for epoch in range(1, epochs + 1):
                try:
                    with self._device_errors(batch_size):
                        epoch_loss = self._run_epoch(x, target, loss, optimizer, batch_size,
                                                     rng if shuffle else None, interrupted,
                                                     alpha)
                        epoch_loss, weights_finite = self._epoch_result(epoch_loss, n_samples)
                        val_loss = None if validation_set is None else float(
                            self.backend.to_numpy(self._loss_value(*validation_set, loss)))
                except Exception:  # not KeyboardInterrupt: that keeps the last step's weights
                    self._restore(snapshot, optimizer)
                    raise
                # the loss is taken before each update: the epoch's last update can still
                # make the weights infinite while the loss looks fine
                if not _finite(epoch_loss) or not weights_finite:
                    self._restore(snapshot, optimizer)
                    what = f"the training loss became {epoch_loss}" if not _finite(epoch_loss) \
                        else "the weights became NaN or infinite"
                    restored = f"after epoch {epoch - 1}" if epoch > 1 else "from before this fit"
                    raise DivergenceError(
                        f"{what} in epoch {epoch} with learning "
                        f"rate {optimizer.lr}; the weights {restored} are restored. "
                        "Lower the learning rate or scale the inputs (e.g. X / X.max(axis=0)).",
                        epoch=epoch, lr=optimizer.lr)
                snapshot = self._snapshot(optimizer, into=snapshot)
                history.epoch.append(epoch)
                history.loss.append(epoch_loss)
                if val_loss is not None:
                    history.val_loss.append(val_loss)
                progress.update(epoch, history)
        return history

    def _run_epoch(self, x, target, loss, optimizer, batch_size, rng, interrupted, alpha=0.0):
        """One pass over (x, target) in mini-batches; returns Σ batch_loss·batch_rows as a 0-d
        backend array. rng: a host Generator to shuffle with, or None for the given order."""
        n_samples = x.shape[0]
        order = None
        if rng is not None and batch_size < n_samples:
            order = self.backend.asarray(rng.permutation(n_samples))
        total = None
        for start in range(0, n_samples, batch_size):
            stop = min(start + batch_size, n_samples)
            if order is not None:  # this batch's rows, gathered into arrays reused per batch
                x_batch = self._take_batch("x", x, order[start:stop])
                target_batch = self._take_batch("target", target, order[start:stop])
            elif batch_size < n_samples:
                x_batch, target_batch = x[start:stop, ...], target[start:stop, ...]
            else:
                x_batch, target_batch = x, target
            value = self._step(x_batch, target_batch, loss, optimizer, alpha)
            weighted = value * (stop - start)
            total = weighted if total is None else total + weighted
            if interrupted:
                raise KeyboardInterrupt
        return total

    def _take_batch(self, name, array, rows):
        """array[rows] (rows: a backend integer array), in a buffer reused per batch shape."""
        buffers = getattr(self, "_batch_buffers", None)
        if buffers is None:
            buffers = self._batch_buffers = self.backend.buffers(self.dtype)
        out = buffers.get(name, (rows.shape[0],) + tuple(array.shape[1:]))
        return self.backend.take_rows(array, rows, out=out)

    # -- files ------------------------------------------------------------------------------
    def save(self, path, extra=None):
        """Write the model to ``path`` atomically: arrays plus JSON metadata, never a pickle
        (nnback.fileformat); ``nb.load`` reads it on any backend. extra: an optional
        JSON-ready dict kept in the file (``nb.load(path, return_extra=True)``)."""
        fileformat.write(path, self.layers, self.get_config(), self.dtype,
                         list(zip(self._parameter_names(), self.get_weights())), extra)


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


@contextmanager
def _deferred_interrupt():
    """Within the block, Ctrl-C (SIGINT) sets a flag instead of raising at once, so that
    fit stops between steps and never inside an in-place update. Yields the flag (a list
    that becomes non-empty). Off the main thread signals cannot be caught; then it does
    nothing."""
    pending = []
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return

    def remember(signum, frame):
        pending.append(signum)

    previous = signal.signal(signal.SIGINT, remember)
    try:
        yield pending
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:  # Ctrl-C after the last step (during the validation loss, say)
        raise KeyboardInterrupt


class _Progress:
    """verbose=True: a tqdm bar over epochs when tqdm is installed, else one printed line
    per epoch."""

    def __init__(self, epochs, verbose):
        self.epochs = epochs
        self.verbose = bool(verbose)
        self.bar = None
        if self.verbose:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=epochs, unit="epoch")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self.bar is not None:
            self.bar.close()

    def update(self, epoch, history):
        if not self.verbose:
            return
        values = {"loss": f"{history.loss[-1]:.6g}"}
        if history.val_loss:
            values["val_loss"] = f"{history.val_loss[-1]:.6g}"
        if self.bar is not None:
            self.bar.set_postfix(values, refresh=False)
            self.bar.update(1)
        else:
            text = " - ".join(f"{key} {value}" for key, value in values.items())
            print(f"epoch {epoch}/{self.epochs} - {text}", flush=True)


def _infer_through(layers, buffers, x):
    """x through each layer's infer, with that layer's buffers."""
    for layer, buffer in zip(layers, buffers):
        x = layer.infer(x, buffer)
    return x


def _in_another_model(layer):
    """Whether ``layer`` is itself one of the layers of a model that still exists (building
    another model would re-initialise it there). A copy of such a layer is free to use."""
    owner = getattr(layer, "_owner", None)
    model = owner() if owner is not None else None
    return model is not None and any(layer is other for other in model.layers)


def _finite(number):
    return number == number and abs(number) != float("inf")
