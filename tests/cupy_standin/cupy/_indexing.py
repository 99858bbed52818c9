"""Indexing of the stand-in's arrays, following CuPy's ``_routines_indexing.pyx``.

- Integers, slices, ``None`` and ``...`` give views (``x[i]`` on every axis: a 0-d view,
  never a scalar); an integer out of range raises CuPy's IndexError.
- Lists, tuples, host NumPy arrays and boolean scalars used as indices are copied to the
  device first (one host-to-device transfer each, and an allocation), as CuPy does.
- Integer array indices wrap around (``idx % size``): CuPy does not check them, and an
  out-of-range index silently reads another element.
- A boolean mask synchronises (CuPy reads back how many elements are True): one
  device-to-host transfer.
- Assignment through basic indices fills from a scalar or copies from a cupy array; a
  non-scalar host array there raises CuPy's ValueError ("... cannot be used for fill").
  Through array indices, a value that is not a cupy array is copied to the device first.
"""
import numpy

from . import _stats
from ._array import SCALAR_TYPES, fresh, launched, ndarray, view_of

_BASIC_TYPES = frozenset((int, slice, type(None), type(Ellipsis)))
_ndarray = numpy.ndarray


def _items(key):
    return list(key) if type(key) is tuple else [key]


def _is_basic(items):
    for item in items:
        if type(item) not in _BASIC_TYPES:
            return False
    return True


def _consumed(items):
    count = 0
    for item in items:
        if item is None or item is Ellipsis:
            continue
        if type(item) is ndarray and item.dtype.kind == "b":
            count += item.ndim
        else:
            count += 1
    return count


def _key(shape, items):
    """NumPy's key for ``items`` on an array of ``shape``: CuPy's checks and messages,
    integer arrays wrapped, ``...`` added so that full integer indexing gives a view.
    Also whether a boolean mask is in it."""
    ndim = len(shape)
    consumed = _consumed(items)
    if sum(1 for item in items if item is Ellipsis) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if consumed > ndim:
        raise IndexError(f"too many indices for array: array is {ndim}-dimensional, but "
                         f"{consumed} were indexed")
    key, axis, masked, has_ellipsis = [], 0, False, False
    for item in items:
        if item is None:
            key.append(None)
        elif item is Ellipsis:
            axis += ndim - consumed
            has_ellipsis = True
            key.append(Ellipsis)
        elif type(item) is slice:
            key.append(item)
            axis += 1
        elif type(item) is ndarray:
            data = item._sd_a
            if data.dtype.kind == "b":
                masked = True
                key.append(data)
                axis += data.ndim
            else:
                size = shape[axis]
                key.append(data % size if size else data)
                axis += 1
        else:
            size = shape[axis]
            index = item + size if item < 0 else item
            if not 0 <= index < size:
                raise IndexError(f"Index {item} is out of bounds for axis {axis} with size "
                                 f"{size}")
            key.append(index)
            axis += 1
    if not has_ellipsis:
        key.append(Ellipsis)
    return tuple(key), masked


def _to_device_index(item):
    """A list / tuple / host array / boolean scalar index as a device array (copied)."""
    if isinstance(item, (list, tuple)) and _contains_device_array(item):
        raise NotImplementedError("the CuPy stand-in does not index with lists of cupy "
                                  "arrays")
    host = numpy.asarray(item)
    if host.dtype.kind == "O":
        raise IndexError("arrays used as indices must be of integer (or boolean) type")
    if isinstance(item, (list, tuple)) and host.size == 0:
        host = host.astype(numpy.int32)
    _stats.add("host_to_device")
    return fresh(numpy.array(host, copy=True))


def _contains_device_array(items):
    return any(type(item) is ndarray or (isinstance(item, (list, tuple))
                                         and _contains_device_array(item))
               for item in items)


def _prepare(items):
    """CuPy's _prepare_slice_list: host array-likes to the device, other scalars to int.
    Whether any array index remains."""
    arrays = False
    for position, item in enumerate(items):
        if item is None or item is Ellipsis or type(item) is slice:
            continue
        if type(item) is not ndarray:
            if isinstance(item, (list, tuple, _ndarray, bool, numpy.bool_)):
                item = items[position] = _to_device_index(item)
            elif numpy.isscalar(item):
                items[position] = int(item)
                continue
            else:
                raise IndexError("only integers, slices (`:`), ellipsis (`...`),"
                                 "numpy.newaxis (`None`) and integer or boolean arrays "
                                 "are valid indices")
        if item.dtype.kind not in "biu":
            raise IndexError("arrays used as indices must be of integer or boolean type. "
                             f"(actual: {item.dtype.type})")
        arrays = True
    return arrays


