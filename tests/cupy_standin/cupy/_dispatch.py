"""Calling NumPy for the stand-in: unwrap device arrays, refuse host arrays, wrap results.

``call(numpy_function, args, kwargs)`` is the generic path of every function and method
the stand-in computes with NumPy:

- cupy arrays (anywhere in args, kwargs, lists, tuples) become their private NumPy data;
- a host ``numpy.ndarray`` raises CuPy's ``TypeError: Unsupported type <class
  'numpy.ndarray'>`` (CuPy's kernels take device arrays and scalars only);
- a NumPy array in the result is the ``out=`` array (returned as given), an argument itself
  (returned as that cupy array), a view of an argument's memory (a cupy view of it, no
  allocation), or new memory (a new cupy array: an allocation from the pool);
- NumPy scalars in the result become 0-d cupy arrays, as CuPy never returns host scalars
  from array functions; tuples, lists and named tuples are mapped element by element;
- a call that made a new array or wrote into ``out`` counts as one kernel launch.
"""
import numpy

from . import _stats
from ._array import ndarray, fresh, view_of, root_of

_ndarray = numpy.ndarray
_generic = numpy.generic


def unsupported(value):
    return TypeError(f"Unsupported type {type(value)}")


class _Call:
    """State of one call: the cupy arrays passed in, by data and by memory."""

    __slots__ = ("by_data", "by_root", "outs", "launched", "host_ok")

    def __init__(self, host_ok):
        self.by_data = {}
        self.by_root = {}
        self.outs = {}
        self.launched = False
        self.host_ok = host_ok

    def unwrap(self, value):
        cls = type(value)
        if cls is ndarray:
            data = value._sd_a
            self.by_data[id(data)] = value
            self.by_root[id(root_of(data))] = value
            return data
        if cls is list or cls is tuple:
            return cls(self.unwrap(item) for item in value)
        if isinstance(value, _ndarray) and not self.host_ok:
            raise unsupported(value)
        return value

    def wrap(self, result):
        cls = type(result)
        if cls is _ndarray:
            key = id(result)
            if key in self.outs:
                self.launched = True
                return self.outs[key]
            if key in self.by_data:
                return self.by_data[key]
            owner = self.by_root.get(id(root_of(result)))
            if owner is not None:
                return view_of(result, owner)
            self.launched = True
            return fresh(result)
        if isinstance(result, _generic):
            self.launched = True
            return fresh(numpy.asarray(result))
        if cls is tuple or cls is list:
            return cls(self.wrap(item) for item in result)
        if isinstance(result, tuple) and hasattr(result, "_fields"):
            return cls(*(self.wrap(item) for item in result))
        return result


def call(function, args, kwargs, host_ok=False, scalar_as_array=False):
    """``function(*args, **kwargs)`` on the NumPy data of the arguments, wrapped back."""
    state = _Call(host_ok)
    unwrapped = [state.unwrap(arg) for arg in args]
    if kwargs:
        out = kwargs.get("out")
        kwargs = {key: state.unwrap(value) for key, value in kwargs.items()}
        if type(out) is ndarray:
            state.outs[id(out._sd_a)] = out
        elif type(out) is tuple:
            for item in out:
                if type(item) is ndarray:
                    state.outs[id(item._sd_a)] = item
    result = function(*unwrapped, **kwargs)
    if scalar_as_array and type(result) in (bool, int, float, complex):
        result = numpy.asarray(result)
    wrapped = state.wrap(result)
    if state.launched:
        _stats.add("kernel_launches")
    return wrapped


def call_with_host(function, args, kwargs):
    """A function of metadata (shapes, dtypes): host arrays allowed, results as NumPy's."""
    state = _Call(True)
    return function(*[state.unwrap(arg) for arg in args],
                    **{key: state.unwrap(value) for key, value in kwargs.items()})
