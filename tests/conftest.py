"""Shared fixtures: every numeric test runs on each backend this machine has.

- numpy: the CPU backend.
- array_api_strict: its second device, a CPU stand-in for an accelerator that refuses
  silent conversion to NumPy and mixing devices, so the generic path is proven without a GPU
  (skipped with a reason where array-api-strict is not installed).
- cupy (marked ``gpu``): real CuPy where CuPy and a CUDA GPU work; elsewhere the strict CuPy
  stand-in of tests/cupy_standin (NumPy underneath, CuPy's surface, kernels run on the CPU),
  so the cupy code runs in CI. ``--cupy`` (or NNBACK_TEST_CUPY) chooses: auto (default),
  standin, real, off. The report header says which ran.
- torch: the generic path over PyTorch tensors (array-api-compat's namespace) where torch
  is installed: a second real array library holding the generic formulas.
"""
import csv
import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import nnback as nb
from nnback.backend import Backend

STANDIN_PATH = Path(__file__).resolve().parent / "cupy_standin"
CUPY_CHOICES = ("auto", "standin", "real", "off")
CUPY_STATE = {"choice": None}  # what pytest_configure chose

BACKENDS = [
    "numpy",
    "array_api_strict",
    pytest.param("cupy", marks=pytest.mark.gpu),
    "torch",
]


def pytest_addoption(parser):
    parser.addoption(
        "--cupy", choices=CUPY_CHOICES, default=os.environ.get("NNBACK_TEST_CUPY", "auto"),
        help="what the cupy test cases run on: auto (real CuPy where a GPU works, else the "
             "CuPy stand-in), standin, real (skip without a GPU) or off (skip them); "
             "default from NNBACK_TEST_CUPY, else auto")


def _real_cupy_works():
    """Whether a real CuPy imports and finds a GPU (CuPy imports without one)."""
    try:
        import cupy
    except Exception:
        return False
    if getattr(cupy, "__standin__", False):
        return False
    try:
        return bool(cupy.is_available())
    except Exception:
        return False


def _forget_cupy():
    for name in [name for name in sys.modules if name == "cupy" or name.startswith("cupy.")
                 or name == "cupyx" or name.startswith("cupyx.")
                 or name == "cupy_backends" or name.startswith("cupy_backends.")]:
        del sys.modules[name]


def use_cupy_standin():
    """Put the CuPy stand-in in place of ``cupy`` in this process and return the module.
    Subprocesses (the command-line tests) do not see it: they run as on a CPU machine.

    The stand-in reports a working GPU, so ``backend="auto"`` would pick it; the tests that
    leave the backend at its default stand for a CPU machine, so ``NNBACK_BACKEND=numpy``
    (the documented switch) keeps "auto" on numpy unless it is set already. The cupy cases
    name "cupy" explicitly."""
    _forget_cupy()
    if str(STANDIN_PATH) not in sys.path:
        sys.path.insert(0, str(STANDIN_PATH))
    os.environ.setdefault("NNBACK_BACKEND", "numpy")
    cupy = importlib.import_module("cupy")
    assert cupy.__standin__, f"{cupy.__file__} is not the CuPy stand-in"
    return cupy


