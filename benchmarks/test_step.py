"""One training step (forward, loss, backward, SGD update): small (the tutorial XOR, float64),
medium (784-512-512-10, batch 256, float32) and large (4096-4096-4096-4096-10, batch 4096,
float32; GPU only unless NNBACK_BENCH_LARGE=1). Each next to its references: the GEMM
floor, PyTorch eager and, for the small step, a hand-written NumPy loop."""
import pytest

from nnback import bench

from conftest import large_on_cpu, record


@pytest.mark.parametrize("implementation", ["nnback", "hand numpy", "torch"])
def test_step_small(benchmark, backend, implementation):
    record(benchmark, bench.small_step_case(backend), implementation)


@pytest.mark.parametrize("implementation", ["nnback", "gemm floor", "torch"])
def test_step_medium(benchmark, backend, implementation):
    case = bench.step_case(backend, "step-medium", bench.MEDIUM_SIZES, bench.MEDIUM_BATCH)
    record(benchmark, case, implementation)


@pytest.mark.parametrize("implementation", ["nnback", "gemm floor", "torch"])
def test_step_large(benchmark, backend, implementation):
    if backend.name == "numpy" and not large_on_cpu():
        pytest.skip("the large step is GPU-only by default (NNBACK_BENCH_LARGE=1 runs it)")
    case = bench.step_case(backend, "step-large", bench.LARGE_SIZES, bench.LARGE_BATCH)
    record(benchmark, case, implementation)
