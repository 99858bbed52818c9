"""cupy.cuda.Stream / Event and the order in which the stand-in considers work done.

The stand-in computes every operation at once, so data is always right. What it simulates
is *when the host may assume* an asynchronous operation has happened: each stream counts
the operations queued on it that matter to the host (asynchronous copies to or from pinned
memory) and how many of them are known complete. Work becomes known complete only through
synchronisation: ``Stream.synchronize()``, ``Event.synchronize()`` of an event recorded after
it, ``Device.synchronize()``, a blocking copy to the host on the stream, or polling ``done``
(which reports False once, then True: the GPU finishes eventually). Synchronising the null
stream completes every blocking stream too (CUDA's legacy default stream).

The current stream is per thread, as in CuPy; ``with stream:`` restores the previous one.
"""
import itertools
import threading
import time

from .. import _stats
from .._namespace import finish_class, not_implemented
from . import device as _device

_local = threading.local()
_fake_stream_ptrs = itertools.count(0x5A5A_0000_1000, 0x100)
_fake_event_ptrs = itertools.count(0x5E5E_0000_1000, 0x100)


class _Progress:
    """Operations queued on one stream (by ptr) and how many are known complete."""

    __slots__ = ("submitted", "completed", "non_blocking")

    def __init__(self, non_blocking):
        self.submitted = 0
        self.completed = 0
        self.non_blocking = non_blocking


_progress = {}  # stream ptr -> _Progress (the null stream is ptr 0)


def _progress_of(ptr, non_blocking=False):
    with _stats.LOCK:
        progress = _progress.get(ptr)
        if progress is None:
            progress = _progress[ptr] = _Progress(non_blocking)
        return progress


def _submit(stream):
    """Queue one operation on ``stream``; its sequence number."""
    with _stats.LOCK:
        progress = _progress_of(stream.ptr)
        progress.submitted += 1
        return progress.submitted


def _is_complete(stream_ptr, sequence):
    with _stats.LOCK:
        return _progress_of(stream_ptr).completed >= sequence


def _complete(stream_ptr, upto=None):
    """Mark the work of a stream known complete (up to ``upto``, default all of it). The
    null stream's synchronisation waits for every blocking stream too."""
    with _stats.LOCK:
        progress = _progress_of(stream_ptr)
        target = progress.submitted if upto is None else min(upto, progress.submitted)
        progress.completed = max(progress.completed, target)
        if stream_ptr == 0 and upto is None:
            for other in _progress.values():
                if not other.non_blocking:
                    other.completed = other.submitted


def _synchronize_all():
    with _stats.LOCK:
        for progress in _progress.values():
            progress.completed = progress.submitted


def _poll(stream_ptr, upto):
    """``done`` of a stream or event: True when known complete; otherwise False, and the
    work becomes complete (a later poll says True)."""
    if _is_complete(stream_ptr, upto):
        return True
    _complete(stream_ptr, upto)
    return False


class Stream:
    """A CUDA stream of the stand-in (a fake handle ``ptr``; ``Stream.null`` has ptr 0)."""

    null = None  # set below
    ptds = None

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        if null:
            self.ptr = 0
        elif ptds:
            self.ptr = 2
        else:
            self.ptr = next(_fake_stream_ptrs)
        self.device_id = -1 if (null or ptds) else _device.get_device_id()
        self._sd_non_blocking = bool(non_blocking)
        self._sd_priority = 0 if priority is None else int(priority)
        self._sd_previous = []
        _progress_of(self.ptr, self._sd_non_blocking)

    def use(self):
        """Makes this the current stream of this thread."""
        _local.current = self
        return self

    def __enter__(self):
        self._sd_previous.append(getattr(_local, "current", None))
        _local.current = self
        return self

    def __exit__(self, *args):
        _local.current = self._sd_previous.pop()

    def synchronize(self):
        """Waits for the work queued on this stream."""
        _complete(self.ptr)

    @property
    def done(self):
        return _poll(self.ptr, _progress_of(self.ptr).submitted)

    def record(self, event=None):
        if event is None:
            event = Event()
        event.record(self)
        return event

    def wait_event(self, event):
        """The stream waits for ``event`` on the device; nothing the host can see."""

    def add_callback(self, callback, arg):
        callback(self, 0, arg)

    def launch_host_func(self, callback, arg):
        callback(arg)

    def is_capturing(self):
        return False

    begin_capture = not_implemented("cupy.cuda.Stream.begin_capture")
    end_capture = not_implemented("cupy.cuda.Stream.end_capture")

    @property
    def is_non_blocking(self):
        return self._sd_non_blocking

    @property
    def priority(self):
        return self._sd_priority

    def __cuda_stream__(self):
        return (0, self.ptr)

    @classmethod
    def from_external(cls, stream):
        raise NotImplementedError("the CuPy stand-in does not implement "
                                  "cupy.cuda.Stream.from_external")

    def __eq__(self, other):
        return isinstance(other, Stream) and (self.ptr, self.device_id) == (
            other.ptr, other.device_id)

    def __hash__(self):
        return hash((self.ptr, self.device_id))

    def __repr__(self):
        return f"<Stream {self.ptr} (device {self.device_id})>"


Stream.null = Stream(null=True)
Stream.ptds = Stream(ptds=True)


class Event:
    """A CUDA event: a point in a stream's work."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.ptr = next(_fake_event_ptrs)
        self._sd_disable_timing = bool(disable_timing)
        self._sd_stream_ptr = None
        self._sd_sequence = 0
        self._sd_time = None

    def record(self, stream=None):
        if stream is None:
            stream = get_current_stream()
        self._sd_stream_ptr = stream.ptr
        self._sd_sequence = _progress_of(stream.ptr).submitted
        self._sd_time = time.perf_counter()

    def synchronize(self):
        """Waits until the work queued before ``record`` is done."""
        if self._sd_stream_ptr is not None:
            _complete(self._sd_stream_ptr, self._sd_sequence)

    @property
    def done(self):
        if self._sd_stream_ptr is None:
            return True
        return _poll(self._sd_stream_ptr, self._sd_sequence)

    def _sd_completed(self):
        return self._sd_stream_ptr is None or _is_complete(self._sd_stream_ptr,
                                                         self._sd_sequence)

    def __repr__(self):
        return f"<Event {self.ptr}>"


def get_current_stream(device_id=-1):
    """The current stream of this thread (``Stream.null`` unless one was made current)."""
    current = getattr(_local, "current", None)
    return Stream.null if current is None else current


def get_elapsed_time(start_event, end_event):
    """Milliseconds between two recorded events (host clock). As in CUDA, the end event
    must be complete (synchronise it first) and neither may disable timing."""
    from .runtime import CUDARuntimeError

    for event in (start_event, end_event):
        if event._sd_time is None or event._sd_disable_timing:
            raise CUDARuntimeError(400)  # cudaErrorInvalidResourceHandle
    if not end_event._sd_completed():
        raise CUDARuntimeError(600)  # cudaErrorNotReady
    return (end_event._sd_time - start_event._sd_time) * 1000.0


finish_class(Stream, "cupy.cuda.Stream")
finish_class(Event, "cupy.cuda.Event")
Stream.__module__ = Event.__module__ = "cupy.cuda.stream"
