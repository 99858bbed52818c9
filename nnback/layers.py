"""Dense and the activations: each forward pass sits right above its backward pass.

Every layer is bound to a Backend by ``build`` (the model does this) and then computes
through it: the formulas live in the Backend's methods (``affine``, ``relu``, ...), whose
generic versions are plain ``xp`` code and whose NumPy versions write into ``out``.
``forward`` saves what ``backward`` needs; ``backward(grad_out)`` fills the layer's
gradients (Dense only) and returns the gradient with respect to its input.

Results are written into the layer's own buffers (``self.buffer``), reused by the next
call with the same shape: an array a layer returns is valid until that layer runs again.
A layer never writes into the arrays it is given. Models copy what they hand to users.

``infer(x, buffer)`` is the forward pass that saves nothing: it writes into the buffers
``buffer`` hands out (a model gives each thread its own), so any number of threads may
predict through one layer at once. ``forward`` is ``infer`` into the layer's own buffers
plus what ``backward`` needs.

Shapes: x: (n_samples, n_in), y: (n_samples, n_out); activations keep the shape.
"""
import math

from .validation import check_bool, check_positive_int

INITS = ("auto", "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "normal", "zeros")
INIT_ALIASES = {"xavier": "glorot_uniform", "glorot": "glorot_uniform", "he": "he_normal",
                "kaiming": "he_normal"}


class Layer:
    """Base class: no parameters, not built to any backend yet."""

    # True for an activation that the Dense layer before it applies (its backend fuses the
    # bias add and the activation, Backend.affine_activation): its input is its output.
    applied_by_dense = False

    def build(self, backend, dtype, rng=None):
        """Bind to ``backend`` (arrays of ``dtype``, a name); ``rng`` is the host NumPy
        Generator that layers with parameters draw their initial values from."""
        self.backend = backend
        self.xp = backend.xp
        self.dtype = dtype
        # self.buffer(name, shape): this layer's reusable array called ``name``, to pass as
        # out= (None where the backend has no out=); a bound method, as it runs per call
        self.buffer = backend.buffers(dtype).get

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_owner", None)  # a weak reference to its model: a copy has none yet
        state.pop("xp", None)  # a module: found again from the backend
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if "backend" in state:
            self.xp = self.backend.xp

    def infer(self, x, buffer):
        """The output for x, saving nothing for backward; ``buffer(name, shape)`` hands out
        the arrays to write into. A layer that does not override it (a custom one) runs
        its forward, and the model then lets one thread at a time predict."""
        return self.forward(x)

    def parameters(self):
        """The parameter arrays, in get_weights order."""
        return []

    def gradients(self):
        """The gradients of the last backward pass, in the order of parameters()."""
        return []

    def get_config(self):
        """What save() writes so that load() can rebuild the layer (JSON-ready)."""
        return {}

    @property
    def kind(self):
        return type(self).__name__

    def __repr__(self):
        options = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{self.kind}({options})"


class Dense(Layer):
    """y = x @ W + b.

    x: (n_samples, n_in), W: (n_in, n_out), b: (n_out,), y: (n_samples, n_out).
    init: "auto" (Glorot uniform here; MLP picks He for ReLU layers), "glorot_uniform",
    "glorot_normal", "he_uniform", "he_normal", "normal" (standard normal weights and biases,
    as the from-scratch tutorials draw them) or "zeros". Biases start at 0 except for "normal".
    """

    def __init__(self, n_in, n_out, bias=True, init="auto"):
        self.n_in = check_positive_int("Dense n_in", n_in)
        self.n_out = check_positive_int("Dense n_out", n_out)
        self.bias = check_bool("Dense bias", bias)
        self.init = resolve_init(init)
        self.number = 1  # its position among the model's Dense layers, for error messages
        self.W = self.b = self.dW = self.db = None

    # The name of the activation this layer applies after x @ W + b, where the model found
    # the backend fuses the two (Sequential._mark_fused_pairs); None: x @ W + b only.
    fused_activation = None

    def build(self, backend, dtype, rng=None, init=None):
        super().build(backend, dtype, rng)
        self.dW = self.db = None  # a copied layer must not write into its original's arrays
        if rng is None:
            rng = backend.host_rng(None)
        init = init or self.init
        if init == "zeros":
            self.W = backend.zeros((self.n_in, self.n_out), dtype)
            self.b = backend.zeros((self.n_out,), dtype) if self.bias else None
            return
        weights, biases = self.initial_values(rng, init)
        self.W = backend.asarray(weights, dtype)
        self.b = backend.asarray(biases, dtype) if self.bias else None

    def initial_values(self, rng, init):
        """Host arrays (W: (n_in, n_out), b: (n_out,)) drawn from ``rng`` by ``init``
        (any init but "zeros")."""
        fan_in, fan_out = self.n_in, self.n_out
        shape = (fan_in, fan_out)
        biases = [0.0] * fan_out
        if init in ("auto", "glorot_uniform"):
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            weights = rng.uniform(-limit, limit, size=shape)
        elif init == "glorot_normal":
            weights = rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=shape)
        elif init == "he_uniform":
            limit = math.sqrt(6.0 / fan_in)
            weights = rng.uniform(-limit, limit, size=shape)
        elif init == "he_normal":
            weights = rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)
        else:  # "normal"
            weights = rng.standard_normal(size=shape)
            biases = rng.standard_normal(size=fan_out)
        return weights, biases

    def forward(self, x):
        self.x = x
        return self.infer(x, self.buffer)

    def infer(self, x, buffer):
        out = buffer("y", (x.shape[0], self.n_out))
        if self.fused_activation is None:
            return self.backend.affine(x, self.W, self.b, out=out)
        return self.backend.affine_activation(x, self.W, self.b, self.fused_activation, out=out)

    def backward(self, grad_y, need_input_grad=True):
        # y = x W + b  =>  dW = xᵀ·grad_y, db = Σ_rows grad_y, dx = grad_y·Wᵀ
        # (dW and db are overwritten in place from the second backward pass on)
        dW = self.backend.matmul(self.x.T, grad_y, out=self.dW)
        self.dW = dW if dW is self.dW else self._kept(self.dW, dW)
        if self.b is not None:
            db = self.backend.sum_rows(grad_y, out=self.db)
            self.db = db if db is self.db else self._kept(self.db, db)
        if not need_input_grad:  # the first layer of a training step: nobody reads dx
            return None
        return self.backend.matmul(grad_y, self.W.T, out=self.buffer("grad_x", self.x.shape))

    def _kept(self, held, result):
        """The gradient array to keep: ``held`` with ``result``'s values where the backend
        has views (a model's flat gradient array holds it) but did not write into it (a
        fast path that did not apply), else ``result``."""
        if held is None or result is held or not self.backend.flat_views:
            return result
        held[...] = result
        return held

    def parameters(self):
        return [self.W] if self.b is None else [self.W, self.b]

    def gradients(self):
        return [self.dW] if self.b is None else [self.dW, self.db]

    def set_parameters(self, values):
        """Write the values of W (and b) into the layer's arrays (backend arrays of the right
        shapes, checked by the model); the arrays themselves stay, so a model's flat
        packing of them holds."""
        for param, value in zip(self.parameters(), values):
            param[...] = value

    def use_arrays(self, params, grads=None):
        """Keep W (and b) in ``params`` from now on (the caller copied their values in)
        and, when given, write dW (and db) into ``grads`` (a model passes views of its
        flat arrays)."""
        self.W, self.b = params[0], (params[1] if self.b is not None else None)
        if grads is not None:
            self.dW, self.db = grads[0], (grads[1] if self.b is not None else None)

    def get_config(self):
        return {"n_in": self.n_in, "n_out": self.n_out, "bias": self.bias}


