"""cupy.exceptions: NumPy's exception classes, as CuPy re-exports them."""
from numpy.exceptions import (AxisError, ComplexWarning, ModuleDeprecationWarning,  # noqa: F401
                              RankWarning, TooHardError, VisibleDeprecationWarning)
