"""A virtual environment with the lowest versions pyproject.toml accepts, so that the minimum
versions are tested, not claimed (tests/test_min_versions.py runs nnback in it).

- The floors come from pyproject.toml itself: every ``project.dependencies`` entry and those
  of the extras in EXTRAS, each with its lower bound (``>=``, ``~=`` or ``==``). Raising a floor
  there changes what is installed and tested; an entry without a lower bound is an error.
- The environment is made from the lowest Python that requires-python accepts and that this
  machine has, so that its floor is tested too: ``python3.X`` on PATH, then
  ``$PYENV_ROOT/versions/3.X.*/bin/python3`` (PYENV_ROOT defaulting to ~/.pyenv), for X from
  the floor up to below the running Python; the first that runs, is accepted and has ``venv``
  and ``ensurepip`` wins. Where none does, the running interpreter is used: a fallback, which
  the record (``python_choice``) and the tests' output say.
- Each floor is pinned exactly (``numpy==1.24``) where that release has a wheel for that
  Python; otherwise to the lowest release of the floor's series (same major.minor, at or above
  the floor) that has one, and the environment records why. pip picks the rest (scipy, joblib,
  threadpoolctl, pytest's own dependencies) given those pins. ``--only-binary=:all:``
  everywhere: nothing compiles.
- nnback itself is not installed: its users put the working tree first on PYTHONPATH
  (Env.environ), so the cached environment never holds a stale copy and needs no rebuild when
  the code changes.
- The environment is built once and cached in ``<cache>/py3XX-<hash>``, the hash being that
  of the floors, the extra tools and the chosen interpreter; it is built in a temporary folder
  next to it and renamed into place when complete, so an interrupted or concurrent build never
  leaves a half-built one behind. <cache> is $NNBACK_MIN_VERSIONS_CACHE, else
  $XDG_CACHE_HOME/nnback-min-versions, else ~/.cache/nnback-min-versions.
- Where no release of a floor's series has a wheel for the chosen Python (a fallback above the
  floor), FloorsUnavailable is raised when an older Python that pyproject accepts has them (the
  message names it: install it to test them); where none does, the floors cannot be installed
  where pyproject says they can, and that is a RuntimeError, not a reason to skip.

As a script: ``python tests/min_versions.py [--rebuild]`` builds (or finds) the environment
and prints what it holds as JSON.
"""
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
EXTRAS = ("sklearn",)
TOOLS = ("pytest",)  # not pinned: only what runs the smoke tests
FORMAT = 2  # bump when the way an environment is built changes: a new key, a fresh build
MARKER = "min-versions.json"  # written last: the environment is complete
PIP_TIMEOUT = 900
# Variables of the calling environment that would let other packages, or another copy of
# nnback, into the floor environment's interpreter (or change its backend).
DROPPED = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV",
           "PYTHONEXECUTABLE", "__PYVENV_LAUNCHER__", "NNBACK_BACKEND", "PIP_USER",
           "PIP_TARGET", "PIP_PREFIX", "PIP_REQUIRE_VIRTUALENV")


class FloorsUnavailable(Exception):
    """The floors have no wheels for the chosen Python (an older one that pyproject accepts
    has), or pyproject does not accept it."""


class Floor:
    """One lower bound: ``name`` (canonical), ``extras`` ("[array]" or ""), ``version``
    (the floor as written in pyproject, e.g. "1.24"), ``source`` (the requirement text)."""

    def __init__(self, name, extras, version, source):
        self.name, self.extras, self.version, self.source = name, extras, version, source

    def __repr__(self):
        return f"Floor({self.name!r}, {self.version!r})"

    @property
    def series(self):
        """'==1.24.*': the releases that count as this floor when the exact one has no
        wheel (only those at or above the floor are used)."""
        release = Version(self.version).release
        return f"=={'.'.join(map(str, (release + (0,))[:2]))}.*"

    def in_series(self, version):
        version = Version(version)
        return (not version.is_prerelease and version >= Version(self.version)
                and version in SpecifierSet(self.series))


def project_table(pyproject=PYPROJECT):
    with open(pyproject, "rb") as file:
        return tomllib.load(file)["project"]


