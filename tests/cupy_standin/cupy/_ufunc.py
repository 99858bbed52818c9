"""cupy.ufunc for the stand-in: CuPy's argument rules, NumPy's arithmetic.

``__call__`` takes what CuPy's ``ufunc.__call__`` takes (``_kernel.pyx``): ``nin`` inputs,
optionally followed by the outputs, and only the keywords the recorded surface lists
(``out``, ``dtype``, ``casting``), with CuPy's messages for the rest. Inputs must be cupy
arrays or scalars: a host array, a list or anything else raises ``TypeError: Unsupported type
<class '...'>``. Results are new device arrays (0-d for scalar results), or the ``out``
arrays given. Each call counts as one kernel launch.
"""
import numpy

from . import _stats
from ._array import SCALAR_TYPES, fresh, ndarray
from ._dispatch import call, unsupported
from ._surface import SURFACE

_ndarray = numpy.ndarray
UFUNCS = {}  # name -> the stand-in's ufunc (also used by the ndarray operators)


class ufunc:
    """A universal function of the stand-in, computed by NumPy's of the same name."""

    def __init__(self, name, nin, nout, ops=None, preamble="", loop_prep="", doc="",
                 default_casting=None, out_ops=None, *, cutensor_op=None, scatter_op=None):
        raise NotImplementedError("the CuPy stand-in does not create ufuncs from CUDA "
                                  "code; its ufuncs are NumPy's")

    @classmethod
    def _sd_make(cls, name, entries, numpy_function):
        self = object.__new__(cls)
        entry = entries[-1]
        self.name = entry["name"]
        self.__name__ = name
        self.nin = entry["nin"]
        self.nout = entry["nout"]
        self.nargs = self.nin + self.nout
        self.__doc__ = getattr(numpy_function, "__doc__", None)
        self._sd_numpy = numpy_function
        self._sd_is_numpy_ufunc = isinstance(numpy_function, numpy.ufunc)
        self._sd_keywords = frozenset.intersection(
            *(frozenset(e["call_keywords"]) for e in entries))
        return self

    @property
    def types(self):
        return list(getattr(self._sd_numpy, "types", []))

    def __repr__(self):
        return f"<ufunc '{self.name}'>"

    def __call__(self, *args, **kwargs):
        out = dtype = casting = None
        if kwargs:
            unknown = {key: value for key, value in kwargs.items()
                       if key not in self._sd_keywords}
            if unknown:
                raise TypeError(f"Wrong arguments {unknown}")
            out = kwargs.get("out")
            dtype = kwargs.get("dtype")
            casting = kwargs.get("casting")
        count = len(args)
        if count != self.nin and count != self.nargs:
            raise TypeError(f"Wrong number of arguments for {self.name!r}. It must be "
                            f"either {self.nin} or {self.nargs} (with outputs), but given "
                            f"{count}.")
        if out is not None:
            if self.nout != 1:
                raise ValueError(f"Cannot use 'out' in {self.name}")
            if count != self.nin:
                raise ValueError("Cannot specify 'out' as both a positional and keyword "
                                 "argument")
            args = args + (out,)
        inputs = []
        for arg in args[:self.nin]:
            cls = type(arg)
            if cls is ndarray:
                inputs.append(arg._sd_a)
            elif cls in SCALAR_TYPES:
                inputs.append(arg)
            else:
                raise unsupported(arg)
        outputs = args[self.nin:]
        for output in outputs:
            if type(output) is not ndarray:
                if type(output) in SCALAR_TYPES or isinstance(output, _ndarray):
                    raise TypeError("Output arguments type must be cupy.ndarray")
                raise unsupported(output)
        options = {}
        if dtype is not None:
            options["dtype"] = dtype
        if casting is not None:
            options["casting"] = casting
        _stats.add("kernel_launches")
        if outputs:
            self._sd_compute(inputs, tuple(o._sd_a for o in outputs), options)
            return outputs[0] if self.nout == 1 else tuple(outputs)
        result = self._sd_compute(inputs, None, options)
        if self.nout == 1:
            return fresh(numpy.asarray(result))
        return tuple(fresh(numpy.asarray(r)) for r in result)

    def _sd_compute(self, inputs, outputs, options):
        function = self._sd_numpy
        if self._sd_is_numpy_ufunc:
            if outputs is not None:
                options["out"] = outputs
            return function(*inputs, **options)
        result = function(*inputs)  # a NumPy function standing for a CuPy ufunc (sinc...)
        if "dtype" in options:
            result = numpy.asarray(result).astype(options["dtype"])
        if outputs is not None:
            numpy.copyto(outputs[0], result, casting=options.get("casting", "same_kind"))
        return result

    # -- methods ------------------------------------------------------------------------
    def _sd_method(self, name):
        function = getattr(self._sd_numpy, name, None) if self._sd_is_numpy_ufunc else None
        if function is None:
            raise NotImplementedError(f"the CuPy stand-in does not implement "
                                      f"cupy.{self.__name__}.{name}")
        return function

    def reduce(self, array, axis=0, dtype=None, out=None, keepdims=False):
        _require_device_array(array)
        return call(self._sd_method("reduce"), (array, axis, dtype, out, keepdims), {})

    def accumulate(self, array, axis=0, dtype=None, out=None):
        _require_device_array(array)
        return call(self._sd_method("accumulate"), (array, axis, dtype, out), {})

    def reduceat(self, array, indices, axis=0, dtype=None, out=None):
        _require_device_array(array)
        return call(self._sd_method("reduceat"), (array, indices, axis, dtype, out), {})

    def outer(self, A, B, **kwargs):
        for operand in (A, B):
            if type(operand) is not ndarray and type(operand) not in SCALAR_TYPES:
                raise unsupported(operand)
        return call(self._sd_method("outer"), (A, B), kwargs)

    def at(self, a, indices, b=None):
        from ._indexing import scatter

        _require_device_array(a)
        if b is None:
            raise NotImplementedError(f"the CuPy stand-in does not implement "
                                      f"cupy.{self.__name__}.at without b")
        scatter(a, indices, b, self._sd_method("at").__self__)


ufunc.__module__ = "cupy._core._kernel"


def _require_device_array(value):
    if type(value) is not ndarray:
        raise unsupported(value)


def make(name, entries):
    """The stand-in's ufunc ``name`` (recorded ``entries``, one per enforced version), or
    None when NumPy has nothing of that name."""
    numpy_function = getattr(numpy, name, None)
    if numpy_function is None:
        return None
    UFUNCS[name] = ufunc._sd_make(name, entries, numpy_function)
    return UFUNCS[name]


def make_all():
    """Every ufunc of the cupy namespace (also the ones the ndarray operators use)."""
    for name in sorted(SURFACE.names("cupy")):
        entries = [e for e in SURFACE.entries("cupy", name) if e]
        if entries[-1]["kind"] == "ufunc":
            make(name, entries)
    for name in ("true_divide", "divmod"):
        if name not in UFUNCS:  # an operator's ufunc missing from the enforced surface
            recorded = [e for e in SURFACE.entries("cupy", name) if e]
            if recorded:
                make(name, recorded)
    return UFUNCS


def finish():
    from ._namespace import finish_class

    finish_class(ufunc, "cupy.ufunc", check_constructor=False)
