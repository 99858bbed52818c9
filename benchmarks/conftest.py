"""pytest-benchmark suites for nnback (run: python -m pytest benchmarks --benchmark-only).

They are outside ``testpaths``, so the regular test run never collects them. Each timed
function comes from nnback.bench (the same functions ``python -m nnback bench`` times) and
synchronises the device before it returns. Benchmarks run on numpy, and also on cupy where
CuPy and a GPU work. Turn the JSON (--benchmark-json=PATH) into a table and a plot with
``python benchmarks/report.py PATH``.
"""
import os

import pytest

import nnback as nb

BACKENDS = ["numpy", pytest.param("cupy", marks=pytest.mark.gpu)]


@pytest.fixture(params=BACKENDS)
def backend(request):
    try:
        return nb.get_backend(request.param)
    except nb.BackendUnavailableError as exc:
        pytest.skip(f"{request.param} backend unavailable here: {exc}")


def large_on_cpu():
    """The large step takes seconds per call on a CPU: run it there only when asked."""
    return os.environ.get("NNBACK_BENCH_LARGE", "") == "1"


def record(benchmark, case, implementation):
    """Time ``case``'s ``implementation`` (warm-up on) and record what extra_info needs:
    backend, device, dtype, shapes, TF32, GFLOP/s and which implementation it was."""
    function = case.implementations.get(implementation)
    if function is None:
        note = "; ".join(case.notes) or f"{implementation} does not apply to {case.name}"
        pytest.skip(note)
    benchmark.group = case.name
    benchmark.extra_info.update(case.info)
    benchmark.extra_info["implementation"] = implementation
    benchmark.pedantic(function, setup=None, rounds=rounds_for(case), iterations=1,
                       warmup_rounds=1)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["gflops"] = case.flops / stats.stats.min / 1e9


def rounds_for(case):
    """Enough rounds for a stable minimum without spending minutes on the big shapes
    (judged by FLOPs at a modest CPU rate)."""
    seconds = case.flops / 50e9
    return int(min(200, max(3, 1.0 / max(seconds, 1e-6))))