def pytest_configure(config):
    choice = config.getoption("--cupy")
    if choice == "auto":
        choice = "real" if _real_cupy_works() else "standin"
    config.cupy_choice = CUPY_STATE["choice"] = choice
    if choice == "standin":
        use_cupy_standin()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On the stand-in, a fused kernel needs a C++ compiler to run its CUDA text on the CPU:
    where there is none, the test that reached a kernel is reported as skipped, saying so."""
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and type(call.excinfo.value).__name__ == "CompilerUnavailable":
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0,
                           f"Skipped: the CuPy stand-in runs kernels with a C++ compiler, and "
                           f"none was found: {call.excinfo.value}")


def pytest_report_header(config):
    choice = getattr(config, "cupy_choice", None)
    if choice == "standin":
        cupy = sys.modules["cupy"]
        return (f"cupy: the cupy cases ran on the CuPy STAND-IN (NumPy on the CPU, CuPy "
                f"{'/'.join(cupy.__standin_surface__)} surface), not on a GPU; backend='auto' "
                f"means {os.environ.get('NNBACK_BACKEND', 'auto')} here")
    if choice == "real":
        try:
            backend = nb.get_backend("cupy")
        except nb.BackendUnavailableError as exc:
            return f"cupy: real CuPy requested, unavailable ({exc}); the cupy cases skip"
        import cupy

        return f"cupy: the cupy cases ran on real CuPy {cupy.__version__}, {backend.device_name()}"
    return "cupy: the cupy cases are switched off (--cupy off)"


# Relative tolerances for comparing backends on the same computation (DESIGN.md: parity).
PARITY_RTOL = {"float32": 1e-5, "float64": 1e-12}
# After many training steps the loss may drift a little more (different summation orders).
TRAINING_RTOL = 1e-4
# gradcheck bar (float64, central differences).
GRADCHECK_MAX = 1e-6


@pytest.fixture
def cupy_backend():
    """The cupy backend: real CuPy on a GPU, else the stand-in (or a skip saying why)."""
    return backend_or_skip("cupy")


@pytest.fixture
def standin(cupy_backend):
    """The stand-in's counters, cupy.standin (a skip on real CuPy)."""
    cupy = sys.modules["cupy"]
    if not getattr(cupy, "__standin__", False):
        pytest.skip("transfer and allocation counts are read from the CuPy stand-in")
    import cupy.standin

    return cupy.standin


def backend_or_skip(name):
    """The Backend called ``name`` ("torch": the generic Backend over PyTorch), or a skip
    saying why it cannot run here."""
    if name == "cupy" and CUPY_STATE["choice"] == "off":
        pytest.skip("the cupy cases are switched off (--cupy off)")
    if name == "torch":
        torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install "
                                    "torch==2.13.0 for the CPU build)")
        return Backend(torch)
    try:
        return nb.get_backend(name)
    except nb.BackendUnavailableError as exc:
        pytest.skip(f"{name} backend unavailable here: {exc}")


@pytest.fixture
def no_cupy(monkeypatch):
    """Pretend CuPy is not installed, whatever this machine has (real CuPy or the stand-in),
    for the tests of what a machine without it sees."""
    import builtins

    from nnback import backend as backend_module

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "cupy" or name.startswith("cupy."):
            raise ImportError("No module named 'cupy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    for name in [name for name in sys.modules if name == "cupy" or name.startswith("cupy.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(backend_module, "_cache", {})
    monkeypatch.delenv("NNBACK_BACKEND", raising=False)


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each available backend in turn (a Backend object)."""
    return backend_or_skip(request.param)


@pytest.fixture(params=[name for name in BACKENDS if name != "numpy"])
def other_backend(request):
    """Each available backend but numpy, the reference the parity tests compare with (a
    numpy-vs-numpy case could not fail)."""
    return backend_or_skip(request.param)


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    return request.param


def assert_close(actual, expected, rtol, atol=0.0, what="values"):
    """assert_allclose on host arrays with a message naming what was compared."""
    import numpy

    numpy.testing.assert_allclose(numpy.asarray(actual), numpy.asarray(expected), rtol=rtol,
                                  atol=atol, err_msg=what)


# -- CSV files for the command line tests (test_cli.py, test_cli_training.py) -----------
def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def pets(tmp_path):
    """Two well separated classes with text labels: 3 numeric features and a 'kind'."""
    rng = np.random.default_rng(0)
    rows = []
    for index in range(60):
        kind = "cat" if index % 2 else "dog"
        centre = np.array([1.0, -1.0, 2.0]) * (1 if kind == "cat" else -1)
        rows.append([*(centre + 0.3 * rng.standard_normal(3)).round(4), kind])
    return write_csv(tmp_path / "pets.csv", ["weight", "height", "age", "kind"], rows)


@pytest.fixture
def prices(tmp_path):
    """A linear regression target, price = 30·a − 20·b + 100 plus a little noise."""
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, size=(80, 2))
    price = 30 * X[:, 0] - 20 * X[:, 1] + 100 + rng.normal(0, 0.5, size=80)
    return write_csv(tmp_path / "prices.csv", ["a", "b", "price"],
                     [[*x.round(5), round(p, 4)] for x, p in zip(X, price)])
