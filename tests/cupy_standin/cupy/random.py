"""cupy.random for the stand-in: NumPy's global random functions, results on the device.

The streams differ from CuPy's (as NumPy's and CuPy's always do); ``dtype=`` casts."""
import sys as _sys

import numpy as _numpy

from . import _functions
from ._namespace import populate as _populate

_populate(_sys.modules[__name__], "cupy.random", {
    "annotations": __import__("__future__").annotations,
}, fallback=_functions.fallback_for("cupy.random", _numpy.random))
