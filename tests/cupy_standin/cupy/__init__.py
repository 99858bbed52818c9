"""A strict CuPy stand-in: NumPy on the CPU behind CuPy's surface, for tests without a GPU.

Import it as ``cupy`` by putting ``tests/cupy_standin`` first on ``sys.path``. Its names
and call signatures are the recorded surface of the real CuPy (``../surface/*.json``, made
by ``../make_surface.py``); ``NNBACK_CUPY_STANDIN_SURFACE`` = ``13``, ``14`` or ``both``
(default) chooses which version(s) a name and a call must fit. See ``../README.md``.

``cupy.standin`` (stats, counting, PinnedReuseError) is the one name real CuPy lacks.
"""
import sys as _sys

import numpy as _numpy

from . import _config, _stats  # noqa: F401
from ._surface import SURFACE as _SURFACE
from . import standin  # noqa: F401
from . import cuda  # noqa: F401
from . import _array, _creation, _dispatch, _functions, _indexing, _interop  # noqa: F401
from . import _kernel, _linalg, _ufunc
from ._core import _routines_linalg  # noqa: F401
from ._namespace import populate as _populate
from .cuda import memory as _memory
from .cuda import pinned_memory as _pinned_memory

__version__ = _SURFACE.newest
__standin__ = True
__standin_surface__ = tuple(_SURFACE.versions)

_ufuncs = _ufunc.make_all()
_ufunc.UFUNCS["matmul"] = _linalg.matmul_object()

from . import exceptions, fft, linalg, random  # noqa: E402,F401  (after the ufuncs)


def get_default_memory_pool():
    return _memory._default_pool


def get_default_pinned_memory_pool():
    return _pinned_memory._default_pool


def _take(a, indices, axis=None, out=None):
    if type(a) is not _array.ndarray:
        raise _dispatch.unsupported(a)
    return _indexing.take(a, indices, axis, out)


def _nonzero(a):
    if type(a) is not _array.ndarray:
        raise _dispatch.unsupported(a)
    return _indexing.nonzero(a)


class _IndexTricks:
    """cupy.c_ / r_ / mgrid / ogrid: NumPy's, with device arrays in and out."""

    def __init__(self, numpy_object, name):
        self._numpy = numpy_object
        self._name = name

    def __getitem__(self, key):
        return _dispatch.call(self._numpy.__getitem__, (key,), {})

    def __repr__(self):
        return f"<cupy stand-in {self._name}>"


_IMPLEMENTATIONS = {
    "ElementwiseKernel": _kernel.ElementwiseKernel,
    "annotations": __import__("__future__").annotations,
    "array": _creation.array,
    "asanyarray": _creation.asanyarray,
    "asarray": _creation.asarray,
    "asnumpy": _creation.asnumpy,
    "astype": _creation.astype,
    "c_": _IndexTricks(_numpy.c_, "c_"),
    "copy": _creation.copy,
    "dot": _linalg.dot,
    "empty": _creation.empty,
    "flatiter": _array.flatiter,
    "full": _creation.full,
    "get_array_module": _creation.get_array_module,
    "get_default_memory_pool": get_default_memory_pool,
    "get_default_pinned_memory_pool": get_default_pinned_memory_pool,
    "index_exp": _numpy.index_exp,
    "is_available": _creation.is_available,
    "matmul": _linalg.matmul_object(),
    "mgrid": _IndexTricks(_numpy.mgrid, "mgrid"),
    "ndarray": _array.ndarray,
    "nonzero": _nonzero,
    "ogrid": _IndexTricks(_numpy.ogrid, "ogrid"),
    "ones": _creation.ones,
    "r_": _IndexTricks(_numpy.r_, "r_"),
    "s_": _numpy.s_,
    "take": _take,
    "ufunc": _ufunc.ufunc,
    "zeros": _creation.zeros,
    **_creation.HOST_DATA,
    **_ufuncs,
}

_populate(_sys.modules[__name__], "cupy", _IMPLEMENTATIONS,
          fallback=_functions.fallback_for("cupy", _numpy), keep=("standin",))

_array.finish()
_ufunc.finish()
_kernel.finish()
