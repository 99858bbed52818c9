"""Pinned (page-locked) host memory for the stand-in, and the hazard it exists to catch.

``alloc_pinned_memory(size)`` takes a block from the default ``PinnedMemoryPool`` (sizes
rounded up to 512 bytes; a freed block is reused for the next request of the same rounded
size, as in CuPy). The block is ordinary host memory, exported through the buffer protocol,
so ``numpy.frombuffer(pointer, dtype, count)`` works as on CuPy; it goes back to the pool
when the pointer and every array made from it are gone.

An asynchronous copy from or to pinned memory (``ndarray.set``, or ``ndarray.get`` with
``blocking=False``, on any stream: from page-locked memory cudaMemcpyAsync returns before
the DMA even on the null stream) is recorded on the block as pending until that stream is
known to have passed it (see stream.py). Handing the block out again while a copy is pending raises
``cupy.standin.PinnedReuseError``: on a GPU the new owner would race with the copy.
"""
import collections as _collections
import ctypes as _ctypes
import weakref as _weakref

from .. import _stats
from .._namespace import finish_class
from ..standin import PinnedReuseError as _PinnedReuseError
from . import stream as _stream

_UNIT = 512
_live = _weakref.WeakValueDictionary()  # ptr -> PinnedMemory, every live block


class PinnedMemory:
    """A block of (simulated) pinned host memory: ordinary host memory."""

    def __init__(self, size, flags=0):
        self.size = size
        self._sd_buffer = bytearray(size)
        self._sd_pending = []  # [(stream ptr, sequence, stream repr, what)]
        self.ptr = (_ctypes.addressof((_ctypes.c_char * size).from_buffer(self._sd_buffer))
                    if size else 0)
        if size:
            _live[self.ptr] = self

    def __int__(self):
        return self.ptr


class PooledPinnedMemory(PinnedMemory):
    """A pool's block lent out; back in the pool when garbage collected."""

    def __init__(self, mem, pool):
        self.ptr, self.size = mem.ptr, mem.size
        self._sd_block = mem
        self._sd_buffer = mem._sd_buffer
        self.pool = pool

    def free(self):
        pool = self.pool()
        if pool is not None and self.ptr != 0:
            pool._sd_release(self.ptr, self.size)
        self.ptr = 0
        self.size = 0

    __del__ = free


def _block_of(mem):
    return getattr(mem, "_sd_block", mem)


_pointer_types = {}


def _pointer_type(size):
    cls = _pointer_types.get(size)
    if cls is None:
        cls = _pointer_types[size] = type("PinnedMemoryPointer", (PinnedMemoryPointer,),
                                          {"_length_": size, "__module__": __name__})
    return cls


class PinnedMemoryPointer(_ctypes.Array):
    """A pointer into pinned memory; exports the bytes from it to the end of its block
    through the buffer protocol (the stand-in builds it on a ctypes array for that)."""

    _type_ = _ctypes.c_ubyte
    _length_ = 0

    def __new__(cls, mem, offset):
        size = mem.size - offset
        if size > 0:
            pointer = _pointer_type(size).from_buffer(mem._sd_buffer, offset)
        else:
            pointer = _pointer_type(0)()
        pointer.mem = mem
        pointer.ptr = mem.ptr + offset
        return pointer

    def __init__(self, mem, offset):
        pass

    def size(self):
        return self.mem.size - (self.ptr - self.mem.ptr)

    def __int__(self):
        return self.ptr

    def __add__(self, offset):
        return PinnedMemoryPointer(self.mem, self.ptr - self.mem.ptr + offset)

    def __sub__(self, offset):
        return self + -offset

    def __repr__(self):
        return f"<PinnedMemoryPointer 0x{self.ptr:x} size={self.size()}>"


def _malloc(size):
    return PinnedMemoryPointer(PinnedMemory(size), 0)


class PinnedMemoryPool:
    """A pool of pinned host blocks, reused by rounded size."""

    def __init__(self, allocator=_malloc):
        self._sd_in_use = {}
        self._sd_free = _collections.defaultdict(list)
        self._sd_alloc = allocator
        self._sd_weakref = _weakref.ref(self)

    def malloc(self, size):
        if size == 0:
            return PinnedMemoryPointer(PinnedMemory(0), 0)
        size = (size + _UNIT - 1) // _UNIT * _UNIT
        with _stats.LOCK:
            free = self._sd_free[size]
            if free:
                mem = free[-1]
                _check_reuse(mem)
                free.pop()
            else:
                mem = self._sd_alloc(size).mem
            self._sd_in_use[mem.ptr] = mem
        return PinnedMemoryPointer(PooledPinnedMemory(mem, self._sd_weakref), 0)

    def _sd_release(self, ptr, size):
        with _stats.LOCK:
            mem = self._sd_in_use.pop(ptr, None)
            if mem is None:
                raise RuntimeError("Cannot free out-of-pool memory")
            self._sd_free[size].append(mem)

    free = _sd_release

    def free_all_blocks(self):
        with _stats.LOCK:
            self._sd_free.clear()

    def n_free_blocks(self):
        with _stats.LOCK:
            return sum(len(blocks) for blocks in self._sd_free.values())


def _check_reuse(mem):
    """PinnedReuseError if an asynchronous copy on ``mem`` is still pending."""
    mem._sd_pending = [entry for entry in mem._sd_pending
                       if not _stream._is_complete(entry[0], entry[1])]
    if not mem._sd_pending:
        return
    _, _, stream_repr, what = mem._sd_pending[0]
    raise _PinnedReuseError(
        f"pinned host block 0x{mem.ptr:x} ({mem.size} bytes) is being handed out again by "
        f"the pinned memory pool while an asynchronous {what} queued on {stream_repr} has not "
        "been waited for: the block went back to the pool when the last "
        "PinnedMemoryPointer (and every array on it) was dropped, so its new owner would "
        "race with the copy on a GPU. Keep the pinned block alive until an event recorded "
        "after the copy has passed (event = stream.record(); ...; event.synchronize()), or "
        "synchronize the stream first, as cupy.asarray does for its own staging buffer.")


def _record_async_copy(host_array, stream, what):
    """Note an asynchronous copy between ``host_array`` and the device on ``stream`` when
    ``host_array`` lies in pinned memory; whether it does."""
    address = host_array.__array_interface__["data"][0]
    with _stats.LOCK:
        for ptr, mem in list(_live.items()):
            if ptr <= address < ptr + mem.size:
                sequence = _stream._submit(stream)
                mem._sd_pending.append((stream.ptr, sequence, repr(stream), what))
                return True
    return False


_default_pool = PinnedMemoryPool()
_current_allocator = [_default_pool.malloc]


def alloc_pinned_memory(size):
    """A PinnedMemoryPointer to ``size`` bytes from the current pinned allocator."""
    return _current_allocator[0](size)


def set_pinned_memory_allocator(allocator=None):
    _current_allocator[0] = _malloc if allocator is None else allocator


finish_class(PinnedMemoryPool, "cupy.cuda.PinnedMemoryPool")
finish_class(PinnedMemoryPointer, "cupy.cuda.PinnedMemoryPointer", check_methods=False,
             check_constructor=False)
for _cls in (PinnedMemory, PooledPinnedMemory, PinnedMemoryPointer, PinnedMemoryPool):
    _cls.__module__ = "cupy.cuda.pinned_memory"

