"""Training that goes wrong and files that go wrong: divergence, Ctrl-C, a GPU out of
memory, saves killed at random moments, mutated files, and random inputs thrown at
fit/predict/save/load by hypothesis.

The time-bounded tests (kills, fuzz) run for NNBACK_STRESS_SECONDS each (default 6 for the
kills, 3 for the fuzz), longer on a machine so busy that they have not reached their minimum
count by then (at most four times as long), and print what they did; ``pytest -s`` shows the
counts."""
import json
import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import nnback as nb
from nnback.backend import CupyBackend, NumpyBackend
from nnback.layers import Layer
from nnback.training import memory_estimate
from conftest import backend_or_skip
from test_io import overwrite

STRESS_SECONDS = float(os.environ.get("NNBACK_STRESS_SECONDS", "0"))
KILL_SECONDS = STRESS_SECONDS or 6.0
FUZZ_SECONDS = STRESS_SECONDS or 3.0
MIN_KILLS = 100
MIN_FUZZED = 1000


def keep_going(seconds, minimum):
    """A predicate of the count so far: true until ``seconds`` have passed and ``minimum``
    is reached, and false after 4 × ``seconds`` whatever the count."""
    start = time.monotonic()

    def again(count):
        elapsed = time.monotonic() - start
        return elapsed < 4 * seconds and (elapsed < seconds or count < minimum)

    return again

RNG = np.random.default_rng(0)
X_LINEAR = RNG.normal(size=(16, 3)) * 10  # unscaled inputs: an lr of 1e6 blows up
Y_LINEAR = X_LINEAR.sum(axis=1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def linear_model(backend="numpy", seed=0):
    return nb.MLP([3, 4, 1], activation="identity", output="identity", backend=backend,
                  seed=seed)


def host(backend, arrays):
    return [backend.to_numpy(array) for array in arrays]


def assert_arrays_equal(actual, expected, what="arrays"):
    assert len(actual) == len(expected), what
    for new, old in zip(actual, expected):
        np.testing.assert_array_equal(new, old, err_msg=what)


class RecordingSGD(nb.SGD):
    """SGD that keeps host copies of the parameters after every step (``after``) and can
    run a hook on the parameters before a given step: ``hooks={step number: hook}``."""

    def __init__(self, backend, hooks=None, **options):
        super().__init__(**options)
        self.backend = backend
        self.hooks = dict(hooks or {})
        self.after = []

    def step(self, params, grads):
        hook = self.hooks.get(self.iterations + 1)
        if hook is not None:
            hook(params)
        super().step(params, grads)
        self.after.append(host(self.backend, params))


# -- divergence ----------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("make_optimizer", [
    lambda: nb.SGD(lr=1e6),
    lambda: nb.SGD(lr=1e6, momentum=0.9),
    lambda: nb.Adam(lr=1e12),  # Adam's steps are about lr in size: 1e6 stays finite
], ids=["sgd", "momentum", "adam"])
def test_absurd_learning_rate_restores_the_last_finite_epoch(backend, make_optimizer):
    optimizer = make_optimizer()
    model = linear_model(backend)
    with pytest.raises(nb.DivergenceError) as info:
        model.fit(X_LINEAR, Y_LINEAR, optimizer=optimizer, epochs=50, batch_size=8, seed=0)
    error = info.value
    assert error.lr == optimizer.lr and error.epoch >= 1
    assert f"in epoch {error.epoch} with learning rate {optimizer.lr}" in str(error)
    assert "Lower the learning rate or scale the inputs" in str(error)
    finite_epochs = error.epoch - 1
    assert model.history.epoch == list(range(1, finite_epochs + 1))
    assert all(np.isfinite(model.history.loss))

    # the same run stopped before the bad epoch: weights and optimizer state must match
    reference_optimizer = make_optimizer()
    reference = linear_model(backend)
    if finite_epochs:
        reference.fit(X_LINEAR, Y_LINEAR, optimizer=reference_optimizer, epochs=finite_epochs,
                      batch_size=8, seed=0)
    assert_arrays_equal(model.get_weights(), reference.get_weights(), "weights")
    assert optimizer.iterations == reference_optimizer.iterations
    assert_arrays_equal(host(backend, optimizer.state_arrays()),
                        host(backend, reference_optimizer.state_arrays()), "optimizer state")

    assert all(np.all(np.isfinite(weight)) for weight in model.get_weights())
    assert model.predict(X_LINEAR).shape == (16, 1)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_in_the_first_epoch_restores_the_initial_weights():
    model = linear_model()
    initial = model.get_weights()
    with pytest.raises(nb.DivergenceError, match=r"in epoch 1 with learning rate 1e\+30; the "
                                                 r"weights from before this fit are restored"):
        model.fit(X_LINEAR, Y_LINEAR, lr=1e30, epochs=5, batch_size=4)
    assert_arrays_equal(model.get_weights(), initial)
    assert len(model.history) == 0
    # the fix the message suggests works from there
    history = model.fit(X_LINEAR / 10, Y_LINEAR / 10, lr=1e-3, epochs=3, batch_size=4)
    assert all(np.isfinite(history.loss))


