"""NumPy calling into the stand-in: ``__array_ufunc__`` and ``__array_function__`` with
CuPy's rules (``_ndarray_base`` in core.pyx).

- ``numpy.<ufunc>(cupy_array, ...)`` (and its reduce / accumulate / reduceat / outer / at)
  runs ``cupy.<ufunc>`` when the stand-in's cupy namespace has that name; host arrays among
  the operands pass through and are then refused by the cupy ufunc ("Unsupported type"),
  as in CuPy; other operand types, or a name cupy lacks, give NotImplemented (NumPy then
  raises TypeError).
- ``numpy.<function>(cupy_array, ...)`` runs the cupy function of the same name and module
  path when the namespace has it and every argument type is a cupy or NumPy array;
  otherwise NotImplemented.
"""
import functools
import sys

import numpy

from ._array import SCALAR_TYPES, ndarray

_HANDLED_TYPES = (ndarray, numpy.ndarray)
_METHODS = ("reduce", "accumulate", "reduceat", "outer", "at")


def _cupy():
    return sys.modules[__name__.split(".")[0]]


def array_ufunc(ufunc, method, inputs, kwargs):
    if method != "__call__" and method not in _METHODS:
        return NotImplemented
    cupy_ufunc = getattr(_cupy(), ufunc.__name__, None)
    if cupy_ufunc is None:
        return NotImplemented
    out = kwargs.get("out")
    operands = inputs
    if out is not None:
        if len(out) != 1:
            raise ValueError("The 'out' parameter must have exactly one array value")
        kwargs = dict(kwargs, out=out[0])
        operands = inputs + out
    for operand in operands:
        if not (isinstance(operand, _HANDLED_TYPES) or type(operand) in SCALAR_TYPES
                or hasattr(operand, "__cuda_array_interface__")):
            return NotImplemented
    if method == "__call__":
        if ufunc.__name__ in ("greater", "greater_equal", "less", "less_equal", "equal",
                              "not_equal"):
            inputs = tuple(x.item() if isinstance(x, numpy.ndarray) and x.ndim == 0 else x
                           for x in inputs)
        return cupy_ufunc(*inputs, **kwargs)
    cupy_method = getattr(cupy_ufunc, method, None)
    if cupy_method is None:
        return NotImplemented
    return cupy_method(*inputs, **kwargs)


def array_function(func, types, args, kwargs):
    try:
        module = functools.reduce(getattr, func.__module__.split(".")[1:], _cupy())
        cupy_func = getattr(module, func.__name__)
    except AttributeError:
        return NotImplemented
    if cupy_func is func:
        return NotImplemented
    for cls in types:
        if cls not in _HANDLED_TYPES:
            return NotImplemented
    return cupy_func(*args, **kwargs)
