"""The functions of the stand-in's namespaces that NumPy computes.

``numpy_function(name, numpy_callable, entries)`` makes the implementation of a recorded
CuPy function from NumPy's function of the same name:

- arguments are bound as CuPy names them and passed on as NumPy names them (``tup`` ->
  ``arrays``, ``newshape`` -> ``shape``...): positionally where the two agree on the
  position, by keyword where NumPy has the keyword;
- a parameter only CuPy has: ``dtype`` casts the result; None or False is left out; any
  other value raises NotImplementedError naming it;
- the computation goes through ``_dispatch.call`` (host arrays refused, results wrapped).

The tables below say which functions read only metadata (host arrays allowed, results
returned as NumPy gives them), which synchronise in CuPy (one device-to-host transfer),
which return 0-d arrays where NumPy returns Python scalars, and which CuPy names NumPy 2
spells differently.
"""
import inspect

import numpy

from . import _stats
from ._dispatch import call, call_with_host
from ._surface import SURFACE

_UNSET = object()

# Functions of metadata: host arrays are fine and results are not device arrays.
HOST_VALUE = frozenset((
    "base_repr", "binary_repr", "broadcast_shapes", "can_cast", "common_type",
    "format_float_positional", "format_float_scientific", "get_printoptions", "isdtype",
    "iscomplexobj", "isfortran", "isrealobj", "isscalar", "issubdtype", "iterable",
    "may_share_memory", "min_scalar_type", "mintypecode", "ndim", "printoptions",
    "promote_types", "result_type", "set_printoptions", "shape", "shares_memory", "size",
    "typename",
))

# Functions that synchronise in CuPy (the size of the result is read back to the host).
SYNCHRONIZING = frozenset(("argwhere", "extract", "flatnonzero", "nonzero", "unique"))

# Functions whose NumPy result may be a Python scalar where CuPy returns a 0-d array.
SCALAR_AS_ARRAY = frozenset(("allclose", "array_equal", "array_equiv", "count_nonzero"))

# CuPy names NumPy 2 removed or renamed: name -> (NumPy function, keyword renames).
ALIASES = {
    "alltrue": "all", "sometrue": "any", "product": "prod", "cumproduct": "cumprod",
    "round_": "round", "trapz": "trapezoid",
}

# Keyword renames (CuPy's name -> NumPy's), applied in every function.
RENAMES = {"interpolation": "method", "newshape": "shape"}

# Functions printing arrays: CuPy copies to the host first.
PRINTING = frozenset(("array2string", "array_repr", "array_str"))


def _cupy_signature(entries):
    entry = entries[-1]
    if entry is None or entry.get("params") is None:
        return None
    kinds = {
        "positional-only": inspect.Parameter.POSITIONAL_ONLY,
        "positional-or-keyword": inspect.Parameter.POSITIONAL_OR_KEYWORD,
        "var-positional": inspect.Parameter.VAR_POSITIONAL,
        "keyword-only": inspect.Parameter.KEYWORD_ONLY,
        "var-keyword": inspect.Parameter.VAR_KEYWORD,
    }
    params = []
    for param in entry["params"]:
        kind = kinds[param["kind"]]
        default = _UNSET if param["has_default"] and kind not in (
            inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD) else \
            inspect.Parameter.empty
        try:
            params.append(inspect.Parameter(param["name"], kind, default=default))
        except ValueError:
            return None
    try:
        return inspect.Signature(params)
    except ValueError:
        return None


