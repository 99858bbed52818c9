"""cupy._core.flags: the flags object of an array."""
from .._array import Flags  # noqa: F401