# -- Ctrl-C --------------------------------------------------------------------------------
def interrupt_now(params=None):
    os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("interrupted_step", [1, 5, 8, 9, 23])
def test_ctrl_c_keeps_the_last_completed_step(backend, interrupted_step):
    # 8 rows in batches of 2: four steps an epoch; SIGINT arrives inside a step
    X, y = X_LINEAR[:8] / 10, Y_LINEAR[:8] / 10
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN where run in the background
    optimizer = RecordingSGD(backend, hooks={interrupted_step: interrupt_now}, lr=0.01)
    model = linear_model(backend)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, optimizer=optimizer, epochs=100, batch_size=2, shuffle=False)
    assert optimizer.iterations == interrupted_step
    assert_arrays_equal(model.get_weights(), optimizer.after[-1], "weights after the last step")
    completed = (interrupted_step - 1) // 4
    assert model.history.epoch == list(range(1, completed + 1))

    # an uninterrupted run passes through exactly these weights at that step
    reference = RecordingSGD(backend, lr=0.01)
    linear_model(backend).fit(X, y, optimizer=reference, epochs=(interrupted_step + 3) // 4,
                              batch_size=2, shuffle=False)
    assert_arrays_equal(model.get_weights(), reference.after[interrupted_step - 1])
    model.fit(X, y, optimizer=optimizer, epochs=1, batch_size=2)  # still usable
    assert signal.getsignal(signal.SIGINT) is handler_before


@pytest.mark.parametrize("interrupted_step", [1, 6, 9])
def test_a_second_ctrl_c_stops_inside_the_step_and_restores_the_last_epoch(backend,
                                                                           interrupted_step):
    # 8 rows in batches of 2: four steps an epoch; both Ctrl-Cs arrive inside one step
    X, y = X_LINEAR[:8] / 10, Y_LINEAR[:8] / 10
    handler_before = signal.getsignal(signal.SIGINT)
    twice = {interrupted_step: lambda params: [interrupt_now() for _ in range(2)]}
    optimizer = RecordingSGD(backend, hooks=twice, lr=0.01)
    model = linear_model(backend)
    initial = model.get_weights()
    with pytest.raises(KeyboardInterrupt) as raised:
        model.fit(X, y, optimizer=optimizer, epochs=100, batch_size=2, shuffle=False)
    assert not isinstance(raised.value, nb.TrainingInterrupted)  # not the graceful stop
    completed = (interrupted_step - 1) // 4
    assert model.history.epoch == list(range(1, completed + 1))
    expected = optimizer.after[4 * completed - 1] if completed else initial
    assert_arrays_equal(model.get_weights(), expected, "weights of the last epoch")
    assert signal.getsignal(signal.SIGINT) is handler_before


def test_a_first_ctrl_c_says_how_many_epochs_completed():
    optimizer = RecordingSGD(nb.get_backend("numpy"), hooks={10: interrupt_now}, lr=0.01)
    with pytest.raises(nb.TrainingInterrupted) as raised:
        linear_model().fit(X_LINEAR[:8] / 10, Y_LINEAR[:8] / 10, optimizer=optimizer,
                           epochs=100, batch_size=2, shuffle=False)
    assert raised.value.epochs_completed == 2
    assert isinstance(raised.value, KeyboardInterrupt)


