"""The bottom of nnback: the generic Backend (the readable xp formulas every backend shares),
the buffers layers reuse, the backend errors and the dtype checks. It imports nothing of
nnback; the backends (backend_numpy.py, backend_cupy.py) build on it and backend.py picks
one (get_backend).

The generic methods of :class:`Backend` are written against the array-API subset that NumPy,
CuPy and ``array_api_strict`` share. A backend subclass overrides a method only where it has
a faster path (thinc's ``Ops`` shape); the generic code stays the fallback, and parity tests
keep the two in agreement.

Speed without losing the readable code: the layers and optimizers call backend methods
(``affine``, ``relu``, ``scaled_add``, ...) that take an optional ``out`` array. The generic
method is the readable formula and returns a new array (``out`` is only a hint it may
ignore; array_api_strict has no ``out=``). The fast backends override them with the same
formula written with ``out=`` and in-place operations, so that a training step, after the
first, allocates no new arrays: each layer keeps its outputs in :class:`ReusedBuffers`
keyed by name and shape.

The generic path finds its namespace with array-api-compat (what scikit-learn and SciPy use):
NumPy 1.x, CuPy and PyTorch are not array-API namespaces themselves (no ``device=``, no
``__array_namespace__``, no ``astype`` function in NumPy 1.x or CuPy 13), and
``array_api_compat.array_namespace`` gives a compliant wrapper of each. The fast backends
keep the raw module for their own overrides.
"""
import math
import sys

import array_api_compat
import numpy

VALID_DTYPES = ("float32", "float64")


class BackendUnavailableError(RuntimeError):
    """A backend was asked for by name but cannot run on this machine (the message says why)."""


class DeviceOutOfMemoryError(MemoryError):
    """The device ran out of memory during a step. ``batch_size``: the rows of that step;
    ``needed_bytes``: nnback's rough estimate of what such a step needs on the device."""

    def __init__(self, message, batch_size=None, needed_bytes=None):
        super().__init__(message)
        self.batch_size = batch_size
        self.needed_bytes = needed_bytes


