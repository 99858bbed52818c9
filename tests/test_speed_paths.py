"""The NumPy fast path (``out=``, reused buffers, flat parameters) computes what the generic
xp path computes, allocates nothing new once warm, stays within its memory budget, and never
changes an array a user holds.

The generic path here is the base ``Backend`` over the numpy module itself: the same
formulas without ``out=``, per-parameter optimizer updates, fresh arrays every call; so a
difference can only come from the fast path.
"""
import tracemalloc

import numpy as np
import pytest

import nnback as nb
from nnback.backend import Backend, NumpyBackend
from nnback.training import Trainer
from nnback.backend_numpy import SCRATCH_SIZE

from conftest import PARITY_RTOL, assert_close

FAST = nb.get_backend("numpy")
GENERIC = Backend(np)  # the readable xp code, on the same arrays
RNG = np.random.default_rng(0)

NETWORKS = {  # activation, output, loss, targets for 5 outputs
    "relu-softmax-crossentropy": ("relu", "softmax", "crossentropy",
                                  RNG.integers(0, 5, size=24)),
    "sigmoid-sigmoid-bce": ("sigmoid", "sigmoid", "bce", RNG.integers(0, 2, (24, 5))),
    "tanh-identity-mse": ("tanh", "identity", "mse", RNG.normal(size=(24, 5))),
    "leaky-softmax-sse": ("leaky_relu", "softmax", "sse", RNG.uniform(size=(24, 5))),
}
X = RNG.normal(size=(24, 7)) * 3


def close(got, expected, dtype, what):
    got, expected = np.asarray(got), np.asarray(expected)
    scale = np.abs(expected).max() if expected.size else 0.0
    assert_close(got, expected, rtol=PARITY_RTOL[dtype], atol=PARITY_RTOL[dtype] * scale,
                 what=what)


# -- each backend method, fast against generic --------------------------------------------
def method_cases(dtype):
    shape = (33, 17)
    x = RNG.normal(size=shape).astype(dtype) * 4
    y_relu = np.maximum(x, 0)
    y_sigmoid = 1 / (1 + np.exp(-x))
    y_tanh = np.tanh(x)
    grad = RNG.normal(size=shape).astype(dtype)
    W = RNG.normal(size=(17, 9)).astype(dtype)
    b = RNG.normal(size=9).astype(dtype)
    rows = np.array([3, 0, 32, 5, 5])
    return {
        "matmul": (lambda be, out: be.matmul(x, W, out=out), (33, 9)),
        "affine": (lambda be, out: be.affine(x, W, b, out=out), (33, 9)),
        "affine without bias": (lambda be, out: be.affine(x, W, None, out=out), (33, 9)),
        "sum_rows": (lambda be, out: be.sum_rows(grad, out=out), (17,)),
        "relu": (lambda be, out: be.relu(x, out=out), shape),
        "relu_backward": (lambda be, out: be.relu_backward(grad, y_relu, out=out), shape),
        "sigmoid": (lambda be, out: be.sigmoid(x, out=out), shape),
        "sigmoid at ±60": (lambda be, out: be.sigmoid(np.linspace(-60, 60, 561, dtype=dtype)
                                                      .reshape(33, 17), out=out), shape),
        # up to SMALL_SIZE elements the fast sigmoid takes its other formula
        "small sigmoid": (lambda be, out: be.sigmoid(x[:3, :4], out=out), (3, 4)),
        "small sigmoid at ±60": (lambda be, out: be.sigmoid(
            np.linspace(-60, 60, 12, dtype=dtype).reshape(3, 4), out=out), (3, 4)),
        "sigmoid_backward": (lambda be, out: be.sigmoid_backward(grad, y_sigmoid, out=out),
                             shape),
        "tanh": (lambda be, out: be.tanh(x, out=out), shape),
        "tanh_backward": (lambda be, out: be.tanh_backward(grad, y_tanh, out=out), shape),
        "softmax": (lambda be, out: be.softmax(x * 30, out=out), shape),
        "take_rows": (lambda be, out: be.take_rows(x, rows, out=out), (5, 17)),
    }


