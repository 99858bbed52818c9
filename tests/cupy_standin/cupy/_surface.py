"""The recorded CuPy surface(s) the stand-in enforces, and call checkers built from them.

``SURFACE`` holds the JSON files of the versions chosen by ``NNBACK_CUPY_STANDIN_SURFACE``
(see _config.py). A name exists in the stand-in only when it exists in every chosen
version; a call must bind against the signature of every chosen version.

A checker is a function compiled from a recorded parameter list (``def reshape(*shape,
order=_D, copy=_D): pass``), so binding costs one Python call and a refused call raises
Python's own TypeError ("reshape() got an unexpected keyword argument 'device'"), the
wording CuPy's Python and Cython functions use; the version that refused it is added.
"""
import json
import keyword
import os

from . import _config

_DEFAULT = object()


class Surface:
    """The recorded surfaces of ``versions`` (oldest first)."""

    def __init__(self, versions):
        self.versions = list(versions)
        self._data = []
        for version in self.versions:
            path = os.path.join(_config.SURFACE_DIR, f"cupy-{version}.json")
            with open(path) as handle:
                self._data.append(json.load(handle))
        self._checkers = {}

    @property
    def newest(self):
        return self.versions[-1]

    # -- names --------------------------------------------------------------------------
    def names(self, namespace):
        """Public names of ``namespace`` (e.g. "cupy.linalg") present in every version."""
        sets = [set(data["namespaces"].get(namespace, ())) for data in self._data]
        return set.intersection(*sets) if sets else set()

    def entries(self, namespace, name):
        """The entry of ``namespace.name`` in each version (None where it is missing)."""
        return [data["namespaces"].get(namespace, {}).get(name) for data in self._data]

    def entry(self, namespace, name):
        """The newest version's entry."""
        return self.entries(namespace, name)[-1]

    def class_attributes(self, cls):
        """Attribute names of class ``cls`` (e.g. "cupy.ndarray") in every version
        (class attributes and the attributes instances get in __init__)."""
        sets = []
        for data in self._data:
            info = data["classes"][cls]
            sets.append(set(info["attributes"]) | set(info.get("instance_attributes", ())))
        return set.intersection(*sets)

    def class_entries(self, cls, name):
        return [data["classes"][cls]["attributes"].get(name) for data in self._data]

    def constructor_entries(self, cls):
        return [data["classes"][cls]["constructor"] for data in self._data]

    def behaviour(self, key):
        """The newest version's recorded behaviour ``key``."""
        return self._data[-1]["behaviours"][key]

    def behaviours(self, key):
        return [data["behaviours"][key] for data in self._data]

    # -- checkers -----------------------------------------------------------------------
    def checker(self, qualname, entries, call_name=None):
        """A function that raises TypeError unless ``(*args, **kwargs)`` binds against
        every entry's parameters (entries with unknown parameters are skipped); None when
        nothing is known. ``call_name``: the name Python's message uses."""
        call_name = call_name or qualname.rsplit(".", 1)[-1]
        key = (qualname, call_name, tuple(
            None if e is None or e.get("params") is None else
            tuple((p["name"], p["kind"], p["has_default"]) for p in e["params"])
            for e in entries))
        if key in self._checkers:
            return self._checkers[key]
        compiled = []
        seen = set()
        for version, params in zip(self.versions, key[2]):
            if params is None or params in seen:
                continue
            seen.add(params)
            compiled.append((version, _compile(call_name, params, f"{qualname} {version}")))
        checker = _combine(compiled)
        self._checkers[key] = checker
        return checker

    def function_checker(self, namespace, name):
        return self.checker(f"{namespace}.{name}", self.entries(namespace, name), name)

    def method_checker(self, cls, name):
        return self.checker(f"{cls}.{name}", self.class_entries(cls, name), name)

    def constructor_checker(self, cls):
        return self.checker(f"{cls}.__init__", self.constructor_entries(cls),
                            cls.rsplit(".", 1)[-1])


def _compile(call_name, params, label):
    """def <call_name>(<params>): pass, compiled; parameters with defaults get a sentinel."""
    parts, seen_star, names = [], False, set()
    positional_only = any(kind == "positional-only" for _, kind, _ in params)
    for index, (name, kind, has_default) in enumerate(params):
        if keyword.iskeyword(name) or not name.isidentifier() or name in names:
            name = f"_param{index}"
        names.add(name)
        if kind == "var-positional":
            parts.append("*" + name)
            seen_star = True
        elif kind == "var-keyword":
            parts.append("**" + name)
        else:
            if kind == "keyword-only" and not seen_star:
                parts.append("*")
                seen_star = True
            parts.append(name + ("=_D" if has_default else ""))
        if positional_only and kind == "positional-only" and (
                index + 1 == len(params) or params[index + 1][1] != "positional-only"):
            parts.append("/")
    function_name = call_name if call_name.isidentifier() and not keyword.iskeyword(
        call_name) else "call"
    source = f"def {function_name}({', '.join(parts)}):\n    pass\n"
    namespace = {"_D": _DEFAULT}
    try:
        exec(compile(source, f"<CuPy signature of {label}>", "exec"), namespace)
    except SyntaxError:  # a parameter list Python cannot express: check nothing
        return None
    return namespace[function_name]


def _combine(compiled):
    compiled = [(version, function) for version, function in compiled if function is not None]
    if not compiled:
        return None

    def check(*args, **kwargs):
        for version, function in compiled:
            try:
                function(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{exc} (refused by the recorded CuPy {version} "
                                "signature)") from None

    return check


SURFACE = Surface(_config.surface_versions())
