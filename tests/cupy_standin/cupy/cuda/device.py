"""cupy.cuda.Device: the stand-in's devices (``NNBACK_CUPY_STANDIN_DEVICES``, default 1),
each with the memory budget ``NNBACK_CUPY_STANDIN_MEMORY`` (default 80 GiB) and compute
capability ``NNBACK_CUPY_STANDIN_COMPUTE_CAPABILITY`` (default "90"). The current device is
per thread, as in CUDA."""
import threading

from .. import _config
from .._namespace import finish_class

DEVICE_COUNT = _config.device_count()
TOTAL_MEMORY = _config.device_memory()
COMPUTE_CAPABILITY = _config.compute_capability()

_local = threading.local()


def get_device_id():
    """The current device of this thread (0 unless a Device was used)."""
    return getattr(_local, "device_id", 0)


def _set_device_id(device_id):
    from . import runtime

    runtime._check_device(device_id)
    _local.device_id = device_id


def get_compute_capability():
    return COMPUTE_CAPABILITY


class Device:
    """A CUDA device of the stand-in (NumPy on the CPU behind it)."""

    __slots__ = ("id", "_sd_previous")

    def __init__(self, device=None):
        if device is None:
            device = get_device_id()
        self.id = int(device)
        self._sd_previous = []

    def use(self):
        _set_device_id(self.id)

    def synchronize(self):
        """Waits for every stream of this device: pending copies complete."""
        from . import stream

        stream._synchronize_all()

    def __enter__(self):
        self._sd_previous.append(get_device_id())
        _set_device_id(self.id)
        return self

    def __exit__(self, *args):
        _local.device_id = self._sd_previous.pop()

    def __int__(self):
        return self.id

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    __hash__ = None

    def __repr__(self):
        return f"<CUDA Device {self.id}>"

    @property
    def compute_capability(self):
        return COMPUTE_CAPABILITY

    @property
    def mem_info(self):
        """(free, total) bytes: the budget less what the memory pool holds."""
        from . import memory

        used = memory._device_bytes_in_use(self.id)
        return (max(TOTAL_MEMORY - used, 0), TOTAL_MEMORY)

    @property
    def attributes(self):
        from . import runtime

        properties = runtime.getDeviceProperties(self.id)
        return {"MultiProcessorCount": properties["multiProcessorCount"],
                "WarpSize": properties["warpSize"],
                "ComputeCapabilityMajor": properties["major"],
                "ComputeCapabilityMinor": properties["minor"],
                "MaxThreadsPerBlock": properties["maxThreadsPerBlock"]}

    @property
    def pci_bus_id(self):
        return f"0000:{self.id + 1:02x}:00.0"

    @classmethod
    def from_pci_bus_id(cls, pci_bus_id):
        return cls(int(pci_bus_id.split(":")[1], 16) - 1)

    @property
    def cublas_handle(self):
        return 0x1000 + self.id

    cusolver_handle = cusparse_handle = cusolver_sp_handle = cutensor_handle = cublas_handle


finish_class(Device, "cupy.cuda.Device")
Device.__module__ = "cupy.cuda.device"
