"""cupy.cuda.memory for the stand-in: a memory pool that accounts for device memory.

Every new device array takes a block from the default ``MemoryPool`` (sizes rounded up to
512 bytes, as CuPy does); the block goes back to the pool's free list when the last array
using it is garbage collected, and a later allocation of the same rounded size reuses it
(CuPy also splits larger free blocks; the stand-in reuses exact sizes only). Pointers are
fake device addresses: stable, distinct among live blocks, never host memory.

An allocation that would take the pool past its limit (``set_limit``) or the memory held
by all pools past the device memory (``NNBACK_CUPY_STANDIN_MEMORY``, default 80 GiB) first
frees the pool's cached blocks, then raises ``OutOfMemoryError`` with CuPy's message.
"""
import collections as _collections
import sys as _sys

from .. import _stats
from .._namespace import finish_class, not_implemented
from .._namespace import populate as _populate
from . import device as _device
from .runtime import CUDARuntimeError

_UNIT = 512
_FIRST_PTR = 0x7F00_0000_0000

_next_ptr = [_FIRST_PTR]
_held = [0]  # bytes held (in use or cached) by every pool together


def _device_bytes_in_use(device_id):
    with _stats.LOCK:
        return _held[0]


def _round(size):
    return (size + _UNIT - 1) // _UNIT * _UNIT


class OutOfMemoryError(MemoryError):
    """Out-of-memory error (CuPy's constructor and message)."""

    def __init__(self, size, total, limit=0):
        if limit == 0:
            message = (f"Out of memory allocating {size:,} bytes "
                       f"(allocated so far: {total:,} bytes).")
        else:
            message = (f"Out of memory allocating {size:,} bytes "
                       f"(allocated so far: {total:,} bytes, limit set to: {limit:,} bytes).")
        super().__init__(message)


class PooledMemory:
    """A block of (simulated) device memory from a pool, back in the pool when no array
    (or pointer) refers to it any more."""

    __slots__ = ("ptr", "size", "device_id", "_sd_pool", "__weakref__")

    def __init__(self, ptr, size, device_id, pool):
        self.ptr, self.size, self.device_id, self._sd_pool = ptr, size, device_id, pool

    @property
    def device(self):
        return _device.Device(self.device_id)

    def free(self):
        pool, self._sd_pool = self._sd_pool, None
        if pool is not None:
            pool._sd_release(self.ptr, self.size)

    __del__ = free

    def __repr__(self):
        return f"<PooledMemory 0x{self.ptr:x} size={self.size} device={self.device_id}>"


class MemoryPointer:
    """A pointer into a block of device memory (``ndarray.data``)."""

    __slots__ = ("mem", "ptr", "device_id")

    def __init__(self, mem, offset):
        self.mem = mem
        self.ptr = (mem.ptr if mem is not None else 0) + offset
        self.device_id = mem.device_id if mem is not None else _device.get_device_id()

    @property
    def device(self):
        return _device.Device(self.device_id)

    def __int__(self):
        return self.ptr

    def __add__(self, offset):
        return MemoryPointer(self.mem, self.ptr - self._sd_base() + offset)

    def __sub__(self, offset):
        return self + -offset

    def __iadd__(self, offset):
        self.ptr += offset
        return self

    def __isub__(self, offset):
        self.ptr -= offset
        return self

    def _sd_base(self):
        return self.mem.ptr if self.mem is not None else 0

    def __repr__(self):
        return f"<MemoryPointer 0x{self.ptr:x} device={self.device_id} mem={self.mem!r}>"

    copy_from = copy_from_async = not_implemented("cupy.cuda.MemoryPointer.copy_from")
    copy_from_device = copy_from_device_async = not_implemented(
        "cupy.cuda.MemoryPointer.copy_from_device")
    copy_from_host = copy_from_host_async = not_implemented(
        "cupy.cuda.MemoryPointer.copy_from_host")
    copy_to_host = copy_to_host_async = not_implemented("cupy.cuda.MemoryPointer.copy_to_host")
    memset = memset_async = not_implemented("cupy.cuda.MemoryPointer.memset")


