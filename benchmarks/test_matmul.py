"""Matrix multiplies through the backend's matmul: 2-D GEMMs at MLP shapes across batch
sizes, and stacked 3-D matmuls, in float32 and float64."""
import pytest

from nnback import bench

from conftest import record


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", bench.FULL_GEMMS, ids=lambda s: "x".join(map(str, s)))
def test_gemm(benchmark, backend, shape, dtype):
    record(benchmark, bench.gemm_case(backend, shape, dtype), "nnback")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", bench.FULL_BMMS, ids=lambda s: "x".join(map(str, s)))
def test_stacked_matmul(benchmark, backend, shape, dtype):
    record(benchmark, bench.bmm_case(backend, shape, dtype), "nnback")