@pytest.mark.parametrize("name", list(method_cases("float64")))
def test_fast_method_matches_generic(dtype, name):
    function, shape = method_cases(dtype)[name]
    expected = function(GENERIC, None)
    out = np.full(shape, np.nan, dtype=dtype)
    got = function(FAST, out)
    assert got is out, f"{name}: the fast path must write into and return out"
    assert got.dtype == np.dtype(dtype)
    close(got, expected, dtype, name)


def test_fast_method_without_out_falls_back_to_generic(dtype):
    x = RNG.normal(size=(4, 3)).astype(dtype)
    np.testing.assert_array_equal(FAST.relu(x), GENERIC.relu(x))
    wrong_dtype = np.empty((4, 3), dtype="float32" if dtype == "float64" else "float64")
    result = FAST.tanh(x, out=wrong_dtype)
    assert result is not wrong_dtype and result.dtype == np.dtype(dtype)


@pytest.mark.parametrize("size", [7, SCRATCH_SIZE + 1001], ids=["small", "chunked"])
def test_in_place_updates_match_generic(dtype, size):
    source = RNG.normal(size=size).astype(dtype)
    m, v = RNG.normal(size=size).astype(dtype), RNG.uniform(size=size).astype(dtype)
    for name, update in {
        "scaled_add": lambda be, target: be.scaled_add(target, source, -0.3),
        "squared_add": lambda be, target: be.squared_add(target, source, 0.001),
        "adam_update": lambda be, target: be.adam_update(target, m, v, 0.01, 1e-8),
    }.items():
        start = RNG.normal(size=size).astype(dtype)
        expected = update(GENERIC, start.copy())
        target = start.copy()
        assert update(FAST, target) is target, f"{name} must update in place"
        close(target, expected, dtype, name)


# -- whole models, fast against generic ---------------------------------------------------
def model_on(backend, network, dtype, sizes=(7, 16, 8, 5)):
    activation, output, _, _ = NETWORKS[network]
    return nb.MLP(list(sizes), activation=activation, output=output, backend=backend,
                  dtype=dtype, seed=4)


@pytest.mark.parametrize("network", list(NETWORKS))
def test_forward_backward_match_generic_path(dtype, network):
    _, _, loss_name, target = NETWORKS[network]
    results = {}
    for backend in (FAST, GENERIC):
        model = model_on(backend, network, dtype)
        loss = nb.losses.get_loss(loss_name)
        out = model.forward(X)
        grad_x = model.backward(loss.backward(out, target))
        results[backend] = [out, loss.forward(out, target), grad_x] + model.get_gradients()
    for position, (got, expected) in enumerate(zip(results[FAST], results[GENERIC])):
        close(got, expected, dtype, f"{network}: result {position}")


@pytest.mark.parametrize("optimizer", [nb.SGD(lr=0.05), nb.SGD(lr=0.05, momentum=0.9),
                                       nb.SGD(lr=0.05, momentum=0.9, nesterov=True),
                                       nb.Adam(lr=0.01)], ids=repr)
def test_training_matches_generic_path(dtype, optimizer):
    """30 steps (flat parameters and buffers on numpy, per-parameter updates on the
    generic path) give the same losses and weights."""
    import copy

    results = {}
    for backend in (FAST, GENERIC):
        model = model_on(backend, "relu-softmax-crossentropy", dtype)
        backend_optimizer = copy.deepcopy(optimizer)
        backend_optimizer.backend = backend  # else it takes the arrays' backend: numpy's
        history = model.fit(X, NETWORKS["relu-softmax-crossentropy"][3], loss="crossentropy",
                            optimizer=backend_optimizer, epochs=10, batch_size=10, seed=1)
        results[backend] = [np.array(history.loss)] + model.get_weights()
    for position, (got, expected) in enumerate(zip(results[FAST], results[GENERIC])):
        rtol = 1e-4 if dtype == "float32" else 1e-10  # 30 steps of different rounding
        assert_close(got, expected, rtol=rtol, atol=rtol * np.abs(expected).max(),
                     what=f"{optimizer!r}: result {position}")


