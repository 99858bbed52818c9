"""A wide sparse text-like matrix (TF-IDF of random word counts): nnback's MLPClassifier
against scikit-learn's on it, time and memory, each in a process of its own.

    python benchmarks/bench_sparse.py                         # 100,000 x 50,000, 0.1 %
    python benchmarks/bench_sparse.py --samples 20000 --features 20000 --epochs 1

Memory: the peak traced by tracemalloc during the fit (NumPy's and SciPy's arrays), and
the process's peak resident set (ru_maxrss) before and after. Needs scikit-learn.
"""
import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
import warnings

import numpy as np


def make_data(n_samples, n_features, density, n_classes=5, seed=0):
    """(X: CSR float32 TF-IDF of random counts, y): each class favours its own block of
    the vocabulary, so the task is learnable."""
    import scipy.sparse as sparse
    from sklearn.feature_extraction.text import TfidfTransformer

    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n_samples)
    nnz = int(n_samples * n_features * density)
    rows = rng.integers(0, n_samples, nnz)
    block = n_features // n_classes
    topical = rng.uniform(size=nnz) < 0.3  # 30 % of a document's words are from its topic
    cols = np.where(topical, y[rows] * block + rng.integers(0, block, nnz),
                    rng.integers(0, n_features, nnz))
    counts = sparse.csr_matrix((rng.integers(1, 4, nnz).astype(np.float32), (rows, cols)),
                               shape=(n_samples, n_features))
    return TfidfTransformer().fit_transform(counts).astype(np.float32), y


def run_one(library, args):
    X, y = make_data(args.samples, args.features, args.density)
    params = dict(hidden_layer_sizes=(args.hidden,), max_iter=args.epochs, random_state=0,
                  batch_size=200, early_stopping=False, tol=0.0, n_iter_no_change=10**9)
    if library == "nnback":
        from nnback import MLPClassifier
        model = MLPClassifier(backend="numpy", dtype="float32", **params)
    else:
        from sklearn.neural_network import MLPClassifier
        model = MLPClassifier(**params)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, y)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    x_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    return {"library": library, "fit_s": seconds, "s_per_epoch": seconds / args.epochs,
            "peak_traced_MiB": peak / 2**20, "maxrss_before_MiB": rss_before / 1024,
            "maxrss_after_MiB": rss_after / 1024, "X_sparse_MiB": x_bytes / 2**20,
            "X_dense_float32_MiB": X.shape[0] * X.shape[1] * 4 / 2**20, "nnz": int(X.nnz),
            "shape": list(X.shape), "train_accuracy": float(model.score(X, y))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=50_000)
    parser.add_argument("--density", type=float, default=0.001)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--worker", choices=("nnback", "sklearn"))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_one(args.worker, args)))
        return
    results = []
    for library in ("nnback", "sklearn"):
        done = subprocess.run([sys.executable, __file__, "--worker", library] + sys.argv[1:],
                              capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    for row in results:
        print(json.dumps(row))
    print(f"nnback / sklearn time per epoch: "
          f"{results[0]['s_per_epoch'] / results[1]['s_per_epoch']:.2f}")


if __name__ == "__main__":
    main()
