"""cupy.ndarray for the stand-in: a device array that is not a NumPy array.

It holds a private NumPy array (``_sd_a``, the "device memory"), the pool block it lives in
(``_sd_mem``, shared by its views; the block returns to the pool when the last array using
it is collected) and, for views, the array it is a view of (``base``, as in CuPy: always
the array that owns the memory).

What CuPy refuses, it refuses: implicit conversion to NumPy (``__array__``), host arrays
mixed into arithmetic, keywords CuPy's methods lack. What costs a transfer in CuPy is
counted (``cupy.standin.stats()``): ``get``, ``item``, ``tolist``, ``float``/``int``/``bool``,
``repr``/``str``, pickling, and ``set``. Which attributes exist is decided at import from
the recorded surface (``_namespace.finish_class``).
"""
import weakref

import numpy

from . import _stats
from .cuda import device as _device
from .cuda import memory as _memory
from .cuda import pinned_memory as _pinned
from .cuda import stream as _stream

_new = object.__new__
_ndarray = numpy.ndarray

CONVERSION_MESSAGE = ("Implicit conversion to a NumPy array is not allowed. Please use "
                      "`.get()` to construct a NumPy array explicitly.")

# Types CuPy takes as scalars in kernels (``_scalar.scalar_type_set``).
SCALAR_TYPES = frozenset(
    [bool, int, float, complex]
    + [t for t in set(numpy.sctypeDict.values())
       if issubclass(t, (numpy.number, numpy.bool_))])


def root_of(data):
    """The NumPy array that owns the memory ``data`` lies in (NumPy collapses view chains
    to the owner)."""
    base = data.base
    return base if type(base) is _ndarray else data


def fresh(host):
    """A new device array holding ``host`` (a NumPy array no one else holds): one
    allocation from the memory pool (OutOfMemoryError past the budget)."""
    block = _memory._allocate(host.nbytes)
    array = _new(ndarray)
    array._sd_a = host
    array._sd_mem = block
    array._sd_base = None
    return array


def view_of(host, owner):
    """A device array over ``host``, a NumPy view of ``owner``'s memory."""
    array = _new(ndarray)
    array._sd_a = host
    array._sd_mem = owner._sd_mem
    base = owner._sd_base
    array._sd_base = owner if base is None else base
    return array


def launched():
    _stats.add("kernel_launches")


def _device_to_host(stream, blocking=True):
    """Count one copy to the host; a blocking copy waits for its stream."""
    _stats.add("device_to_host")
    if blocking:
        _stream._complete(stream.ptr)


class Flags:
    """Memory-layout flags of a cupy array (read-only)."""

    __slots__ = ("c_contiguous", "f_contiguous", "owndata")

    def __init__(self, c_contiguous, f_contiguous, owndata):
        self.c_contiguous = c_contiguous
        self.f_contiguous = f_contiguous
        self.owndata = owndata

    @property
    def fnc(self):
        return self.f_contiguous and not self.c_contiguous

    @property
    def forc(self):
        return self.f_contiguous or self.c_contiguous

    def __getitem__(self, name):
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[name]

    def __repr__(self):
        return "\n".join(f"  {key} : {self[key]}" for key in
                         ("C_CONTIGUOUS", "F_CONTIGUOUS", "OWNDATA"))


Flags.__module__ = "cupy._core.flags"
Flags.__qualname__ = Flags.__name__ = "Flags"


def _ufunc(name):
    from . import _ufunc as module

    return module.UFUNCS[name]


def _should_use_rop(other):
    """CuPy's rule: an operand that opts out of __array_ufunc__ (or has none and a
    higher __array_priority__) gets the reflected operator."""
    try:
        other_ufunc = other.__array_ufunc__
    except AttributeError:
        return getattr(other, "__array_priority__", 0) > 100
    return other_ufunc is None


_PLAIN_OPERANDS = frozenset(SCALAR_TYPES)


def _binary(name):
    def operator(self, other):
        if type(other) is not ndarray and type(other) not in _PLAIN_OPERANDS and \
                _should_use_rop(other):
            return NotImplemented
        return _ufunc(name)(self, other)
    return operator


def _reflected(name):
    def operator(self, other):
        return _ufunc(name)(other, self)
    return operator


def _inplace(name):
    def operator(self, other):
        _ufunc(name)(self, other, out=self)
        return self
    return operator