def test_ctrl_c_at_random_moments_leaves_a_consistent_model():
    X, y = X_LINEAR / 10, Y_LINEAR / 10
    rng = random.Random(0)
    for trial in range(15):
        optimizer = RecordingSGD(nb.get_backend("numpy"), lr=0.01)
        model = linear_model()
        initial = model.get_weights()
        timer = threading.Timer(rng.uniform(0.0, 0.05), interrupt_now)
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                model.fit(X, y, optimizer=optimizer, epochs=10 ** 6, batch_size=4)
        finally:
            timer.cancel()
        steps = optimizer.iterations  # 0 when Ctrl-C came while fit was still checking X
        weights = model.get_weights()
        assert all(np.all(np.isfinite(weight)) for weight in weights)
        last = optimizer.after[-1] if steps else initial
        assert_arrays_equal(weights, last, f"trial {trial}: last step")
        assert len(model.history or ()) == max(steps - 1, 0) // 4, f"trial {trial}"
        assert model.history is None or len(model.history.loss) == len(model.history)


class InterruptOnValidation(nb.MSE):
    """MSE that delivers Ctrl-C while the validation loss (5 rows) is computed: after the
    last training step of the epoch, where fit once swallowed it."""

    def value(self, xp, pred, target):
        if pred.shape[0] == 5:
            interrupt_now()
        return super().value(xp, pred, target)


def test_ctrl_c_after_the_last_step_is_not_lost():
    model = linear_model()
    with pytest.raises(KeyboardInterrupt):
        model.fit(X_LINEAR / 10, Y_LINEAR / 10, loss=InterruptOnValidation(), lr=0.01,
                  epochs=1, validation_data=(X_LINEAR[:5] / 10, Y_LINEAR[:5] / 10))
    assert len(model.history) == 1 and len(model.history.val_loss) == 1


