"""Building the stand-in's modules and classes from the recorded surface.

``populate(module, namespace, implementations, fallback)`` gives a module exactly the
public names the surface records for it (in every enforced version): an implementation
where the stand-in has one (functions wrapped in a signature checker), the recorded value
for constants, NumPy's object where CuPy re-exports NumPy's, and otherwise a stub that
raises NotImplementedError when used. Public names the surface lacks are removed.

``finish_class(cls, recorded)`` does the same for a class: attributes the recorded class
lacks are removed, and public methods check their arguments against the recorded
signatures. Private attributes (one leading underscore) are the stand-in's own.
"""
import functools
import importlib
import pkgutil
import sys
import types

from ._surface import SURFACE

# Names Python gives every class; never removed.
_PYTHON_CLASS_NAMES = frozenset((
    "__module__", "__qualname__", "__doc__", "__dict__", "__weakref__", "__slots__",
    "__new__", "__init__", "__init_subclass__", "__firstlineno__", "__static_attributes__",
    "__annotations__", "__orig_bases__", "__parameters__", "_length_", "_type_",
))

DROPPED = {}  # "cupy.ndarray" -> names removed at import (for tests and the README)


def not_implemented(qualname):
    """A function that raises NotImplementedError naming ``qualname``."""
    def stub(*args, **kwargs):
        raise NotImplementedError(f"the CuPy stand-in does not implement {qualname}")
    stub.__name__ = stub.__qualname__ = qualname.rsplit(".", 1)[-1]
    stub.__module__ = qualname.rsplit(".", 1)[0]
    stub.__doc__ = f"{qualname}: not implemented by the CuPy stand-in."
    return stub


def stub_class(qualname):
    """A class whose construction raises NotImplementedError."""
    module, _, name = qualname.rpartition(".")

    def __init__(self, *args, **kwargs):
        raise NotImplementedError(f"the CuPy stand-in does not implement {qualname}")
    return type(name, (), {"__init__": __init__, "__module__": module,
                           "__doc__": f"{qualname}: not implemented by the CuPy stand-in."})


def stub_object(qualname):
    """An object whose every attribute raises NotImplementedError (e.g. cupy.fft.config)."""
    def refuse(self, name, *value):
        raise NotImplementedError(f"the CuPy stand-in does not implement {qualname}.{name}")
    cls = type(qualname.rsplit(".", 1)[-1], (), {
        "__getattr__": refuse, "__setattr__": refuse,
        "__repr__": lambda self: f"<{qualname}: not implemented by the CuPy stand-in>"})
    return cls()


def stub_module(fullname):
    """An empty module registered as ``fullname`` (importable, with no names)."""
    module = sys.modules.get(fullname)
    if module is None:
        module = types.ModuleType(fullname, f"{fullname}: not implemented by the CuPy "
                                            "stand-in (no names).")
        sys.modules[fullname] = module
    return module


def checked(qualname, function, checker, call_name=None):
    """``function`` behind ``checker``; named as the CuPy function it stands for."""
    if checker is None:
        wrapper = functools.wraps(function)(lambda *args, **kwargs: function(*args, **kwargs))
    else:
        def wrapper(*args, **kwargs):
            checker(*args, **kwargs)
            return function(*args, **kwargs)
        functools.update_wrapper(wrapper, function)
    module, _, name = qualname.rpartition(".")
    wrapper.__name__ = wrapper.__qualname__ = call_name or name
    wrapper.__module__ = module
    return wrapper


def _resolve(dotted):
    """The object at a dotted path such as ``numpy.exceptions.AxisError``, or None."""
    try:
        return pkgutil.resolve_name(dotted)
    except (ImportError, AttributeError, ValueError):
        return None


def recorded_constant(entry):
    if "repr" in entry:
        return float(entry["repr"])
    return entry["value"]


def populate(module, namespace, implementations, fallback=None, keep=()):
    """Give ``module`` the surface's names of ``namespace``.

    implementations: {name: object}; functions among them are wrapped in the recorded
    signature checks. fallback(name, entry) -> object or None: for names without an
    implementation (e.g. NumPy dispatch). keep: extra public names to leave alone.
    """
    names = SURFACE.names(namespace)
    for name in sorted(names):
        entry = SURFACE.entry(namespace, name)
        qualname = f"{namespace}.{name}"
        value = implementations.get(name)
        kind = entry["kind"]
        if value is not None:
            if kind == "function" and callable(value) and not isinstance(value, type):
                value = checked(qualname, value, SURFACE.function_checker(namespace, name))
        elif kind == "constant":
            value = recorded_constant(entry)
        elif kind == "module":
            value = getattr(module, name, None)
            if not isinstance(value, types.ModuleType):
                target = entry["name"]
                if target.split(".")[0] in ("cupy", "cupy_backends", "cupyx"):
                    value = stub_module(qualname)
                else:
                    value = importlib.import_module(target)
        elif kind == "class" and entry.get("from_numpy"):
            value = _resolve(entry["qualname"]) or stub_class(qualname)
        else:
            if fallback is not None:
                value = fallback(name, entry)
            if value is None:
                value = (stub_class(qualname) if kind == "class"
                         else stub_object(qualname) if kind == "object"
                         else not_implemented(qualname))
        setattr(module, name, value)
    dropped = [name for name in list(vars(module))
               if not name.startswith("_") and name not in names and name not in keep
               and not isinstance(vars(module)[name], types.ModuleType)]
    for name in dropped:
        delattr(module, name)
    # submodules of the stand-in that the surface does not list stay importable but are
    # not attributes (as a real CuPy module would not have them)
    for name in [n for n, v in vars(module).items()
                 if not n.startswith("_") and n not in names and n not in keep
                 and isinstance(v, types.ModuleType)]:
        delattr(module, name)
        dropped.append(name)
    DROPPED[namespace] = sorted(dropped)
    return names


def finish_class(cls, recorded, check_methods=True, check_constructor=True):
    """Remove from ``cls`` what the recorded class ``recorded`` (e.g. "cupy.ndarray")
    lacks, and put the recorded signature checks in front of its public methods and
    constructor."""
    allowed = SURFACE.class_attributes(recorded)
    dropped = []
    for name, value in list(vars(cls).items()):
        if name in _PYTHON_CLASS_NAMES or (name.startswith("_") and not name.startswith("__")):
            continue
        if name not in allowed:
            delattr(cls, name)
            dropped.append(name)
            continue
        if check_methods and not name.startswith("__") and isinstance(value, types.FunctionType):
            checker = SURFACE.method_checker(recorded, name)
            if checker is not None:
                setattr(cls, name, _checked_method(value, checker))
        elif check_methods and not name.startswith("__") and isinstance(
                value, (classmethod, staticmethod)):
            checker = SURFACE.method_checker(recorded, name)
            if checker is not None:
                function = value.__func__
                wrapped = _checked_function(function, checker, skip_first=isinstance(
                    value, classmethod))
                setattr(cls, name, type(value)(wrapped))
    if check_constructor and "__init__" in vars(cls):
        checker = SURFACE.constructor_checker(recorded)
        if checker is not None:
            cls.__init__ = _checked_method(vars(cls)["__init__"], checker)
    DROPPED[recorded] = sorted(dropped)
    return cls


def _checked_method(function, checker):
    @functools.wraps(function)
    def method(self, *args, **kwargs):
        checker(*args, **kwargs)
        return function(self, *args, **kwargs)
    return method


def _checked_function(function, checker, skip_first):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        checker(*(args[1:] if skip_first else args), **kwargs)
        return function(*args, **kwargs)
    return wrapper
