"""cupy.cuda for the stand-in: devices, streams and events, memory pools, pinned memory.

Names are the recorded ``cupy.cuda`` surface; the ones the stand-in does not model (NVRTC,
graphs, profilers, texture memory...) raise NotImplementedError when used.
"""
import contextlib as _contextlib
import sys as _sys

from .._namespace import populate as _populate
from . import device, memory, pinned_memory, runtime, stream  # noqa: F401
from .device import Device
from .memory import MemoryPointer, MemoryPool, alloc
from .pinned_memory import (PinnedMemory, PinnedMemoryPointer, PinnedMemoryPool,
                            alloc_pinned_memory, set_pinned_memory_allocator)
from .stream import Event, Stream, get_current_stream, get_elapsed_time


def get_device_id():
    return device.get_device_id()


def is_available():
    return device.DEVICE_COUNT > 0


def get_local_runtime_version():
    return runtime._RUNTIME_VERSION


@_contextlib.contextmanager
def profile():
    """A no-op profiling range (CuPy's starts and stops the CUDA profiler)."""
    yield


_populate(_sys.modules[__name__], "cupy.cuda", {
    "Device": Device, "Event": Event, "MemoryPointer": MemoryPointer,
    "MemoryPool": MemoryPool, "PinnedMemory": PinnedMemory,
    "PinnedMemoryPointer": PinnedMemoryPointer, "PinnedMemoryPool": PinnedMemoryPool,
    "Stream": Stream, "alloc": alloc, "alloc_pinned_memory": alloc_pinned_memory,
    "get_current_stream": get_current_stream, "get_device_id": get_device_id,
    "get_elapsed_time": get_elapsed_time, "get_local_runtime_version":
    get_local_runtime_version, "is_available": is_available, "profile": profile,
    "set_pinned_memory_allocator": set_pinned_memory_allocator,
    "annotations": __import__("__future__").annotations})
