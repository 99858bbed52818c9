"""Array backends: one object per array library that owns everything backend-specific.

Model code never imports numpy or cupy. It asks its Backend for ``xp`` (the array module)
and goes through the Backend for the few things the array modules do differently: moving
arrays between host and device, synchronising, making arrays on the right device, dtypes,
and the host random generator that seeds the weights.

The generic methods of :class:`Backend` are written against the array-API subset that NumPy,
CuPy and ``array_api_strict`` share. A backend subclass overrides a method only where it has
a faster path (thinc's ``Ops`` shape); the generic code stays the fallback, and parity tests
keep the two in agreement.

Speed without losing the readable code: the layers and optimizers call backend methods
(``affine``, ``relu``, ``scaled_add``, ...) that take an optional ``out`` array. The generic
method is the readable formula and returns a new array (``out`` is only a hint it may
ignore; array_api_strict has no ``out=``). :class:`NumpyBackend` overrides them with the same
formula written with ``out=`` and in-place ufuncs, so that a training step, after the
first, allocates no new arrays: each layer keeps its outputs in :class:`Buffers` keyed by
name and shape, and transient intermediates live in a per-thread scratch space.

This is the only module that imports cupy, and it does so lazily.
"""
import math
import os
import threading

import numpy

from . import _cupy_kernels as _kernels

VALID_BACKENDS = ("auto", "numpy", "cupy", "array_api_strict")
VALID_DTYPES = ("float32", "float64")
ENV_VAR = "NNBACK_BACKEND"

CUPY_INSTALL_HINT = (
    "pip install 'nnback[cuda12]' (CUDA 12) or 'nnback[cuda13]' (CUDA 13), matching the CUDA "
    "version that `nvidia-smi` reports"
)


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
    """Generic backend over any array-API module ``xp``.

    name: short name ("numpy", "cupy", "array_api_strict").
    xp: the array module; model code calls only functions every backend's xp shares.
    device: where arrays live (None where the module has a single default device).
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
        self.xp = xp
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
        if not hasattr(value, "__array_namespace__"):
            return False
        try:
            if value.__array_namespace__() is not self.xp:
                return False
        except Exception:
            return False
        return self.device is None or getattr(value, "device", None) == self.device

    def asarray(self, x, dtype=None):
        """Host -> device: ``x`` (NumPy array, list, scalar or an array of this backend) as an
        array of this backend, cast once to ``dtype`` (a name such as "float32") if given.
        Where no transfer or cast is needed (NumPy in, numpy backend) the result may share
        memory with ``x``: nnback never writes into arrays it did not allocate."""
        target = None if dtype is None else self.dtype(dtype)
        if self.is_array(x):
            return x if target is None or x.dtype == target else self.astype(x, target)
        host = numpy.asarray(x)
        if target is None and host.dtype.kind == "f" and host.dtype.itemsize not in (4, 8):
            host = host.astype(numpy.float64)
        return self.xp.asarray(host, dtype=target, device=self.device)

    def to_numpy(self, array):
        """Device -> host: a NumPy array holding the same values; never a view of the
        model's own arrays, so changing it changes nothing in the model."""
        return numpy.asarray(array)

    def synchronize(self):
        """Wait until queued device work is done (a no-op on the CPU)."""

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

    def arange(self, n):
        return self.xp.arange(n, device=self.device)

    def astype(self, array, dtype):
        """``array`` cast to ``dtype`` (a backend dtype or its name); no copy when it matches."""
        if isinstance(dtype, str):
            dtype = self.dtype(dtype)
        return array if array.dtype == dtype else self.xp.astype(array, dtype)

    def copy(self, array):
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
        nothing)."""
        return Buffers()

    def matmul(self, a, b, out=None):
        """a @ b. a: (..., m, k), b: (..., k, n) -> (..., m, n)."""
        return self.xp.matmul(a, b)

    def affine(self, x, weights, bias=None, out=None):
        """x @ weights + bias. x: (n, n_in), weights: (n_in, n_out), bias: (n_out,) or None."""
        y = self.xp.matmul(x, weights)
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

    def loss_gradient_through_activation(self, loss, output, target):
        """dLoss/dz for a loss fused with its output activation, output = activation(z)
        (Loss.gradient_through_activation)."""
        return loss.gradient_through_activation(self.xp, output, target)

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
        values are in range (nnback makes them: the caller validates, not this method)."""
        return self.xp.take(array, indices, axis=0)


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


