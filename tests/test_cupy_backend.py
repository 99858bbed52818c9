"""The cupy backend end to end: a model builds, fits, predicts, saves and loads like the numpy
one; a training step moves nothing to the host and, once warm, allocates nothing of a batch's
size; the flat gradient array is kept from step to step; the generic Backend runs over the
cupy module.

These run on real CuPy where a GPU works and on the CuPy stand-in everywhere else (CI). The
counts of transfers and allocations are read from the stand-in's counters and are checked
only there (real CuPy has no such counters; its pools are not comparable).
"""

import numpy as np
import pytest

import nnback as nb
from nnback.backend import Backend
from nnback.training import Trainer

from conftest import PARITY_RTOL, TRAINING_RTOL, assert_close

pytestmark = pytest.mark.gpu
RNG = np.random.default_rng(12)


def close_to(got, expected, rtol, what):
    """Relative agreement, with the absolute floor scaled by the largest expected value."""
    assert_close(got, expected, rtol=rtol, atol=rtol * float(np.abs(expected).max()), what=what)


def test_mnist_sized_mlp_fits_predicts_saves_and_loads_like_numpy(cupy_backend, dtype,
                                                                  tmp_path):
    X = RNG.uniform(size=(48, 784))
    y = RNG.integers(0, 10, size=48)
    results = {}
    for backend in (nb.get_backend("numpy"), cupy_backend):
        model = nb.MLP([784, 512, 10], activation="relu", output="softmax", backend=backend,
                       dtype=dtype, seed=0)
        initial = model.predict(X)
        history = model.fit(X, y, loss="crossentropy", optimizer=nb.SGD(lr=0.05, momentum=0.9),
                            epochs=4, batch_size=16, seed=1)
        results[backend.name] = (model, initial, np.array(history.loss), model.predict(X))
    numpy_model, *expected = results["numpy"]
    cupy_model, *got = results["cupy"]
    close_to(got[0], expected[0], PARITY_RTOL[dtype], "predictions before training")
    close_to(got[1], expected[1], TRAINING_RTOL, "loss per epoch")
    close_to(got[2], expected[2], TRAINING_RTOL, "predictions after training")
    path = tmp_path / "model.nnb"
    cupy_model.save(path)
    for name in ("numpy", "cupy"):
        loaded = nb.load(path, backend=name)
        assert loaded.backend.name == name
        close_to(loaded.predict(X), got[2], PARITY_RTOL[dtype], f"loaded on {name}")


def test_generic_backend_runs_over_the_cupy_module(cupy_backend, dtype):
    """The reference the fused paths are compared with: Backend over CuPy through
    array-api-compat (CuPy takes no device= and has no astype function before 14)."""
    generic = Backend(cupy_backend.module)
    host = RNG.normal(size=(5, 3))
    array = generic.asarray(host, dtype)
    assert generic.is_array(array) and cupy_backend.is_array(array)
    np.testing.assert_array_equal(generic.to_numpy(array), host.astype(dtype))
    np.testing.assert_array_equal(generic.to_numpy(generic.copy(array)), host.astype(dtype))
    other = "float64" if dtype == "float32" else "float32"
    assert generic.dtype_name(generic.astype(array, other).dtype) == other
    assert generic.to_numpy(generic.zeros((2, 3), dtype)).sum() == 0
    assert tuple(generic.empty((4,), dtype).shape) == (4,)
    model = nb.MLP([3, 4, 2], backend=generic, dtype=dtype, seed=0)
    reference = nb.MLP([3, 4, 2], backend="numpy", dtype=dtype, seed=0)
    close_to(model.predict(host), reference.predict(host), PARITY_RTOL[dtype], "generic cupy")


def test_cupy_arrays_given_to_a_numpy_model_get_a_clear_error(cupy_backend):
    model = nb.MLP([3, 4, 2], backend="numpy", seed=0)
    X = cupy_backend.asarray(RNG.normal(size=(5, 3)))
    with pytest.raises(TypeError, match="X is an array of cupy but the model runs on the numpy"):
        model.predict(X)
    with pytest.raises(TypeError, match="is an array of cupy"):
        model.set_weights([X] * 4)


