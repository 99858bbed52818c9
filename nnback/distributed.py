"""Data-parallel training across processes, over MPI (mpi4py) or NCCL (cupy.cuda.nccl).

Every process (a *rank*) holds a full replica of the model and the same training data. Each
mini-batch is cut into one contiguous shard per rank; each rank runs forward and backward on
its shard; the gradients and the batch loss are summed across the ranks in ONE allreduce over
one flat buffer; every rank then takes the same optimizer step, so the replicas stay equal.
When a fit starts, rank 0's weights (and optimizer state) are broadcast to every rank.

    mpiexec -n 4 python train.py        # pip install 'nnback[mpi]' brings mpi4py and mpiexec

    import nnback as nb
    nb.distributed.select_gpu()         # cupy only: this rank's GPU, before building the model
    model = nb.MLP([784, 512, 10], activation="relu", output="softmax", seed=0)
    model.fit(X, y, loss="crossentropy", batch_size=256, distributed=True)
    if nb.distributed.is_root():        # every rank holds the same model: one of them saves
        model.save("model.npz")

Every rank must call fit with the same X, y and arguments (fit checks the shapes and a
checksum of the data across the ranks). ``distributed=True`` in a process that no MPI
launcher started trains as the only rank, without importing MPI.

Loss scaling: losses that average over the batch (MSE, BCE, SoftmaxCrossEntropy:
``reduction = "mean"``) give each rank the mean over its shard, so rank r's gradient is
weighted by n_r / n before the sum (1/p for equal shards), which is the gradient of the whole
batch. Summed losses (SSE: ``reduction = "sum"``) are summed unweighted. A rank whose shard
would be empty (a batch with fewer rows than ranks) computes on one row and contributes with
weight 0, so every rank takes part in every allreduce.

Failures: every collective waits at most ``timeout`` seconds (DataParallel(timeout=...), or
the NNBACK_DISTRIBUTED_TIMEOUT environment variable, default 300). An error that leaves fit
on one rank only (a timeout, a crash, Ctrl-C) is printed and ends the whole job with
MPI_Abort, since the other ranks would otherwise wait for it forever. A DivergenceError is
raised on every rank together (the loss is the same on all of them) and does not abort.
"""
import numbers
import os
import sys
import time
import traceback
from contextlib import contextmanager

import numpy

from .backend import select_cuda_device
from .flat import pack, size_of, unpack

TRANSPORTS = ("auto", "mpi", "nccl")
TIMEOUT_ENV_VAR = "NNBACK_DISTRIBUTED_TIMEOUT"
DEFAULT_TIMEOUT = 300.0
MPI_INSTALL_HINT = ("pip install 'nnback[mpi]' (mpi4py and an Open MPI wheel that provides "
                    "mpiexec)")
# set by mpiexec/mpirun (Open MPI, MPICH, Intel MPI) and by srun (PMI, PMIx)
_LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")
_NCCL_ID_BYTES = 128  # NCCL_UNIQUE_ID_BYTES
_SPIN_S = 0.005  # how long a wait polls back to back before it sleeps between polls
_yield_core = getattr(os, "sched_yield", lambda: time.sleep(0))


class DistributedError(RuntimeError):
    """Data-parallel training cannot go on: MPI is missing, the ranks disagree about the fit,
    or a collective did not complete in time (another rank died or hangs)."""


# -- the world of ranks ---------------------------------------------------------------------
def launched():
    """True when an MPI launcher (mpiexec, mpirun, srun) started this process."""
    return any(name in os.environ for name in _LAUNCHER_VARIABLES)


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DistributedError(
            f"distributed training needs mpi4py, which is not installed: {MPI_INSTALL_HINT}"
        ) from exc
    return MPI


def rank():
    """This process's rank: 0 .. size()-1 (0 outside an MPI launcher, without importing MPI)."""
    return _mpi().COMM_WORLD.Get_rank() if launched() else 0


def size():
    """The number of ranks (1 outside an MPI launcher, without importing MPI)."""
    return _mpi().COMM_WORLD.Get_size() if launched() else 1


def is_root():
    """True on rank 0, the rank that prints progress and saves files (and outside MPI)."""
    return rank() == 0


def select_gpu():
    """Make this rank's GPU the current CuPy device: the rank's index among the ranks on its
    node, modulo the node's GPUs. Call it first, before nb.get_backend or building a model:
    the cupy backend's first use opens a CUDA context on the current device, and N ranks
    doing that on GPU 0 would each take memory there. Returns the device index."""
    local_rank = 0
    if launched():
        MPI = _mpi()
        local_rank = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
    return select_cuda_device(local_rank, what="select_gpu")