class NumpyBackend(Backend):
    """NumPy on the CPU. The compute methods override the generic ones with the same
    formulas written with ``out=`` and in-place ufuncs (no temporaries); each checks that
    its fast path applies (an ``out`` of the right shape and dtype, operands of that dtype)
    and otherwise returns the generic result."""

    name = "numpy"
    flat_views = True

    def __init__(self):
        super().__init__(numpy)
        self._thread = threading.local()  # per-thread scratch arrays (see _scratch)
        self._constants = {}  # read-only arrays of zeros and ones, shared (see _filled)

    def dtype(self, name):
        return numpy.dtype(name).type

    def is_array(self, value):
        return isinstance(value, numpy.ndarray)

    def zeros(self, shape, dtype):
        return numpy.zeros(shape, dtype=dtype)

    def empty(self, shape, dtype):
        return numpy.empty(shape, dtype=dtype)

    def arange(self, n):
        return numpy.arange(n)

    def astype(self, array, dtype):
        return array.astype(dtype, copy=False)

    def copy(self, array):
        return array.copy()

    def to_numpy(self, array):
        return numpy.array(array, copy=True)

    def device_name(self):
        return _cpu_name()

    def device_memory(self):
        """The host's physical memory (where the OS says it)."""
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            return None

    # -- fast paths (generic versions and docs in Backend) ------------------------------------
    # Each runs when ``out`` is given and has the operands' dtype (numpy's dtypes are
    # singletons, so ``is`` tells), and otherwise returns the generic result. ``out`` has
    # the result's shape: the layers take it from buffers keyed by that shape. The checks
    # are written inline because a tiny network's step is made of a few dozen such calls.

    def buffers(self, dtype):
        return ReusedBuffers(self, dtype)

    def _scratch(self, shape, dtype, slot=0):
        """A transient array of ``shape`` for intermediates within one method call, reused
        by the next call (so never returned). A view of one flat array per (slot, dtype)
        that grows to the largest size asked for, so the optimizer's updates of differently
        shaped parameters share it. Per thread: models trained in two threads never share."""
        try:
            views = self._thread.views
        except AttributeError:
            views = self._thread.views = {}
            self._thread.flat = {}
        key = (slot, shape, dtype.char)
        view = views.get(key)
        if view is None:
            size = math.prod(shape)
            flat = self._thread.flat.get(key[::2])
            if flat is None or flat.size < size:
                flat = self._thread.flat[key[::2]] = numpy.empty(size, dtype)
                views.clear()  # views of the old flat array would keep it alive
            elif len(views) >= 64:  # many shapes seen (predict on varied sizes): start over
                views.clear()
            view = views[key] = flat[:size].reshape(shape)
        return view

    def _filled(self, value, shape, dtype):
        """A read-only array of ``value`` (0 or 1), shared by every layer that asks."""
        key = (value, shape, dtype.char)
        array = self._constants.get(key)
        if array is None:
            if len(self._constants) >= 16:
                self._constants.clear()
            array = numpy.full(shape, value, dtype)
            array.flags.writeable = False
            self._constants[key] = array
        return array

    def matmul(self, a, b, out=None):
        if out is None or a.dtype is not out.dtype or b.dtype is not out.dtype:
            return numpy.matmul(a, b)
        return numpy.matmul(a, b, out=out)

    def affine(self, x, weights, bias=None, out=None):
        if out is None or x.dtype is not out.dtype or weights.dtype is not out.dtype or (
                bias is not None and bias.dtype is not out.dtype):
            return super().affine(x, weights, bias)
        numpy.matmul(x, weights, out=out)
        if bias is not None:
            numpy.add(out, bias, out=out)
        return out

    def affine_activation(self, x, weights, bias, activation, out=None):
        """activation(x @ weights + bias), where activation is the name of one of this
        backend's activation methods ("relu", "sigmoid", "tanh"). A model calls it for the
        pairs a backend fuses (fused_dense_activations)."""
        y = self.affine(x, weights, bias, out=out)
        return getattr(self, activation)(y, out=out)

    def sum_rows(self, array, out=None):
        if out is None or array.dtype is not out.dtype:
            return super().sum_rows(array)
        # ones · array: a BLAS matrix-vector product, twice as fast as numpy.add.reduce
        # along axis 0 here (and as accurate: both accumulate in the array's dtype)
        return numpy.matmul(self._filled(1, array.shape[:1], array.dtype), array, out=out)

    def relu(self, x, out=None):
        if out is None or x.dtype is not out.dtype:
            return super().relu(x)
        # numpy.maximum(x, zeros) runs about 3x faster than numpy.maximum(x, 0), which
        # leaves the vectorised loop for a scalar operand
        return numpy.maximum(x, self._filled(0, x.shape, x.dtype), out=out)

    def relu_backward(self, grad_y, y, out=None):
        # grad_y · [y > 0]: a multiply by the mask, as numpy.where is about 15x slower
        # here. (Differs from where() only for an infinite grad_y at y = 0, or a NaN y.)
        if out is None or grad_y.dtype is not out.dtype or y.dtype is not out.dtype:
            return super().relu_backward(grad_y, y)
        positive = numpy.greater(y, 0, out=self._scratch(y.shape, _BOOL))
        return numpy.multiply(grad_y, positive, out=out)

    def sigmoid(self, x, out=None):
        # 1 / (1 + e^-x) in place. Where e^-x overflows (x below about -88 in float32, -709
        # in float64) it is inf and the result 0, the correctly rounded value or within a
        # subnormal of it; the generic formula avoids the overflow with 3 more passes. On
        # arrays of up to SMALL_SIZE elements, e^-log(1 + e^-x) instead: it cannot
        # overflow, so it needs no errstate (1.3 µs a call, a tiny network's main cost
        # here), while logaddexp's ~25 ns more per element would cost more on big arrays.
        if out is None or x.dtype is not out.dtype:
            return super().sigmoid(x)
        numpy.negative(x, out=out)
        if x.size <= SMALL_SIZE:
            numpy.logaddexp(0.0, out, out=out)
            numpy.negative(out, out=out)
            return numpy.exp(out, out=out)
        with numpy.errstate(over="ignore"):
            numpy.exp(out, out=out)
        numpy.add(out, 1.0, out=out)
        return numpy.reciprocal(out, out=out)

    def sigmoid_backward(self, grad_y, y, out=None):
        if out is None or grad_y.dtype is not out.dtype or y.dtype is not out.dtype:
            return super().sigmoid_backward(grad_y, y)
        numpy.subtract(1.0, y, out=out)  # (1 − y)·y·grad_y: the generic product, reordered
        numpy.multiply(out, y, out=out)
        return numpy.multiply(out, grad_y, out=out)

    def tanh(self, x, out=None):
        if out is None or x.dtype is not out.dtype:
            return super().tanh(x)
        return numpy.tanh(x, out=out)

    def tanh_backward(self, grad_y, y, out=None):
        if out is None or grad_y.dtype is not out.dtype or y.dtype is not out.dtype:
            return super().tanh_backward(grad_y, y)
        numpy.multiply(y, y, out=out)
        numpy.subtract(1.0, out, out=out)
        return numpy.multiply(grad_y, out, out=out)

    def softmax(self, x, out=None):
        if out is None or x.dtype is not out.dtype:
            return super().softmax(x)
        row = self._scratch(x.shape[:-1] + (1,), x.dtype)
        numpy.max(x, axis=-1, keepdims=True, out=row)
        numpy.subtract(x, row, out=out)
        numpy.exp(out, out=out)
        numpy.add.reduce(out, axis=-1, keepdims=True, out=row)
        return numpy.divide(out, row, out=out)

    # The in-place updates below need a scratch array the size of what they update. Past
    # SCRATCH_SIZE elements they work chunk by chunk, so the scratch never outgrows that:
    # a whole model's flat parameter array is updated without a second one beside it.

    def scaled_add(self, target, source, scale):
        if target.dtype is not source.dtype:
            return super().scaled_add(target, source, scale)
        if target.size > SCRATCH_SIZE:
            return self._in_chunks(self.scaled_add, target, (source,), scale)
        scaled = numpy.multiply(source, scale, out=self._scratch(source.shape, source.dtype))
        return numpy.add(target, scaled, out=target)

    def squared_add(self, target, source, scale):
        if target.dtype is not source.dtype:
            return super().squared_add(target, source, scale)
        if target.size > SCRATCH_SIZE:
            return self._in_chunks(self.squared_add, target, (source,), scale)
        squared = numpy.multiply(source, source,
                                 out=self._scratch(source.shape, source.dtype, slot=1))
        return self.scaled_add(target, squared, scale)

    def adam_update(self, param, m, v, step_size, eps):
        if param.dtype is not m.dtype or param.dtype is not v.dtype:
            return super().adam_update(param, m, v, step_size, eps)
        if param.size > SCRATCH_SIZE:
            return self._in_chunks(self.adam_update, param, (m, v), step_size, eps)
        denominator = numpy.sqrt(v, out=self._scratch(v.shape, v.dtype))
        numpy.add(denominator, eps, out=denominator)
        step = numpy.multiply(m, step_size, out=self._scratch(m.shape, m.dtype, slot=1))
        numpy.divide(step, denominator, out=step)
        return numpy.subtract(param, step, out=param)

    def _in_chunks(self, method, target, sources, *scalars):
        """method(target_chunk, *source_chunks, *scalars) over aligned chunks of at most
        SCRATCH_SIZE elements; returns target. Arrays that are not contiguous (so that a
        flat view would be a copy) take the generic path instead."""
        arrays = (target,) + sources
        if not all(array.flags.c_contiguous for array in arrays):
            return getattr(super(), method.__name__)(target, *sources, *scalars)
        flats = [array.reshape(-1) for array in arrays]
        for start in range(0, target.size, SCRATCH_SIZE):
            stop = start + SCRATCH_SIZE
            method(*(flat[start:stop] for flat in flats), *scalars)
        return target

    def take_rows(self, array, indices, out=None):
        if out is None or array.dtype is not out.dtype:
            return super().take_rows(array, indices)
        # mode="clip" because the callers' indices are in range (a permutation's slice):
        # numpy.take's default mode="raise" goes through a temporary when given ``out``,
        # 2.5x slower for a batch of 256 rows of 784 here.
        return numpy.take(array, indices, axis=0, out=out, mode="clip")


