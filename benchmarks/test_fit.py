"""A whole fit: the medium network on 10k samples, plain SGD, batch 256, 2 epochs, next to
scikit-learn's MLPClassifier with the same layers, solver, batch size and epochs, and the
GEMM floor of all its steps."""
import pytest

from nnback import bench

from conftest import record


@pytest.mark.parametrize("implementation", ["nnback", "gemm floor", "sklearn"])
def test_fit_medium(benchmark, backend, implementation):
    record(benchmark, bench.fit_case(backend, epochs=2), implementation)
