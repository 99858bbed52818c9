"""cupyx.scipy for the CuPy stand-in: ``sparse`` only (imported lazily, as in CuPy)."""
import importlib as _importlib

# The lazily imported submodules of the real cupyx.scipy; only ``sparse`` exists here.
_SUBMODULES = ("fft", "fftpack", "interpolate", "linalg", "ndimage", "signal", "sparse",
               "spatial", "special", "stats")


def __getattr__(name):
    if name == "sparse":
        return _importlib.import_module(f"{__name__}.sparse")
    if name in _SUBMODULES or name == "get_array_module":
        raise NotImplementedError(f"the CuPy stand-in does not implement cupyx.scipy.{name}")
    raise AttributeError(f"Module 'cupyx.scipy' has no attribute '{name}'")