_BOOL = numpy.dtype(bool)
# Elements of the largest scratch array an in-place update uses (1 MiB of float32).
SCRATCH_SIZE = 1 << 18
# Arrays up to this many elements take the per-call-cheapest sigmoid (see sigmoid).
SMALL_SIZE = 64


class ArrayApiStrictBackend(Backend):
    """array_api_strict on its second device: a CPU stand-in for an accelerator that refuses
    silent conversion to NumPy and mixing arrays from two devices. It proves that the generic
    path needs nothing NumPy-specific; it is for tests, not for speed."""

    name = "array_api_strict"

    def __init__(self):
        try:
            import array_api_strict
        except ImportError as exc:
            raise BackendUnavailableError(
                "array_api_strict is not installed; pip install array-api-strict "
                "(it comes with the 'test' extra: pip install 'nnback[test]')"
            ) from exc
        super().__init__(array_api_strict, array_api_strict.Device("device1"))
        self._host_device = array_api_strict.Device("CPU_DEVICE")

    def to_numpy(self, array):
        return numpy.asarray(array.to_device(self._host_device))


class CupyBackend(Backend):
    """CuPy on the current CUDA device.

    Fast paths (each checks that it applies and otherwise returns the generic result): the
    bias add and the activation after a Dense layer's GEMM in one kernel, each activation's
    derivative times the incoming gradient in one kernel, the loss gradient through a fused
    output activation in one kernel, SGD with momentum and Adam as one kernel over the
    model's flat parameter array, matrix products into ``out``, and large host arrays moved
    through pinned memory. The kernels live in nnback/_cupy_kernels.py, compiled on first
    use.

    allow_tf32: let float32 matrix products use TF32 tensor cores (10-bit mantissa inputs,
    float32 accumulation): faster, less exact; off unless asked for (get_backend("cupy",
    allow_tf32=True) or a model's allow_tf32=True).
    """

    name = "cupy"
    flat_views = True  # a reshaped slice of a contiguous cupy array is a view
    fused_dense_activations = tuple(_kernels.ACTIVATIONS)

    def __init__(self, cupy, allow_tf32=False):
        super().__init__(cupy)
        self._device_name = None
        self.allow_tf32 = bool(allow_tf32)
        self._tf32 = _Tf32Switch(cupy) if self.allow_tf32 else None

    def with_tf32(self, allow_tf32):
        """This backend with allow_tf32 set as given (self when it already is)."""
        if bool(allow_tf32) == self.allow_tf32:
            return self
        return CupyBackend(self.xp, allow_tf32=allow_tf32)

    def __repr__(self):
        tf32 = ", TF32 allowed" if self.allow_tf32 else ""
        return f"<nnback Backend {self.name!r} on {self.device_name()}{tf32}>"

    def dtype(self, name):
        return numpy.dtype(name).type

    def is_array(self, value):
        return isinstance(value, self.xp.ndarray)

    def asarray(self, x, dtype=None):
        target = None if dtype is None else self.dtype(dtype)
        if isinstance(x, self.xp.ndarray):
            return x if target is None or x.dtype == target else x.astype(target)
        host = numpy.asarray(x)
        if target is None and host.dtype.kind == "f" and host.dtype.itemsize not in (4, 8):
            host = host.astype(numpy.float64)
        if host.nbytes >= PINNED_MIN_BYTES:
            return self._through_pinned(host, host.dtype if target is None else target)
        return self.xp.asarray(host, dtype=target)

    def _through_pinned(self, host, dtype):
        """Host -> device through a page-locked staging buffer (cast on the host while
        staging): the copy to the GPU runs at DMA speed, without the driver's own staging.
        The staging buffer comes from CuPy's pinned memory pool; the copy is synchronous, so
        the buffer is free to reuse when this returns."""
        cupy = self.xp
        dtype = numpy.dtype(dtype)
        size = max(1, host.size) * dtype.itemsize
        pinned = cupy.cuda.alloc_pinned_memory(size)
        staging = numpy.frombuffer(pinned, dtype, host.size).reshape(host.shape)
        numpy.copyto(staging, host, casting="unsafe")
        device = cupy.empty(host.shape, dtype=dtype)
        device.set(staging)
        return device

    def to_numpy(self, array):
        return self.xp.asnumpy(array)

    def synchronize(self):
        self.xp.cuda.get_current_stream().synchronize()

    def translate_error(self, exc, batch_size, needed_bytes):
        """CuPy's OutOfMemoryError (and cuBLAS/CUDA allocation failures) as a
        DeviceOutOfMemoryError that names the batch size and the memory the step needs."""
        text = str(exc)
        out_of_memory = isinstance(exc, self.xp.cuda.memory.OutOfMemoryError) or (
            type(exc).__name__ in ("CUDARuntimeError", "CUBLASError")
            and ("cudaErrorMemoryAllocation" in text or "ALLOC_FAILED" in text))
        if not out_of_memory:
            return None
        return DeviceOutOfMemoryError(
            f"the GPU ran out of memory in a step on a batch of {batch_size} rows, which needs "
            f"about {needed_bytes / 2**20:.1f} MiB for this model ({type(exc).__name__}: "
            f"{text}); lower batch_size (e.g. batch_size={max(1, batch_size // 4)}), or free "
            "GPU memory held by other arrays or processes",
            batch_size=batch_size, needed_bytes=needed_bytes)

    def zeros(self, shape, dtype):
        return self.xp.zeros(shape, dtype=dtype)

    def empty(self, shape, dtype):
        return self.xp.empty(shape, dtype=dtype)

    def arange(self, n):
        return self.xp.arange(n)

    def astype(self, array, dtype):
        return array.astype(dtype, copy=False)

    def copy(self, array):
        return array.copy()

    # -- fast paths (generic versions and docs in Backend) ------------------------------------
    def matmul(self, a, b, out=None):
        if self._tf32 is not None and a.dtype == numpy.float32:
            with self._tf32:
                return self._matmul(a, b, out)
        return self._matmul(a, b, out)

    def _matmul(self, a, b, out):
        # CuPy applies its compute type (TF32) to 2-D products only: a stack of matrices
        # times one shared matrix is one 2-D GEMM of the stacked rows
        if a.ndim > 2 and b.ndim == 2 and a.flags.c_contiguous:
            rows = self.xp.matmul(a.reshape(-1, a.shape[-1]), b)
            result = rows.reshape(a.shape[:-1] + b.shape[-1:])
            if out is not None and out.shape == result.shape and out.dtype == result.dtype:
                out[...] = result
                return out
            return result
        if out is not None and out.dtype == a.dtype and out.shape == a.shape[:-1] + b.shape[-1:]:
            return self.xp.matmul(a, b, out=out)
        return self.xp.matmul(a, b)

    def affine(self, x, weights, bias=None, out=None):
        y = self.matmul(x, weights, out=out)
        if bias is None:
            return y
        if y is out:
            y += bias
            return y
        return y + bias

    def affine_activation(self, x, weights, bias, activation, out=None):
        if (bias is None or activation not in _kernels.ACTIVATIONS or x.ndim != 2
                or x.dtype != weights.dtype or not _kernels.fits(bias, dtype=weights.dtype)):
            return super().affine_activation(x, weights, bias, activation, out=out)
        y = self.matmul(x, weights, out=out)  # a new C-contiguous array where out won't do
        # the bias add and the activation in one pass over y, in place
        return self._kernel("bias_activation", activation)(y, bias, y)

    def relu(self, x, out=None):
        return self._activation("relu", x, out)

    def sigmoid(self, x, out=None):
        return self._activation("sigmoid", x, out)

    def tanh(self, x, out=None):
        return self._activation("tanh", x, out)

    def relu_backward(self, grad_y, y, out=None):
        return self._derivative("relu", grad_y, y, out)

    def sigmoid_backward(self, grad_y, y, out=None):
        return self._derivative("sigmoid", grad_y, y, out)

    def tanh_backward(self, grad_y, y, out=None):
        return self._derivative("tanh", grad_y, y, out)

    def loss_gradient_through_activation(self, loss, output, target):
        formula = type(loss).gradient_through_activation
        if not getattr(formula, "is_scaled_difference", False) or not _kernels.fits(
                output, target) or output.shape != target.shape:
            return super().loss_gradient_through_activation(loss, output, target)
        return self._kernel("scaled_difference")(output, target, loss.gradient_scale(output))

    def momentum_step(self, param, grad, velocity, lr, momentum, nesterov):
        if not _kernels.fits(param, grad, velocity) or not param.shape == grad.shape == \
                velocity.shape:
            return super().momentum_step(param, grad, velocity, lr, momentum, nesterov)
        scalars = (momentum, -lr, -lr * momentum) if nesterov else (momentum, -lr)
        self._kernel("momentum", bool(nesterov))(grad, *scalars, param, velocity)
        return param

    def adam_step(self, param, grad, m, v, betas, step_size, eps):
        if not _kernels.fits(param, grad, m, v) or not param.shape == grad.shape == \
                m.shape == v.shape:
            return super().adam_step(param, grad, m, v, betas, step_size, eps)
        beta1, beta2 = betas
        self._kernel("adam")(grad, beta1, 1 - beta1, beta2, 1 - beta2, step_size, eps,
                             param, m, v)
        return param

    def _kernel(self, name, *variant):
        return _kernels.kernel(self.xp, name, *variant)

    def _activation(self, activation, x, out):
        """activation(x) by its fused kernel, into out when it fits; the generic result
        where the fast path does not apply."""
        if not _kernels.fits(x):
            return getattr(super(), activation)(x)
        kernel = self._kernel("activation", activation)
        return kernel(x, out) if _fits_like(out, x) else kernel(x)

    def _derivative(self, activation, grad_y, y, out):
        """grad_y · activation'(x) from the saved output y, by one kernel; the generic
        result where the fast path does not apply."""
        if not _kernels.fits(grad_y, y) or grad_y.shape != y.shape:
            return getattr(super(), activation + "_backward")(grad_y, y)
        kernel = self._kernel("activation_backward", activation)
        return kernel(grad_y, y, out) if _fits_like(out, y) else kernel(grad_y, y)

    def device_name(self):
        if self._device_name is None:
            properties = self.xp.cuda.runtime.getDeviceProperties(self.xp.cuda.Device().id)
            name = properties["name"]
            self._device_name = name.decode() if isinstance(name, bytes) else str(name)
        return self._device_name

    def device_memory(self):
        free, total = self.xp.cuda.Device().mem_info
        return int(total)


