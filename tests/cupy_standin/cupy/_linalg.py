"""Matrix products of the stand-in: ``cupy.matmul`` (a generalized ufunc, as in CuPy),
``cupy.dot`` / ``ndarray.dot``, with CuPy's TF32 compute type.

When ``cupy._core._routines_linalg.get_compute_type(float32)`` is ``COMPUTE_TYPE_TF32``, a
product of two 2-D float32 arrays rounds both operands to TF32 (10 explicit mantissa bits,
round to nearest even) and accumulates in float32, as cuBLAS does on tensor cores. Stacked
(ndim > 2) and 1-D products go through other CuPy paths that do not use TF32, and stay
exact float32.
"""
import builtins

import numpy

from ._array import fresh, launched, ndarray
from ._core import _routines_linalg as _compute
from ._dispatch import call, unsupported
from ._surface import SURFACE

_FLOAT32 = numpy.dtype(numpy.float32)
_KEEP = numpy.uint32(0xFFFFE000)
_HALF = numpy.uint32(0x0FFF)
_SHIFT = numpy.uint32(13)
_ONE = numpy.uint32(1)


def to_tf32(values):
    """A float32 copy of ``values`` (NumPy) rounded to TF32: 10 mantissa bits, round half
    to even; NaN and infinity kept."""
    values = numpy.ascontiguousarray(values, dtype=numpy.float32)
    bits = values.view(numpy.uint32)
    rounded = ((bits + _HALF + ((bits >> _SHIFT) & _ONE)) & _KEEP).view(numpy.float32)
    special = ~numpy.isfinite(values)
    if special.any():
        rounded[special] = values[special]
    return rounded


def _tf32_operands(a, b):
    """The TF32-rounded NumPy operands when the product uses TF32; None otherwise."""
    if (type(a) is ndarray and type(b) is ndarray and a._sd_a.ndim == 2
            and b._sd_a.ndim == 2 and a._sd_a.dtype == _FLOAT32
            and b._sd_a.dtype == _FLOAT32 and _compute._uses_tf32(_FLOAT32)):
        return to_tf32(a._sd_a), to_tf32(b._sd_a)
    return None


def _product(function, rounded, out):
    if out is None:
        launched()
        return fresh(function(*rounded))
    if type(out) is not ndarray:
        raise unsupported(out)
    function(*rounded, out=out._sd_a)
    launched()
    return out


def matmul_function(a, b, out=None, **kwargs):
    """matmul of two arrays (the computation behind ``cupy.matmul`` and ``@``)."""
    rounded = None if kwargs else _tf32_operands(a, b)
    if rounded is not None:
        return _product(numpy.matmul, rounded, out)
    if out is not None:
        kwargs["out"] = out
    return call(numpy.matmul, (a, b), kwargs)


def dot(a, b, out=None):
    if out is not None and type(out) is ndarray and type(a) is ndarray and \
            type(b) is ndarray and numpy.result_type(a.dtype, b.dtype) != out.dtype:
        raise ValueError("Not supported dtype combination.")
    rounded = _tf32_operands(a, b)
    if rounded is not None:
        return _product(numpy.dot, rounded, out)
    return call(numpy.dot, (a, b), {} if out is None else {"out": out})


def _unknown_keyword_error():
    """The exception class CuPy raises for an unknown keyword of ``matmul``: TypeError in
    CuPy 14, RuntimeError in CuPy 13; with both enforced, a class that is both."""
    names = {entry["unknown_keyword_error"]["type"]
             for entry in SURFACE.entries("cupy", "matmul") if entry}
    classes = tuple(getattr(builtins, name) for name in sorted(names)
                    if isinstance(getattr(builtins, name, None), type)) or (TypeError,)
    if len(classes) == 1:
        return classes[0]
    return type("UnknownKeywordError", classes, {"__module__": __name__})


class _GUFunc:
    """cupy.matmul: a generalized ufunc ``(n?,k),(k,m?)->(n?,m?)``."""

    def __init__(self, name, entries):
        self.__name__ = name
        self._nin, self._nout = 2, 1
        self._signature = entries[-1]["core_signature"]
        self._sd_keywords = frozenset.intersection(
            *(frozenset(entry["call_keywords"]) for entry in entries))
        self._sd_error = _unknown_keyword_error()
        # the newest enforced version's wording, with the probe's keyword as a slot
        self._sd_message = entries[-1]["unknown_keyword_error"]["message"].replace(
            "_no_such_keyword", "{}")

    def __call__(self, *args, **kwargs):
        unknown = [key for key in kwargs if key not in self._sd_keywords]
        if unknown:
            raise self._sd_error(self._sd_message.format(unknown[0]))
        if len(args) != self._nin:
            raise TypeError(f"Wrong number of arguments for {self.__name__!r}. It must be "
                            f"{self._nin}, but given {len(args)}.")
        out = kwargs.pop("out", None)
        kwargs = {key: value for key, value in kwargs.items() if value is not None
                  and not (key == "keepdims" and value is False)
                  and not (key == "casting" and value == "same_kind")
                  and not (key == "order" and value == "K")}
        return matmul_function(args[0], args[1], out, **kwargs)

    def __repr__(self):
        return f"<_GUFunc {self.__name__!r}>"


_GUFunc.__module__ = "cupy._core._gufuncs"


_matmul = []


def matmul_object():
    """The stand-in's ``cupy.matmul`` (one object, also ``cupy.linalg.matmul``)."""
    if not _matmul:
        _matmul.append(_GUFunc("matmul", [e for e in SURFACE.entries("cupy", "matmul")
                                          if e]))
    return _matmul[0]