# -- allocations and memory ---------------------------------------------------------------
def prepared_step(sizes, batch, optimizer, dtype="float32", backend=FAST):
    """(model, step): ``step()`` trains ``model`` on one fixed batch with ``optimizer``."""
    model = nb.MLP(sizes, activation="relu", output="softmax", backend=backend, dtype=dtype,
                   seed=0)
    loss = nb.SoftmaxCrossEntropy()
    data = np.random.default_rng(7)
    x = backend.asarray(data.normal(size=(batch, sizes[0])), dtype)
    target = loss.prepare_target(backend, data.integers(0, sizes[-1], batch),
                                 (batch, sizes[-1]), dtype)
    trainer = Trainer(model, loss, optimizer)
    return model, lambda: trainer.step(x, target)


@pytest.mark.parametrize("optimizer", [nb.SGD(lr=0.01), nb.SGD(lr=0.01, momentum=0.9),
                                       nb.Adam()], ids=repr)
def test_training_step_allocates_nothing_new_after_the_first(optimizer):
    """After the first step, a step allocates no array of the size of an activation or a
    weight matrix (each 256 KiB here) and keeps nothing: what may come and go are the
    loss's (batch, 4) temporaries (2 KiB) and numpy's fixed-size iterator buffer of a
    broadcasting ufunc (the bias add: about 33 KiB whatever the shapes)."""
    model, step = prepared_step([128, 512, 512, 4], 128, optimizer)
    step()
    step()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(3):
            step()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - before < 64 * 1024, f"a step allocated {peak - before} bytes at its peak"
    assert after - before < 4 * 1024, f"3 steps left {after - before} bytes behind"


def test_medium_step_peak_memory_within_1_5x_of_its_arrays():
    """784-512-512-10, batch 256, float32, SGD: the peak over the first two steps against
    weights + activations (input and every layer's output) + gradients + optimizer state.
    A fresh NumpyBackend, so that its scratch and constant arrays are made (and counted)
    here rather than left over from other tests."""
    tracemalloc.start()
    try:
        model, step = prepared_step([784, 512, 512, 10], 256, nb.SGD(lr=0.01),
                                    backend=NumpyBackend())
        tracemalloc.reset_peak()
        step()
        step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    weights = sum(param.nbytes for param in model.parameters())
    gradients = sum(grad.nbytes for grad in model.gradients())
    activations = 256 * 784 * 4 + sum(layer.y.nbytes if hasattr(layer, "y") else
                                      256 * layer.n_out * 4 for layer in model.layers)
    budget = weights + activations + gradients  # plain SGD keeps no state
    assert peak <= 1.5 * budget, f"peak {peak / 2**20:.2f} MiB, budget {budget / 2**20:.2f} MiB"


# -- nothing the user holds changes behind their back ------------------------------------
def test_arrays_handed_to_the_user_are_not_reused():
    model = nb.MLP([3, 8, 2], activation="relu", output="identity", backend=FAST, seed=0)
    first_x, second_x = RNG.normal(size=(5, 3)), RNG.normal(size=(5, 3))
    out = model.forward(first_x)
    kept = out.copy()
    grad_in = model.backward(np.ones((5, 2), dtype="float32"))
    kept_grad = grad_in.copy()
    prediction = model.predict(first_x)
    kept_prediction = prediction.copy()
    weights = model.get_weights()
    kept_weights = [w.copy() for w in weights]
    model.forward(second_x)
    model.backward(np.full((5, 2), 3.0, dtype="float32"))
    model.predict(second_x)
    model.fit(second_x, RNG.normal(size=(5, 2)), epochs=3)
    np.testing.assert_array_equal(out, kept)
    np.testing.assert_array_equal(grad_in, kept_grad)
    np.testing.assert_array_equal(prediction, kept_prediction)
    for got, expected in zip(weights, kept_weights):
        np.testing.assert_array_equal(got, expected)
    assert not np.shares_memory(model.predict(first_x), model.predict(first_x))


def test_set_parameters_writes_into_the_packed_arrays_and_they_train():
    """Dense.set_parameters writes the new values into W and b, which stay views of the
    model's flat array: the next step trains them, and the caller's arrays are left
    alone."""
    model, step = prepared_step([6, 5, 3], 4, nb.SGD(lr=0.1))
    step()
    dense = model.dense_layers[0]
    new_W = np.full((6, 5), 0.25, dtype="float32")
    dense.set_parameters([new_W, np.zeros(5, dtype="float32")])
    model_values = model.get_weights()
    np.testing.assert_array_equal(model_values[0], new_W)
    step()
    assert not np.array_equal(model.get_weights()[0], new_W)  # it was trained
    np.testing.assert_array_equal(new_W, 0.25)  # the caller's array is left alone


