"""Functions that move data between host and device, or make arrays from nothing, with
CuPy's signatures and the transfers counted.

- ``asarray`` / ``asanyarray`` / ``array``: a cupy array comes back as it is (or cast /
  copied on the device); host data is one host-to-device copy (a safe, staged one: the
  source may be reused at once, as with CuPy); a list of cupy arrays is stacked on the device.
- ``asnumpy``: one device-to-host copy of a cupy array; other objects go through NumPy.
- ``empty`` / ``zeros`` / ``ones`` / ``full`` / the ``ndarray`` constructor check the memory
  budget before NumPy allocates (so a too-large request is OutOfMemoryError, not a host
  MemoryError).
"""
import sys

import numpy

from . import _stats
from ._array import fresh, launched, ndarray
from ._dispatch import call
from ._surface import SURFACE
from .cuda import memory as _memory

_ndarray = numpy.ndarray

# copy=False: "copy if needed" in CuPy 13, "never copy, else ValueError" in CuPy 14 (the
# stricter rule applies when CuPy 14 is enforced).
_COPY_FALSE_REFUSES = any(int(v.split(".")[0]) >= 14 for v in SURFACE.versions)


def _contains_device_array(value):
    if type(value) is ndarray:
        return True
    if isinstance(value, (list, tuple)):
        return any(_contains_device_array(item) for item in value)
    return False


def _contains_host_array(value):
    if isinstance(value, _ndarray):
        return True
    if isinstance(value, (list, tuple)):
        return any(_contains_host_array(item) for item in value)
    return False


def _from_sequence_of_device_arrays(obj, dtype, order, ndmin):
    """CuPy concatenates a (nested) sequence of cupy arrays on the device."""
    if _contains_host_array(obj):
        raise TypeError("Unsupported type <class 'numpy.ndarray'>")
    return call(numpy.array, (obj,), {"dtype": dtype, "order": _host_order(order),
                                      "ndmin": ndmin, "copy": True})


def _host_order(order):
    return "C" if order in (None, "K", "A") else order


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    if subok:
        raise NotImplementedError
    if order is None:
        order = "K"
    if type(obj) is ndarray:
        result = obj.astype(obj.dtype if dtype is None else dtype, order=order,
                            copy=bool(copy))
        if copy is False and result is not obj and _COPY_FALSE_REFUSES:
            raise ValueError("Unable to avoid copy while creating an array as requested.")
        if ndmin > result.ndim:
            result = result.reshape((1,) * (ndmin - result.ndim) + result.shape)
        return result
    if isinstance(obj, (list, tuple)) and _contains_device_array(obj):
        return _from_sequence_of_device_arrays(obj, dtype, order, ndmin)
    if copy is False and _COPY_FALSE_REFUSES:
        raise ValueError("Unable to avoid copy while creating an array as requested.")
    host = numpy.array(obj, dtype=dtype, order=_host_order(order), ndmin=ndmin, copy=True)
    if host.dtype.kind == "O":
        raise ValueError("Unsupported dtype object")
    if not host.dtype.isnative:
        host = host.astype(host.dtype.newbyteorder("="))
    _stats.add("host_to_device")
    return fresh(host)


def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    return array(a, dtype, copy, order, blocking=blocking)


def asanyarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    return array(a, dtype, copy, order, blocking=blocking)


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    if type(a) is ndarray:
        return a.get(stream=stream, order=order, out=out, blocking=blocking)
    temp = numpy.asarray(a, order=order)
    if out is not None:
        out[...] = temp
        return out
    return temp


def astype(x, dtype, /, *, copy=True):
    if type(x) is not ndarray:
        raise TypeError(f"Unsupported type {type(x)}")
    return x.astype(dtype, copy=copy)


def get_array_module(*args):
    for arg in args:
        if isinstance(arg, ndarray):
            return sys.modules[__name__.split(".")[0]]
    return numpy


def is_available():
    """True unless NNBACK_CUPY_STANDIN_DEVICES=0 (then False, as CuPy without a GPU)."""
    from .cuda import device

    return device.DEVICE_COUNT > 0


def _check_budget(shape, dtype):
    """OutOfMemoryError before NumPy allocates an array the budget cannot hold."""
    count = 1
    for extent in ((shape,) if isinstance(shape, (int, numpy.integer)) else shape):
        count *= int(extent)
    _memory._check_room(count * numpy.dtype(dtype).itemsize)


def empty(shape, dtype=float, order="C"):
    _check_budget(shape, dtype)
    return fresh(numpy.empty(shape, dtype, order))


def zeros(shape, dtype=float, order="C"):
    _check_budget(shape, dtype)
    launched()
    return fresh(numpy.zeros(shape, dtype, order))


def ones(shape, dtype=float, order="C"):
    _check_budget(shape, dtype)
    launched()
    return fresh(numpy.ones(shape, dtype, order))


def full(shape, fill_value, dtype=None, order="C"):
    if type(fill_value) is ndarray:
        value = fill_value._sd_a
    elif isinstance(fill_value, _ndarray):
        raise TypeError(f"Unsupported type {type(fill_value)}")
    else:
        value = fill_value
    if dtype is None:
        dtype = numpy.asarray(value).dtype
    _check_budget(shape, dtype)
    launched()
    return fresh(numpy.full(shape, value, dtype, order))


def _host_data(function):
    """CuPy functions that read host data with NumPy and send it to the device."""
    def load(*args, **kwargs):
        return array(function(*args, **kwargs))
    load.__name__ = function.__name__
    return load


HOST_DATA = {name: _host_data(getattr(numpy, name)) for name in (
    "frombuffer", "fromfile", "fromfunction", "fromiter", "fromstring", "loadtxt",
    "genfromtxt") if hasattr(numpy, name)}


def copy(a, order="K"):
    if type(a) is not ndarray:
        raise TypeError(f"Unsupported type {type(a)}")
    launched()
    return fresh(numpy.array(a._sd_a, order=order, copy=True))
