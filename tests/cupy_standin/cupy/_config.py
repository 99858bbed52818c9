"""Settings of the stand-in, read once from the environment at import.

- ``NNBACK_CUPY_STANDIN_SURFACE``: ``13``, ``14`` or ``both`` (default): which recorded CuPy
  surface(s) (``tests/cupy_standin/surface/cupy-<version>.json``) names and calls must fit.
- ``NNBACK_CUPY_STANDIN_MEMORY``: device memory in bytes (default 80 GiB); allocations past
  it raise ``cupy.cuda.memory.OutOfMemoryError``.
- ``NNBACK_CUPY_STANDIN_DEVICES``: number of devices (default 1).
- ``NNBACK_CUPY_STANDIN_COMPUTE_CAPABILITY``: e.g. ``90`` (default) or ``75`` (below 80,
  TF32 is refused with CuPy's warning).
- ``CUPY_TF32``: the initial float32 compute type, as in CuPy.
"""
import glob
import os
import re

SURFACE_ENV = "NNBACK_CUPY_STANDIN_SURFACE"
MEMORY_ENV = "NNBACK_CUPY_STANDIN_MEMORY"
DEVICES_ENV = "NNBACK_CUPY_STANDIN_DEVICES"
COMPUTE_CAPABILITY_ENV = "NNBACK_CUPY_STANDIN_COMPUTE_CAPABILITY"

SURFACE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "surface")
DEFAULT_MEMORY = 80 * 2**30


def _recorded_versions():
    """{major: version} of the recorded surfaces, e.g. {"13": "13.6.0", "14": "14.2.0"}."""
    found = {}
    for path in glob.glob(os.path.join(SURFACE_DIR, "cupy-*.json")):
        version = os.path.basename(path)[len("cupy-"):-len(".json")]
        found[version.split(".")[0]] = version
    return found


def surface_versions():
    """The CuPy versions whose surfaces are enforced, oldest first."""
    recorded = _recorded_versions()
    if not recorded:
        raise ImportError(f"the CuPy stand-in finds no recorded surface in {SURFACE_DIR}; "
                          "run tests/cupy_standin/make_surface.py with a real CuPy")
    choice = os.environ.get(SURFACE_ENV, "both").strip().lower() or "both"
    if choice == "both":
        majors = sorted(recorded, key=int)
    elif choice in recorded:
        majors = [choice]
    else:
        raise ImportError(f"{SURFACE_ENV}={choice!r}: expected one of "
                          f"{', '.join(sorted(recorded, key=int))} or 'both'")
    return [recorded[major] for major in majors]


def _int_from_env(name, default, minimum):
    text = os.environ.get(name, "").strip().replace("_", "")
    if not text:
        return default
    if not re.fullmatch(r"\d+", text):
        raise ImportError(f"{name}={os.environ[name]!r}: expected a whole number")
    value = int(text)
    if value < minimum:
        raise ImportError(f"{name}={value}: must be at least {minimum}")
    return value


def device_memory():
    return _int_from_env(MEMORY_ENV, DEFAULT_MEMORY, 0)


def device_count():
    return _int_from_env(DEVICES_ENV, 1, 0)


def compute_capability():
    return str(_int_from_env(COMPUTE_CAPABILITY_ENV, 90, 10))
