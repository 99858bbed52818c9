import math

import numpy as np
import pytest

import nnback as nb
from nnback.layers import ACTIVATIONS, activation_layer

from conftest import GRADCHECK_MAX

ACTIVATION_CLASSES = [nb.Sigmoid, nb.Tanh, nb.ReLU, nb.LeakyReLU, nb.Softmax, nb.Identity]

# Closed forms on the host, per element (Softmax per row), for checking forward passes.
REFERENCE = {
    nb.Sigmoid: lambda x: 1 / (1 + np.exp(-x)),
    nb.Tanh: np.tanh,
    nb.ReLU: lambda x: np.maximum(x, 0),
    nb.LeakyReLU: lambda x: np.where(x > 0, x, 0.01 * x),
    nb.Softmax: lambda x: np.exp(x) / np.exp(x).sum(axis=1, keepdims=True),
    nb.Identity: lambda x: x,
}


def built(layer, backend, dtype="float64"):
    layer.build(backend, dtype, backend.host_rng(0))
    return layer


@pytest.mark.parametrize("activation", ACTIVATION_CLASSES)
def test_activation_forward_matches_closed_form(backend, activation):
    x = np.linspace(-3, 3, 12).reshape(3, 4)
    layer = built(activation(), backend)
    y = backend.to_numpy(layer.forward(backend.asarray(x, "float64")))
    np.testing.assert_allclose(y, REFERENCE[activation](x), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("activation", [nb.Sigmoid, nb.Softmax, nb.Tanh])
def test_activation_is_finite_at_plus_minus_1000(backend, dtype, activation):
    x = backend.asarray(np.array([[-1000.0, 1000.0, 0.0], [1000.0, 1000.0, -1000.0]]), dtype)
    layer = built(activation(), backend, dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        y = backend.to_numpy(layer.forward(x))
        grad = backend.to_numpy(layer.backward(backend.asarray(np.ones((2, 3)), dtype)))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(grad))
    if activation is nb.Sigmoid:
        np.testing.assert_array_equal(y[0], [0.0, 1.0, 0.5])
    if activation is nb.Softmax:
        np.testing.assert_allclose(y, [[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]])


@pytest.mark.parametrize("activation", ACTIVATION_CLASSES)
def test_activation_backward_passes_gradcheck(backend, activation):
    # Dense -> activation -> Dense, so both the activation's and its neighbours' gradients
    # are checked; inputs are kept away from ReLU's kink at 0.
    model = nb.Sequential([nb.Dense(3, 4), activation(), nb.Dense(4, 2)], backend=backend,
                          dtype="float64", seed=3)
    X = np.random.default_rng(0).normal(size=(5, 3))
    y = np.random.default_rng(1).normal(size=(5, 2))
    assert nb.gradcheck(model, X, y, nb.MSE(), check_input=True) < GRADCHECK_MAX


def test_softmax_output_layer_alone_passes_gradcheck(backend):
    # Softmax as the last layer with MSE: its own Jacobian-vector product is checked
    model = nb.Sequential([nb.Dense(3, 4), nb.Softmax()], backend=backend, seed=0)
    X = np.random.default_rng(0).normal(size=(6, 3))
    y = np.random.default_rng(1).uniform(size=(6, 4))
    assert nb.gradcheck(model, X, y, "mse", check_input=True) < GRADCHECK_MAX


def test_dense_forward_is_x_at_w_plus_b(backend, dtype):
    rng = np.random.default_rng(0)
    layer = built(nb.Dense(3, 2), backend, dtype)
    W, b, x = rng.normal(size=(3, 2)), rng.normal(size=2), rng.normal(size=(4, 3))
    layer.set_parameters([backend.asarray(W, dtype), backend.asarray(b, dtype)])
    y = backend.to_numpy(layer.forward(backend.asarray(x, dtype)))
    rtol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(y, x @ W + b, rtol=rtol, atol=rtol)


def test_dense_backward_gives_closed_form_gradients(backend):
    rng = np.random.default_rng(0)
    layer = built(nb.Dense(3, 2), backend)
    W, x, grad_y = rng.normal(size=(3, 2)), rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    layer.set_parameters([backend.asarray(W, "float64"), backend.asarray(np.zeros(2), "float64")])
    layer.forward(backend.asarray(x, "float64"))
    grad_x = backend.to_numpy(layer.backward(backend.asarray(grad_y, "float64")))
    np.testing.assert_allclose(backend.to_numpy(layer.dW), x.T @ grad_y, rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(layer.db), grad_y.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(grad_x, grad_y @ W.T, rtol=1e-12)


def test_dense_without_bias_has_only_w(backend):
    layer = built(nb.Dense(3, 2, bias=False), backend)
    assert len(layer.parameters()) == 1 and tuple(layer.W.shape) == (3, 2)


@pytest.mark.parametrize("n_in, n_out", [(0, 2), (2, -1), (2.5, 3), (True, 2)])
def test_dense_rejects_sizes_that_are_not_positive_integers(n_in, n_out):
    with pytest.raises(ValueError, match="Dense n_(in|out) must be a positive integer"):
        nb.Dense(n_in, n_out)


@pytest.mark.parametrize("init", ["glorot_uniform", "he_uniform"])
def test_uniform_inits_stay_within_their_limit(backend, init):
    layer = nb.Dense(200, 100, init=init)
    layer.build(backend, "float64", backend.host_rng(0))
    fan_sum = 300 if init == "glorot_uniform" else 200
    limit = math.sqrt(6 / fan_sum)
    weights = backend.to_numpy(layer.W)
    assert np.abs(weights).max() <= limit
    assert np.abs(weights).max() > 0.9 * limit  # actually spread out to the limit
    assert np.all(backend.to_numpy(layer.b) == 0)


def test_normal_init_draws_standard_normal_weights_and_biases(backend):
    layer = nb.Dense(300, 200, init="normal")
    layer.build(backend, "float64", backend.host_rng(0))
    weights = backend.to_numpy(layer.W)
    assert abs(weights.std() - 1) < 0.02 and abs(weights.mean()) < 0.02
    assert backend.to_numpy(layer.b).std() > 0.5


def test_unknown_init_lists_valid_names():
    with pytest.raises(ValueError, match="unknown init 'orthogonal'.*glorot_uniform"):
        nb.Dense(2, 2, init="orthogonal")


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_by_name_gives_the_class(name):
    assert type(activation_layer(name)) is ACTIVATIONS[name]


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError, match="unknown activation 'swish'.*sigmoid.*relu"):
        activation_layer("swish")


def test_leaky_relu_rejects_a_negative_slope_outside_0_1():
    with pytest.raises(ValueError, match="negative_slope"):
        nb.LeakyReLU(negative_slope=-0.5)