# -- what fit(distributed=...) uses ---------------------------------------------------------
class DataParallel:
    """How ``fit(distributed=...)`` trains across ranks; ``distributed=True`` is
    ``DataParallel()``.

    transport: "auto" (NCCL when the model is on cupy and NCCL is there, else MPI), "mpi" or
    "nccl". timeout: seconds any collective may wait (default: $NNBACK_DISTRIBUTED_TIMEOUT or
    300). cuda_aware: give cupy buffers to MPI directly (only for a CUDA-aware MPI build);
    otherwise MPI gets a host copy of any array that is not NumPy's.

    The model's side of the contract: fit calls ``attach`` once before training and trains
    inside ``training(model)``; while there, the model's ``_step`` trains on ``shard(x, t)``
    of each batch and hands its loss and gradients to ``reduce`` before the optimizer step.
    """

    def __init__(self, transport="auto", timeout=None, cuda_aware=False):
        if transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {transport!r}; valid names: "
                             f"{', '.join(TRANSPORTS)}")
        self.transport = transport
        self.timeout = _check_timeout(timeout)
        self.cuda_aware = bool(cuda_aware)
        self._world = None

    def __repr__(self):
        return (f"DataParallel(transport={self.transport!r}, timeout={self.timeout:g}, "
                f"cuda_aware={self.cuda_aware})")

    @property
    def is_root(self):
        return self._world is None or self._world.rank == 0

    def attach(self, model, x, target, loss, optimizer, seed):
        """Start a fit: check that every rank got the same data and model, give every rank
        rank 0's weights and optimizer state, and return the shuffling seed they all use
        (rank 0's; one drawn there when it is None)."""
        self._world = _world_for(self.transport, model.backend, self.cuda_aware, self.timeout)
        self._backend = model.backend
        if self._world.size == 1:
            return seed
        xp = model.backend.xp
        params = model.parameters()
        shared = params + optimizer.state_arrays()
        n_params = _size_of_all(params)
        facts = [x.shape[0], x.shape[1], target.shape[1], n_params, _size_of_all(shared),
                 optimizer.iterations]
        with self._together():
            table = self._world.allgather(numpy.array(facts + [_seed_value(seed)]),
                                          self.timeout, "the check of fit's arguments")
            sums = self._world.allgather(numpy.array(
                [float(model.backend.to_numpy(xp.sum(x))),
                 float(model.backend.to_numpy(xp.sum(target)))]),
                self.timeout, "the checksum of the training data")
        _check_agreement(table[:, :-1], sums)
        with self._together():
            buffer = model.backend.empty((_size_of_all(shared),), model.dtype)
            pack(shared, buffer)
            self._world.broadcast(buffer, model.backend, self.timeout,
                                  "the broadcast of rank 0's weights")
            unpack(buffer, shared)
        self._n_params = n_params
        self._buffer = model.backend.zeros((n_params + 1,), model.dtype)
        self._mean = getattr(loss, "reduction", "mean") == "mean"
        self._steps = 0
        return int(table[0, -1])

    @contextmanager
    def training(self, shared_errors=()):
        """fit's training loop, after ``attach``: yields what to hand the Trainer as its
        ``parallel`` (this object, which shards each batch and reduces the gradients; None
        in a world of one process). shared_errors: exceptions every rank raises at the
        same step (DivergenceError); any other exception ends the job (see ``_together``)."""
        with self._together(shared_errors):
            yield None if self._world.size == 1 else self
            self._world.finish(self.timeout)

    def shard(self, x, target):
        """This rank's rows of the batch (x, target): a contiguous slice, the sizes of any two
        ranks differing by at most one row."""
        rows = x.shape[0]
        start = rows * self._world.rank // self._world.size
        stop = rows * (self._world.rank + 1) // self._world.size
        if start == stop:  # fewer rows than ranks: take part with weight 0
            self._weight = 0.0
            return x[:1, ...], target[:1, ...]
        self._weight = (stop - start) / rows if self._mean else 1.0
        return x[start:stop, ...], target[start:stop, ...]

    def reduce(self, value, grads):
        """Replace this rank's gradients (in place) by the whole batch's and return the whole
        batch's loss (a 0-d array): one allreduce of [weight·grads..., weight·value]."""
        xp = self._backend.xp
        buffer = self._buffer
        pack(grads, buffer)
        buffer[self._n_params] = value
        if self._weight != 1.0:
            buffer *= self._weight
        self._steps += 1
        self._world.allreduce(buffer, self._backend, self.timeout,
                              f"the gradient allreduce of step {self._steps}")
        unpack(buffer, grads)
        return self._backend.copy(xp.reshape(buffer[self._n_params:], ()))

    @contextmanager
    def _together(self, shared_errors=()):
        """Code that the ranks run in step. An exception raised here on one rank only would
        leave the others waiting in their next collective, so it is printed and the job ends
        (MPI_Abort); ``shared_errors`` propagate as usual."""
        try:
            yield
        except shared_errors:
            raise
        except BaseException as error:
            if self._world.size > 1:
                _abort_job(self._world, error)
            raise


