"""cupy.cuda.runtime for the stand-in: device queries answered from its settings, the
recorded constants, and NotImplementedError for the rest of the CUDA runtime API."""
import sys as _sys

from .._namespace import populate as _populate
from . import device as _device

_ERRORS = {
    2: ("cudaErrorMemoryAllocation", "out of memory"),
    100: ("cudaErrorNoDevice", "no CUDA-capable device is detected"),
    101: ("cudaErrorInvalidDevice", "invalid device ordinal"),
    400: ("cudaErrorInvalidResourceHandle", "invalid resource handle"),
    600: ("cudaErrorNotReady", "device not ready"),
}

_DEVICE_NAME = b"CuPy stand-in (NumPy on the CPU)"
_RUNTIME_VERSION = 12080


class CUDARuntimeError(RuntimeError):
    """A CUDA runtime error, with CuPy's ``status`` and message ("name: description")."""

    def __init__(self, status):
        self.status = status
        name, text = _ERRORS.get(status, (f"cudaError{status}", "unknown error"))
        super().__init__(f"{name}: {text}")

    def __reduce__(self):
        return (type(self), (self.status,))


CUDARuntimeError.__module__ = "cupy_backends.cuda.api.runtime"


def _check_device(device_id):
    if not 0 <= device_id < _device.DEVICE_COUNT:
        raise CUDARuntimeError(101 if _device.DEVICE_COUNT else 100)


def getDeviceCount():
    if not _device.DEVICE_COUNT:
        raise CUDARuntimeError(100)
    return _device.DEVICE_COUNT


def getDevice():
    return _device.get_device_id()


def setDevice(device):
    _device._set_device_id(device)


def getDeviceProperties(device):
    """A dict with the keys CuPy's has (the ones a caller is likely to read)."""
    _check_device(device)
    capability = _device.COMPUTE_CAPABILITY
    return {
        "name": _DEVICE_NAME,
        "totalGlobalMem": _device.TOTAL_MEMORY,
        "sharedMemPerBlock": 49152,
        "regsPerBlock": 65536,
        "warpSize": 32,
        "maxThreadsPerBlock": 1024,
        "maxThreadsDim": (1024, 1024, 64),
        "maxGridSize": (2147483647, 65535, 65535),
        "clockRate": 1980000,
        "totalConstMem": 65536,
        "major": int(capability[:-1]),
        "minor": int(capability[-1]),
        "multiProcessorCount": 132,
        "l2CacheSize": 52428800,
        "maxThreadsPerMultiProcessor": 2048,
        "memoryClockRate": 2619000,
        "memoryBusWidth": 5120,
        "pciBusID": device + 1,
        "pciDeviceID": 0,
        "pciDomainID": 0,
        "integrated": 0,
        "canMapHostMemory": 1,
        "concurrentKernels": 1,
        "ECCEnabled": 1,
        "uuid": bytes(16),
    }


def memGetInfo():
    """(free, total) bytes of the current device."""
    return _device.Device().mem_info


def deviceSynchronize():
    from . import stream

    stream._synchronize_all()


def runtimeGetVersion():
    return _RUNTIME_VERSION


def driverGetVersion():
    return _RUNTIME_VERSION


def check_status(status):
    if status != 0:
        raise CUDARuntimeError(status)


_populate(_sys.modules[__name__], "cupy.cuda.runtime", {
    name: globals()[name] for name in (
        "CUDARuntimeError", "check_status", "deviceSynchronize", "driverGetVersion",
        "getDevice", "getDeviceCount", "getDeviceProperties", "memGetInfo",
        "runtimeGetVersion", "setDevice")})