def test_ctrl_c_from_outside_the_process(tmp_path):
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        sys.path.insert(0, {ROOT!r})
        import nnback as nb

        class Recording(nb.SGD):
            def step(self, params, grads):
                super().step(params, grads)
                self.after = [np.array(p) for p in params]
                if self.iterations == 50:
                    print("training", flush=True)

        X = np.random.default_rng(0).normal(size=(64, 3))
        y = X.sum(axis=1)
        model = nb.MLP([3, 8, 1], activation="tanh", output="identity", backend="numpy",
                       seed=0)
        optimizer = Recording(lr=0.01)
        try:
            model.fit(X, y, optimizer=optimizer, epochs=10 ** 7, batch_size=8)
        except KeyboardInterrupt:
            weights = model.get_weights()
            print(json.dumps({{
                "steps": optimizer.iterations,
                "epochs": len(model.history),
                "finite": all(bool(np.all(np.isfinite(w))) for w in weights),
                "last_step": all(np.array_equal(w, a) for w, a in zip(weights, optimizer.after)),
                "predicts": bool(np.all(np.isfinite(model.predict(X)))),
            }}), flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "training"
        time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    report = json.loads(out)
    assert report["finite"] and report["last_step"] and report["predicts"], (report, err)
    assert report["epochs"] == (report["steps"] - 1) // 8


# -- GPU out of memory ---------------------------------------------------------------------
# On real CuPy where a GPU works, and on the CuPy stand-in (tests/cupy_standin) elsewhere:
# its OutOfMemoryError is CuPy's class, constructor and message, and its memory pool runs
# out for real past the limit set with CuPy's own MemoryPool.set_limit.
CUPY_MESSAGE = "Out of memory allocating 1,073,741,824 bytes (allocated so far: 0 bytes)."


@pytest.fixture
def cupy_module():
    return backend_or_skip("cupy").module


def out_of_memory(cupy):
    """CuPy's OutOfMemoryError for a 1 GiB allocation with nothing allocated before."""
    return cupy.cuda.memory.OutOfMemoryError(2 ** 30, 0)


@pytest.mark.gpu
def test_cupy_out_of_memory_is_translated(cupy_module):
    backend = CupyBackend(cupy_module)
    error = backend.translate_error(out_of_memory(cupy_module), 4096, 3 * 2 ** 30)
    assert isinstance(error, nb.DeviceOutOfMemoryError) and isinstance(error, MemoryError)
    assert (error.batch_size, error.needed_bytes) == (4096, 3 * 2 ** 30)
    text = str(error)
    assert "batch of 4096 rows, which needs about 3072.0 MiB" in text
    assert "batch_size=1024" in text and CUPY_MESSAGE in text
    cublas = type("CUBLASError", (Exception,), {})("CUBLAS_STATUS_ALLOC_FAILED")
    assert isinstance(backend.translate_error(cublas, 8, 1), nb.DeviceOutOfMemoryError)
    assert backend.translate_error(ValueError("shapes do not match"), 8, 1) is None
    assert nb.get_backend("numpy").translate_error(out_of_memory(cupy_module), 8, 1) is None


@pytest.fixture
def gpu_like_backend(monkeypatch, cupy_module):
    """A NumPy backend that translates errors the way the CuPy backend does (so that an
    optimizer hook can fail a chosen step with CuPy's error)."""
    backend = NumpyBackend()
    monkeypatch.setattr(backend, "translate_error", CupyBackend(cupy_module).translate_error)
    return backend


@pytest.mark.gpu
def test_out_of_memory_in_fit_names_the_batch_and_keeps_the_last_epoch(gpu_like_backend,
                                                                       cupy_module):
    def out_of_memory_halfway(params):  # the update has begun when the memory runs out
        params[0][...] = np.nan
        raise out_of_memory(cupy_module)

    # batches of 4 of 16 rows: four steps an epoch; the 7th step (epoch 2) fails
    optimizer = RecordingSGD(gpu_like_backend, hooks={7: out_of_memory_halfway}, lr=0.001,
                             momentum=0.5)
    model = linear_model(gpu_like_backend)
    with pytest.raises(nb.DeviceOutOfMemoryError, match=r"batch of 4 rows, which needs about "
                                                        r"[0-9.]+ MiB") as info:
        model.fit(X_LINEAR, Y_LINEAR, optimizer=optimizer, epochs=5, batch_size=4, seed=0)
    assert isinstance(info.value.__cause__, cupy_module.cuda.memory.OutOfMemoryError)
    assert info.value.needed_bytes == memory_estimate(model, 4)
    assert_arrays_equal(model.get_weights(), optimizer.after[3], "weights after epoch 1")
    assert model.history.epoch == [1]
    assert optimizer.iterations == 4
    reference = RecordingSGD(gpu_like_backend, lr=0.001, momentum=0.5)
    linear_model(gpu_like_backend).fit(X_LINEAR, Y_LINEAR, optimizer=reference, epochs=1,
                                       batch_size=4, seed=0)
    assert_arrays_equal(optimizer.state_arrays(), reference.state_arrays(), "velocities")


@pytest.fixture
def memory_limit(cupy_module):
    """Set the default memory pool's limit (CuPy's MemoryPool.set_limit) for one test."""
    pool = cupy_module.get_default_memory_pool()
    before = pool.get_limit()
    yield lambda size: pool.set_limit(size=size)
    pool.set_limit(size=before)


@pytest.mark.gpu
def test_a_fit_past_the_device_memory_names_the_batch_and_keeps_the_weights(memory_limit):
    """A real allocation failure: the batch's activations do not fit under the pool's
    limit. The error names the batch, and the model keeps the weights it had."""
    model = nb.MLP([64, 2048, 1], activation="relu", output="identity", backend="cupy", seed=0)
    before = model.get_weights()
    X, y = np.ones((4096, 64)), np.zeros(4096)
    pool = sys.modules["cupy"].get_default_memory_pool()
    memory_limit(pool.used_bytes() + 24 * 2 ** 20)  # room for X, not for 4096 × 2048 floats
    with pytest.raises(nb.DeviceOutOfMemoryError, match="batch of 4096 rows") as info:
        model.fit(X, y, epochs=1)
    assert "lower batch_size (e.g. batch_size=1024)" in str(info.value)
    assert_arrays_equal(model.get_weights(), before, "weights after the failed fit")


class BigBatchesRunOutOfMemory(Layer):
    def forward(self, x):
        if x.shape[0] > 100:
            raise self.out_of_memory
        return x

    def backward(self, grad_y):
        return grad_y


@pytest.mark.gpu
@pytest.mark.parametrize("call", ["predict", "forward", "evaluate"])
def test_out_of_memory_in_prediction_names_the_rows(gpu_like_backend, cupy_module, call):
    layer = BigBatchesRunOutOfMemory()
    layer.out_of_memory = out_of_memory(cupy_module)
    model = nb.Sequential([nb.Dense(3, 2), layer], backend=gpu_like_backend, seed=0)
    model.forward(np.zeros((100, 3)))
    with pytest.raises(nb.DeviceOutOfMemoryError, match="batch of 500 rows") as info:
        if call == "evaluate":
            model.evaluate(np.zeros((500, 3)), np.zeros((500, 2)))
        else:
            getattr(model, call)(np.zeros((500, 3)))
    assert info.value.needed_bytes == memory_estimate(model, 500, training=False)
    if call == "forward":
        with pytest.raises(RuntimeError, match="backward needs a forward pass first"):
            model.backward(np.zeros((100, 2)))  # the last forward that worked is not reused
    else:  # a prediction saves nothing in the layers: backward still has the last forward
        assert model.backward(np.zeros((100, 2))).shape == (100, 3)


@pytest.mark.gpu
def test_command_line_reports_out_of_memory_on_one_line(monkeypatch, capsys, cupy_module):
    from nnback import __main__ as cli, demo

    def fails(*args, **kwargs):
        raise CupyBackend(cupy_module).translate_error(out_of_memory(cupy_module), 512, 2 ** 30)

    monkeypatch.setattr(demo, "run", fails)
    assert cli.main(["demo"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("python -m nnback demo: error: the GPU ran out of memory in a step "
                          "on a batch of 512 rows") and len(err.splitlines()) == 1


def test_other_errors_in_fit_pass_through_and_keep_the_last_epoch():
    def broken(params):
        raise RuntimeError("a bug in a custom optimizer")

    optimizer = RecordingSGD(nb.get_backend("numpy"), hooks={6: broken}, lr=0.001)
    model = linear_model()
    with pytest.raises(RuntimeError, match="a bug in a custom optimizer"):
        model.fit(X_LINEAR, Y_LINEAR, optimizer=optimizer, epochs=5, batch_size=4)
    assert_arrays_equal(model.get_weights(), optimizer.after[3])


# -- atomic save: kill the saving process at random moments --------------------------------
def load_which(path, candidates):
    """Index of the candidate model (a list of weights) the file at ``path`` holds."""
    weights = nb.load(path, backend="numpy").get_weights()
    for index, expected in enumerate(candidates):
        if all(np.array_equal(a, b) for a, b in zip(weights, expected)):
            return index
    raise AssertionError("the file holds a model that was never saved")


def child_error(folder):
    """The traceback a saving child wrote into ``folder``, or a word saying there is none."""
    report = folder / "child-error.txt"
    return report.read_text() if report.exists() else "no exception reported"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_killed_saves_leave_the_old_or_the_new_model(tmp_path):
    models = [nb.MLP([16, 64, 64, 4], backend="numpy", seed=seed) for seed in (1, 2)]
    candidates = [model.get_weights() for model in models]
    path = tmp_path / "model.nnb"
    started = time.perf_counter()
    for _ in range(5):
        models[0].save(path)
    save_seconds = (time.perf_counter() - started) / 5
    rng = random.Random(0)
    outcomes = Counter()
    again = keep_going(KILL_SECONDS, MIN_KILLS)
    while again(sum(outcomes.values())):
        progress, progress_writer = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child saves models 1, 0, 1, ... and reports each save done
            status = 1
            try:
                os.close(progress)
                os.write(progress_writer, b"!")
                for turn in range(1, 10 ** 9):
                    models[turn % 2].save(path)
                    os.write(progress_writer, b"!")
            except BaseException:
                with open(tmp_path / "child-error.txt", "w") as report:
                    traceback.print_exc(file=report)
            finally:
                os._exit(status)
        os.close(progress_writer)
        # Wait for the child to start and finish 0, 1 or 2 saves (so the file may hold
        # either model whatever this machine's speed), then kill it at a random moment
        # within the next save and a half.
        try:
            for _ in range(1 + rng.randrange(3)):
                reported, _, _ = select.select([progress], [], [], 30.0)  # never hang
                assert reported and os.read(progress, 1), (
                    "the saving child went silent: " + child_error(tmp_path))
            time.sleep(rng.uniform(0.0, 1.5 * save_seconds))
        finally:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(progress)
        assert os.WIFSIGNALED(status), ("the saving child stopped on its own: "
                                        + child_error(tmp_path))
        outcomes[load_which(path, candidates)] += 1
    kills = sum(outcomes.values())
    leftovers = [name for name in os.listdir(tmp_path) if name != "model.nnb"]
    assert all(name.startswith(".model.nnb.") and name.endswith(".tmp") for name in leftovers)
    print(f"\natomic save: {kills} kills survived, file held the old/new model "
          f"{outcomes[0]}/{outcomes[1]} times, {len(leftovers)} kills landed mid-save "
          f"(left a temporary file), 0 lost (one save took {1e3 * save_seconds:.1f} ms)")
    assert kills >= MIN_KILLS and outcomes[0] and outcomes[1]


# -- fuzz: mutate a valid file -------------------------------------------------------------
def mutate(data, rng):
    """``data`` with one to three random mutations (the kind a bad disk, a truncated
    download or a careless edit makes)."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(7)
        position = rng.randrange(len(data)) if data else 0
        if kind == 0 and data:
            data[position] ^= 1 << rng.randrange(8)
        elif kind == 1 and data:
            data[position] = rng.randrange(256)
        elif kind == 2:
            del data[position:]
        elif kind == 3:
            data[position:position] = bytes(rng.randrange(256)
                                            for _ in range(rng.randint(1, 16)))
        elif kind == 4:
            del data[position:position + rng.randint(1, 64)]
        elif kind == 5 and data:
            length = rng.randint(1, 64)
            data[position:position + length] = data[rng.randrange(len(data)):][:length]
        elif kind == 6:  # a plausible number where a size or shape is written
            data[position:position + 4] = rng.choice(
                [b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"1000", b"9999", b"-1, "])
    return bytes(data)


def test_fuzzed_files_give_model_file_error_or_the_original_model(tmp_path):
    originals = [nb.MLP([2, 3, 1], backend="numpy", seed=0),
                 nb.Sequential([nb.Dense(3, 4), nb.LeakyReLU(0.2), nb.Dense(4, 2)],
                               backend="numpy", seed=1)]
    sources = []
    for index, model in enumerate(originals):
        model.save(tmp_path / f"original{index}.nnb")
        sources.append((tmp_path / f"original{index}.nnb").read_bytes())
    path = tmp_path / "fuzzed.nnb"
    rng = random.Random(1)
    outcomes = Counter()
    again = keep_going(FUZZ_SECONDS, MIN_FUZZED)
    while again(sum(outcomes.values())):
        which = rng.randrange(len(sources))
        mutated = mutate(sources[which], rng)
        overwrite(path, mutated)
        try:
            loaded = nb.load(path, backend="numpy")
        except nb.ModelFileError:
            outcomes["refused"] += 1
            continue
        except BaseException as exc:
            (tmp_path / "crash.nnb").write_bytes(mutated)
            raise AssertionError(f"load raised {type(exc).__name__}: {exc}; the file is kept "
                                 f"as {tmp_path / 'crash.nnb'}") from exc
        expected = originals[which]
        assert loaded.get_config() == expected.get_config()
        assert_arrays_equal(loaded.get_weights(), expected.get_weights(), "fuzzed load")
        outcomes["harmless"] += 1
    total = sum(outcomes.values())
    print(f"\nfuzz: {total} mutated files, {outcomes['refused']} refused with "
          f"ModelFileError, {outcomes['harmless']} harmless (loaded the original model), "
          "0 other errors")
    assert total >= MIN_FUZZED and outcomes["refused"] > outcomes["harmless"]


# -- hypothesis: random inputs -------------------------------------------------------------
DOCUMENTED = (ValueError, TypeError)  # ShapeError and ModelFileError are ValueErrors

NUMERIC_DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int64, np.uint8]
OTHER_DTYPES = [np.bool_, np.complex128, np.dtype("<U3"), np.dtype("datetime64[s]")]


def arrays_of_any_kind():
    shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)
    numeric = st.sampled_from(NUMERIC_DTYPES).flatmap(
        lambda dtype: hnp.arrays(dtype, shapes, elements=hnp.from_dtype(
            np.dtype(dtype), allow_nan=True, allow_infinity=True)
            if np.dtype(dtype).kind == "f" else None))
    other = st.sampled_from(OTHER_DTYPES).flatmap(lambda dtype: hnp.arrays(dtype, shapes))
    python = st.one_of(
        st.none(), st.text(max_size=5), st.floats(), st.integers(),
        st.lists(st.one_of(st.floats(), st.integers(-5, 5), st.none(), st.text(max_size=2)),
                 max_size=6),
        st.lists(st.lists(st.floats(-10, 10), min_size=0, max_size=3), max_size=5),  # ragged
        st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))
    return st.one_of(numeric, numeric, other, python)


def mostly(good, other):
    """``good`` three times in four, else ``other`` (strategies)."""
    return st.sampled_from([good, good, good, other]).flatmap(lambda strategy: strategy)


def sometimes_bad(good, *bad):
    """Mostly ``good`` (a strategy), sometimes one of the ``bad`` values."""
    return mostly(good, st.sampled_from(bad))


def plausible_X():
    """Mostly the right number of features (2), so that calls get past the shape check."""
    shapes = st.tuples(mostly(st.integers(1, 6), st.just(0)), st.just(2))
    dtypes = st.sampled_from([np.float32, np.float64])
    clean = hnp.arrays(dtypes, shapes, elements=st.floats(-10, 10))
    dirty = hnp.arrays(dtypes, shapes, elements=st.floats(-10, 10)
                       | st.sampled_from([np.nan, np.inf, 1e39]))
    return mostly(mostly(clean, dirty),
                  hnp.arrays(np.int64, shapes, elements=st.integers(-3, 3))
                  | arrays_of_any_kind())


FIT_OPTIONS = st.fixed_dictionaries({}, optional={
    "loss": sometimes_bad(st.sampled_from(["mse", "sse", "bce", "crossentropy"]),
                          "hinge", 3, None),
    "optimizer": sometimes_bad(st.sampled_from(["sgd", "adam"]), "rmsprop"),
    "lr": sometimes_bad(st.floats(1e-4, 10.0), 0, -1, "0.1", float("nan"), 1e300),
    "epochs": sometimes_bad(st.integers(1, 3), 0, -1, 2.5, "2"),
    "batch_size": sometimes_bad(st.none() | st.integers(1, 5), 0, -1, 2.5),
    "shuffle": sometimes_bad(st.booleans(), "yes", 1),
    "seed": sometimes_bad(st.none() | st.integers(0, 3), -1, "x"),
    "alpha": sometimes_bad(st.sampled_from([0.0, 1e-3]), -1.0, float("nan")),
})


def targets_for(n_rows, model_name):
    """Targets that fit a model's output for n_rows, now and then out of range."""
    if model_name == "softmax":  # class labels of 3 classes
        return hnp.arrays(np.int64, (n_rows,), elements=st.integers(-1, 3))
    return hnp.arrays(np.float64, st.sampled_from([(n_rows,), (n_rows, 1)]),
                      elements=st.floats(0, 1) | st.sampled_from([-0.5, 2.0, np.nan]))


def rows_of(X):
    shape = np.shape(X) if not isinstance(X, (str, dict)) else ()
    return shape[0] if len(shape) else 1


def model_state(model, optimizer):
    return (model.get_weights(), host(model.backend, optimizer.state_arrays()),
            optimizer.iterations, model.history, list(model.history.loss))


def assert_state_unchanged(model, optimizer, before):
    weights, state, iterations, history, losses = model_state(model, optimizer)
    assert_arrays_equal(weights, before[0], "weights")
    assert_arrays_equal(state, before[1], "optimizer state")
    assert iterations == before[2] and history is before[3] and losses == before[4]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_random_inputs_raise_only_documented_errors_and_change_nothing(tmp_path):
    counts = Counter()
    # two small models, trained a little so that their optimizer and History have state
    models = {
        "sigmoid": nb.MLP([2, 3, 1], backend="numpy", seed=0),
        "softmax": nb.MLP([2, 4, 3], output="softmax", backend="numpy", seed=0),
    }
    optimizers = {name: nb.Adam(lr=0.01) for name in models}
    models["sigmoid"].fit(np.eye(2), [0.0, 1.0], optimizer=optimizers["sigmoid"], epochs=2)
    models["softmax"].fit(np.eye(2), [0, 2], loss="crossentropy",
                          optimizer=optimizers["softmax"], epochs=2)

    @settings(max_examples=400, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(name=st.sampled_from(sorted(models)),
           action=st.sampled_from(["fit", "fit with the optimizer", "train_step", "predict",
                                   "set_weights"]),
           X=plausible_X(), data=st.data())
    def check(name, action, X, data):
        try:
            n_rows = rows_of(X)
        except ValueError:  # ragged
            n_rows = 1
        y = data.draw(mostly(targets_for(n_rows, name), arrays_of_any_kind()), label="y")
        options = data.draw(FIT_OPTIONS, label="options")
        model, optimizer = models[name], optimizers[name]
        before = model_state(model, optimizer)
        try:
            if action == "fit":
                model.fit(X, y, **options)
            elif action == "fit with the optimizer":
                options = {key: value for key, value in options.items()
                           if key not in ("optimizer", "lr")}
                model.fit(X, y, optimizer=optimizer, **options)
            elif action == "train_step":
                model.train_step(X, y, options.get("loss", "mse"), optimizer)
            elif action == "predict":
                out = model.predict(X)
                assert out.shape[-1] == model.n_outputs
            else:
                model.set_weights([X if index == 0 else weight
                                   for index, weight in enumerate(before[0])])
        except DOCUMENTED:
            counts["refused"] += 1
            assert_state_unchanged(model, optimizer, before)
            return
        except nb.DivergenceError:
            counts["diverged"] += 1
            assert all(np.all(np.isfinite(w)) for w in model.get_weights())
        else:
            counts["accepted"] += 1
        if action == "predict":
            assert_state_unchanged(model, optimizer, before)
        else:  # restore the model for the next example
            model.set_weights(before[0])
            model.history = before[3]
            optimizer.reset()

    check()
    print(f"\nhypothesis fit/train_step/predict/set_weights: {sum(counts.values())} inputs, "
          f"{counts['refused']} refused with ValueError/TypeError (model unchanged), "
          f"{counts['accepted']} accepted, {counts['diverged']} diverged")
    assert counts["refused"] and counts["accepted"]


def test_random_bytes_and_random_weights_through_save_and_load(tmp_path):
    counts = Counter()
    path = tmp_path / "model.nnb"

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.one_of(st.binary(max_size=3000),
                          st.binary(max_size=3000).map(lambda tail: b"PK\x03\x04" + tail)),
           weights=hnp.arrays(np.float64, (2, 3), elements=st.floats(
               allow_nan=True, allow_infinity=True, width=64)),
           dtype=st.sampled_from(["float32", "float64"]))
    def check(data, weights, dtype):
        overwrite(path, data)
        with pytest.raises(nb.ModelFileError):
            nb.load(path, backend="numpy")
        model = nb.MLP([2, 3, 1], backend="numpy", dtype=dtype, seed=0)
        try:
            model.set_weights([weights] + model.get_weights()[1:])
        except ValueError:
            counts["refused"] += 1
            return
        model.save(path)
        loaded = nb.load(path, backend="array_api_strict")
        assert_arrays_equal(loaded.get_weights(), model.get_weights())
        counts["round trips"] += 1

    pytest.importorskip("array_api_strict")
    check()
    print(f"\nhypothesis save/load: {sum(counts.values())} random files refused, "
          f"{counts['round trips']} random weights saved and loaded back exactly, "
          f"{counts['refused']} refused by set_weights")
    assert counts["round trips"]