def floors(pyproject=PYPROJECT, extras=EXTRAS):
    """The lower bounds of pyproject's dependencies and of ``extras``, by canonical name
    (where a package is in both, the higher floor). Requirements whose environment marker is
    false here are left out."""
    project = project_table(pyproject)
    texts = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise ValueError(f"{pyproject}: no extra {extra!r} in [project.optional-dependencies]"
                             f" (min_versions.EXTRAS names it)")
        texts += optional[extra]
    result = {}
    for text in texts:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        bounds = [spec.version for spec in requirement.specifier
                  if spec.operator in (">=", "~=", "==") and "*" not in spec.version]
        if not bounds:
            raise ValueError(f"{pyproject}: {text!r} states no minimum version (>=): a floor "
                             "is needed so that it can be tested")
        name = canonicalize_name(requirement.name)
        extras_text = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        floor = Floor(name, extras_text, max(bounds, key=Version), text)
        if name not in result or Version(floor.version) > Version(result[name].version):
            result[name] = floor
    return result


def python_floor(pyproject=PYPROJECT):
    """The lowest (major, minor) that requires-python accepts, or None where it states none."""
    spec = SpecifierSet(project_table(pyproject).get("requires-python", ""))
    for minor in range(0, 40):
        if f"3.{minor}.99" in spec or f"3.{minor}.0" in spec:
            return 3, minor
    return None


def python_accepted(version, pyproject=PYPROJECT):
    return version in SpecifierSet(project_table(pyproject).get("requires-python", ""))


def base_interpreter():
    """The running interpreter (the base one where this runs inside a venv)."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


# Asked of a candidate interpreter: what it is, and whether it can make a venv with pip
PROBE = """\
import importlib.util, json, os, sys
print(json.dumps({
    "executable": os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable),
    "version": sys.version.split()[0], "full": sys.version,
    "tag": sys.implementation.cache_tag,
    "venv": all(importlib.util.find_spec(name) for name in ("venv", "ensurepip")),
}))
"""


class Interpreter:
    """The Python a floor environment is made from, as it describes itself: ``executable``
    (the base one, resolved), ``version`` ("3.10.13"), ``full`` (its sys.version) and ``tag``
    (its cache_tag, "cpython-310")."""

    def __init__(self, executable, version, full, tag):
        self.executable, self.version, self.full, self.tag = executable, version, full, tag

    @property
    def minor(self):
        """(3, 10)"""
        return tuple(int(part) for part in self.version.split(".")[:2])

    @property
    def is_floor(self):
        return self.minor == python_floor()

    @property
    def choice(self):
        """Whether it is requires-python's floor, or a fallback (and why)."""
        floor = python_floor()
        if floor is None:
            return "requires-python states no floor"
        if self.is_floor:
            return "requires-python's floor"
        return ("a fallback: requires-python's floor is {}.{}, found neither on PATH nor in "
                "pyenv".format(*floor))

    @classmethod
    def probe(cls, command):
        """The Interpreter ``command`` runs, or None where it does not run (a pyenv shim
        for a version not selected) or cannot make a venv with pip."""
        try:
            result = subprocess.run([command, "-c", PROBE], capture_output=True, text=True,
                                    env=clean_environ(), timeout=60)
            found = json.loads(result.stdout)
        except (OSError, subprocess.SubprocessError, ValueError):
            return None
        if result.returncode != 0 or not found.pop("venv"):
            return None
        return cls(**found)


def candidates(minor):
    """The commands that may run Python 3.``minor``: on PATH, then pyenv's (lowest first)."""
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    installed = sorted(pyenv.glob(f"3.{minor}.*/bin/python3"),  # "3.10.9" before "3.10.13"
                       key=lambda path: [int(n) for n in re.findall(r"\d+", path.parts[-3])])
    on_path = shutil.which(f"python3.{minor}")
    return ([on_path] if on_path else []) + [str(path) for path in installed]


@functools.lru_cache(maxsize=None)
def interpreter():
    """The Python to test the floors on (an Interpreter): the lowest that requires-python
    accepts and this machine has, below the running one; else the running one."""
    floor = python_floor()
    for minor in range(floor[1], sys.version_info[1]) if floor else ():
        for command in candidates(minor):
            found = Interpreter.probe(command)
            if found and found.minor == (3, minor) and python_accepted(found.version):
                return found
    running = Interpreter.probe(base_interpreter())
    if running is None:
        raise RuntimeError(f"{base_interpreter()} cannot make a venv with pip (no ensurepip?)")
    return running


