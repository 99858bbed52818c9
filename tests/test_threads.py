"""Threads: one model shared by many threads gives exactly the answers it gives alone.

- Stress: 8 threads call each public inference method at once on batches of 45 to 51 rows,
  repeated; every answer must equal (bit for bit) the same call made alone. On numpy and on
  cupy (the CuPy stand-in in CI), for Sequential/MLP and both estimators.
- Training is one thread at a time: a second fit, train_step, partial_fit or
  forward/backward by hand, and any prediction from another thread, are refused while a
  fit runs; forward/backward by hand from several threads take turns.
- Separate models train in parallel threads exactly as they train one after another.
"""
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import nnback as nb

from conftest import backend_or_skip

N_THREADS = 8
REPEATS = 3
RNG = np.random.default_rng(21)
X_ALL = RNG.normal(size=(400, 12))
LABELS = RNG.integers(0, 3, size=400)
BATCHES = [X_ALL[start:start + size] for start, size in
           zip(range(0, 400, 51), [45, 46, 47, 48, 49, 50, 51, 45])]  # 8 batches, 45-51 rows


def assert_same_as_alone(call, inputs, what):
    """call(input) from N_THREADS threads at once, REPEATS times over ``inputs`` (each thread
    starting at another input), against the same calls made one at a time."""
    alone = [call(item) for item in inputs]
    start = threading.Barrier(N_THREADS)

    def worker(offset):
        start.wait()  # all threads begin together
        results = []
        for repeat in range(REPEATS):
            for step in range(len(inputs)):
                index = (offset + step + repeat) % len(inputs)
                results.append((index, call(inputs[index])))
        return results

    with ThreadPoolExecutor(N_THREADS) as pool:
        outcomes = list(pool.map(worker, range(N_THREADS)))
    mismatches = sum(not np.array_equal(np.asarray(result), np.asarray(alone[index]))
                     for results in outcomes for index, result in results)
    calls = sum(len(results) for results in outcomes)
    assert calls == N_THREADS * REPEATS * len(inputs)
    assert mismatches == 0, f"{what}: {mismatches} of {calls} threaded answers differ"


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def backend(request):
    return backend_or_skip(request.param)


def trained_mlp(backend, activation="relu", output="softmax"):
    model = nb.MLP([12, 32, 16, 3], activation=activation, output=output, backend=backend,
                   seed=0)
    model.fit(X_ALL, LABELS, loss="crossentropy", epochs=3, batch_size=50, seed=0)
    return model


# -- inference from many threads ---------------------------------------------------------------
@pytest.mark.parametrize("activation, output", [("relu", "softmax"), ("sigmoid", "sigmoid"),
                                                ("tanh", "identity"),
                                                ("leaky_relu", "softmax")])
def test_predict_from_many_threads_equals_predict_alone(backend, activation, output):
    model = trained_mlp(backend, activation, output)
    assert_same_as_alone(model.predict, BATCHES, f"MLP.predict ({activation}, {output})")


def test_forward_without_training_from_many_threads_equals_it_alone(backend):
    model = trained_mlp(backend)
    assert_same_as_alone(lambda X: backend.to_numpy(model.forward(X, training=False)),
                         BATCHES, "MLP.forward(training=False)")


def test_evaluate_from_many_threads_equals_it_alone(backend):
    model = trained_mlp(backend)
    targets = {id(X): LABELS[:len(X)] for X in BATCHES}
    assert_same_as_alone(lambda X: model.evaluate(X, targets[id(X)], "crossentropy"),
                         BATCHES, "MLP.evaluate")


def test_forward_by_hand_from_many_threads_takes_turns_and_equals_it_alone(backend):
    """forward (training=True) keeps what backward reads: threads take turns, and each gets
    its own output."""
    model = trained_mlp(backend)
    assert_same_as_alone(lambda X: backend.to_numpy(model.forward(X)), BATCHES,
                         "MLP.forward")


def test_sequential_with_a_custom_layer_predicts_right_from_many_threads(backend):
    """A layer without its own infer keeps state in forward: predictions then take turns."""
    class Doubling(nb.layers.Layer):
        def forward(self, x):
            self.x = x
            return self.x * 2

        def backward(self, grad_y):
            return grad_y * 2

    model = nb.Sequential([nb.Dense(12, 8), nb.Tanh(), Doubling(), nb.Dense(8, 2)],
                          backend=backend, seed=1)
    assert_same_as_alone(model.predict, BATCHES, "Sequential with a custom layer")


@pytest.fixture(scope="module")
def estimators():
    pytest.importorskip("sklearn", reason="scikit-learn is not installed: pip install "
                                          "'.[sklearn]'")
    return {"classifier": nb.MLPClassifier(hidden_layer_sizes=(16,), max_iter=30,
                                           random_state=0),
            "regressor": nb.MLPRegressor(hidden_layer_sizes=(16,), max_iter=30,
                                         random_state=0)}


ESTIMATOR_CALLS = {
    "classifier": ["predict", "predict_proba", "predict_log_proba", "score"],
    "regressor": ["predict", "score"],
}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("kind, method", [(kind, method) for kind, methods in
                                          ESTIMATOR_CALLS.items() for method in methods])
