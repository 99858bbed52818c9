"""Array backends: one object per array library that owns everything backend-specific, and
``get_backend`` to pick one.

Model code never imports numpy or cupy. It asks its Backend for ``xp`` (the array module)
and goes through the Backend for the few things the array modules do differently: moving
arrays between host and device, synchronising, making arrays on the right device, dtypes,
and the host random generator that seeds the weights.

The generic Backend, the buffers and the errors live in backend_base.py; the faster
backends beside it, one each: backend_numpy.py (NumpyBackend: the ``out=`` overrides and
scratch space) and backend_cupy.py (CupyBackend: fused kernels, TF32). This module keeps the
array_api_strict stand-in, ``get_backend`` and pickling by name, and re-exports the rest, so
``from nnback.backend import ...`` finds every backend name. It is the only module that
imports cupy, and it does so lazily (backend_cupy.py is handed the module).
"""
import copyreg
import os

import array_api_compat
import numpy

from .backend_base import (VALID_DTYPES, Backend, BackendUnavailableError,  # noqa: F401
                           Buffers, DeviceOutOfMemoryError, ReusedBuffers, all_finite,
                           check_dtype, compat_namespace, host_array, is_array_object,
                           is_host_sparse)
from .backend_cupy import CupyBackend
from .backend_numpy import NumpyBackend

VALID_BACKENDS = ("auto", "numpy", "cupy", "array_api_strict")
ENV_VAR = "NNBACK_BACKEND"

CUPY_INSTALL_HINT = (
    "pip install 'nnback[cuda12]' (CUDA 12) or 'nnback[cuda13]' (CUDA 13), matching the CUDA "
    "version that `nvidia-smi` reports"
)



class ArrayApiStrictBackend(Backend):
    """array_api_strict on its second device: a CPU stand-in for an accelerator that refuses
    silent conversion to NumPy and mixing arrays from two devices. It proves that the generic
    path needs nothing NumPy-specific; it is for tests, not for speed."""

    name = "array_api_strict"

    def __init__(self):
        try:
            import array_api_strict
        except ImportError as exc:
            raise BackendUnavailableError(
                "array_api_strict is not installed; pip install array-api-strict "
                "(it comes with the 'test' extra: pip install 'nnback[test]')"
            ) from exc
        super().__init__(array_api_strict, array_api_strict.Device("device1"))
        self._host_device = array_api_strict.Device("CPU_DEVICE")

    def to_numpy(self, array):
        return numpy.array(array.to_device(self._host_device), copy=True)


def _load_cupy():
    """The cupy module when CuPy is installed and a CUDA GPU answers; otherwise
    BackendUnavailableError saying which of the two is missing and what to do."""
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the cupy backend needs CuPy, which is not installed: {CUPY_INSTALL_HINT}"
        ) from exc
    except Exception as exc:  # a broken install (wrong CUDA wheel) fails in odd ways
        raise BackendUnavailableError(
            f"CuPy is installed but failed to import ({type(exc).__name__}: {exc}); "
            f"reinstall it: {CUPY_INSTALL_HINT}"
        ) from exc
    try:
        available = cupy.is_available()
    except Exception:
        available = False
    if not available:
        raise BackendUnavailableError(
            "CuPy is installed but finds no working CUDA GPU (no device, or the driver is "
            "missing or too old for this CuPy build); check `nvidia-smi`, or use "
            "backend='numpy' / backend='auto' to run on the CPU"
        )
    try:  # CuPy imports fine without a driver and fails only on first use
        (cupy.arange(2) + 1).sum().item()
    except Exception as exc:
        raise BackendUnavailableError(
            f"CuPy found a GPU but a first operation failed ({type(exc).__name__}: {exc}); "
            f"check that the CuPy wheel matches the CUDA driver: {CUPY_INSTALL_HINT}"
        ) from exc
    return cupy


def select_cuda_device(local_rank, what="select_cuda_device"):
    """Make GPU ``local_rank`` modulo the machine's GPUs CuPy's current device, then check
    that the cupy backend works there; returns the device index. For one process per GPU:
    call it before the cupy backend is first used, whose first operation opens a CUDA
    context on the current device (by default GPU 0, for every process). ``what`` names
    the caller in errors (BackendUnavailableError where CuPy or a GPU is missing)."""
    try:  # not through get_backend("cupy"): its availability probe would run on GPU 0
        import cupy
    except ImportError as exc:
        raise BackendUnavailableError(
            f"{what} needs CuPy, which is not installed: {CUPY_INSTALL_HINT}") from exc
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CuPy without a driver fails here, not at import
        raise BackendUnavailableError(
            f"{what} finds no CUDA GPU ({type(exc).__name__}: {exc})") from exc
    device = local_rank % n_devices
    cupy.cuda.Device(device).use()
    get_backend("cupy")  # now probes (and raises BackendUnavailableError) on this GPU
    return device