class _Elementwise(Layer):
    """An activation computed by the backend methods ``<function>(x)`` and
    ``<function>_backward(grad_y, y)``, whose derivative is a function of its output y
    (saved by forward)."""

    function = None

    def build(self, backend, dtype, rng=None):
        super().build(backend, dtype, rng)
        # the backend's methods, bound once: a tiny network's step is mostly such calls
        self.apply = getattr(backend, self.function)
        self.derivative = getattr(backend, self.function + "_backward")

    def forward(self, x):
        self.y = self.infer(x, self.buffer)
        return self.y

    def infer(self, x, buffer):
        if self.applied_by_dense:  # the Dense layer below applied it already
            return x
        return self.apply(x, out=buffer("y", x.shape))

    def backward(self, grad_y):
        return self.derivative(grad_y, self.y, out=self.buffer("grad_x", grad_y.shape))


class Sigmoid(_Elementwise):
    """y = 1 / (1 + e^-x), computed without overflow for any x; dy/dx = y (1 − y)."""

    function = "sigmoid"


class Tanh(_Elementwise):
    """y = tanh(x); dy/dx = 1 − y²."""

    function = "tanh"


class ReLU(_Elementwise):
    """y = max(x, 0); dy/dx = 1 where x > 0 (equivalently y > 0), else 0."""

    function = "relu"


class Exp(_Elementwise):
    """y = e^x, a positive output (a Poisson regression's mean); dy/dx = y."""

    function = "exp"


class LeakyReLU(Layer):
    """y = x where x > 0, else negative_slope · x."""

    def __init__(self, negative_slope=0.01):
        if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)) \
                or not 0 <= negative_slope < 1:
            raise ValueError(
                f"LeakyReLU negative_slope must be a number in [0, 1), got {negative_slope!r}"
            )
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        self.positive = x > 0
        self.y = self.xp.where(self.positive, x, self.negative_slope * x)
        return self.y

    def infer(self, x, buffer):
        return self.xp.where(x > 0, x, self.negative_slope * x)

    def backward(self, grad_y):
        return self.xp.where(self.positive, grad_y, self.negative_slope * grad_y)

    def get_config(self):
        return {"negative_slope": self.negative_slope}