def one_step_setup(cupy_backend, optimizer, batch=32):
    model = nb.MLP([20, 64, 32, 5], activation="relu", output="softmax", backend=cupy_backend,
                   seed=0)
    loss = nb.SoftmaxCrossEntropy()
    x = cupy_backend.asarray(RNG.normal(size=(batch, 20)), "float32")
    target = loss.prepare_target(cupy_backend, RNG.integers(0, 5, size=batch), (batch, 5),
                                 "float32")
    return model, lambda: Trainer(model, loss, optimizer).step(x, target)


OPTIMIZERS = [nb.SGD(lr=0.1), nb.SGD(lr=0.1, momentum=0.9), nb.Adam(lr=0.01)]


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=repr)
def test_a_warm_training_step_moves_nothing_to_the_host(standin, cupy_backend, optimizer):
    model, step = one_step_setup(cupy_backend, optimizer)
    step()
    step()
    with standin.counting() as counts:
        for _ in range(5):
            step()
    assert counts.device_to_host == 0 and counts.host_to_device == 0


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=repr)
def test_a_warm_training_step_allocates_nothing_of_a_hidden_layer_size(standin, cupy_backend,
                                                                       optimizer):
    """After the first steps, the layers' outputs and gradients live in reused buffers and
    the parameters and gradients in their flat arrays. What a step still allocates are the
    loss value's temporaries, none larger than the output (batch, 5), and the softmax's
    (batch, 1) row maxima and sums: together less than one hidden activation."""
    batch = 32
    model, step = one_step_setup(cupy_backend, optimizer, batch)
    step()
    step()
    with standin.counting() as counts:
        step()
    output_bytes, hidden_bytes = batch * 5 * 4, batch * 32 * 4  # float32
    assert counts.allocated_bytes <= counts.allocations * output_bytes, counts
    assert counts.allocated_bytes < hidden_bytes, counts
    assert counts.allocations <= MAX_ALLOCATIONS_PER_STEP, counts


# What a warm step on the stand-in allocates (measured): 10 for the softmax cross-entropy's
# value (4 of the output's size, 3 rows, 3 scalars) and the softmax's 2 rows.
MAX_ALLOCATIONS_PER_STEP = 12


def test_fit_brings_the_loss_to_the_host_once_per_epoch(standin, cupy_backend):
    """X and y cross to the device once; each epoch's loss comes back together with the
    check that the weights are finite, in one transfer."""
    model = nb.MLP([20, 24, 5], activation="relu", output="softmax", backend=cupy_backend,
                   seed=0)
    X = RNG.normal(size=(64, 20))
    y = RNG.integers(0, 5, size=64)
    model.fit(X, y, loss="crossentropy", epochs=1, batch_size=16, seed=0)  # warm
    with standin.counting() as counts:
        model.fit(X, y, loss="crossentropy", epochs=3, batch_size=16, seed=0)
    assert counts.device_to_host == 3, counts
    # X, y (one-hot) and each epoch's permutation of the rows
    assert counts.host_to_device == 2 + 3, counts


def test_the_flat_gradient_array_is_kept_from_step_to_step(cupy_backend):
    model, step = one_step_setup(cupy_backend, nb.SGD(lr=0.1, momentum=0.9))
    step()
    params, grads = model.trainable_arrays()
    held = [layer.dW for layer in model.dense_layers] + [layer.db for layer in model.dense_layers]
    for _ in range(3):
        step()
        again_params, again_grads = model.trainable_arrays()
        assert again_params.flat is params.flat and again_grads.flat is grads.flat
    assert all(a is b for a, b in zip(
        held, [layer.dW for layer in model.dense_layers] + [layer.db for layer in
                                                             model.dense_layers]))