class MemoryPool:
    """A device memory pool: live blocks, cached free blocks, an optional limit."""

    def __init__(self, allocator=None):
        self._sd_free = _collections.defaultdict(list)  # rounded size -> [ptr]
        self._sd_used = 0
        self._sd_cached = 0
        self._sd_limit = 0

    # -- the stand-in's allocation path -------------------------------------------------
    def _sd_allocate(self, nbytes):
        """A PooledMemory of at least ``nbytes`` (> 0) bytes; OutOfMemoryError past the
        limit or the device memory."""
        size = _round(nbytes)
        with _stats.LOCK:
            free = self._sd_free.get(size)
            if free:
                ptr = free.pop()
                self._sd_cached -= size
            else:
                self._sd_check_room(size)
                ptr = _next_ptr[0]
                _next_ptr[0] += size
                _held[0] += size
            self._sd_used += size
        return PooledMemory(ptr, size, _device.get_device_id(), self)

    def _sd_check_room(self, size):
        total = self._sd_used + self._sd_cached
        if self._sd_limit and total + size > self._sd_limit:
            self.free_all_blocks()
            total = self._sd_used
            if total + size > self._sd_limit:
                raise OutOfMemoryError(size, total, self._sd_limit)
        if _held[0] + size > _device.TOTAL_MEMORY:
            self.free_all_blocks()
            if _held[0] + size > _device.TOTAL_MEMORY:
                raise OutOfMemoryError(size, size + self.total_bytes())

    def _sd_release(self, ptr, size):
        with _stats.LOCK:
            self._sd_used -= size
            self._sd_cached += size
            self._sd_free[size].append(ptr)

    # -- CuPy's API ---------------------------------------------------------------------
    def malloc(self, size):
        if size == 0:
            return MemoryPointer(None, 0)
        return MemoryPointer(self._sd_allocate(size), 0)

    def used_bytes(self):
        return self._sd_used

    def free_bytes(self):
        return self._sd_cached

    def total_bytes(self):
        return self._sd_used + self._sd_cached

    def n_free_blocks(self):
        with _stats.LOCK:
            return sum(len(ptrs) for ptrs in self._sd_free.values())

    def free_all_blocks(self, stream=None):
        with _stats.LOCK:
            _held[0] -= self._sd_cached
            self._sd_cached = 0
            self._sd_free.clear()

    def free_all_free(self):
        self.free_all_blocks()

    def set_limit(self, size=None, fraction=None):
        if size is None:
            if fraction is None:
                size = 0
            else:
                if not 0 <= fraction <= 1:
                    raise ValueError(f"memory limit fraction out of range: {fraction}")
                size = int(fraction * _device.TOTAL_MEMORY)
        elif fraction is not None:
            raise ValueError("size and fraction cannot be specified at one time")
        elif size < 0:
            raise ValueError(f"memory limit size out of range: {size}")
        self._sd_limit = int(size)

    def get_limit(self):
        return self._sd_limit


_default_pool = MemoryPool()


def alloc(size):
    """A MemoryPointer to ``size`` bytes from the default pool."""
    return _default_pool.malloc(size)


def _check_room(nbytes):
    """OutOfMemoryError now if the default pool could not give ``nbytes`` bytes."""
    if nbytes:
        size = _round(nbytes)
        with _stats.LOCK:
            if not _default_pool._sd_free.get(size):
                _default_pool._sd_check_room(size)


def _allocate(nbytes):
    """The stand-in's allocation of a new array's memory: a PooledMemory, or None for an
    empty array (CuPy does not allocate those); counted in the statistics."""
    if nbytes == 0:
        return None
    block = _default_pool._sd_allocate(nbytes)
    _stats.add_allocation(nbytes)
    return block


finish_class(MemoryPool, "cupy.cuda.MemoryPool")
finish_class(MemoryPointer, "cupy.cuda.MemoryPointer", check_constructor=False)
finish_class(OutOfMemoryError, "cupy.cuda.memory.OutOfMemoryError")
for _cls in (OutOfMemoryError, PooledMemory, MemoryPointer, MemoryPool):
    _cls.__module__ = "cupy.cuda.memory"

_populate(_sys.modules[__name__], "cupy.cuda.memory", {
    "CUDARuntimeError": CUDARuntimeError, "MemoryPointer": MemoryPointer,
    "MemoryPool": MemoryPool, "OutOfMemoryError": OutOfMemoryError,
    "PooledMemory": PooledMemory, "alloc": alloc})