class Softmax(Layer):
    """y_ij = e^(x_ij) / Σ_k e^(x_ik), along the last axis; shifted by the row maximum so
    that no exponent is positive (no overflow at x = ±1000)."""

    def forward(self, x):
        self.x = x  # the logits: SoftmaxCrossEntropy reads them when fused with this layer
        self.y = self.infer(x, self.buffer)
        return self.y

    def infer(self, x, buffer):
        return self.backend.softmax(x, out=buffer("y", x.shape))

    def backward(self, grad_y):
        # Jacobian-vector product: dx = y ⊙ (grad_y − Σ_k grad_y_k y_k)
        y = self.y
        return y * (grad_y - self.xp.sum(grad_y * y, axis=-1, keepdims=True))


class Identity(Layer):
    """y = x (a linear output)."""

    def forward(self, x):
        return x

    def infer(self, x, buffer):
        return x

    def backward(self, grad_y):
        return grad_y


ACTIVATIONS = {
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "softmax": Softmax,
    "identity": Identity,
    "exp": Exp,
}
LAYER_TYPES = {cls.__name__: cls for cls in (Dense, *ACTIVATIONS.values())}


def activation_layer(activation):
    """A fresh activation layer from a name ("relu", ...), a class (nb.ReLU) or a layer (an
    unbuilt copy, so that one instance given for every hidden layer is never shared)."""
    if isinstance(activation, Layer) and not isinstance(activation, Dense):
        return type(activation)(**activation.get_config())
    if isinstance(activation, type) and issubclass(activation, Layer) and activation is not Dense:
        return activation()
    if isinstance(activation, str) and activation.strip().lower() in ACTIVATIONS:
        return ACTIVATIONS[activation.strip().lower()]()
    raise ValueError(
        f"unknown activation {activation!r}; valid names: {', '.join(ACTIVATIONS)}"
    )


def activation_name(activation):
    """The name ("relu", ...) of an activation given as a name, a class or a layer; the
    class name in lower case for an activation outside ACTIVATIONS. ValueError if unknown."""
    layer = activation_layer(activation)
    for name, cls in ACTIVATIONS.items():
        if type(layer) is cls:
            return name
    return layer.kind.lower()


def resolve_init(init):
    key = init.strip().lower() if isinstance(init, str) else init
    key = INIT_ALIASES.get(key, key)
    if key not in INITS:
        raise ValueError(
            f"unknown init {init!r}; valid names: {', '.join(INITS + tuple(INIT_ALIASES))}"
        )
    return key


def layer_from_config(kind, config):
    """Rebuild a layer from its class name and get_config() (used by load)."""
    if kind not in LAYER_TYPES:
        raise ValueError(f"unknown layer type {kind!r}; known: {', '.join(LAYER_TYPES)}")
    return LAYER_TYPES[kind](**config)


def build_layers(layers, backend, dtype, rng):
    """Build a model's ``layers`` on ``backend``: Dense layers numbered 1, 2, ... and
    initialised from the host Generator ``rng`` (init="auto": He before a ReLU/LeakyReLU,
    Glorot otherwise), and each Dense layer marked to apply the activation after it where
    the backend fuses the two (cupy: one kernel after the GEMM)."""
    names = {cls: name for name, cls in ACTIVATIONS.items()}
    number = 0
    for position, layer in enumerate(layers):
        following = layers[position + 1] if position + 1 < len(layers) else None
        if not isinstance(layer, Dense):
            layer.build(backend, dtype)
            continue
        number += 1
        layer.number = number
        init = layer.init
        if init == "auto":
            init = "he_uniform" if isinstance(following, (ReLU, LeakyReLU)) else "glorot_uniform"
        layer.build(backend, dtype, rng, init=init)
        if following is not None:
            name = names.get(type(following))
            fused = name in backend.fused_dense_activations
            layer.fused_activation = name if fused else None
            following.applied_by_dense = fused


def forward_through(layers, x):
    """x through each layer's forward (the training pass: each keeps what its backward
    needs); returns the last layer's output."""
    for layer in layers:
        x = layer.forward(x)
    return x


def backward_through(layers, grad, need_input_grad=False):
    """grad (dLoss/d output of the last of ``layers``) back through them, top to bottom,
    filling their gradients; returns dLoss/d input of the first, or None when not
    ``need_input_grad`` and the first is a Dense layer (nobody reads it in a step)."""
    for position in range(len(layers) - 1, -1, -1):
        layer = layers[position]
        if position == 0 and isinstance(layer, Dense):
            return layer.backward(grad, need_input_grad=need_input_grad)
        grad = layer.backward(grad)
    return grad


def infer_through(layers, buffers, x):
    """x through each layer's infer, with that layer's buffers (a list parallel to
    ``layers``): the prediction pass, saving nothing."""
    for layer, buffer in zip(layers, buffers):
        x = layer.infer(x, buffer)
    return x