def _fits_like(out, array):
    """Whether ``out`` can take a fused kernel's result of ``array``'s shape and dtype."""
    return out is not None and out.shape == array.shape and _kernels.fits(out, dtype=array.dtype)


# Host arrays of at least this many bytes go to the GPU through pinned memory (asarray):
# below it the staging copy costs more than the faster transfer saves (a guess, unmeasured).
PINNED_MIN_BYTES = 1 << 20


class _Tf32Switch:
    """A context: float32 matrix products inside it use CuPy's TF32 compute type, and the
    compute type in force before is restored on the way out (CuPy keeps one per dtype,
    process-wide, first read from the CUPY_TF32 environment variable)."""

    def __init__(self, cupy):
        try:
            from cupy._core import _routines_linalg as linalg

            self._get, self._set = linalg.get_compute_type, linalg.set_compute_type
            self._tf32 = linalg.COMPUTE_TYPE_TF32
        except (ImportError, AttributeError) as exc:
            raise BackendUnavailableError(
                f"allow_tf32=True needs CuPy's compute-type switch "
                f"(cupy._core._routines_linalg.set_compute_type, COMPUTE_TYPE_TF32), which "
                f"this CuPy {getattr(cupy, '__version__', '?')} lacks ({exc}); upgrade "
                f"CuPy or leave allow_tf32 off"
            ) from exc
        self._float32 = numpy.dtype(numpy.float32)
        self._saved = []

    def __enter__(self):
        self._saved.append(self._get(self._float32))
        self._set(self._float32, self._tf32)

    def __exit__(self, *exc_info):
        self._set(self._float32, self._saved.pop())