def key(found=None, base=None):
    """The cache key: the floors, the tools, the build format and the interpreter."""
    found = floors() if found is None else found
    base = base or interpreter()
    identity = {
        "format": FORMAT,
        "floors": sorted(f"{floor.name}{floor.extras}>={floor.version}"
                         for floor in found.values()),
        "tools": list(TOOLS),
        "python": base.full,
        "implementation": base.tag,
        "interpreter": base.executable,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return f"{base.tag.replace('cpython-', 'py')}-{digest}"


def cache_dir():
    if os.environ.get("NNBACK_MIN_VERSIONS_CACHE"):
        return Path(os.environ["NNBACK_MIN_VERSIONS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nnback-min-versions"


def venv_python(folder):
    folder = Path(folder)
    return folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def clean_environ(**extra):
    """os.environ without what would leak other packages into the venv, plus ``extra``."""
    environ = {name: value for name, value in os.environ.items() if name not in DROPPED}
    environ.update(PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    environ.update(extra)
    return environ


class Env:
    """A complete floor environment: ``folder``, ``python``, and ``record`` (what the build
    wrote: floors, pins, why a pin differs from its floor, installed versions, timings)."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.python = venv_python(self.folder)
        self.record = json.loads((self.folder / MARKER).read_text(encoding="utf-8"))
        self.cached = True  # False when this call built it

    @property
    def pins(self):
        """{canonical name: the exact version pinned for that floor}."""
        return {name: pin["version"] for name, pin in self.record["pins"].items()}

    def environ(self, **extra):
        """The environment variables to run the venv's interpreter with: nnback from this
        working tree first on the path, nothing from the user's site-packages."""
        return clean_environ(PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1", **extra)

    def run(self, args, timeout, cwd=None, stdin=None, environ=None):
        """Run ``[venv python, *args]`` (``environ``: variables to add): a CompletedProcess
        (text), raising TimeoutExpired."""
        return subprocess.run([str(self.python), *args], cwd=cwd or ROOT,
                              env=self.environ(**(environ or {})), input=stdin,
                              capture_output=True, text=True, timeout=timeout)

    def describe(self):
        pins = ", ".join(f"{name}=={version}" for name, version in self.pins.items())
        return (f"Python {self.record['python']} ({self.record['python_choice']}) with {pins} "
                f"(floor environment {self.folder})")


def _pip(python, args, timeout=PIP_TIMEOUT):
    return subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True,
                          env=clean_environ(), timeout=timeout)


def _tail(text, lines=25):
    kept = [line for line in text.splitlines() if "is ignored: it is neither" not in line]
    return "\n".join(kept[-lines:])


def wheel_versions(python, name, python_version=None):
    """The releases of ``name`` with a wheel that pip would install for the venv interpreter
    ``python`` (or, with ``python_version`` such as "3.10", for that Python on this platform),
    without downloading any: pip lists them when asked for a version that cannot exist. An
    empty list where the index has none or cannot be reached."""
    with tempfile.TemporaryDirectory() as scratch:
        args = ["download", "--no-deps", "--only-binary=:all:", "--dest", scratch,
                f"{name}===0+nnback.probe.no.such.version"]
        if python_version:
            args[1:1] = ["--python-version", python_version]
        result = _pip(python, args, timeout=300)
    found = re.search(r"\(from versions: ([^)]*)\)", result.stderr + result.stdout)
    if result.returncode == 0 or found is None:
        raise RuntimeError(f"pip did not list the versions of {name}:\n"
                           f"{_tail(result.stdout + result.stderr)}")
    listed = found.group(1).strip()
    return [] if listed == "none" else [version.strip() for version in listed.split(",")]


def choose_pins(python, found, base, log):
    """{name: {"version", "requirement", "reason"}}: the exact floor where it has a wheel for
    the venv ``python`` (made from the Interpreter ``base``), else the lowest release of its
    series that has one. Raises FloorsUnavailable or RuntimeError (see the module docstring)
    where a series has none."""
    pins, missing = {}, []
    for floor in found.values():
        versions = wheel_versions(python, floor.name)
        exact = [v for v in versions if Version(v) == Version(floor.version)]
        series = sorted((v for v in versions if floor.in_series(v)), key=Version)
        if exact:
            version, reason = exact[0], "the floor itself"
        elif series:
            version = series[0]
            reason = (f"{floor.name} {floor.version} has no wheel for Python "
                      f"{base.version}; {version} is the lowest release of "
                      f"{floor.series} that has one")
        else:
            missing.append(floor)
            continue
        log(f"min-versions: {floor.name} {version} ({reason})")
        pins[floor.name] = {"version": version, "floor": floor.version, "reason": reason,
                            "requirement": f"{floor.name}{floor.extras}=={version}"}
    if missing:
        _no_wheels(python, missing, base)
    return pins


def _no_wheels(python, missing, base):
    here = "{}.{}".format(*base.minor)
    lowest = max(python_floor() or (3, 8), (3, 8))
    older = [f"3.{minor}" for minor in range(lowest[1], base.minor[1])]
    where = {}
    for floor in missing:
        where[floor] = [version for version in older
                        if any(floor.in_series(v)
                               for v in wheel_versions(python, floor.name, version))]
    names = ", ".join(f"{floor.name} {floor.series[2:]} ({floor.source})" for floor in missing)
    if all(where.values()):
        usable = sorted(set.intersection(*(set(where[floor]) for floor in missing)))
        pythons = "; ".join(f"{floor.name} {floor.series[2:]} has them for Python "
                            f"{', '.join(where[floor])}" for floor in missing)
        raise FloorsUnavailable(
            f"the minimum versions cannot be installed on Python {here}: no wheel of {names} "
            f"for it. They are tested on an older Python that pyproject.toml accepts"
            f"{' (' + ', '.join(usable) + ')' if usable else ''}: {pythons}. Install one "
            f"(python3.X on PATH or in pyenv) to test them here")
    raise RuntimeError(
        f"no wheel of {names} for Python {here}, nor for any older Python that "
        f"pyproject.toml's requires-python accepts ({', '.join(older) or 'none'}): these floors "
        "cannot be installed where pyproject says they can (or the package index cannot be "
        "reached)")


def _build(folder, found, base, log):
    started = time.perf_counter()
    made = subprocess.run([base.executable, "-m", "venv", str(folder)],
                          capture_output=True, text=True, env=clean_environ())
    if made.returncode != 0:
        raise RuntimeError(f"python -m venv failed (does this Python have ensurepip?):\n"
                           f"{_tail(made.stdout + made.stderr)}")
    python = venv_python(folder)
    pins = choose_pins(python, found, base, log)
    requirements = [pin["requirement"] for pin in pins.values()] + list(TOOLS)
    log(f"min-versions: pip install --only-binary=:all: {' '.join(requirements)}")
    result = _pip(python, ["install", "--only-binary=:all:", *requirements])
    if result.returncode != 0:
        raise RuntimeError(
            f"the floors do not install together on Python {base.version} "
            f"(pip install --only-binary=:all: {' '.join(requirements)}):\n"
            f"{_tail(result.stdout + result.stderr)}")
    listed = _pip(python, ["list", "--format=json"])
    installed = {canonicalize_name(item["name"]): item["version"]
                 for item in json.loads(listed.stdout)}
    record = {
        "python": base.version,
        "python_is_floor": base.is_floor,
        "python_choice": base.choice,
        "interpreter": base.executable,
        "floors": {floor.name: floor.source for floor in found.values()},
        "pins": pins,
        "installed": installed,
        "install": requirements,
        "build_seconds": round(time.perf_counter() - started, 1),
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (Path(folder) / MARKER).write_text(json.dumps(record, indent=2), encoding="utf-8")


def ensure_env(rebuild=False, log=None):
    """The floor environment (an Env), built first where the cache has none."""
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    base = interpreter()
    if not python_accepted(base.version):
        raise FloorsUnavailable(f"pyproject.toml's requires-python does not accept Python "
                                f"{base.version} ({base.choice})")
    found = floors()
    cache = cache_dir()
    target = cache / key(found, base)
    complete = (target / MARKER).is_file() and venv_python(target).exists()
    if complete and not rebuild:
        return Env(target)
    cache.mkdir(parents=True, exist_ok=True)
    if target.exists():  # rebuild, or its interpreter is gone: move it aside, then remove it
        aside = Path(tempfile.mkdtemp(prefix=f".old-{target.name}-", dir=cache))
        os.replace(target, aside / "env")
        shutil.rmtree(aside, ignore_errors=True)
    log(f"min-versions: building {target} with Python {base.version} ({base.choice})")
    building = Path(tempfile.mkdtemp(prefix=f".build-{target.name}-", dir=cache))
    try:
        _build(building, found, base, log)
        os.chmod(building, 0o755)  # mkdtemp made it private
        try:
            os.rename(building, target)
        except OSError:
            if not (target / MARKER).is_file():  # not a concurrent build that finished first
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    env = Env(target)
    env.cached = False
    return env


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rebuild", action="store_true", help="build even where cached")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        env = ensure_env(rebuild=args.rebuild)
    except FloorsUnavailable as exc:
        print(f"skipped: {exc}", file=sys.stderr)
        return 0
    summary = dict(env.record, folder=str(env.folder), cached=env.cached,
                   seconds=round(time.perf_counter() - started, 1))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