@pytest.mark.parametrize("optimizer", [nb.SGD(lr=0.1, momentum=0.5), nb.Adam(lr=0.01)],
                         ids=repr)
def test_restored_per_parameter_state_trains_like_the_flat_state(optimizer):
    """The state made over a model's flat arrays has one array per parameter (what
    state_arrays() snapshots); restored as plain per-parameter arrays, as the estimators
    do after unpickling, it is updated parameter by parameter, to the same numbers."""
    import copy

    sizes = [6, 5, 3]
    flat_optimizer, restored_optimizer = copy.deepcopy(optimizer), copy.deepcopy(optimizer)
    flat_model, flat_step = prepared_step(sizes, 4, flat_optimizer)
    restored_model, restored_step = prepared_step(sizes, 4, restored_optimizer)
    flat_step()
    restored_step()
    shapes = [param.shape for param in flat_model.parameters()]
    assert [array.shape for array in flat_optimizer.state_arrays()] == \
        shapes * (len(flat_optimizer.state_arrays()) // len(shapes))
    saved = [FAST.to_numpy(array) for array in restored_optimizer.state_arrays()]
    restored_optimizer.state = restored_optimizer.initial_state(restored_model.parameters())
    for array, value in zip(restored_optimizer.state_arrays(), saved):
        array[...] = value
    for _ in range(3):
        flat_step()
        restored_step()
    for got, expected in zip(restored_model.get_weights(), flat_model.get_weights()):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    for got, expected in zip(restored_optimizer.state_arrays(), flat_optimizer.state_arrays()):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_parameters_are_packed_when_the_model_is_made():
    """model.parameters() taken before training stay the model's arrays (estimators and
    L-BFGS write into them)."""
    model, step = prepared_step([6, 5, 3], 4, nb.SGD(lr=0.1))
    held = model.parameters()
    step()
    assert all(a is b for a, b in zip(held, model.parameters()))
    held[0][...] = 0.5
    np.testing.assert_array_equal(model.get_weights()[0], 0.5)


# -- the learning rate folded into backpropagation (plain SGD) ----------------------------
class UnfoldedSGD(nb.SGD):
    """Plain SGD through its ordinary update (a subclass with its own update is never
    folded): the reference for the folded step."""

    def update(self, params, grads):
        super().update(params, grads)


@pytest.mark.parametrize("alpha", [0.0, 0.01])
def test_folded_sgd_step_equals_the_ordinary_step(alpha):
    assert nb.SGD(lr=0.1).folded_scale() == -0.1 and UnfoldedSGD(lr=0.1).folded_scale() is None
    assert nb.SGD(lr=0.1, momentum=0.9).folded_scale() is None
    results = []
    for optimizer in (nb.SGD(lr=0.3), UnfoldedSGD(lr=0.3)):
        model = model_on(FAST, "sigmoid-sigmoid-bce", "float64")
        losses = [model.train_step(X, NETWORKS["sigmoid-sigmoid-bce"][3], "bce", optimizer,
                                   alpha=alpha) for _ in range(20)]
        results.append([np.array(losses)] + model.get_weights() + model.get_gradients())
    for position, (got, expected) in enumerate(zip(*results)):
        close(got, expected, "float64", f"result {position}")


def test_get_gradients_after_a_folded_step_are_the_plain_gradients():
    _, _, loss_name, target = NETWORKS["tanh-identity-mse"]
    stepped = model_on(FAST, "tanh-identity-mse", "float64")
    stepped.train_step(X, target, loss_name, nb.SGD(lr=0.5))
    reference = model_on(FAST, "tanh-identity-mse", "float64")  # the same initial weights
    loss = nb.losses.get_loss(loss_name)
    out = reference.forward(X)
    reference.backward(loss.backward(out, target))
    for got, expected in zip(stepped.get_gradients(), reference.get_gradients()):
        close(got, expected, "float64", "gradient")
