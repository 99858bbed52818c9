"""The fits that tests/test_distributed.py runs under ``mpiexec -n 2`` and again in one
process, and the worker script that mpiexec starts:

    mpiexec -n 2 python tests/_mpi_cases.py equivalence OUT.npz
    mpiexec -n 2 python tests/_mpi_cases.py fail raise|hang|exit

Each case trains 20 steps: 2 epochs of 10 mini-batches (the ``uneven`` cases cut batches of
7 rows, split 3/4 between two ranks, and end each epoch on a batch of 1 row, which leaves one
rank an empty shard).
"""
import io
import os
import sys
import time
from contextlib import redirect_stderr, redirect_stdout

import numpy

import nnback as nb
from nnback.distributed import DataParallel

# name: (layer sizes, activation, output, loss, optimizer, dtype, batch size, n samples,
#        backend, fit keyword arguments)
CASES = {
    "mse_float64": ([3, 5, 2], "tanh", "identity", "mse", ("sgd", {"lr": 0.1}), "float64",
                    8, 80, "numpy", {}),
    "mse_float32": ([3, 5, 2], "tanh", "identity", "mse", ("sgd", {"lr": 0.1}), "float32",
                    8, 80, "numpy", {}),
    "sse_float64": ([3, 4, 1], "sigmoid", "sigmoid", "sse", ("sgd", {"lr": 0.05}), "float64",
                    8, 80, "numpy", {}),
    "bce_adam_float64": ([3, 6, 2], "relu", "sigmoid", "bce", ("adam", {"lr": 0.01}),
                         "float64", 8, 80, "numpy", {}),
    "crossentropy_nesterov_l2_float64": (
        [3, 6, 4], "tanh", "softmax", "crossentropy",
        ("sgd", {"lr": 0.2, "momentum": 0.9, "nesterov": True}), "float64", 8, 80, "numpy",
        {"alpha": 0.01}),
    "crossentropy_adam_float32": ([3, 6, 4], "relu", "softmax", "crossentropy",
                                  ("adam", {"lr": 0.01}), "float32", 8, 80, "numpy", {}),
    "uneven_mse_float64": ([3, 5, 2], "tanh", "identity", "mse", ("sgd", {"lr": 0.1}),
                           "float64", 7, 64, "numpy", {}),
    "uneven_sse_float64": ([3, 4, 1], "sigmoid", "sigmoid", "sse", ("sgd", {"lr": 0.05}),
                           "float64", 7, 64, "numpy", {}),
    "array_api_strict_float64": ([3, 5, 2], "tanh", "identity", "mse", ("sgd", {"lr": 0.1}),
                                 "float64", 8, 80, "array_api_strict", {}),
}
EPOCHS = 2
SEED = 7


def case_data(name):
    """(X, y) of case ``name``: y matches its loss (class labels for crossentropy)."""
    sizes, _, _, loss, _, _, _, n_samples, _, _ = CASES[name]
    rng = numpy.random.default_rng(len(name))
    X = rng.normal(size=(n_samples, sizes[0]))
    if loss == "crossentropy":
        return X, rng.integers(0, sizes[-1], size=n_samples)
    if loss in ("bce", "sse"):
        return X, (rng.random((n_samples, sizes[-1])) < 0.5).astype(float)
    return X, rng.normal(size=(n_samples, sizes[-1]))


def fit_case(name, model_seed=0, distributed=False, seed=SEED, verbose=False):
    """Build case ``name``'s model from ``model_seed`` and fit it; returns (model, history)."""
    sizes, activation, output, loss, (optimizer, options), dtype, batch_size, _, backend, \
        extra = CASES[name]
    X, y = case_data(name)
    model = nb.MLP(sizes, activation=activation, output=output, backend=backend, dtype=dtype,
                   seed=model_seed)
    optimizer = nb.SGD(**options) if optimizer == "sgd" else nb.Adam(**options)
    history = model.fit(X, y, loss=loss, optimizer=optimizer, epochs=EPOCHS,
                        batch_size=batch_size, seed=seed, distributed=distributed,
                        verbose=verbose, **extra)
    return model, history


def _flat(weights):
    return numpy.concatenate([numpy.ravel(w).astype(numpy.float64) for w in weights])


def run_equivalence(out_path):
    """Every case under MPI; rank 0 saves its weights, its loss history and how far the
    other ranks' weights are from its own."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    results = {}
    for name in CASES:
        model, history = fit_case(name, distributed=True)
        _save(results, name, model.get_weights(), history, comm)
    # every rank builds other initial weights: rank 0's must win
    model, history = fit_case("mse_float64", model_seed=comm.Get_rank(), distributed=True)
    _save(results, "weights_from_rank0", model.get_weights(), history, comm)
    # a fit without a seed: every rank must shuffle with the seed rank 0 drew
    X, y = case_data("mse_float64")
    model = nb.MLP([3, 5, 2], backend="numpy", dtype="float64")
    seed = DataParallel().attach(model, X, y, nb.MSE(), nb.SGD(), seed=None)
    results["unseeded_fit_seed_per_rank"] = numpy.array(comm.allgather(seed))
    # only rank 0 shows progress
    printed = io.StringIO()
    with redirect_stdout(printed), redirect_stderr(printed):
        fit_case("mse_float64", distributed=True, verbose=True)
    shown = comm.allgather(len(printed.getvalue()))
    results["progress_chars_per_rank"] = numpy.array(shown)
    if comm.Get_rank() == 0:
        numpy.savez(out_path, **results)


def _save(results, name, weights, history, comm):
    flat = _flat(weights)
    spread = max(float(numpy.max(numpy.abs(other - flat))) for other in comm.allgather(flat))
    for index, weight in enumerate(weights):
        results[f"{name}/weight{index}"] = weight
    results[f"{name}/loss"] = numpy.array(history.loss)
    results[f"{name}/replica_spread"] = numpy.array(spread)


class FailingSGD(nb.SGD):
    """SGD whose update on rank 1 fails at step ``at`` in the way ``how`` says."""

    def __init__(self, how, at, rank, **options):
        super().__init__(**options)
        self.how, self.at, self.rank = how, at, rank

    def step(self, params, grads):
        if self.rank == 1 and self.iterations + 1 == self.at:
            if self.how == "raise":
                raise RuntimeError("rank 1 fails on purpose")
            if self.how == "hang":
                time.sleep(600)
            if self.how == "exit":
                os._exit(3)
        super().step(params, grads)


def run_failure(how):
    """A fit in which rank 1 fails at its 5th step (or, for "mismatch", is given other
    data); a rank prints 'finished' if it ever gets past the fit (it must not)."""
    from mpi4py import MPI

    X, y = case_data("mse_float64")
    if how == "mismatch" and MPI.COMM_WORLD.Get_rank() == 1:
        X = X + 1.0
    model = nb.MLP([3, 5, 2], activation="tanh", output="identity", backend="numpy", seed=0)
    optimizer = FailingSGD(how, at=5, rank=MPI.COMM_WORLD.Get_rank(), lr=0.1)
    model.fit(X, y, optimizer=optimizer, epochs=50, batch_size=8, seed=SEED, distributed=True)
    print(f"rank {MPI.COMM_WORLD.Get_rank()} finished", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "equivalence":
        run_equivalence(sys.argv[2])
    else:
        run_failure(sys.argv[2])
