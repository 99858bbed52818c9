"""cupy.ElementwiseKernel for the stand-in: CuPy's array layer around a CPU engine.

The operation text is run by ``tests/cupy_standin/cpu_kernels.py`` (``CpuElementwise``,
imported at the first call, so the package imports without it), which compiles it with the
host C++ compiler and applies CuPy's binding rules (type placeholders, scalars cast to
them, broadcasting, outputs). This module does what belongs to CuPy's array layer:

- the recorded constructor signature, and CuPy's construction checks (kernel name, no
  parameter called ``i``);
- ``__call__(*args, size=..., block_size=..., stream=...)``: only the recorded keywords
  (others: ``TypeError: Wrong arguments {...}``), ``nin`` or ``nin + nout`` arguments
  (CuPy's message otherwise), cupy arrays and scalars only (a host ``numpy.ndarray``:
  ``TypeError: Unsupported type <class 'numpy.ndarray'>``);
- one kernel launch counted per call; new outputs are new device arrays (allocations); the
  result is one array, a tuple for several outputs (or ``return_tuple``), None for
  ``no_return``.
"""
import importlib
import importlib.util
import os
import re
import sys

from ._array import SCALAR_TYPES, fresh, launched, ndarray
from ._dispatch import unsupported
from ._surface import SURFACE

_VALID_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z_0-9]*$")
_ENGINE_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "cpu_kernels.py")
_engine_module = None  # tests may set a fake engine module here
_ENGINE_OPTIONS = ("loop_prep", "after_loop", "options")


def engine_module():
    """tests/cupy_standin/cpu_kernels.py, imported on first use."""
    global _engine_module
    if _engine_module is None:
        module = sys.modules.get("cupy_standin.cpu_kernels")
        if module is None:
            try:
                module = importlib.import_module("cupy_standin.cpu_kernels")
            except ImportError:
                module = sys.modules.get("_cupy_standin_cpu_kernels")
                if module is None:
                    spec = importlib.util.spec_from_file_location(
                        "_cupy_standin_cpu_kernels", _ENGINE_PATH)
                    if spec is None or not os.path.exists(_ENGINE_PATH):
                        raise ImportError(f"the CuPy stand-in's kernel engine "
                                          f"{_ENGINE_PATH} is missing")
                    module = importlib.util.module_from_spec(spec)
                    sys.modules[spec.name] = module
                    spec.loader.exec_module(module)
        _engine_module = module
    return _engine_module


def _params(text):
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _call_keywords():
    return frozenset.intersection(*(frozenset(b["call_keywords"]) for b in
                                    SURFACE.behaviours("ElementwiseKernel.__call__")))


class ElementwiseKernel:
    """A user-defined elementwise kernel (CUDA C operation text, run on the CPU)."""

    def __init__(self, in_params, out_params, operation, name="kernel", reduce_dims=True,
                 preamble="", no_return=False, return_tuple=False, **kwargs):
        self.in_params = _params(in_params)
        self.out_params = _params(out_params)
        self.params = self.in_params + self.out_params
        self.nin = len(self.in_params)
        self.nout = len(self.out_params)
        self.nargs = self.nin + self.nout
        if "i" in [param.split()[-1] for param in self.params if param.split()]:
            raise ValueError("Can not use 'i' as a parameter name")
        if not _VALID_NAME.match(name):
            raise ValueError(f'Invalid kernel name: "{name}"')
        self.operation = operation
        self.name = name
        self.reduce_dims = reduce_dims
        self.preamble = preamble
        self.no_return = no_return
        self.return_tuple = return_tuple
        self.kwargs = kwargs
        self._sd_texts = (in_params, out_params)
        self._sd_engine = None
        self._sd_keywords = _call_keywords()

    def _sd_get_engine(self):
        if self._sd_engine is None:
            unknown = sorted(set(self.kwargs) - set(_ENGINE_OPTIONS))
            if unknown:
                raise TypeError(f"_get_simple_elementwise_kernel() got an unexpected "
                                f"keyword argument {unknown[0]!r}")
            options = {key: self.kwargs[key] for key in _ENGINE_OPTIONS if key in self.kwargs}
            self._sd_engine = engine_module().CpuElementwise(
                self._sd_texts[0], self._sd_texts[1], self.operation, name=self.name,
                preamble=self.preamble, **options)
        return self._sd_engine

    def __call__(self, *args, **kwargs):
        unknown = {key: value for key, value in kwargs.items()
                   if key not in self._sd_keywords}
        if unknown:
            raise TypeError(f"Wrong arguments {unknown}")
        size = kwargs.get("size")
        if size == -1:
            size = None
        block_size = kwargs.get("block_size")
        if block_size is not None and block_size <= 0:
            raise ValueError("block_size must be greater than zero")
        count = len(args)
        if count != self.nin and count != self.nargs:
            raise TypeError(f"Wrong number of arguments for {self.name!r}. It must be either "
                            f"{self.nin} or {self.nargs} (with outputs), but given {count}.")
        unwrapped = []
        for arg in args:
            if type(arg) is ndarray:
                unwrapped.append(arg._sd_a)
            elif type(arg) in SCALAR_TYPES:
                unwrapped.append(arg)
            else:
                raise unsupported(arg)
        given = args[self.nin:]
        results = self._sd_get_engine()(unwrapped[:self.nin], unwrapped[self.nin:] or None,
                                        size=size)
        launched()
        if self.no_return:
            return None
        arrays = tuple(given[i] if i < len(given) and results[i] is given[i]._sd_a
                       else fresh(results[i]) for i in range(len(results)))
        if self.nout == 1 and not self.return_tuple:
            return arrays[0]
        return arrays

    @property
    def cached_codes(self):
        engine = self._sd_engine
        return dict(getattr(engine, "cached_sources", {})) if engine is not None else {}

    @property
    def cached_code(self):
        codes = list(self.cached_codes.values())
        if len(codes) != 1:
            raise RuntimeError("The kernel is not compiled yet" if not codes else
                               "The kernel has multiple cached codes")
        return codes[0]

    def __repr__(self):
        return f"<ElementwiseKernel {self.name!r} (CuPy stand-in, run on the CPU)>"


ElementwiseKernel.__module__ = "cupy._core._kernel"


def finish():
    from ._namespace import finish_class

    finish_class(ElementwiseKernel, "cupy.ElementwiseKernel", check_methods=False)