class Backend:
    """Generic backend over any array module ``xp``: an array-API namespace, or NumPy, CuPy or
    PyTorch, which are wrapped in their array-api-compat namespace (see compat_namespace).

    name: short name ("numpy", "cupy", "array_api_strict").
    xp: the array namespace; model code calls only functions every backend's xp shares.
    module: the array module as given (numpy, cupy, ...), for a subclass's fast paths.
    device: where arrays live (None: the namespace's default or current device).
    """

    name = "generic"
    # Whether reshaping a slice of an array gives a view that shares its memory, so that a
    # model may keep all its parameters in one flat array (the array API leaves it open).
    flat_views = False
    # Activations this backend applies together with the bias add of the Dense layer before
    # them (affine_activation): a model marks such pairs when it is built. None here.
    fused_dense_activations = ()
    # Whether float32 matrix products may use TF32 tensor cores (cupy only; see CupyBackend)
    allow_tf32 = False

    def __init__(self, xp, device=None):
        self.module = xp  # the array module as given: what fast paths of a subclass call
        self.xp = compat_namespace(xp)
        self.device = device

    # -- identity ---------------------------------------------------------------------------
    def __repr__(self):
        return f"<nnback Backend {self.name!r} on {self.device_name()}>"

    def device_name(self):
        """A human-readable name of the device the arrays live on."""
        return str(self.device) if self.device is not None else "cpu"

    def device_memory(self):
        """Total memory of the device in bytes, or None where it is not known."""
        return None

    # -- dtypes -----------------------------------------------------------------------------
    def dtype(self, name):
        """The backend's dtype object for "float32" / "float64" (or an integer dtype name)."""
        return getattr(self.xp, str(name))

    @staticmethod
    def dtype_name(dtype):
        """'float32' for float32 on any backend (numpy, cupy and array_api_strict dtypes)."""
        try:
            return numpy.dtype(dtype).name
        except TypeError:  # array_api_strict's dtypes print as "array_api_strict.float32"
            return str(dtype).rsplit(".", 1)[-1]

    # -- moving data ------------------------------------------------------------------------
    def is_array(self, value):
        """True when ``value`` is an array of this backend, on this backend's device."""
        if not is_array_object(value):
            return False
        try:
            if array_api_compat.array_namespace(value) is not self.xp:
                return False
            return self.device is None or array_api_compat.device(value) == self.device
        except Exception:  # an array type array-api-compat does not know
            return False

    def asarray(self, x, dtype=None):
        """Host -> device: ``x`` (NumPy array, list, scalar or an array of this backend) as an
        array of this backend, cast once to ``dtype`` (a name such as "float32") if given.
        Where no transfer or cast is needed (NumPy in, numpy backend) the result may share
        memory with ``x``: nnback never writes into arrays it did not allocate."""
        target = None if dtype is None else self.dtype(dtype)
        if self.is_array(x):
            return x if target is None or x.dtype == target else self.astype(x, target)
        host = host_array(x)
        if not host.flags.writeable:  # PyTorch would share (and warn about) read-only memory
            host = host.copy()
        return self.xp.asarray(host, dtype=target, device=self.device)

    def to_numpy(self, array):
        """Device -> host: a NumPy array holding the same values; never a view of the
        model's own arrays, so changing it changes nothing in the model."""
        return numpy.asarray(array_api_compat.to_device(array, "cpu")).copy()

    def scalars_to_host(self, *scalars):
        """0-d arrays of this backend as Python floats, brought over in one device -> host
        transfer (a bool counts as 0.0 or 1.0)."""
        dtype = scalars[0].dtype
        stacked = self.xp.stack([self.astype(scalar, dtype) for scalar in scalars])
        return tuple(float(value) for value in self.to_numpy(stacked))

    def synchronize(self):
        """Wait until queued device work is done (a no-op on the CPU)."""

    def nccl(self):
        """The NCCL bindings for this backend's devices, where NCCL is available (the cupy
        backend: cupy.cuda.nccl); None elsewhere."""
        return None

    # -- errors -----------------------------------------------------------------------------
    def translate_error(self, exc, batch_size, needed_bytes):
        """The nnback error to raise instead of ``exc``, an exception of this backend's
        array library raised during a step on ``batch_size`` rows that needs about
        ``needed_bytes`` on the device; None to let ``exc`` through as it is."""
        return None

    # -- making arrays ----------------------------------------------------------------------
    def zeros(self, shape, dtype):
        return self.xp.zeros(shape, dtype=self.dtype(dtype), device=self.device)

    def empty(self, shape, dtype):
        return self.xp.empty(shape, dtype=self.dtype(dtype), device=self.device)

    def astype(self, array, dtype):
        """``array`` cast to ``dtype`` (a backend dtype or its name); no copy when it matches."""
        if isinstance(dtype, str):
            dtype = self.dtype(dtype)
        return array if array.dtype == dtype else self.xp.astype(array, dtype)

    def copy(self, array):
        """A new array holding ``array``'s values."""
        return self.xp.asarray(array, copy=True)

    # -- randomness -------------------------------------------------------------------------
    @staticmethod
    def host_rng(seed):
        """A host NumPy Generator: initial weights and shuffles are drawn on the host from it
        and then moved over, so one seed gives the same numbers on every backend."""
        return numpy.random.default_rng(seed)

    # -- compute ----------------------------------------------------------------------------
    # Each method returns its result. ``out`` (an array of the result's shape and dtype, or
    # None) is a hint: a backend with a fast path writes into it and returns it; the generic
    # versions below ignore it and return a new array. Callers always use the return value.
    # None of them writes into an argument other than ``out`` (and ``target`` where named).

    def buffers(self, dtype):
        """A fresh :class:`Buffers` of ``dtype`` for one layer (the generic one keeps
        nothing; a backend with ``out=`` returns ReusedBuffers)."""
        return Buffers()

    def matmul(self, a, b, out=None):
        """a @ b. a: (..., m, k), b: (..., k, n) -> (..., m, n); a may be a sparse matrix
        (see is_sparse), whose product with a dense b is dense."""
        if self.is_sparse(a):
            return a @ b
        return self.xp.matmul(a, b)

    def affine(self, x, weights, bias=None, out=None):
        """x @ weights + bias. x: (n, n_in), weights: (n_in, n_out), bias: (n_out,) or None."""
        y = self.matmul(x, weights)
        return y if bias is None else y + bias

    def affine_activation(self, x, weights, bias, activation, out=None):
        """activation(x @ weights + bias), where activation is the name of one of this
        backend's activation methods ("relu", "sigmoid", "tanh"). A model calls it for the
        pairs a backend fuses (fused_dense_activations)."""
        y = self.affine(x, weights, bias, out=out)
        return getattr(self, activation)(y, out=out)

    def sum_rows(self, array, out=None):
        """Σ over axis 0: (n, m) -> (m,)."""
        return self.xp.sum(array, axis=0)

    def relu(self, x, out=None):
        """max(x, 0)."""
        return self.xp.maximum(x, 0.0)

    def relu_backward(self, grad_y, y, out=None):
        """grad_y where y = relu(x) > 0, else 0."""
        return self.xp.where(y > 0, grad_y, 0.0)

    def sigmoid(self, x, out=None):
        """1 / (1 + e^-x) without overflow for any x (e^-|x| never exceeds 1)."""
        xp = self.xp
        exp_neg_abs = xp.exp(-xp.abs(x))
        # x >= 0: 1/(1+e^-x);  x < 0: e^x/(1+e^x) — the same value, both stable
        return xp.where(x >= 0, 1.0, exp_neg_abs) / (1.0 + exp_neg_abs)

    def sigmoid_backward(self, grad_y, y, out=None):
        """grad_y · y (1 − y), where y = sigmoid(x)."""
        return grad_y * y * (1.0 - y)

    def tanh(self, x, out=None):
        return self.xp.tanh(x)

    def tanh_backward(self, grad_y, y, out=None):
        """grad_y · (1 − y²), where y = tanh(x)."""
        return grad_y * (1.0 - y * y)

    def exp(self, x, out=None):
        return self.xp.exp(x)

    def exp_backward(self, grad_y, y, out=None):
        """grad_y · y, where y = exp(x)."""
        return grad_y * y

    def softmax(self, x, out=None):
        """e^x / Σ e^x along the last axis, shifted by the row maximum (no overflow)."""
        xp = self.xp
        exp_shifted = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
        return exp_shifted / xp.sum(exp_shifted, axis=-1, keepdims=True)

    def scaled_add(self, target, source, scale):
        """target += scale · source, in place (an axpy); returns target."""
        target += scale * source
        return target

    def squared_add(self, target, source, scale):
        """target += scale · source², in place; returns target."""
        target += scale * (source * source)
        return target

    def adam_update(self, param, m, v, step_size, eps):
        """param −= step_size · m / (√v + eps), in place; returns param."""
        param -= step_size * m / (self.xp.sqrt(v) + eps)
        return param

    def scaled_difference(self, a, b, scale, out=None):
        """(a − b) · scale (a loss's gradient: (output − target) · c)."""
        return (a - b) * scale

    def zero_if_finite(self, array):
        """A 0-d array: 0 when every element of ``array`` is finite, else NaN (Σ 0·a: no
        overflow, whatever the values)."""
        return self.xp.sum(array * 0.0)

    def momentum_step(self, param, grad, velocity, lr, momentum, nesterov):
        """SGD with momentum, in place: v ← μ·v + g; p ← p − lr·v (Nesterov:
        p ← p − lr·(g + μ·v), as two axpys); returns param."""
        velocity *= momentum
        velocity += grad
        if nesterov:
            self.scaled_add(param, grad, -lr)
            self.scaled_add(param, velocity, -lr * momentum)
        else:
            self.scaled_add(param, velocity, -lr)
        return param

    def adam_step(self, param, grad, m, v, betas, step_size, eps):
        """Adam, in place: m ← β₁·m + (1 − β₁)·g; v ← β₂·v + (1 − β₂)·g²;
        p ← p − step_size · m / (√v + eps); returns param."""
        beta1, beta2 = betas
        m *= beta1
        self.scaled_add(m, grad, 1 - beta1)
        v *= beta2
        self.squared_add(v, grad, 1 - beta2)
        return self.adam_update(param, m, v, step_size, eps)

    def take_rows(self, array, indices, out=None):
        """array[indices] along axis 0; ``indices`` is an integer array of this backend whose
        values are in range (nnback makes them: the caller validates, not this method). A
        sparse array gives a sparse array of those rows."""
        if self.is_sparse(array):
            return array[indices]
        return self.xp.take(array, indices, axis=0)

    # -- sparse inputs ----------------------------------------------------------------------
    # A model's input X may be a sparse matrix (text features: TF-IDF, one-hot codes): the
    # first Dense layer multiplies it as it is (forward X·W, weight gradient Xᵀ·g), so that
    # nothing densifies X as a whole. A backend that has sparse matrices says so here.

    def is_sparse(self, value):
        """Whether ``value`` is a sparse matrix (or array) of this backend's sparse module;
        the generic backend has none."""
        return False

    def sparse_rows(self, value, dtype=None):
        """A sparse matrix (this backend's or a host scipy.sparse one) as this backend's
        CSR matrix of ``dtype`` (rows are cut cheaply from CSR)."""
        raise TypeError(f"the {self.name} backend takes no sparse input; use numpy or cupy, "
                        "or pass a dense array (X.toarray())")