def data_parallel(distributed):
    """fit's ``distributed`` argument as a DataParallel: True gives the defaults."""
    if isinstance(distributed, DataParallel):
        return distributed
    if distributed is True:
        return DataParallel()
    raise TypeError(f"distributed must be True, False or an nb.distributed.DataParallel, "
                    f"got {distributed!r}")


# -- transports -----------------------------------------------------------------------------
class _Solo:
    """The world of one process: nothing to exchange."""

    rank, size = 0, 1

    def finish(self, timeout):
        pass


class _MpiWorld:
    """MPI.COMM_WORLD. Collectives are started non-blocking and waited for with a deadline."""

    name = "mpi"

    def __init__(self, cuda_aware=False):
        self.MPI = _mpi()
        self.comm = self.MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.cuda_aware = cuda_aware

    def allreduce(self, buffer, backend, timeout, what):
        """Sum ``buffer`` (a 1-D backend array) over the ranks, in place."""
        self._on_host(buffer, backend, timeout, what,
                      lambda host: self.comm.Iallreduce(self.MPI.IN_PLACE, host, self.MPI.SUM))

    def broadcast(self, buffer, backend, timeout, what):
        """Rank 0's ``buffer`` on every rank, in place."""
        self._on_host(buffer, backend, timeout, what, lambda host: self.comm.Ibcast(host, 0))

    def _on_host(self, buffer, backend, timeout, what, start):
        if isinstance(buffer, numpy.ndarray):
            self.wait(start(buffer).Test, timeout, what)
        elif self.cuda_aware:  # MPI reads device memory: the kernels writing it must be done
            backend.synchronize()
            self.wait(start(buffer).Test, timeout, what)
        else:
            host = backend.to_numpy(buffer)
            self.wait(start(host).Test, timeout, what)
            buffer[...] = backend.asarray(host)

    def allgather(self, values, timeout, what):
        """(size, len(values)): row r holds rank r's ``values`` (a 1-D NumPy array)."""
        table = numpy.empty((self.size,) + values.shape, values.dtype)
        self.wait(self.comm.Iallgather(values, table).Test, timeout, what)
        return table

    def wait(self, done, timeout, what):
        """Poll ``done()`` until it is true; DistributedError after ``timeout`` seconds.

        MPI moves a non-blocking collective's data only inside MPI calls, so the first
        _SPIN_S seconds poll back to back, yielding the core between polls (a rank sharing
        its core with the one it waits for lets that one run); a longer wait is a slow peer,
        and the polls space out to at most 1 ms apart."""
        started = time.monotonic()
        pause = 1e-5
        while not done():
            waited = time.monotonic() - started
            if waited > timeout:
                raise DistributedError(
                    f"rank {self.rank} of {self.size}: {what} did not complete within "
                    f"{timeout:g} s; another rank has probably died, hangs, or left fit early "
                    f"(look for its error). If steps are this slow, raise the limit: "
                    f"DataParallel(timeout=...) or {TIMEOUT_ENV_VAR}.")
            if waited < _SPIN_S:
                _yield_core()
            else:
                time.sleep(pause)
                pause = min(2 * pause, 1e-3)

    def finish(self, timeout):
        pass

    def abort(self):
        self.comm.Abort(1)


