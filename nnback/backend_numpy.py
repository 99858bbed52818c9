"""NumpyBackend: NumPy on the CPU, with the generic Backend formulas rewritten for speed.

Each compute method is the generic one written with ``out=`` and in-place ufuncs, so that a
training step, after the first, allocates no new arrays: each layer keeps its outputs in
:class:`ReusedBuffers` keyed by name and shape, and transient intermediates live in a
per-thread scratch space. Each method checks that its fast path applies and otherwise
returns the generic result; the parity tests hold the two together.
"""
import math
import os
import threading

import numpy

from .backend_base import (Backend, ReusedBuffers, all_finite, as_csr, host_array,
                           is_host_sparse)


class NumpyBackend(Backend):
    """NumPy on the CPU. The compute methods override the generic ones with the same
    formulas written with ``out=`` and in-place ufuncs (no temporaries); each checks that
    its fast path applies (an ``out`` of the right shape and dtype, operands of that dtype)
    and otherwise returns the generic result."""

    name = "numpy"
    flat_views = True
    # ReLU in place on the Dense layer's output (the generic affine_activation with out=):
    # one activation-sized buffer fewer, 1-3% of the medium fit in A/B runs here. Sigmoid
    # and tanh were not measured that way and stay separate layers.
    fused_dense_activations = ("relu",)

    def __init__(self):
        super().__init__(numpy)
        # model code calls the raw module: every function it uses is in NumPy >= 1.24, and
        # array-api-compat's wrappers would add a Python call to each (a tiny step's cost)
        self.xp = numpy
        self._thread = threading.local()  # per-thread scratch arrays (see _scratch)
        self._constants = {}  # read-only arrays of zeros and ones, shared (see _filled)

    def dtype(self, name):
        return numpy.dtype(name).type

    def is_array(self, value):
        return isinstance(value, numpy.ndarray)

    def asarray(self, x, dtype=None):
        target = None if dtype is None else numpy.dtype(dtype)
        if isinstance(x, numpy.ndarray) and (target is None or x.dtype == target):
            return x if x.dtype is target else _canonical(x)
        if self.is_sparse(x):
            return self.sparse_rows(x, dtype)
        return numpy.asarray(host_array(x), dtype=target)

    def is_sparse(self, value):
        return is_host_sparse(value)

    def sparse_rows(self, value, dtype=None):
        return as_csr(value, dtype)

    def zeros(self, shape, dtype):
        return numpy.zeros(shape, dtype=dtype)

    def empty(self, shape, dtype):
        return numpy.empty(shape, dtype=dtype)

    def astype(self, array, dtype):
        if type(array) is not numpy.ndarray and self.is_sparse(array):
            return self.sparse_rows(array, dtype)
        return _canonical(array.astype(dtype, copy=False))

    def copy(self, array):
        return array.copy()

    def to_numpy(self, array):
        return numpy.array(array, copy=True)

    def scalars_to_host(self, *scalars):
        return tuple(float(scalar) for scalar in scalars)  # already on the host

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
        if type(a) is not numpy.ndarray and self.is_sparse(a):
            return a @ b  # scipy's sparse product; a dense result
        if out is None or a.dtype is not out.dtype or b.dtype is not out.dtype:
            return numpy.matmul(a, b)
        return numpy.matmul(a, b, out=out)

    def affine(self, x, weights, bias=None, out=None):
        if type(x) is not numpy.ndarray and self.is_sparse(x):
            return super().affine(x, weights, bias)
        if out is None or x.dtype is not out.dtype or weights.dtype is not out.dtype or (
                bias is not None and bias.dtype is not out.dtype):
            return super().affine(x, weights, bias)
        numpy.matmul(x, weights, out=out)
        if bias is not None:
            numpy.add(out, bias, out=out)
        return out

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
        # (e^(x - log(1 + e^x)) would save a pass, but is 4 ulps off the tutorial's
        # sigmoid(7) = 0.9990889488055994.)
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

    def exp(self, x, out=None):
        if out is None or x.dtype is not out.dtype:
            return super().exp(x)
        return numpy.exp(x, out=out)

    def exp_backward(self, grad_y, y, out=None):
        if out is None or grad_y.dtype is not out.dtype or y.dtype is not out.dtype:
            return super().exp_backward(grad_y, y)
        return numpy.multiply(grad_y, y, out=out)

    def scaled_difference(self, a, b, scale, out=None):
        if out is None or a.dtype is not out.dtype or b.dtype is not out.dtype:
            return super().scaled_difference(a, b, scale)
        numpy.subtract(a, b, out=out)
        return numpy.multiply(out, scale, out=out)

    def zero_if_finite(self, array):
        # on the host the answer is at hand: no arithmetic with the values (no warnings)
        return _ZERO if all_finite(array) else _NAN

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
        if out is None or array.dtype is not out.dtype or type(array) is not numpy.ndarray:
            return super().take_rows(array, indices)
        # mode="clip" because the callers' indices are in range (a permutation's slice):
        # numpy.take's default mode="raise" goes through a temporary when given ``out``,
        # 2.5x slower for a batch of 256 rows of 784 here.
        return numpy.take(array, indices, axis=0, out=out, mode="clip")


_BOOL = numpy.dtype(bool)
_ZERO, _NAN = numpy.float64(0.0), numpy.float64("nan")
# Elements of the largest scratch array an in-place update uses (1 MiB of float32).
SCRATCH_SIZE = 1 << 18
# Arrays up to this many elements take the per-call-cheapest sigmoid (see sigmoid).
SMALL_SIZE = 64


def _canonical(array):
    """``array`` with NumPy's own dtype object: an unpickled array carries an equal but
    distinct one, which the fast paths' ``is`` checks would turn away (a view, no copy)."""
    dtype = array.dtype
    if dtype.kind not in "biuf" or not dtype.isnative or type(array) is not numpy.ndarray:
        return array
    own = numpy.dtype(dtype.char)
    return array if dtype is own or dtype != own else array.view(own)


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
