"""Record the public surface of the installed CuPy as JSON, for the CuPy stand-in.

Run it with a real CuPy importable (no GPU needed: CuPy imports without one)::

    PYTHONPATH=/opt/cupy14 python tests/cupy_standin/make_surface.py
    PYTHONPATH=/opt/cupy13 python tests/cupy_standin/make_surface.py

It writes ``tests/cupy_standin/surface/cupy-<version>.json`` (or the path given with
``--output``; ``--stdout`` prints it instead). The output is deterministic (sorted keys,
no addresses), so a test can regenerate it and compare it with the committed file.

What it records, all read from CuPy itself:

- every public name of ``cupy``, ``cupy.linalg``, ``cupy.fft``, ``cupy.random``,
  ``cupy.cuda``, ``cupy.cuda.runtime``, ``cupy.cuda.memory`` and
  ``cupy._core._routines_linalg`` with its kind: ``function`` (parameters: name, kind,
  has_default; from ``inspect.signature`` for Python functions, else from the first line of
  the docstring, which is how Cython states its signatures), ``ufunc`` (nin, nout, and the
  keywords ``__call__`` accepts), ``gufunc`` (``cupy.matmul``), ``class``, ``module``,
  ``constant`` and ``object``;
- the attributes of the classes the stand-in imitates (``cupy.ndarray``, the ``cupy.cuda``
  classes, ``ElementwiseKernel``, ``ufunc``, flags, memory pointers): methods with their
  parameters, properties, class-level constants;
- a few behaviours: the keywords ufuncs and kernels accept (probed: CuPy checks keywords
  before it touches the GPU, and says "Wrong arguments" for the ones it does not take),
  the error raised for an unknown keyword, and the message of ``OutOfMemoryError``.
"""
import argparse
import inspect
import json
import math
import os
import pkgutil
import re
import sys

import numpy

HERE = os.path.dirname(os.path.abspath(__file__))
# Run as a script, this folder is sys.path[0], and it holds the stand-in package named
# ``cupy``: take it off so that ``import cupy`` finds the real one.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]

# Namespaces whose public names are recorded (in full: each name with its kind).
NAMESPACES = (
    "cupy",
    "cupy.linalg",
    "cupy.fft",
    "cupy.random",
    "cupy.cuda",
    "cupy.cuda.runtime",
    "cupy.cuda.memory",
    "cupy._core._routines_linalg",
)

# Classes whose attributes are recorded: dotted path -> how to reach it from cupy.
CLASSES = (
    "cupy.ndarray",
    "cupy.ufunc",
    "cupy.ElementwiseKernel",
    "cupy.cuda.Device",
    "cupy.cuda.Stream",
    "cupy.cuda.Event",
    "cupy.cuda.MemoryPool",
    "cupy.cuda.MemoryPointer",
    "cupy.cuda.PinnedMemoryPool",
    "cupy.cuda.PinnedMemoryPointer",
    "cupy.cuda.memory.OutOfMemoryError",
    "cupy._core.flags.Flags",
)

# Attributes a class's instances get in __init__ (plain Python classes compiled by Cython
# keep them in the instance __dict__, invisible to dir(cls)). Stream: read from the
# Stream.null instance CuPy creates at import. Event: cannot be created without a GPU; its
# __init__ (cupy/cuda/stream.pyx) sets ``self.ptr``.
INSTANCE_ATTRIBUTES_FROM_SOURCE = {
    "cupy.cuda.Event": ["ptr"],
}

# Keywords tried on each ufunc / gufunc / ElementwiseKernel call: the ones CuPy accepts
# are recorded. (CuPy pops the keywords it knows and raises TypeError("Wrong arguments
# {...}") for the rest before any GPU work.)
CANDIDATE_CALL_KEYWORDS = (
    "axes", "axis", "block_size", "casting", "dtype", "extobj", "keepdims", "order",
    "out", "shared_mem", "signature", "size", "stream", "subok", "where",
)
UNKNOWN_KEYWORD = "_no_such_keyword"

_PARAM_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: "positional-only",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional-or-keyword",
    inspect.Parameter.VAR_POSITIONAL: "var-positional",
    inspect.Parameter.KEYWORD_ONLY: "keyword-only",
    inspect.Parameter.VAR_KEYWORD: "var-keyword",
}


# -- signatures --------------------------------------------------------------------------
def _split_top_level(text):
    """Split a parameter list at commas outside brackets and quotes."""
    parts, depth, quote, current = [], 0, None, []
    for char in text:
        if quote:
            current.append(char)
            if char == quote:
                quote = None
            continue
        if char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return parts


_DOC_SIGNATURE = re.compile(r"^\s*(?:[\w.]+\.)?(\w+)\((.*)\)\s*(?:->.*)?$")