class Buffers:
    """Arrays that one layer reuses from call to call: ``get(name, shape)`` returns an
    uninitialised array to pass as ``out=``, or None where the backend has no ``out=``
    (this base class, used by the generic backends), so that the methods allocate.

    Whatever a layer writes into a buffer stays valid until that layer's next call with the
    same shape: arrays returned to users cross the public edge as copies."""

    def get(self, name, shape):
        return None


class ReusedBuffers(Buffers):
    """Buffers that are kept: one array per (name, shape), all of one dtype. A few shapes
    are held at once (a fit sees its batch size, the last short batch and the validation
    set); past ``max_entries`` arrays the pool starts afresh, so no shape is held forever."""

    def __init__(self, backend, dtype, max_entries=16):
        self._backend = backend
        self._dtype = dtype
        self._arrays = {}
        self.max_entries = max_entries

    def get(self, name, shape):
        key = (name, shape)
        array = self._arrays.get(key)
        if array is None:
            if len(self._arrays) >= self.max_entries:
                self._arrays.clear()
            array = self._arrays[key] = self._backend.empty(shape, self._dtype)
        return array


def check_dtype(dtype):
    """'float32' or 'float64' from a name or a dtype object; ValueError otherwise."""
    name = Backend.dtype_name(dtype) if not isinstance(dtype, str) else dtype.strip().lower()
    if name not in VALID_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(VALID_DTYPES)}, got {dtype!r}")
    return name