class _NcclWorld(_MpiWorld):
    """NCCL between the ranks' GPUs (written against cupy.cuda.nccl; MPI only hands out the
    NCCL id and checks the fit's arguments). Reductions are queued on the current stream; the
    host waits for step k's allreduce only after queueing step k+1's, so it never stalls the
    GPU, and a peer that stopped is still noticed within the timeout."""

    name = "nccl"

    def __init__(self, backend, timeout):
        super().__init__()
        self.cupy = backend.module
        self.nccl = backend.nccl()
        if self.nccl is None:
            raise DistributedError("transport='nccl' needs CuPy's NCCL bindings, which are "
                                   "missing here; install NCCL or use transport='mpi'")
        unique_id = numpy.zeros(_NCCL_ID_BYTES, numpy.int64)
        if self.rank == 0:
            unique_id[:] = self.nccl.get_unique_id()
        self.wait(self.comm.Ibcast(unique_id, 0).Test, timeout, "the broadcast of the NCCL id")
        self.communicator = self.nccl.NcclCommunicator(
            self.size, tuple(int(byte) for byte in unique_id), self.rank)
        self._pending = None

    def _dtype(self, buffer):
        return {"float32": self.nccl.NCCL_FLOAT32,
                "float64": self.nccl.NCCL_FLOAT64}[numpy.dtype(buffer.dtype).name]

    def _queued(self):
        """An event recorded on the current stream after the work queued so far."""
        event = self.cupy.cuda.Event(disable_timing=True)
        event.record(self.cupy.cuda.get_current_stream())
        return event

    def allreduce(self, buffer, backend, timeout, what):
        stream = self.cupy.cuda.get_current_stream()
        self.communicator.allReduce(buffer.data.ptr, buffer.data.ptr, buffer.size,
                                    self._dtype(buffer), self.nccl.NCCL_SUM, stream.ptr)
        previous, self._pending = self._pending, (self._queued(), what)
        if previous is not None:
            self._wait_for(previous, timeout)

    def broadcast(self, buffer, backend, timeout, what):
        stream = self.cupy.cuda.get_current_stream()
        self.communicator.broadcast(buffer.data.ptr, buffer.data.ptr, buffer.size,
                                    self._dtype(buffer), 0, stream.ptr)
        self._wait_for((self._queued(), what), timeout)

    def _wait_for(self, pending, timeout):
        event, what = pending

        def done():
            self.communicator.check_async_error()  # raises NcclError on a failed peer link
            return event.done

        self.wait(done, timeout, what)

    def finish(self, timeout):
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._wait_for(pending, timeout)

    def abort(self):
        self.communicator.abort()
        super().abort()


_worlds = {}


def _world_for(transport, backend, cuda_aware, timeout):
    """The transport for a model on ``backend`` (made once per process and kind)."""
    if not launched():
        return _Solo()
    if transport == "auto":
        transport = "mpi"
        if backend.nccl() is not None:
            transport = "nccl"
    if transport == "nccl" and backend.name != "cupy":
        raise DistributedError(f"transport='nccl' needs a model on the cupy backend, not "
                               f"{backend.name!r}; use transport='mpi'")
    key = (transport, cuda_aware)
    if key not in _worlds:
        _worlds[key] = (_NcclWorld(backend, timeout) if transport == "nccl"
                        else _MpiWorld(cuda_aware))
    world = _worlds[key]
    return _Solo() if world.size == 1 else world


def _abort_job(world, error):
    lines = traceback.format_exception(type(error), error, error.__traceback__)
    sys.stderr.write(
        f"nnback.distributed: rank {world.rank} of {world.size} failed during fit:\n"
        + "".join(lines)
        + f"nnback.distributed: ending all {world.size} ranks (MPI_Abort), since the others "
          "would wait for this one forever\n")
    sys.stderr.flush()
    world.abort()


# -- checks and flat buffers ----------------------------------------------------------------
_FACTS = ("the number of samples", "the number of features", "the number of outputs",
          "the number of parameters", "the size of the optimizer state",
          "the optimizer's step count")


def _check_agreement(table, sums):
    """DistributedError naming the first fact (or data checksum) where a rank differs from
    rank 0; every rank sees the same tables and so raises the same error."""
    for column, fact in enumerate(_FACTS):
        values = table[:, column]
        differs = numpy.flatnonzero(values != values[0])
        if differs.size:
            other = int(differs[0])
            raise DistributedError(
                f"the ranks were given different fits: {fact} is {values[0]} on rank 0 but "
                f"{values[other]} on rank {other}; every rank must call fit with the same "
                "data, model and arguments")
    for column, what in enumerate(("X", "y")):
        values = sums[:, column]
        close = numpy.isclose(values, values[0], rtol=1e-6, atol=0.0)
        if not close.all():
            other = int(numpy.flatnonzero(~close)[0])
            raise DistributedError(
                f"the ranks were given different training data: the sum of {what} is "
                f"{values[0]!r} on rank 0 but {values[other]!r} on rank {other}; every rank "
                "must pass the same X and y (fit shards each mini-batch itself)")


def _seed_value(seed):
    """An integer seed from fit's ``seed``: drawn when None (only rank 0's is used)."""
    if seed is None:
        return int(numpy.random.default_rng().integers(2 ** 62))
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return int(seed)
    return int(numpy.random.default_rng(seed).integers(2 ** 62))


def _check_timeout(timeout):
    if timeout is None:
        text = os.environ.get(TIMEOUT_ENV_VAR, "").strip()
        if not text:
            return DEFAULT_TIMEOUT
        try:
            timeout = float(text)
        except ValueError:
            raise ValueError(f"{TIMEOUT_ENV_VAR}={text!r} is not a number of seconds") from None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def _size_of_all(arrays):
    return size_of([tuple(array.shape) for array in arrays])
