"""Whole-fit benchmark: nnback.MLPClassifier against scikit-learn's MLPClassifier.

The issue's problem: 20 000 samples x 784 features, 10 classes, scikit-learn's default
network (hidden (100,), relu, adam, batch 200), the same epochs and random_state for both;
nnback on every backend this machine has. Each dtype is one pytest-benchmark group, so the
table's ratios (in parentheses) compare nnback with scikit-learn within one run.

    python -m pytest benchmarks/bench_estimators.py --benchmark-only \
        --benchmark-json=estimators.json
    python benchmarks/bench_estimators.py            # quick interleaved ratio, no pytest

A fit ends by copying the weights to the host (coefs_), which waits for the device, so the
timed call includes all device work.
"""
import argparse
import sys
import time
import warnings

import pytest

pytest.importorskip("sklearn")

from sklearn.datasets import make_classification  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier as SklearnMLPClassifier  # noqa: E402
from threadpoolctl import threadpool_info  # noqa: E402

import nnback as nb  # noqa: E402
from nnback import MLPClassifier  # noqa: E402

N_SAMPLES, N_FEATURES, N_CLASSES, HIDDEN = 20_000, 784, 10, 100
EPOCHS = 3  # fixed: tol=0 and n_iter_no_change above it, so every fit runs them all
SETTINGS = dict(hidden_layer_sizes=(HIDDEN,), max_iter=EPOCHS, tol=0.0, n_iter_no_change=99,
                random_state=0)


def make_data(dtype):
    X, y = make_classification(n_samples=N_SAMPLES, n_features=N_FEATURES,
                               n_informative=100, n_classes=N_CLASSES, random_state=0)
    return X.astype(dtype), y


def flops_per_fit():
    """Multiply-adds x 2 of the GEMMs in one fit: forward (X·W1, H·W2), weight gradients
    (Xᵀ·δ1, Hᵀ·δ2) and the hidden layer's input gradient (δ2·W2ᵀ); the input layer's
    gradient is skipped by both libraries."""
    per_sample = 2 * (2 * N_FEATURES * HIDDEN + 3 * HIDDEN * N_CLASSES)
    return per_sample * N_SAMPLES * EPOCHS


def blas_threads():
    return max((pool.get("num_threads", 0) for pool in threadpool_info()
                if pool.get("user_api") == "blas"), default=None)


def fit_quietly(estimator, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X, y)


@pytest.fixture(scope="module", params=["float32", "float64"])
def data(request):
    return request.param, make_data(request.param)


def record(benchmark, library, backend_name, device, dtype):
    benchmark.extra_info.update(
        library=library, backend=backend_name, device=device, dtype=dtype,
        shape=[N_SAMPLES, N_FEATURES], hidden=HIDDEN, n_classes=N_CLASSES, epochs=EPOCHS,
        batch_size=200, tf32=False, blas_threads=blas_threads())


def run(benchmark, estimator, X, y):
    benchmark.pedantic(fit_quietly, args=(estimator, X, y), rounds=3, iterations=1,
                       warmup_rounds=1)
    if not benchmark.disabled:  # --benchmark-disable runs each fit once, untimed
        benchmark.extra_info["gflops"] = flops_per_fit() / benchmark.stats.stats.min / 1e9


@pytest.mark.parametrize("backend_name", ["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def test_fit_nnback(benchmark, data, backend_name):
    dtype, (X, y) = data
    try:
        backend = nb.get_backend(backend_name)
    except nb.BackendUnavailableError as exc:
        pytest.skip(str(exc))
    benchmark.group = f"MLPClassifier fit {N_SAMPLES}x{N_FEATURES} {dtype}"
    record(benchmark, "nnback", backend.name, backend.device_name(), dtype)
    run(benchmark, MLPClassifier(backend=backend_name, **SETTINGS), X, y)


def test_fit_nnback_float32_on_float64_data(benchmark):
    """Not the same arithmetic as scikit-learn: float64 data, nnback told dtype="float32"
    (cast once at the edge), the choice docs/estimators.md recommends for speed."""
    X, y = make_data("float64")
    backend = nb.get_backend("auto")
    benchmark.group = f"MLPClassifier fit {N_SAMPLES}x{N_FEATURES} float64"
    record(benchmark, "nnback", backend.name, backend.device_name(), "float32")
    benchmark.extra_info["input_dtype"] = "float64"
    run(benchmark, MLPClassifier(dtype="float32", **SETTINGS), X, y)


def test_fit_sklearn(benchmark, data):
    dtype, (X, y) = data
    benchmark.group = f"MLPClassifier fit {N_SAMPLES}x{N_FEATURES} {dtype}"
    record(benchmark, "scikit-learn", "numpy", nb.get_backend("numpy").device_name(), dtype)
    run(benchmark, SklearnMLPClassifier(**SETTINGS), X, y)


def main(argv=None):
    """Interleaved fits (nnback, scikit-learn, nnback, ...) and the ratio of the best
    times, for a quick look without pytest-benchmark."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "float64"], nargs="+",
                        default=["float32", "float64"])
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--nnback-dtype", choices=["float32", "float64"], default=None,
                        help="nnback's dtype= (default: keep the data's, as scikit-learn)")
    args = parser.parse_args(argv)
    print(f"{N_SAMPLES}x{N_FEATURES}, {N_CLASSES} classes, hidden ({HIDDEN},), adam, "
          f"{EPOCHS} epochs; BLAS threads: {blas_threads()}")
    for dtype in args.dtype:
        X, y = make_data(dtype)
        wall = {"nnback": float("inf"), "scikit-learn": float("inf")}
        cpu = dict(wall)  # CPU time of all threads: less sensitive to a busy machine
        for _ in range(args.repeats):
            ours = MLPClassifier(backend=args.backend, dtype=args.nnback_dtype, **SETTINGS)
            for name, estimator in (("nnback", ours),
                                    ("scikit-learn", SklearnMLPClassifier(**SETTINGS))):
                start, start_cpu = time.perf_counter(), time.process_time()
                fit_quietly(estimator, X, y)
                wall[name] = min(wall[name], time.perf_counter() - start)
                cpu[name] = min(cpu[name], time.process_time() - start_cpu)
        for what, best in (("wall", wall), ("cpu", cpu)):
            ours = f"nnback/{args.backend}" + (f" ({args.nnback_dtype})" if args.nnback_dtype
                                               else "")
            print(f"{dtype} data, {what}: {ours} {best['nnback']:.3f} s, scikit-learn "
                  f"{best['scikit-learn']:.3f} s, speed-up "
                  f"{best['scikit-learn'] / best['nnback']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
