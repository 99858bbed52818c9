"""The one name the real CuPy does not have: what tests ask the stand-in about itself.

- ``stats()``: process-wide counts since the last ``reset_stats()``: ``device_to_host``
  (copies to the host: ``get``, ``asnumpy``, ``float(x)``, ``int(x)``, ``bool(x)``, ``item``,
  ``tolist``, ``repr``/``str``, pickling, boolean-mask indexing and ``nonzero``, which
  synchronise in CuPy), ``host_to_device`` (``asarray``/``array`` of host data, ``set``, host
  index arrays and host values in advanced indexing), ``allocations`` / ``allocated_bytes``
  (new device arrays, views excluded), ``kernel_launches`` (one per call that computes: a
  ufunc, a reduction, a product, a copy, a fill, an ElementwiseKernel; CuPy may launch more
  than one kernel for some of them).
- ``counting()``: a context manager yielding a ``Counts`` whose attributes (and ``as_dict()``)
  are the counts inside the block (live while inside, frozen on exit). Counts are
  process-wide: other threads' work inside the block is counted too.
- ``PinnedReuseError``: raised when a pinned host block with an asynchronous copy still
  pending on a stream is handed out again by the pinned memory pool.
- ``SURFACE_VERSIONS``: the CuPy versions whose surfaces are enforced.
"""
import contextlib

from . import _stats
from ._surface import SURFACE

SURFACE_VERSIONS = tuple(SURFACE.versions)

__all__ = ["Counts", "PinnedReuseError", "SURFACE_VERSIONS", "counting", "reset_stats",
           "stats"]


class PinnedReuseError(RuntimeError):
    """A pinned host block went back to the pool and was handed out again while an
    asynchronous copy from or to it was still pending on a stream."""


def stats():
    """{"device_to_host", "host_to_device", "allocations", "allocated_bytes",
    "kernel_launches"}: counts since the last reset."""
    return _stats.snapshot()


def reset_stats():
    _stats.reset()


class Counts:
    """Counts measured from the start of a ``counting()`` block."""

    def __init__(self):
        self._start = _stats.snapshot()
        self._end = None

    def _current(self):
        return self._end if self._end is not None else _stats.snapshot()

    def as_dict(self):
        current = self._current()
        return {key: current[key] - self._start[key] for key in _stats.KEYS}

    def _close(self):
        self._end = _stats.snapshot()

    def __getattr__(self, name):
        if name in _stats.KEYS:
            return self.as_dict()[name]
        raise AttributeError(name)

    def __repr__(self):
        return f"Counts({self.as_dict()})"


@contextlib.contextmanager
def counting():
    """with counting() as counts: ...; counts.device_to_host etc. inside the block."""
    counts = Counts()
    try:
        yield counts
    finally:
        counts._close()