def _unary(name):
    def operator(self):
        return _ufunc(name)(self)
    return operator


def _numpy_method(name, target=None):
    """A method computed by NumPy's ndarray method (or ``target``), through the generic
    dispatch (views stay views, new arrays are allocations)."""
    function = target or getattr(_ndarray, name)

    def method(self, *args, **kwargs):
        from ._dispatch import call

        return call(function, (self,) + args, kwargs)
    method.__name__ = method.__qualname__ = name
    return method


class ndarray:
    """Multi-dimensional array on a (simulated) CUDA device."""

    __slots__ = ("_sd_a", "_sd_mem", "_sd_base", "__weakref__")
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        dtype = numpy.dtype(dtype)
        if order not in ("C", "F", None):
            raise ValueError(f"order not understood. order={order}")
        if strides is not None and memptr is None:
            raise ValueError("memptr is required if strides is given.")
        if memptr is None:
            _memory._check_room(int(numpy.prod(shape, dtype=numpy.int64)) * dtype.itemsize)
            host = numpy.empty(shape, dtype, order="F" if order == "F" else "C")
            self._sd_a = host
            self._sd_mem = _memory._allocate(host.nbytes)
            self._sd_base = None
            return
        owner = _arrays_by_mem.get(id(memptr.mem)) if memptr.mem is not None else None
        if owner is None:
            raise NotImplementedError(
                "the CuPy stand-in builds arrays on memptr= only from the .data of another "
                "array (its memory pool holds no data of its own)")
        buffer = root_of(owner._sd_a)
        offset = memptr.ptr - memptr.mem.ptr
        self._sd_a = numpy.ndarray(shape, dtype, buffer=buffer, offset=offset,
                                   strides=strides, order=order or "C")
        self._sd_mem = memptr.mem
        self._sd_base = None

    # -- layout -------------------------------------------------------------------------
    @property
    def shape(self):
        return self._sd_a.shape

    @shape.setter
    def shape(self, shape):
        self._sd_a.shape = shape

    @property
    def strides(self):
        return self._sd_a.strides

    @property
    def ndim(self):
        return self._sd_a.ndim

    @property
    def size(self):
        return self._sd_a.size

    @property
    def itemsize(self):
        return self._sd_a.itemsize

    @property
    def nbytes(self):
        return self._sd_a.nbytes

    @property
    def dtype(self):
        return self._sd_a.dtype

    @property
    def base(self):
        return self._sd_base

    @property
    def flags(self):
        flags = self._sd_a.flags
        return Flags(flags.c_contiguous, flags.f_contiguous, self._sd_base is None)

    @property
    def data(self):
        """A MemoryPointer to the first element (a fake device address)."""
        mem = self._sd_mem
        if mem is None:
            return _memory.MemoryPointer(None, 0)
        _arrays_by_mem[id(mem)] = self if self._sd_base is None else self._sd_base
        offset = (self._sd_a.__array_interface__["data"][0]
                  - root_of(self._sd_a).__array_interface__["data"][0])
        return _memory.MemoryPointer(mem, offset)

    @property
    def device(self):
        mem = self._sd_mem
        return _device.Device(mem.device_id if mem is not None else _device.get_device_id())

    @property
    def __cuda_array_interface__(self):
        data = self._sd_a
        return {
            "shape": data.shape,
            "typestr": data.dtype.str,
            "descr": data.dtype.descr,
            "stream": _stream.get_current_stream().ptr or 1,
            "version": 3,
            "strides": None if data.flags.c_contiguous else data.strides,
            "data": (self.data.ptr if data.size else 0, False),
        }

    @property
    def T(self):
        if self._sd_a.ndim < 2:
            return self
        return view_of(self._sd_a.T, self)

    @property
    def mT(self):
        if self._sd_a.ndim < 2:
            raise ValueError("matrix transpose with ndim < 2 is undefined")
        return view_of(numpy.swapaxes(self._sd_a, -1, -2), self)

    @property
    def flat(self):
        return flatiter(self)

    @property
    def real(self):
        if self._sd_a.dtype.kind != "c":
            return self
        return view_of(self._sd_a.real, self)

    @real.setter
    def real(self, value):
        self.real[...] = value

    @property
    def imag(self):
        if self._sd_a.dtype.kind == "c":
            return view_of(self._sd_a.imag, self)
        launched()
        return fresh(numpy.zeros_like(self._sd_a))

    @imag.setter
    def imag(self, value):
        if self._sd_a.dtype.kind != "c":
            raise TypeError("cupy.ndarray does not have imaginary part to set")
        self.imag[...] = value

    @property
    def cstruct(self):
        raise NotImplementedError("the CuPy stand-in has no C structures of its arrays")

    # -- conversion: refused, or counted as copies to the host ------------------------------
    def __array__(self, dtype=None):
        raise TypeError(CONVERSION_MESSAGE)

    def get(self, stream=None, order="C", out=None, blocking=True):
        """A copy on the host (one device-to-host transfer)."""
        data = self._sd_a
        if out is not None:
            if not isinstance(out, _ndarray):
                raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
            if out.dtype != data.dtype:
                raise TypeError(f"{out.dtype} array cannot be obtained from "
                                f"{data.dtype} array")
            if out.shape != data.shape:
                raise ValueError(f"Shape mismatch. Expected shape: {data.shape}, actual "
                                 f"shape: {out.shape}")
            numpy.copyto(out, data)
            result = out
        else:
            order = order.upper()
            if order == "A":
                order = "F" if data.flags.f_contiguous else "C"
            if order not in ("C", "F"):
                raise ValueError(f"unsupported order: {order}")
            result = numpy.array(data, order=order, copy=True)
        stream = _stream.get_current_stream() if stream is None else stream
        _device_to_host(stream, blocking)
        if not blocking and out is not None:
            _pinned._record_async_copy(out, stream, "device-to-host copy (ndarray.get)")
        return result

    def set(self, arr, stream=None):
        """Copy the host array ``arr`` in (one host-to-device transfer) on the current (or
        given) stream. From pinned memory the copy is asynchronous on every stream, the null
        stream included (cudaMemcpyAsync from page-locked memory returns before the DMA), so
        it stays pending there until the stream is synchronised."""
        if not isinstance(arr, _ndarray):
            raise TypeError("Only numpy.ndarray can be set to cupy.ndarray")
        data = self._sd_a
        if data.dtype != arr.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {data.dtype} array")
        if data.shape != arr.shape:
            raise ValueError(f"Shape mismatch. Old shape: {data.shape}, new shape: "
                             f"{arr.shape}")
        if data.flags.c_contiguous:
            staged = not arr.flags.c_contiguous
        elif data.flags.f_contiguous:
            staged = not arr.flags.f_contiguous
        else:
            raise RuntimeError("Cannot set to non-contiguous array")
        numpy.copyto(data, arr)
        _stats.add("host_to_device")
        stream = _stream.get_current_stream() if stream is None else stream
        if not staged:
            _pinned._record_async_copy(arr, stream, "host-to-device copy (ndarray.set)")

    def item(self):
        if self._sd_a.size != 1:
            raise ValueError("can only convert an array of size 1 to a Python scalar")
        return self.get().item()

    def tolist(self):
        return self.get().tolist()

    def tobytes(self, order="C"):
        return self.get().tobytes(order)

    def tofile(self, fid, sep="", format="%s"):
        self.get().tofile(fid, sep, format)

    def dump(self, file):
        import pickle

        pickle.dump(self, file, -1)

    def dumps(self):
        import pickle

        return pickle.dumps(self, -1)

    def __reduce__(self):
        from . import _creation

        return (_creation.array, (self.get(),))

    def __int__(self):
        return int(self.get())

    def __float__(self):
        return float(self.get())

    def __complex__(self):
        return complex(self.get())

    def __bool__(self):
        return bool(self.get())

    def __bytes__(self):
        return bytes(self.get())

    def __repr__(self):
        return repr(self.get())

    def __str__(self):
        return str(self.get())

    def __format__(self, format_spec):
        return format(self.get(), format_spec)

    def __len__(self):
        if self._sd_a.ndim == 0:
            raise TypeError("len() of unsized object")
        return self._sd_a.shape[0]

    def __iter__(self):
        if self._sd_a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self._sd_a.shape[0]))

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    # -- NumPy interoperability (CuPy's rules) ---------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        from . import _interop

        return _interop.array_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        from . import _interop

        return _interop.array_function(func, types, args, kwargs)

    def __dlpack_device__(self):
        return (2, self.device.id)  # kDLCUDA

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        raise NotImplementedError("the CuPy stand-in does not export DLPack capsules")

    toDlpack = __dlpack__

    def mdspan(self, *, index_type, allow_unsafe=False):
        raise NotImplementedError("the CuPy stand-in has no mdspan")

    # -- indexing -----------------------------------------------------------------------
    def __getitem__(self, key):
        from ._indexing import getitem

        return getitem(self, key)

    def __setitem__(self, key, value):
        from ._indexing import setitem

        setitem(self, key, value)

    def take(self, indices, axis=None, out=None):
        from ._indexing import take

        return take(self, indices, axis, out)

    def put(self, indices, values, mode="wrap"):
        from ._indexing import put

        put(self, indices, values, mode)

    def compress(self, condition, axis=None, out=None):
        from ._indexing import compress

        return compress(self, condition, axis, out)

    def nonzero(self):
        from ._indexing import nonzero

        return nonzero(self)

    def scatter_add(self, slices, value):
        from ._indexing import scatter

        scatter(self, slices, value, numpy.add)

    def scatter_max(self, slices, value):
        from ._indexing import scatter

        scatter(self, slices, value, numpy.maximum)

    def scatter_min(self, slices, value):
        from ._indexing import scatter

        scatter(self, slices, value, numpy.minimum)

    def fill(self, value):
        if isinstance(value, _ndarray):
            if value.shape != ():
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            value = value.item()
        if type(value) is ndarray:
            self._sd_a[...] = value._sd_a
        elif type(value) in SCALAR_TYPES:
            self._sd_a.fill(value)
        else:
            raise TypeError(f"Unsupported type {type(value)}")
        launched()

    # -- shape and copies -----------------------------------------------------------------
    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        if casting is not None:
            raise TypeError("casting is not supported yet")
        if subok is not None:
            raise TypeError("subok is not supported yet")
        from ._dispatch import call

        return call(_ndarray.astype, (self, dtype), {"order": order or "K", "copy": copy})

    def view(self, dtype=None, type=None):
        if type is not None and type is not ndarray:
            raise NotImplementedError("the CuPy stand-in supports view(type=None) only")
        data = self._sd_a
        return view_of(data.view() if dtype is None else data.view(dtype), self)

    def copy(self, order="C"):
        launched()
        return fresh(numpy.array(self._sd_a, order=order, copy=True))

    def reduced_view(self, dtype=None):
        if self._sd_a.ndim <= 1:
            return self
        if self._sd_a.flags.c_contiguous:
            return view_of(self._sd_a.reshape(-1), self)
        return self

    reshape = _numpy_method("reshape")
    ravel = _numpy_method("ravel")
    flatten = _numpy_method("flatten")
    squeeze = _numpy_method("squeeze")
    swapaxes = _numpy_method("swapaxes")
    transpose = _numpy_method("transpose")
    diagonal = _numpy_method("diagonal")
    repeat = _numpy_method("repeat")
    byteswap = _numpy_method("byteswap")

    # -- computation ------------------------------------------------------------------------
    all = _numpy_method("all")
    any = _numpy_method("any")
    max = _numpy_method("max")
    min = _numpy_method("min")
    sum = _numpy_method("sum")
    mean = _numpy_method("mean")
    var = _numpy_method("var")
    std = _numpy_method("std")
    cumsum = _numpy_method("cumsum")
    cumprod = _numpy_method("cumprod")
    clip = _numpy_method("clip")
    round = _numpy_method("round")
    trace = _numpy_method("trace")
    conj = _numpy_method("conj")
    conjugate = _numpy_method("conjugate")
    choose = _numpy_method("choose")
    searchsorted = _numpy_method("searchsorted")
    argpartition = _numpy_method("argpartition")
    argsort = _numpy_method("argsort")
    ptp = _numpy_method("ptp", numpy.ptp)

    def prod(self, axis=None, dtype=None, out=None, keepdims=None):
        from ._dispatch import call

        return call(_ndarray.prod, (self, axis, dtype, out, bool(keepdims)), {})

    def argmax(self, axis=None, out=None, dtype=None, keepdims=False):
        return self._sd_argminmax(_ndarray.argmax, axis, out, dtype, keepdims)

    def argmin(self, axis=None, out=None, dtype=None, keepdims=False):
        return self._sd_argminmax(_ndarray.argmin, axis, out, dtype, keepdims)

    def _sd_argminmax(self, function, axis, out, dtype, keepdims):
        from ._dispatch import call

        result = call(function, (self, axis), {"keepdims": keepdims})
        if dtype is not None:
            result = result.astype(dtype, copy=False)
        if out is not None:
            out[...] = result
            return out
        return result

    def sort(self, axis=-1, kind=None):
        self._sd_a.sort(axis=axis, kind=kind)
        launched()

    def partition(self, kth, axis=-1):
        self._sd_a.partition(kth, axis=axis)
        launched()

    def dot(self, b, out=None):
        from . import _linalg

        return _linalg.dot(self, b, out)

    # -- operators ----------------------------------------------------------------------
    __add__ = _binary("add")
    __sub__ = _binary("subtract")
    __mul__ = _binary("multiply")
    __truediv__ = _binary("true_divide")
    __floordiv__ = _binary("floor_divide")
    __mod__ = _binary("remainder")
    __divmod__ = _binary("divmod")
    __and__ = _binary("bitwise_and")
    __or__ = _binary("bitwise_or")
    __xor__ = _binary("bitwise_xor")
    __lshift__ = _binary("left_shift")
    __rshift__ = _binary("right_shift")
    __matmul__ = _binary("matmul")
    __radd__ = _reflected("add")
    __rsub__ = _reflected("subtract")
    __rmul__ = _reflected("multiply")
    __rtruediv__ = _reflected("true_divide")
    __rfloordiv__ = _reflected("floor_divide")
    __rmod__ = _reflected("remainder")
    __rdivmod__ = _reflected("divmod")
    __rand__ = _reflected("bitwise_and")
    __ror__ = _reflected("bitwise_or")
    __rxor__ = _reflected("bitwise_xor")
    __rlshift__ = _reflected("left_shift")
    __rrshift__ = _reflected("right_shift")
    __rmatmul__ = _reflected("matmul")
    __iadd__ = _inplace("add")
    __isub__ = _inplace("subtract")
    __imul__ = _inplace("multiply")
    __itruediv__ = _inplace("true_divide")
    __ifloordiv__ = _inplace("floor_divide")
    __imod__ = _inplace("remainder")
    __iand__ = _inplace("bitwise_and")
    __ior__ = _inplace("bitwise_or")
    __ixor__ = _inplace("bitwise_xor")
    __ilshift__ = _inplace("left_shift")
    __irshift__ = _inplace("right_shift")
    __ipow__ = _inplace("power")
    __neg__ = _unary("negative")
    __pos__ = _unary("positive")
    __abs__ = _unary("absolute")
    __invert__ = _unary("invert")
    __eq__ = _binary("equal")
    __ne__ = _binary("not_equal")
    __lt__ = _binary("less")
    __le__ = _binary("less_equal")
    __gt__ = _binary("greater")
    __ge__ = _binary("greater_equal")

    def __pow__(self, other, modulo=None):
        if modulo is not None:
            return NotImplemented
        return _binary("power")(self, other)

    def __rpow__(self, other, modulo=None):
        return _ufunc("power")(other, self)

    @classmethod
    def __class_getitem__(cls, item):
        import types

        return types.GenericAlias(cls, item)