def test_estimator_inference_from_many_threads_equals_it_alone(backend, estimators, kind,
                                                               method):
    estimator = estimators[kind].set_params(backend=backend.name)
    y = LABELS if kind == "classifier" else X_ALL[:, 0] * 2 + LABELS
    estimator.fit(X_ALL, y)
    targets = {id(X): y[:len(X)] for X in BATCHES}
    if method == "score":
        call = lambda X: estimator.score(X, targets[id(X)])  # noqa: E731
    else:
        call = getattr(estimator, method)
    assert_same_as_alone(call, BATCHES, f"{type(estimator).__name__}.{method}")


# -- training is one thread at a time ----------------------------------------------------------
class PausingSGD(nb.SGD):
    """SGD that, on its first step, says so and waits to be released: a fit that is
    certainly running while the test acts from another thread."""

    def __init__(self):
        super().__init__(lr=0.01)
        self.started, self.release = threading.Event(), threading.Event()

    def update(self, params, grads):
        self.started.set()
        assert self.release.wait(30), "the test never released the fit"
        super().update(params, grads)


def test_a_second_training_and_predictions_are_refused_while_a_fit_runs(backend):
    model = trained_mlp(backend)
    optimizer = PausingSGD()
    fit = threading.Thread(target=model.fit, args=(X_ALL, LABELS),
                           kwargs=dict(loss="crossentropy", optimizer=optimizer, epochs=2))
    fit.start()
    try:
        assert optimizer.started.wait(30)
        refused = {
            "fit": lambda: model.fit(X_ALL, LABELS, loss="crossentropy", epochs=1),
            "train_step": lambda: model.train_step(X_ALL, LABELS, "crossentropy", nb.SGD()),
            "forward": lambda: model.forward(X_ALL),
            "backward": lambda: model.backward(backend.asarray(np.zeros((400, 3)))),
            "predict": lambda: model.predict(X_ALL),
            "evaluate": lambda: model.evaluate(X_ALL, LABELS, "crossentropy"),
            "forward(training=False)": lambda: model.forward(X_ALL, training=False),
        }
        for what, call in refused.items():
            with pytest.raises(RuntimeError, match=r"this model is being trained in another "
                                                   r"thread \(fit is running there\), so "
                                                   + what.replace("(", r"\(").replace(")", r"\)")
                                                   + " was refused"):
                call()
    finally:
        optimizer.release.set()
        fit.join(30)
    assert not fit.is_alive()
    assert model.predict(X_ALL).shape == (400, 3)  # free again once the fit returned


def test_a_training_waits_for_predictions_in_flight(backend):
    """A fit that starts while other threads predict waits for them: no prediction ever
    sees weights of two steps (each equals a prediction alone, before or after)."""
    model = trained_mlp(backend)
    before = model.predict(X_ALL)
    stop = threading.Event()
    seen = []

    def predict_until_stopped():
        while not stop.is_set():
            try:
                seen.append(model.predict(X_ALL))
            except RuntimeError as error:  # refused while the fit runs
                assert "being trained in another thread" in str(error)

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(predict_until_stopped) for _ in range(4)]
        model.fit(X_ALL, LABELS, loss="crossentropy", epochs=2, batch_size=400, seed=0)
        after = model.predict(X_ALL)
        stop.set()
        for future in futures:
            future.result()
    assert not np.array_equal(before, after)
    assert seen and all(np.array_equal(result, before) or np.array_equal(result, after)
                        for result in seen)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_an_estimator_refuses_a_second_fit_and_predictions_while_it_fits(estimators):
    classifier = estimators["classifier"].set_params(backend="numpy")
    classifier.fit(X_ALL, LABELS)
    entered, release = threading.Event(), threading.Event()

    class SlowToRead:
        """An X whose conversion to an array waits: a fit held inside its checks."""

        def __array__(self, dtype=None, copy=None):
            entered.set()
            assert release.wait(30)
            return X_ALL if dtype is None else X_ALL.astype(dtype)

        def __len__(self):
            return len(X_ALL)

    fit = threading.Thread(target=classifier.fit, args=(SlowToRead(), LABELS))
    fit.start()
    try:
        assert entered.wait(30)
        for what, call in {"fit": lambda: classifier.fit(X_ALL, LABELS),
                           "partial_fit": lambda: classifier.partial_fit(X_ALL, LABELS),
                           "predict": lambda: classifier.predict(X_ALL),
                           "predict_proba": lambda: classifier.predict_proba(X_ALL)}.items():
            with pytest.raises(RuntimeError, match="being trained in another thread"):
                call()
    finally:
        release.set()
        fit.join(30)
    assert classifier.predict(X_ALL).shape == (400,)


# -- separate models in parallel ------------------------------------------------------------
def test_separate_models_train_in_parallel_exactly_as_one_after_another(backend):
    def train(seed):
        model = nb.MLP([12, 16, 3], activation="tanh", output="softmax", backend=backend,
                       seed=seed)
        model.fit(X_ALL, LABELS, loss="crossentropy", optimizer=nb.Adam(lr=0.01), epochs=5,
                  batch_size=40, seed=seed)
        return model.get_weights()

    seeds = list(range(6))
    serial = [train(seed) for seed in seeds]
    with ThreadPoolExecutor(len(seeds)) as pool:
        parallel = list(pool.map(train, seeds))
    for seed, (alone, together) in enumerate(zip(serial, parallel)):
        for got, expected in zip(together, alone):
            np.testing.assert_array_equal(got, expected, err_msg=f"model {seed}")


def test_a_model_copied_or_unpickled_has_its_own_guard(backend):
    import copy
    import pickle

    model = trained_mlp(backend)
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert other._guard is not model._guard
        np.testing.assert_array_equal(other.predict(X_ALL), model.predict(X_ALL))
