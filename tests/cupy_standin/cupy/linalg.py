"""cupy.linalg for the stand-in: NumPy's linear algebra on the device arrays' data."""
import sys as _sys

import numpy as _numpy

from . import _functions, _linalg
from ._namespace import populate as _populate

_populate(_sys.modules[__name__], "cupy.linalg", {
    "annotations": __import__("__future__").annotations,
    "matmul": _linalg.matmul_object(),
}, fallback=_functions.fallback_for("cupy.linalg", _numpy.linalg))