class _Adapter:
    """Maps a call written against CuPy's signature onto NumPy's."""

    def __init__(self, qualname, numpy_callable, entries):
        self.qualname = qualname
        self.numpy_callable = numpy_callable
        self.cupy = _cupy_signature(entries)
        try:
            self.numpy = inspect.signature(numpy_callable)
        except (TypeError, ValueError):
            self.numpy = None
        self.direct_positional, self.direct_keywords = self._direct()

    def _direct(self):
        """How many leading positional arguments, and which keywords, pass unchanged."""
        if self.cupy is None or self.numpy is None:
            return 1 << 30, None
        cupy_params = list(self.cupy.parameters.values())
        numpy_params = list(self.numpy.parameters.values())
        positional = 0
        for index, param in enumerate(cupy_params):
            if param.kind == param.VAR_POSITIONAL:
                if any(p.kind == p.VAR_POSITIONAL for p in numpy_params):
                    positional = 1 << 30
                break
            if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                break
            if index < len(numpy_params) and numpy_params[index].kind == param.VAR_POSITIONAL:
                positional = 1 << 30
                break
            if index >= len(numpy_params) or numpy_params[index].name != param.name or \
                    numpy_params[index].kind not in (param.POSITIONAL_ONLY,
                                                     param.POSITIONAL_OR_KEYWORD):
                break
            positional = index + 1
        numpy_keywords = {p.name for p in numpy_params
                          if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        cupy_keywords = {p.name for p in cupy_params
                         if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if any(p.kind == p.VAR_KEYWORD for p in numpy_params):
            numpy_keywords |= cupy_keywords
        return positional, frozenset(cupy_keywords & numpy_keywords)

    def arguments(self, args, kwargs):
        """(args, kwargs, dtype to cast the result to or None) for NumPy."""
        if len(args) <= self.direct_positional and (
                not kwargs or self.direct_keywords is None
                or all(key in self.direct_keywords for key in kwargs)):
            return args, kwargs, None
        bound = self.cupy.bind(*args, **kwargs).arguments
        numpy_params = list(self.numpy.parameters.values())
        numpy_names = {p.name: p for p in numpy_params}
        cupy_names = set(self.cupy.parameters)
        positional, keywords, cast = [], {}, None
        for index, (name, param) in enumerate(self.cupy.parameters.items()):
            if name not in bound:
                continue
            value = bound[name]
            if param.kind == param.VAR_POSITIONAL:
                positional.extend(value)
                continue
            if param.kind == param.VAR_KEYWORD:
                keywords.update(value)
                continue
            target = RENAMES.get(name, name)
            numpy_param = numpy_params[index] if index < len(numpy_params) else None
            if numpy_param is None or any(p.kind == p.VAR_POSITIONAL
                                          for p in numpy_params[:index + 1]):
                numpy_param = next((p for p in numpy_params if p.kind == p.VAR_POSITIONAL),
                                   numpy_param)
            if (numpy_param is not None and numpy_param.kind == param.VAR_POSITIONAL
                    and index == len(positional) and param.kind != param.KEYWORD_ONLY):
                positional.append(value)
                continue
            same_slot = (numpy_param is not None and index == len(positional)
                         and numpy_param.kind in (param.POSITIONAL_ONLY,
                                                  param.POSITIONAL_OR_KEYWORD)
                         and (numpy_param.name == target or (
                             target not in numpy_names and numpy_param.name not in
                             cupy_names)))
            if same_slot and param.kind != param.KEYWORD_ONLY:
                positional.append(value)
            elif target in numpy_names and numpy_names[target].kind in (
                    param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                keywords[target] = value
            elif name == "dtype":
                cast = value
            elif value is None or value is False:
                continue
            else:
                raise NotImplementedError(
                    f"the CuPy stand-in cannot pass {name}={value!r} of {self.qualname} to "
                    f"NumPy's {getattr(self.numpy_callable, '__name__', '?')}")
        return tuple(positional), keywords, cast


def numpy_function(qualname, numpy_callable, entries):
    """The implementation of the CuPy function ``qualname`` by ``numpy_callable``."""
    name = qualname.rsplit(".", 1)[-1]
    if name in HOST_VALUE:
        return lambda *args, **kwargs: call_with_host(numpy_callable, args, kwargs)
    if name in PRINTING:
        return _printing(numpy_callable)
    adapter = _Adapter(qualname, numpy_callable, entries)
    synchronizing = name in SYNCHRONIZING
    scalar_as_array = name in SCALAR_AS_ARRAY

    def implementation(*args, **kwargs):
        args, kwargs, cast = adapter.arguments(args, kwargs)
        if synchronizing or (name == "where" and len(args) + len(kwargs) == 1):
            _stats.add("device_to_host")
        result = call(numpy_callable, args, kwargs, scalar_as_array=scalar_as_array)
        if cast is not None:
            result = result.astype(cast, copy=False)
        return result
    return implementation


def _printing(numpy_callable):
    from ._array import ndarray

    def implementation(a, *args, **kwargs):
        if type(a) is ndarray:
            a = a.get()
        return numpy_callable(a, *args, **kwargs)
    return implementation


def in1d(ar1, ar2, assume_unique=False, invert=False):
    return call(lambda a, b: numpy.isin(a, b, assume_unique=assume_unique,
                                        invert=invert).ravel(), (ar1, ar2), {})


def msort(a):
    return call(numpy.sort, (a,), {"axis": 0})


def fallback_for(namespace, numpy_module):
    """populate()'s fallback for ``namespace``: NumPy's function of the same name."""
    def fallback(name, entry):
        if entry["kind"] != "function":
            return None
        if namespace == "cupy" and name in ("in1d", "msort"):
            return globals()[name]
        target = ALIASES.get(name, name) if namespace == "cupy" else name
        numpy_callable = getattr(numpy_module, target, None)
        if numpy_callable is None or not callable(numpy_callable):
            return None
        return numpy_function(f"{namespace}.{name}", numpy_callable,
                              SURFACE.entries(namespace, name))
    return fallback
