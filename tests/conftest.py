"""Shared fixtures: every numeric test runs on each backend this machine has.

- numpy: the CPU backend.
- array_api_strict: its second device, a CPU stand-in for an accelerator that refuses
  silent conversion to NumPy and mixing devices, so the generic path is proven without a GPU
  (skipped with a reason where array-api-strict is not installed).
- cupy: where CuPy and a CUDA GPU work (marked ``gpu``; skipped elsewhere).
"""
import pytest

import nnback as nb

BACKENDS = [
    "numpy",
    "array_api_strict",
    pytest.param("cupy", marks=pytest.mark.gpu),
]

# Relative tolerances for comparing backends on the same computation (DESIGN.md: parity).
PARITY_RTOL = {"float32": 1e-5, "float64": 1e-12}
# After many training steps the loss may drift a little more (different summation orders).
TRAINING_RTOL = 1e-4
# gradcheck bar (float64, central differences).
GRADCHECK_MAX = 1e-6


def backend_or_skip(name):
    try:
        return nb.get_backend(name)
    except nb.BackendUnavailableError as exc:
        pytest.skip(f"{name} backend unavailable here: {exc}")


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each available backend in turn (a Backend object)."""
    return backend_or_skip(request.param)


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    return request.param


def assert_close(actual, expected, rtol, atol=0.0, what="values"):
    """assert_allclose on host arrays with a message naming what was compared."""
    import numpy

    numpy.testing.assert_allclose(numpy.asarray(actual), numpy.asarray(expected), rtol=rtol,
                                  atol=atol, err_msg=what)