def _cpu_name():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "cpu"


def _load_cupy():
    """The cupy module when CuPy is installed and a CUDA GPU answers; otherwise
    BackendUnavailableError saying which of the two is missing and what to do."""
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the cupy backend needs CuPy, which is not installed: {CUPY_INSTALL_HINT}"
        ) from exc
    except Exception as exc:  # a broken install (wrong CUDA wheel) fails in odd ways
        raise BackendUnavailableError(
            f"CuPy is installed but failed to import ({type(exc).__name__}: {exc}); "
            f"reinstall it: {CUPY_INSTALL_HINT}"
        ) from exc
    try:
        available = cupy.is_available()
    except Exception:
        available = False
    if not available:
        raise BackendUnavailableError(
            "CuPy is installed but finds no working CUDA GPU (no device, or the driver is "
            "missing or too old for this CuPy build); check `nvidia-smi`, or use "
            "backend='numpy' / backend='auto' to run on the CPU"
        )
    try:  # CuPy imports fine without a driver and fails only on first use
        (cupy.arange(2) + 1).sum().item()
    except Exception as exc:
        raise BackendUnavailableError(
            f"CuPy found a GPU but a first operation failed ({type(exc).__name__}: {exc}); "
            f"check that the CuPy wheel matches the CUDA driver: {CUPY_INSTALL_HINT}"
        ) from exc
    return cupy


