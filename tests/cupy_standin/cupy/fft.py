"""cupy.fft for the stand-in: NumPy's FFTs on the device arrays' data."""
import sys as _sys

import numpy as _numpy

from . import _functions
from ._namespace import populate as _populate

_populate(_sys.modules[__name__], "cupy.fft", {},
          fallback=_functions.fallback_for("cupy.fft", _numpy.fft))