def _params_from_doc(doc, names):
    """Parameters from a Cython-style first docstring line ``[Class.]name(params) [-> T]``,
    when the name in it is one of ``names``; None otherwise. Cython types before a
    parameter name (``int axis=-1``, ``_ndarray_base b``) are dropped."""
    if not doc:
        return None
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    match = _DOC_SIGNATURE.match(first)
    if not match or match.group(1) not in names:
        return None
    params, kind = [], "positional-or-keyword"
    for token in _split_top_level(match.group(2)):
        if token == "/":
            for param in params:
                param["kind"] = "positional-only"
            continue
        if token == "*":
            kind = "keyword-only"
            continue
        head, has_default = (token.split("=", 1)[0], True) if "=" in token else (token, False)
        words = head.split()
        if not words:
            return None
        name = words[-1]
        if name.startswith("**"):
            params.append({"name": name[2:], "kind": "var-keyword", "has_default": False})
            continue
        if name.startswith("*"):
            params.append({"name": name[1:], "kind": "var-positional", "has_default": False})
            kind = "keyword-only"
            continue
        if not name.isidentifier():
            return None
        params.append({"name": name, "kind": kind, "has_default": has_default})
    return params


def _params_from_inspect(obj):
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    return [{"name": p.name, "kind": _PARAM_KINDS[p.kind],
             "has_default": p.default is not inspect.Parameter.empty}
            for p in signature.parameters.values()]


def _is_generic(params):
    """Whether a parameter list says nothing: (*args, **kwargs), maybe after self."""
    kinds = [p["kind"] for p in params if p["name"] not in ("self", "cls")]
    return kinds == ["var-positional", "var-keyword"]


def signature_of(obj, names, method=False):
    """{"params": [...], "from": "inspect"|"doc"} for a callable, or {"params": None}.
    ``names``: the names the docstring's first line may carry. ``method``: drop the
    leading self."""
    candidates = []
    params = _params_from_inspect(obj)
    if params is not None:
        candidates.append(("inspect", params))
    params = _params_from_doc(getattr(obj, "__doc__", None), names)
    if params is not None:
        candidates.append(("doc", params))
    specific = [c for c in candidates if not _is_generic(c[1])]
    chosen = (specific or candidates or [(None, None)])[0]
    source, params = chosen
    if params is not None and method and params and params[0]["name"] in ("self", "cls"):
        params = params[1:]
    return {"params": params, "from": source}


def constructor_of(cls):
    """The constructor's parameters (without self): the class docstring's first line,
    then ``__init__``'s docstring, then inspect; the first that says more than
    (*args, **kwargs)."""
    name = cls.__name__
    candidates = []
    for doc in (cls.__doc__, getattr(cls.__init__, "__doc__", None)):
        params = _params_from_doc(doc, (name, "__init__"))
        if params is not None:
            if params and params[0]["name"] == "self":
                params = params[1:]
            candidates.append(("doc", params))
    params = _params_from_inspect(cls)
    if params is not None:
        candidates.append(("inspect", params))
    specific = [c for c in candidates if not _is_generic(c[1])]
    source, params = (specific or candidates or [(None, None)])[0]
    return {"params": params, "from": source}


# -- probes ------------------------------------------------------------------------------
def _error_of(call):
    try:
        call()
    except Exception as exc:  # CuPy raises CUDA errors here without a GPU
        return exc
    return None


def _describe_error(exc):
    if exc is None:
        return None
    return {"type": type(exc).__name__, "module": type(exc).__module__,
            "message": str(exc)}


def _rejects(exc, keyword):
    """Whether ``exc`` says that ``keyword`` is not accepted."""
    if exc is None:
        return False
    text = str(exc)
    return (("Wrong arguments" in text or "Unknown kwargs" in text
             or "unexpected keyword argument" in text) and keyword in text)


def probe_keywords(call):
    """The candidate keywords ``call(**{keyword: None})`` does not reject, and the error for
    an unknown keyword."""
    accepted = [kw for kw in CANDIDATE_CALL_KEYWORDS
                if not _rejects(_error_of(lambda: call(**{kw: None})), kw)]
    unknown = _error_of(lambda: call(**{UNKNOWN_KEYWORD: None}))
    return accepted, _describe_error(unknown)