def compat_namespace(xp):
    """The array-API namespace for the array module ``xp``: array-api-compat's wrapper of
    NumPy, CuPy or PyTorch (which take no ``device=`` and lack array-API functions in some
    versions), or ``xp`` itself when it already is an array-API namespace
    (array_api_strict, or a wrapper from array-api-compat)."""
    if array_api_compat.is_numpy_namespace(xp) or array_api_compat.is_cupy_namespace(xp) \
            or array_api_compat.is_torch_namespace(xp):
        return array_api_compat.array_namespace(xp.empty(0))
    return xp


def is_host_sparse(value):
    """Whether ``value`` is a scipy.sparse matrix or array (while scipy.sparse has not been
    imported, nothing can be one: scipy is not imported to find out)."""
    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and sparse.issparse(value)


_SCALES = {}  # (dtype, size) -> a read-only vector of 2**-13, for all_finite
_SMALL = 4096  # 2**12 values times 2**-13 each: their sum cannot overflow


def all_finite(host):
    """Whether every value of the float host array ``host`` is finite. A small array takes
    one dot product with a vector of 2**-13: finite values cannot overflow that sum, while
    an infinity or a NaN makes it infinite or NaN. One BLAS call instead of isfinite and a
    reduction: about 0.5 µs less for the few rows of a training step. (An array with
    both +inf and -inf may warn "invalid value" from the dot before it is refused.)"""
    if host.size <= _SMALL and host.dtype.isnative:
        key = (host.dtype, host.size)
        scale = _SCALES.get(key)
        if scale is None:
            scale = numpy.full(host.size, 2.0 ** -13, dtype=host.dtype)
            scale.flags.writeable = False
            scale = _SCALES.setdefault(key, scale)
        try:
            if math.isfinite(host.reshape(-1).dot(scale)):
                return True
        except (FloatingPointError, RuntimeWarning):  # numpy.seterr or warnings as errors
            pass
    return bool(numpy.logical_and.reduce(numpy.isfinite(host), axis=None))


def as_csr(value, dtype=None):
    """The sparse matrix ``value`` (scipy's or cupyx's) in CSR format, cast to ``dtype``
    where it has another."""
    rows = value.tocsr()
    return rows if dtype is None or rows.dtype == numpy.dtype(dtype) else rows.astype(dtype)


def is_array_object(value):
    """Whether ``value`` is an array of an array library (NumPy, CuPy, PyTorch, or any
    array-API library), which NumPy 1.x and CuPy arrays are without an
    ``__array_namespace__`` method."""
    return array_api_compat.is_array_api_obj(value) and not isinstance(value, numpy.generic)


def host_array(value):
    """``value`` (a NumPy array, a list, a scalar) as a host NumPy array, float16 and other
    odd floats widened to float64. An array of a device library is refused with
    TypeError: it moves through its backend's to_numpy, never implicitly."""
    if is_array_object(value) and not isinstance(value, numpy.ndarray):
        raise TypeError(
            f"a {type(value).__module__.split('.')[0]} array cannot become a NumPy array "
            "implicitly; move it with its backend's to_numpy first")
    host = numpy.asarray(value)
    if host.dtype.kind == "f" and host.dtype.itemsize not in (4, 8):
        host = host.astype(numpy.float64)
    return host