_cache = {}


def _make(name):
    if name == "numpy":
        return NumpyBackend()
    if name == "cupy":
        return CupyBackend(_load_cupy())
    if name == "array_api_strict":
        return ArrayApiStrictBackend()
    raise AssertionError(name)


def get_backend(name="auto", allow_tf32=False):
    """The Backend called ``name``: "auto" | "numpy" | "cupy" (or "array_api_strict", the
    test stand-in). A Backend passed in is returned as it is.

    allow_tf32=True: a cupy backend whose float32 matrix products may use TF32 tensor cores
    (see CupyBackend). TF32 is a CUDA feature: asking for it on "numpy" or
    "array_api_strict" (by name or as a Backend) raises ValueError; "auto" applies it when
    it picks cupy and drops it when it falls back to numpy.

    "auto" takes the NNBACK_BACKEND environment variable when it is set, and otherwise picks
    cupy when CuPy and a GPU work, else numpy, silently. Naming "cupy" on a machine where it
    cannot run raises BackendUnavailableError saying why and what to install.
    """
    if allow_tf32 not in (True, False):
        raise TypeError(f"allow_tf32 must be True or False, got {allow_tf32!r}")
    if allow_tf32:
        backend = get_backend(name)
        if isinstance(backend, CupyBackend):
            return backend.with_tf32(True)
        explicit = isinstance(name, Backend) or name.strip().lower() != "auto"
        if explicit:
            raise ValueError(
                f"allow_tf32=True is for the cupy backend (TF32 is a CUDA tensor-core "
                f"feature), not {backend.name!r}; leave allow_tf32 off on the CPU, or use "
                f"backend='auto' to have it apply only where a GPU is found")
        return backend
    if isinstance(name, Backend):
        return name
    if name is None:
        name = "auto"
    if not isinstance(name, str):
        raise TypeError(
            f"backend must be a name ({', '.join(map(repr, VALID_BACKENDS))}) or a Backend, "
            f"got {type(name).__name__}"
        )
    key = name.strip().lower()
    if key == "auto":
        from_env = os.environ.get(ENV_VAR, "").strip().lower()
        if from_env and from_env != "auto":
            if from_env not in VALID_BACKENDS:
                raise ValueError(
                    f"{ENV_VAR}={from_env!r} is not a backend; valid names: "
                    f"{', '.join(VALID_BACKENDS)}"
                )
            return get_backend(from_env)
        if "auto" not in _cache:
            try:
                _cache["auto"] = get_backend("cupy")
            except BackendUnavailableError:
                _cache["auto"] = get_backend("numpy")
        return _cache["auto"]
    if key not in VALID_BACKENDS:
        raise ValueError(
            f"unknown backend {name!r}; valid names: {', '.join(VALID_BACKENDS)}"
        )
    if key not in _cache:
        _cache[key] = _make(key)
    return _cache[key]


def available_backends():
    """{name: None if it works here, else the reason it does not} for numpy, cupy and
    array_api_strict."""
    status = {}
    for name in ("numpy", "cupy", "array_api_strict"):
        try:
            get_backend(name)
            status[name] = None
        except BackendUnavailableError as exc:
            status[name] = str(exc)
    return status


def check_dtype(dtype):
    """'float32' or 'float64' from a name or a dtype object; ValueError otherwise."""
    name = Backend.dtype_name(dtype) if not isinstance(dtype, str) else dtype.strip().lower()
    if name not in VALID_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(VALID_DTYPES)}, got {dtype!r}")
    return name


def backend_of(array):
    """The Backend that ``array`` belongs to (Chainer's get_array_module): numpy, cupy or
    array_api_strict; TypeError for anything else."""
    module = type(array).__module__.split(".")[0]
    if module in ("numpy", "cupy", "array_api_strict"):
        return get_backend(module)
    raise TypeError(
        f"expected an array of numpy, cupy or array_api_strict, got {type(array).__name__}"
    )