_cache = {}


def _make(name):
    if name == "numpy":
        return NumpyBackend()
    if name == "cupy":
        return CupyBackend(_load_cupy())
    if name == "array_api_strict":
        return ArrayApiStrictBackend()
    raise AssertionError(name)


def get_backend(name="auto", allow_tf32=False):
    """The Backend called ``name``: "auto" | "numpy" | "cupy" (or "array_api_strict", the
    test stand-in). A Backend passed in is returned as it is.

    allow_tf32=True: a cupy backend whose float32 matrix products may use TF32 tensor cores
    (see CupyBackend). TF32 is a CUDA feature: asking for it on "numpy" or
    "array_api_strict" (by name or as a Backend) raises ValueError; "auto" applies it when
    it picks cupy and drops it when it falls back to numpy.

    "auto" takes the NNBACK_BACKEND environment variable when it is set, and otherwise picks
    cupy when CuPy and a GPU work, else numpy, silently. Naming "cupy" on a machine where it
    cannot run raises BackendUnavailableError saying why and what to install.
    """
    if allow_tf32 not in (True, False):
        raise TypeError(f"allow_tf32 must be True or False, got {allow_tf32!r}")
    if allow_tf32:
        backend = get_backend(name)
        if isinstance(backend, CupyBackend):
            return backend.with_tf32(True)
        explicit = isinstance(name, Backend) or name.strip().lower() != "auto"
        if explicit:
            raise ValueError(
                f"allow_tf32=True is for the cupy backend (TF32 is a CUDA tensor-core "
                f"feature), not {backend.name!r}; leave allow_tf32 off on the CPU, or use "
                f"backend='auto' to have it apply only where a GPU is found")
        return backend
    if isinstance(name, Backend):
        return name
    if name is None:
        name = "auto"
    if not isinstance(name, str):
        raise TypeError(
            f"backend must be a name ({', '.join(map(repr, VALID_BACKENDS))}) or a Backend, "
            f"got {type(name).__name__}"
        )
    key = name.strip().lower()
    if key == "auto":
        from_env = os.environ.get(ENV_VAR, "").strip().lower()
        if from_env and from_env != "auto":
            if from_env not in VALID_BACKENDS:
                raise ValueError(
                    f"{ENV_VAR}={from_env!r} is not a backend; valid names: "
                    f"{', '.join(VALID_BACKENDS)}"
                )
            return get_backend(from_env)
        if "auto" not in _cache:
            try:
                _cache["auto"] = get_backend("cupy")
            except BackendUnavailableError:
                _cache["auto"] = get_backend("numpy")
        return _cache["auto"]
    if key not in VALID_BACKENDS:
        raise ValueError(
            f"unknown backend {name!r}; valid names: {', '.join(VALID_BACKENDS)}"
        )
    if key not in _cache:
        _cache[key] = _make(key)
    return _cache[key]


def available_backends():
    """{name: None if it works here, else the reason it does not} for numpy, cupy and
    array_api_strict."""
    status = {}
    for name in ("numpy", "cupy", "array_api_strict"):
        try:
            get_backend(name)
            status[name] = None
        except BackendUnavailableError as exc:
            status[name] = str(exc)
    return status


def backend_of(array):
    """The Backend that ``array`` belongs to (Chainer's get_array_module): numpy, cupy or
    array_api_strict by name; for an array of another array-API library (a torch tensor,
    say) a generic Backend over its namespace. TypeError for anything else."""
    module = type(array).__module__.split(".")[0]
    if module in ("numpy", "cupy", "array_api_strict"):
        return get_backend(module)
    if is_array_object(array):
        return _generic_backend(array_api_compat.array_namespace(array))
    raise TypeError(
        f"expected an array of numpy, cupy or array_api_strict, got {type(array).__name__}"
    )


_generic = {}


def _generic_backend(xp):
    """The generic Backend over the array module or namespace ``xp``: one per namespace."""
    namespace = compat_namespace(xp)
    if namespace not in _generic:
        _generic[namespace] = Backend(namespace)
    return _generic[namespace]


def backend_over(module_name):
    """The generic Backend over the array module called ``module_name`` (e.g. "torch")."""
    import importlib

    return _generic_backend(importlib.import_module(module_name))


def _pickled_by_name(backend):
    """Backends pickle (and copy) by name: what unpickles is the backend of that name where
    it is unpickled, so a model travels between processes with its arrays."""
    if backend.name in VALID_BACKENDS:
        return get_backend, (backend.name, backend.allow_tf32)
    return backend_over, (backend.module.__name__,)


for _backend_class in (Backend, NumpyBackend, CupyBackend, ArrayApiStrictBackend):
    copyreg.pickle(_backend_class, _pickled_by_name)
