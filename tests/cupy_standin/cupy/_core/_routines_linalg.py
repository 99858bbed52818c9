"""cupy._core._routines_linalg for the stand-in: the compute type of matrix products.

As in CuPy (``_routines_linalg.pyx``): one compute type per dtype (float16, float32 /
complex64, float64 / complex128), process-wide, first read from ``CUPY_TF32`` when it is
asked for; TF32 and BF16 are refused below compute capability 8.0 with CuPy's warning.
When the float32 compute type is TF32, the stand-in's 2-D float32 ``matmul`` / ``dot`` /
``@`` round both operands to TF32 first (see cupy/_linalg.py).
"""
import os as _os
import sys as _sys
import warnings as _warnings

import numpy as _numpy

from .. import _stats
from .._namespace import populate as _populate
from .._namespace import recorded_constant as _recorded_constant
from .._surface import SURFACE as _SURFACE
from ..cuda import device as _device

_NAMESPACE = "cupy._core._routines_linalg"


def _constant(name):
    return _recorded_constant(_SURFACE.entry(_NAMESPACE, name))


_TBD = _constant("COMPUTE_TYPE_TBD")
_DEFAULT = _constant("COMPUTE_TYPE_DEFAULT")
_TF32 = _constant("COMPUTE_TYPE_TF32")
_BF16 = _constant("COMPUTE_TYPE_BF16")
_PLAIN = tuple(_constant(name) for name in (
    "COMPUTE_TYPE_TBD", "COMPUTE_TYPE_DEFAULT", "COMPUTE_TYPE_PEDANTIC",
    "COMPUTE_TYPE_FP16", "COMPUTE_TYPE_FP32", "COMPUTE_TYPE_FP64"))
_NAMES = {_constant(name): name for name in sorted(_SURFACE.names(_NAMESPACE))
          if name.startswith("COMPUTE_TYPE_")}

_compute_types = [_TBD, _TBD, _TBD]  # float16, float32, float64


def to_compute_type_index(dtype):
    char = _numpy.dtype(dtype).char
    if char == "e":
        return 0
    if char in "fF":
        return 1
    if char in "dD":
        return 2
    raise TypeError(f"dtype is not supported: {dtype}")


def compute_type_to_str(compute_type):
    return _NAMES.get(compute_type, str(compute_type))


def get_compute_type(dtype):
    index = to_compute_type_index(dtype)
    with _stats.LOCK:
        if _compute_types[index] == _TBD:
            compute_type = _DEFAULT
            if _numpy.dtype(dtype).char in "fF" and int(_os.getenv("CUPY_TF32", "0")) > 0:
                compute_type = _TF32
            set_compute_type(dtype, compute_type)
        return _compute_types[index]


def set_compute_type(dtype, compute_type):
    index = to_compute_type_index(dtype)
    with _stats.LOCK:
        if compute_type in _PLAIN:
            _compute_types[index] = compute_type
        elif compute_type in (_BF16, _TF32):
            if int(_device.get_compute_capability()) >= 80:
                _compute_types[index] = compute_type
            else:
                _warnings.warn("COMPUTE_TYPE_BF16 and COMPUTE_TYPE_TF32 are only available "
                               "on GPUs with compute capability 8.0 or higher. "
                               "COMPUTE_TYPE_DEFAULT will be used instead.")
                _compute_types[index] = _DEFAULT
        else:
            raise ValueError(f"Unknown compute type: {compute_type}")


def _uses_tf32(dtype):
    """Whether float32 products use TF32 now."""
    return get_compute_type(dtype) == _TF32


def _linalg(name):
    def function(*args, **kwargs):
        from .. import _linalg

        return getattr(_linalg, name)(*args, **kwargs)
    return function


def _late_implementations():
    from .. import _kernel

    return {"ElementwiseKernel": _kernel.ElementwiseKernel,
            "numpy": _numpy, "os": _os, "warnings": _warnings,
            "cupy": _sys.modules[__name__.split(".")[0]]}


_populate(_sys.modules[__name__], _NAMESPACE, {
    "compute_type_to_str": compute_type_to_str, "get_compute_type": get_compute_type,
    "set_compute_type": set_compute_type, "to_compute_type_index": to_compute_type_index,
    "dot": _linalg("dot"), "matmul": _linalg("matmul_function"),
    **_late_implementations()})