def _resolve(array, key):
    """(NumPy key, whether it is advanced) for indexing ``array`` with ``key``."""
    items = _items(key)
    if _is_basic(items):
        return _key(array._sd_a.shape, items)[0], False
    advanced = _prepare(items)
    numpy_key, masked = _key(array._sd_a.shape, items)
    if masked:
        _stats.add("device_to_host")  # CuPy reads back the number of True elements
    return numpy_key, advanced


def getitem(array, key):
    numpy_key, advanced = _resolve(array, key)
    result = array._sd_a[numpy_key]
    if not advanced:
        return view_of(result, array)
    launched()
    return fresh(result)


def _device_value(value, dtype):
    """CuPy's ``core.array(value, dtype=a.dtype)``: a host value copied to the device."""
    if type(value) is ndarray:
        return value._sd_a
    _stats.add("host_to_device")
    return fresh(numpy.array(value, dtype=dtype, copy=True))._sd_a


def _fill_value(value):
    """The value of CuPy's ``fill`` (basic-index assignment of a non-cupy value)."""
    if isinstance(value, _ndarray):
        if value.shape != ():
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        value = value.item()
    if type(value) not in SCALAR_TYPES:
        raise TypeError(f"Unsupported type {type(value)}")
    return value


def setitem(array, key, value):
    numpy_key, advanced = _resolve(array, key)
    data = array._sd_a
    if advanced:
        data[numpy_key] = _device_value(value, data.dtype)
    elif type(value) is ndarray:
        data[numpy_key] = value._sd_a
    else:
        data[numpy_key] = _fill_value(value)
    launched()


def scatter(array, key, value, ufunc):
    """scatter_add / scatter_max / scatter_min (and ufunc.at): ``ufunc`` applied at the
    indices, repeated indices accumulating."""
    numpy_key, advanced = _resolve(array, key)
    data = array._sd_a
    if advanced:
        ufunc.at(data, numpy_key, _device_value(value, data.dtype))
    else:
        if type(value) is ndarray:
            value = value._sd_a
        elif type(value) not in SCALAR_TYPES:
            raise TypeError(f"Unsupported type {type(value)}")
        target = data[numpy_key]
        ufunc(target, value, out=target)
    launched()


def _device_indices(indices):
    if type(indices) is ndarray:
        return indices._sd_a
    return _device_value(indices, int)


def take(array, indices, axis=None, out=None):
    """CuPy's take: indices wrap around; host indices are copied to the device."""
    data = array._sd_a
    if not numpy.isscalar(indices):
        indices = _device_indices(indices)
    if out is not None:
        if out.dtype != data.dtype:
            raise TypeError("Output dtype mismatch")
        if out.shape != _take_shape(data.shape, numpy.shape(indices), axis):
            raise ValueError("Output shape mismatch")
        numpy.take(data, indices, axis, out=out._sd_a, mode="wrap")
        launched()
        return out
    result = numpy.take(data, indices, axis, mode="wrap")
    launched()
    return fresh(numpy.asarray(result))


def _take_shape(shape, indices_shape, axis):
    if axis is None:
        return tuple(indices_shape)
    axis = axis % len(shape) if shape else 0
    return tuple(shape[:axis]) + tuple(indices_shape) + tuple(shape[axis + 1:])


def put(array, indices, values, mode="wrap"):
    if mode not in ("raise", "wrap", "clip"):
        raise ValueError("clipmode not understood")
    data = array._sd_a
    indices = _device_indices(indices).ravel()
    values = _device_value(values, data.dtype)
    if values.size == 0:
        return
    if mode == "raise":
        _stats.add("device_to_host")  # CuPy checks an error flag on the host
        if ((indices < -data.size) | (indices >= data.size)).any():
            raise IndexError("invalid entry in indices array")
        mode = "wrap"
    numpy.put(data, indices, values, mode=mode)
    launched()


def nonzero(array):
    """Indices of the non-zero elements; synchronises (the count is read back)."""
    _stats.add("device_to_host")
    data = array._sd_a
    if data.ndim == 0:
        import warnings

        warnings.warn("calling nonzero on 0d arrays is deprecated", DeprecationWarning)
        data = data.reshape(1)
        return (fresh(numpy.zeros(int(data[0] != 0), numpy.int64)),)
    launched()
    return tuple(fresh(numpy.ascontiguousarray(index)) for index in numpy.nonzero(data))


def compress(array, condition, axis=None, out=None):
    if numpy.isscalar(condition):
        raise ValueError("condition must be a 1-d array")
    if type(condition) is not ndarray:
        condition = fresh(numpy.array(condition, dtype=int))
        _stats.add("host_to_device")
        if condition.ndim != 1:
            raise ValueError("condition must be a 1-d array")
    (indices,) = nonzero(condition)[:1]
    return take(array, indices, axis, out)
