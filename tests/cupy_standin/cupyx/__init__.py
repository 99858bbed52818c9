"""cupyx for the CuPy stand-in: only ``cupyx.scipy.sparse`` (CSR and CSC matrices) is
implemented; see ``../README.md``.

It works only beside the stand-in's ``cupy`` (the arrays it holds are the stand-in's). The
other public names of the real cupyx raise NotImplementedError when used.
"""
import cupy as _cupy

if getattr(_cupy, "__standin__", False) is not True:
    raise ImportError(f"the cupyx stand-in needs the CuPy stand-in as `cupy`, not "
                      f"{getattr(_cupy, '__file__', _cupy)}")

from . import scipy  # noqa: E402,F401  (real cupyx imports it too)

# Public names of the real cupyx (13.6 and 14.2) that the stand-in lacks.
_NOT_IMPLEMENTED = frozenset((
    "rsqrt", "get_runtime_info", "scatter_add", "scatter_max", "scatter_min", "linalg",
    "time", "optimizing", "errstate", "geterr", "seterr", "allow_synchronize",
    "DeviceSynchronized", "empty_pinned", "empty_like_pinned", "zeros_pinned",
    "zeros_like_pinned", "GeneralizedUFunc", "lapack", "cusparse", "cusolver", "cutensor",
    "jit", "profiler", "signal", "distributed", "tools"))


def __getattr__(name):
    if name in _NOT_IMPLEMENTED:
        raise NotImplementedError(f"the CuPy stand-in does not implement cupyx.{name}")
    raise AttributeError(f"module 'cupyx' has no attribute '{name}'")
