"""CupyBackend: CuPy on the current CUDA device, with fused kernels where they pay.

The kernels' CUDA text and compilation live in _cupy_kernels.py. This module never imports
cupy: nnback.backend imports it and hands the module to CupyBackend.
"""
import importlib
import sys

import numpy

from . import _cupy_kernels as _kernels
from .backend_base import (Backend, BackendUnavailableError, DeviceOutOfMemoryError,
                           ReusedBuffers, as_csr, host_array, is_host_sparse)


class CupyBackend(Backend):
    """CuPy on the current CUDA device.

    Fast paths (each checks that it applies and otherwise returns the generic result): the
    bias add and the activation after a Dense layer's GEMM in one kernel, each activation's
    derivative times the incoming gradient in one kernel, (a − b)·scale (the loss gradient
    through a fused output activation) in one kernel, SGD with momentum and Adam as one kernel over the
    model's flat parameter array, matrix products and column sums into ``out`` (layers keep
    their outputs in ReusedBuffers, as on numpy). The kernels live in
    nnback/_cupy_kernels.py, compiled on first use.

    allow_tf32: let float32 matrix products use TF32 tensor cores (10-bit mantissa inputs,
    float32 accumulation): faster, less exact; off unless asked for (get_backend("cupy",
    allow_tf32=True) or a model's allow_tf32=True).
    """

    name = "cupy"
    flat_views = True  # a reshaped slice of a contiguous cupy array is a view
    fused_dense_activations = tuple(_kernels.ACTIVATIONS)

    def __init__(self, cupy, allow_tf32=False):
        super().__init__(cupy)  # xp: array-api-compat's cupy namespace; module: cupy itself
        self._device_name = None
        self.allow_tf32 = bool(allow_tf32)
        self._tf32 = _Tf32Switch(cupy) if self.allow_tf32 else None

    def with_tf32(self, allow_tf32):
        """This backend with allow_tf32 set as given (self when it already is)."""
        if bool(allow_tf32) == self.allow_tf32:
            return self
        return CupyBackend(self.module, allow_tf32=allow_tf32)

    def __repr__(self):
        tf32 = ", TF32 allowed" if self.allow_tf32 else ""
        return f"<nnback Backend {self.name!r} on {self.device_name()}{tf32}>"

    def dtype(self, name):
        return numpy.dtype(name).type

    def is_array(self, value):
        return isinstance(value, self.module.ndarray)

    def asarray(self, x, dtype=None):
        """Host -> device by ``cupy.asarray``, which stages the copy through pinned memory
        and keeps the staging block alive until the copy has run (a cast, if any, happens
        on the host first, so only the final bytes cross the bus)."""
        target = None if dtype is None else numpy.dtype(dtype)
        if isinstance(x, self.module.ndarray):
            return x if target is None or x.dtype == target else x.astype(target)
        if self.is_sparse(x) or is_host_sparse(x):
            return self.sparse_rows(x, dtype)
        host = host_array(x)
        return self.module.asarray(host if target is None else host.astype(target, copy=False))

    def to_numpy(self, array):
        return self.module.asnumpy(array)

    def is_sparse(self, value):
        sparse = sys.modules.get(_CUPYX_SPARSE)  # never imported: value cannot be one
        return sparse is not None and sparse.issparse(value)

    def sparse_rows(self, value, dtype=None):
        """A cupyx CSR matrix: a host scipy.sparse matrix moves to the GPU as sparse (its
        data, indices and row pointers only)."""
        sparse = importlib.import_module(_CUPYX_SPARSE)
        if not sparse.issparse(value):  # cast on the host: only the final bytes move
            return sparse.csr_matrix(as_csr(value, dtype))
        return as_csr(value, dtype)

    def synchronize(self):
        self.module.cuda.get_current_stream().synchronize()

    def nccl(self):
        try:
            nccl = importlib.import_module(self.module.__name__ + ".cuda.nccl")
        except ImportError:  # a CuPy built without NCCL
            return None
        return nccl if getattr(nccl, "available", False) else None

    def translate_error(self, exc, batch_size, needed_bytes):
        """CuPy's OutOfMemoryError (and cuBLAS/CUDA allocation failures) as a
        DeviceOutOfMemoryError that names the batch size and the memory the step needs."""
        text = str(exc)
        out_of_memory = isinstance(exc, self.module.cuda.memory.OutOfMemoryError) or (
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
        return self.module.zeros(shape, dtype=dtype)

    def empty(self, shape, dtype):
        return self.module.empty(shape, dtype=dtype)

    def astype(self, array, dtype):
        if self.is_sparse(array):
            return self.sparse_rows(array, dtype)
        return array.astype(dtype, copy=False)

    def copy(self, array):
        return array.copy()

    # -- fast paths (generic versions and docs in Backend) ------------------------------------
    def buffers(self, dtype):
        return ReusedBuffers(self, dtype)

    def matmul(self, a, b, out=None):
        if self._tf32 is not None and a.dtype == numpy.float32:
            with self._tf32:
                return self._matmul(a, b, out)
        return self._matmul(a, b, out)

    def _matmul(self, a, b, out):
        if self.is_sparse(a):  # cuSPARSE: a new dense (F-ordered) result
            result = a @ b
            if _fits_like(out, result):  # into out, C-ordered, as the next kernels want
                out[...] = result
                return out
            return result
        cupy = self.module
        # CuPy applies its compute type (TF32) to 2-D products only: a stack of matrices
        # times one shared matrix is one 2-D GEMM of the stacked rows
        if a.ndim > 2 and b.ndim == 2 and a.flags.c_contiguous:
            rows = cupy.matmul(a.reshape(-1, a.shape[-1]), b)
            result = rows.reshape(a.shape[:-1] + b.shape[-1:])
            if _fits_like(out, result):
                out[...] = result
                return out
            return result
        if not _fits_like(out, a, a.shape[:-1] + b.shape[-1:]) or b.dtype != a.dtype:
            return cupy.matmul(a, b)
        result = cupy.matmul(a, b, out=out)
        if result is not out:  # CuPy 13 may hand back another array than ``out``
            out[...] = result
        return out

    def affine(self, x, weights, bias=None, out=None):
        y = self.matmul(x, weights, out=out)
        if bias is None:
            return y
        if y is out:
            y += bias
            return y
        return y + bias

    def affine_activation(self, x, weights, bias, activation, out=None):
        if (bias is None or activation not in _kernels.ACTIVATIONS or self.is_sparse(x)
                or x.ndim != 2
                or x.dtype != weights.dtype or not _kernels.fits(bias, dtype=weights.dtype)):
            return super().affine_activation(x, weights, bias, activation, out=out)
        y = self.matmul(x, weights, out=out)  # a new C-contiguous array where out won't do
        # the bias add and the activation in one pass over y, in place
        return self._kernel("bias_activation", activation)(y, bias, y)

    def sum_rows(self, array, out=None):
        if not _fits_like(out, array, array.shape[1:]):
            return super().sum_rows(array)
        return self.module.sum(array, axis=0, out=out)

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

    def scaled_difference(self, a, b, scale, out=None):
        if not _kernels.fits(a, b) or a.shape != b.shape:
            return super().scaled_difference(a, b, scale)
        kernel = self._kernel("scaled_difference")
        return kernel(a, b, scale, out) if _fits_like(out, a) else kernel(a, b, scale)

    def softmax(self, x, out=None):
        if not _fits_like(out, x) or x.ndim != 2:
            return super().softmax(x)
        # the generic formula with out=: four launches, and only (n, 1) row arrays allocated
        cupy = self.module
        row = cupy.max(x, axis=-1, keepdims=True)
        cupy.subtract(x, row, out=out)
        cupy.exp(out, out=out)
        return cupy.divide(out, cupy.sum(out, axis=-1, keepdims=True), out=out)

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
        return _kernels.kernel(self.module, name, *variant)

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
            cuda = self.module.cuda
            properties = cuda.runtime.getDeviceProperties(cuda.Device().id)
            name = properties["name"]
            self._device_name = name.decode() if isinstance(name, bytes) else str(name)
        return self._device_name

    def device_memory(self):
        free, total = self.module.cuda.Device().mem_info
        return int(total)


_CUPYX_SPARSE = "cupyx.scipy.sparse"


def _fits_like(out, array, shape=None):
    """Whether ``out`` can take a result of ``array``'s dtype and of ``shape`` (by default
    ``array``'s): C-contiguous, float32 or float64."""
    shape = array.shape if shape is None else tuple(shape)
    return out is not None and out.shape == shape and _kernels.fits(out, dtype=array.dtype)


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