ndarray.__module__ = "cupy"

# id(PooledMemory) -> the array that owns it, for ndarray(memptr=x.data) (weak: the
# array's own lifetime decides; see data)
_arrays_by_mem = weakref.WeakValueDictionary()


class flatiter:
    """Flat iterator over a cupy array (indexing only)."""

    def __init__(self, a):
        self.base = a

    def _sd_flat(self):
        base = self.base
        if base._sd_a.flags.c_contiguous:
            return view_of(base._sd_a.reshape(-1), base)
        return None

    def __getitem__(self, index):
        flat = self._sd_flat()
        if flat is None:
            flat = self.base.ravel()
        return flat[index]

    def __setitem__(self, index, value):
        flat = self._sd_flat()
        if flat is None:
            raise NotImplementedError("the CuPy stand-in writes through flat only on "
                                      "C-contiguous arrays")
        flat[index] = value

    def __len__(self):
        return self.base.size

    def __iter__(self):
        return iter(self.base.ravel())

    def copy(self):
        return self.base.flatten()


flatiter.__module__ = "cupy._indexing.iterate"


def finish():
    """Enforce the recorded surface on the classes of this module (called once the
    stand-in's functions exist)."""
    from ._namespace import finish_class

    finish_class(ndarray, "cupy.ndarray")
    finish_class(Flags, "cupy._core.flags.Flags", check_constructor=False)

