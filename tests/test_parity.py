"""Backends agree: the same weights give the same forward/backward results on every backend
(1e-5 relative in float32, 1e-12 in float64), and 100 SGD steps keep the loss within 1e-4.
NumPy is the reference, compared with every other backend (array_api_strict, PyTorch where
installed, and cupy: real CuPy on a GPU, the CuPy stand-in elsewhere)."""
import numpy as np
import pytest

import nnback as nb

from conftest import PARITY_RTOL, TRAINING_RTOL, assert_close

RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 6))
Y_REGRESSION = RNG.normal(size=(32, 3))
Y_LABELS = RNG.integers(0, 3, size=32)

NETWORKS = {
    "sigmoid-mse": (dict(activation="sigmoid", output="sigmoid"), "mse", Y_REGRESSION * 0 + 0.5),
    "tanh-sse": (dict(activation="tanh", output="identity"), "sse", Y_REGRESSION),
    "relu-crossentropy": (dict(activation="relu", output="softmax"), "crossentropy", Y_LABELS),
    "leaky-bce": (dict(activation="leaky_relu", output="sigmoid"), "bce",
                  (Y_REGRESSION > 0).astype(float)),
}


def forward_backward(backend, dtype, options, loss_name, target):
    model = nb.MLP([6, 16, 8, 3], backend=backend, dtype=dtype, seed=5, **options)
    loss = nb.losses.get_loss(loss_name)
    out = model.forward(X)
    value = loss.forward(out, target)
    grad_x = model.backward(loss.backward(out, target))
    return ([backend.to_numpy(out), backend.to_numpy(value), backend.to_numpy(grad_x)]
            + model.get_gradients())


@pytest.mark.parametrize("network", list(NETWORKS))
def test_forward_backward_agree_with_numpy(other_backend, dtype, network):
    backend = other_backend
    options, loss_name, target = NETWORKS[network]
    reference = forward_backward(nb.get_backend("numpy"), dtype, options, loss_name, target)
    results = forward_backward(backend, dtype, options, loss_name, target)
    names = ["output", "loss", "dX"] + [f"gradient {i}" for i in range(len(results) - 3)]
    for name, got, expected in zip(names, results, reference):
        scale = np.abs(expected).max()
        assert_close(got, expected, rtol=PARITY_RTOL[dtype], atol=PARITY_RTOL[dtype] * scale,
                     what=f"{network} {name} on {backend.name}")


def test_forward_backward_match_a_hand_written_numpy_network(backend):
    """An independent implementation of the tutorial formulas (not nnback's code)."""
    model = nb.MLP([6, 5, 3], activation="sigmoid", output="sigmoid", backend=backend,
                   dtype="float64", seed=1)
    W1, b1, W2, b2 = model.get_weights()
    sigmoid = lambda z: 1 / (1 + np.exp(-z))
    hidden = sigmoid(X @ W1 + b1)
    output = sigmoid(hidden @ W2 + b2)
    delta_out = (output - Y_REGRESSION) * output * (1 - output)   # SSE: dL/dout = out − y
    delta_hidden = delta_out @ W2.T * hidden * (1 - hidden)
    expected = [X.T @ delta_hidden, delta_hidden.sum(0), hidden.T @ delta_out, delta_out.sum(0)]
    out = model.forward(X)
    np.testing.assert_allclose(backend.to_numpy(out), output, rtol=1e-12)
    model.backward(nb.SSE().backward(out, Y_REGRESSION))
    for got, want in zip(model.get_gradients(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-10)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_100_training_steps_agree_with_numpy(other_backend, dtype, optimizer):
    def losses(on):
        model = nb.MLP([6, 16, 3], activation="tanh", output="softmax", backend=on,
                       dtype=dtype, seed=3)
        history = model.fit(X, Y_LABELS, loss="crossentropy", optimizer=optimizer,
                            lr=0.05 if optimizer == "sgd" else 0.01, epochs=25, batch_size=8,
                            seed=0)
        return np.array(history.loss), model.predict(X)

    reference_loss, reference_prediction = losses(nb.get_backend("numpy"))
    loss, prediction = losses(other_backend)
    assert_close(loss, reference_loss, rtol=TRAINING_RTOL, what="loss per epoch")
    assert_close(prediction, reference_prediction, rtol=TRAINING_RTOL, atol=TRAINING_RTOL,
                 what="predictions after training")


def test_save_load_round_trip_is_identical(backend, dtype, tmp_path):
    model = nb.MLP([6, 7, 3], activation="relu", output="softmax", backend=backend,
                   dtype=dtype, seed=0)
    model.fit(X, Y_LABELS, loss="crossentropy", lr=0.1, epochs=3, seed=0)
    path = tmp_path / "model.nnb"
    model.save(path)
    loaded = nb.load(path, backend=backend)
    assert type(loaded) is nb.MLP and loaded.dtype == dtype and loaded.backend is backend
    for got, expected in zip(loaded.get_weights(), model.get_weights()):
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


@pytest.mark.parametrize("source", ["numpy", "array_api_strict"])
def test_model_trained_on_one_backend_predicts_the_same_on_another(backend, source, tmp_path):
    from conftest import backend_or_skip

    trained_on = backend_or_skip(source)
    model = nb.Sequential([nb.Dense(6, 5), nb.LeakyReLU(0.1), nb.Dense(5, 3, bias=False),
                           nb.Tanh()], backend=trained_on, dtype="float64", seed=0)
    model.fit(X, np.tanh(Y_REGRESSION), lr=0.1, epochs=5, seed=0)
    path = tmp_path / "model.nnb"
    model.save(path)
    loaded = nb.load(path, backend=backend)
    assert type(loaded) is nb.Sequential and loaded.layers[1].negative_slope == 0.1
    np.testing.assert_allclose(loaded.predict(X), model.predict(X), rtol=PARITY_RTOL["float64"])