# -- namespaces and classes --------------------------------------------------------------
def _qualified(obj):
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def _constant(value):
    if isinstance(value, float) and not math.isfinite(value):
        return {"kind": "constant", "type": "float", "repr": repr(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"kind": "constant", "type": type(value).__name__, "value": value}
    return None


def describe_member(name, value, cupy):
    """One public name of a namespace."""
    import types

    from cupy._core._gufuncs import _GUFunc

    if isinstance(value, types.ModuleType):
        return {"kind": "module", "name": value.__name__}
    if isinstance(value, cupy.ufunc):
        nin, nout = value.nin, value.nout
        args = [numpy.float32(1)] * nin
        keywords, unknown = probe_keywords(lambda **kw: value(*args, **kw))
        methods = {m: signature_of(getattr(value, m), (m,), method=True)
                   for m in ("accumulate", "at", "outer", "reduce", "reduceat")
                   if hasattr(value, m)}
        return {"kind": "ufunc", "name": value.name, "nin": nin, "nout": nout,
                "call_keywords": keywords, "unknown_keyword_error": unknown,
                "methods": methods}
    if isinstance(value, _GUFunc):
        args = [numpy.float32(1)] * value._nin
        keywords, unknown = probe_keywords(lambda **kw: value(*args, **kw))
        return {"kind": "gufunc", "name": value.__name__, "nin": value._nin,
                "nout": value._nout, "core_signature": value._signature,
                "call_keywords": keywords, "unknown_keyword_error": unknown}
    if isinstance(value, type):
        entry = {"kind": "class", "qualname": _qualified(value),
                 "from_numpy": value.__module__.split(".")[0] == "numpy"}
        if not entry["from_numpy"]:
            entry["constructor"] = constructor_of(value)
            entry["bases"] = [_qualified(b) for b in value.__mro__[1:]]
        return entry
    constant = _constant(value)
    if constant is not None:
        return constant
    if callable(value) and not hasattr(value, "__getitem__"):
        entry = {"kind": "function", "module": getattr(value, "__module__", None)}
        entry.update(signature_of(value, (name, getattr(value, "__name__", name))))
        return entry
    return {"kind": "object", "type": _qualified(type(value))}


def describe_namespace(module, cupy):
    names = sorted(n for n in dir(module) if not n.startswith("_"))
    return {name: describe_member(name, getattr(module, name), cupy) for name in names}


def describe_class_attribute(cls, name):
    value = inspect.getattr_static(cls, name)
    kind = type(value).__name__
    if isinstance(value, (classmethod, staticmethod)) or kind in (
            "classmethod_descriptor", "staticmethod"):
        target = getattr(cls, name)
        entry = {"kind": "classmethod" if "class" in kind else "staticmethod"}
        entry.update(signature_of(target, (name,), method=False))
        if entry["params"] and entry["params"][0]["name"] == "cls":
            entry["params"] = entry["params"][1:]
        return entry
    if isinstance(value, property) or kind in ("getset_descriptor", "member_descriptor"):
        return {"kind": "property"}
    if callable(value):
        entry = {"kind": "method"}
        entry.update(signature_of(value, (name,), method=True))
        return entry
    constant = _constant(value)
    if constant is not None and name != "__doc__":
        return constant
    return {"kind": "object", "type": _qualified(type(value))}


def describe_class(cls, dotted):
    attributes = {name: describe_class_attribute(cls, name) for name in sorted(dir(cls))}
    entry = {"qualname": _qualified(cls), "constructor": constructor_of(cls),
             "bases": [_qualified(b) for b in cls.__mro__[1:]], "attributes": attributes}
    instance = INSTANCE_ATTRIBUTES_FROM_SOURCE.get(dotted)
    if dotted == "cupy.cuda.Stream":
        instance = sorted(n for n in vars(cls.null) if not n.startswith("_"))
    if instance is not None:
        entry["instance_attributes"] = sorted(instance)
    return entry


def behaviours(cupy):
    """Observed behaviours the stand-in copies."""
    oom = cupy.cuda.memory.OutOfMemoryError
    kernel = cupy.ElementwiseKernel("T x", "T y", "y = x", "surface_probe")
    keywords, unknown = probe_keywords(lambda **kw: kernel(numpy.float32(1), **kw))
    wrong_count = _error_of(lambda: kernel(1, 2, 3))
    return {
        "OutOfMemoryError": {
            "message(1000, 2000)": str(oom(1000, 2000)),
            "message(1000, 2000, 3000)": str(oom(1000, 2000, 3000)),
        },
        "ElementwiseKernel.__call__": {
            "call_keywords": keywords,
            "unknown_keyword_error": unknown,
            "wrong_argument_count_error": _describe_error(wrong_count),
        },
        "ufunc.__call__": {
            "wrong_argument_count_error": _describe_error(
                _error_of(lambda: cupy.exp(1, 2, 3))),
        },
    }


def make_surface():
    import cupy

    surface = {
        "cupy_version": cupy.__version__,
        "generated_by": "tests/cupy_standin/make_surface.py",
        "namespaces": {},
        "classes": {},
        "behaviours": behaviours(cupy),
    }
    for dotted in NAMESPACES:
        surface["namespaces"][dotted] = describe_namespace(pkgutil.resolve_name(dotted), cupy)
    for dotted in CLASSES:
        surface["classes"][dotted] = describe_class(pkgutil.resolve_name(dotted), dotted)
    return surface


def dumps(surface):
    return json.dumps(surface, indent=1, sort_keys=True, ensure_ascii=True) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", help="where to write (default: surface/cupy-<version>.json)")
    parser.add_argument("--stdout", action="store_true", help="print instead of writing")
    args = parser.parse_args(argv)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        surface = make_surface()
    text = dumps(surface)
    if args.stdout:
        sys.stdout.write(text)
        return 0
    path = args.output or os.path.join(HERE, "surface", f"cupy-{surface['cupy_version']}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
