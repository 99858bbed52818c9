import copy

import numpy as np
import pytest

import nnback as nb

RNG = np.random.default_rng(0)


def test_forward_returns_a_backend_array_of_output_shape(backend):
    model = nb.MLP([3, 5, 2], backend=backend, seed=0)
    out = model.forward(RNG.normal(size=(4, 3)))
    assert backend.is_array(out) and tuple(out.shape) == (4, 2)
    assert backend.dtype_name(out.dtype) == "float32"
    assert tuple(model(RNG.normal(size=(1, 3))).shape) == (1, 2)


def test_backward_returns_the_input_gradient(backend):
    model = nb.MLP([3, 5, 2], backend=backend, seed=0)
    out = model.forward(RNG.normal(size=(4, 3)))
    grad_x = model.backward(backend.xp.ones_like(out))
    assert tuple(grad_x.shape) == (4, 3)
    assert [g.shape for g in model.get_gradients()] == [w.shape for w in model.get_weights()]


def test_single_sample_goes_through_forward_backward_and_predict(backend):
    model = nb.MLP([3, 4, 2], backend=backend, seed=0)
    sample = RNG.normal(size=3)
    assert model.predict(sample).shape == (2,)
    out = model.forward(sample)
    assert tuple(out.shape) == (2,)
    assert tuple(model.backward(backend.xp.ones_like(out)).shape) == (3,)
    np.testing.assert_allclose(model.predict(sample), model.predict(sample[None, :])[0])


def test_predict_returns_host_numpy(backend):
    model = nb.MLP([2, 3, 1], backend=backend, seed=0)
    prediction = model.predict([[0.0, 1.0], [1.0, 1.0]])
    assert isinstance(prediction, np.ndarray) and prediction.shape == (2, 1)


def test_wrong_input_width_names_the_layer_and_both_shapes(backend):
    model = nb.MLP([2, 3, 1], backend=backend)
    with pytest.raises(ValueError, match=r"Dense layer 1 expects 2 features, got X with shape "
                                         r"\(4, 3\)"):
        model.predict(np.zeros((4, 3)))


def test_sequential_checks_that_dense_sizes_chain():
    with pytest.raises(ValueError, match="Dense layer 2 expects 4 inputs but Dense layer 1 "
                                         "gives 3"):
        nb.Sequential([nb.Dense(2, 3), nb.Sigmoid(), nb.Dense(4, 1)], backend="numpy")


def test_backward_rejects_a_gradient_of_the_wrong_shape(backend):
    model = nb.MLP([2, 3, 1], backend=backend)
    model.forward(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"grad_out has shape \(3, 1\).*\(4, 1\)"):
        model.backward(backend.asarray(np.zeros((3, 1)), "float32"))


def test_get_weights_order_and_shapes(backend):
    model = nb.MLP([2, 3, 1], backend=backend, seed=0)
    shapes = [w.shape for w in model.get_weights()]
    assert shapes == [(2, 3), (3,), (3, 1), (1,)]
    no_bias = nb.MLP([2, 3, 1], bias=False, backend=backend, seed=0)
    assert [w.shape for w in no_bias.get_weights()] == [(2, 3), (3, 1)]


def test_get_weights_are_copies(backend):
    model = nb.MLP([2, 3, 1], backend=backend, seed=0)
    weights = model.get_weights()
    weights[0][...] = 99.0
    assert not np.any(model.get_weights()[0] == 99.0)


def test_set_weights_round_trips_and_casts_to_the_model_dtype(backend):
    model = nb.MLP([2, 3, 1], backend=backend, seed=0)
    new = [RNG.normal(size=w.shape) for w in model.get_weights()]
    model.set_weights(new)
    for got, expected in zip(model.get_weights(), new):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected.astype(np.float32))


def test_set_weights_with_a_wrong_shape_changes_nothing(backend):
    model = nb.MLP([2, 3, 1], backend=backend, seed=0)
    before = model.get_weights()
    bad = [np.ones(w.shape) for w in before]
    bad[2] = np.ones((1, 3))
    with pytest.raises(ValueError, match=r"W of Dense layer 2 must have shape \(3, 1\), got "
                                         r"\(1, 3\)"):
        model.set_weights(bad)
    for got, expected in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="expects 4 arrays"):
        model.set_weights(before[:3])


def test_same_seed_gives_the_same_initial_weights_on_every_backend(other_backend):
    backend = other_backend
    reference = nb.MLP([4, 8, 3], activation="relu", backend="numpy", seed=42).get_weights()
    weights = nb.MLP([4, 8, 3], activation="relu", backend=backend, seed=42).get_weights()
    for got, expected in zip(weights, reference):
        np.testing.assert_array_equal(got, expected)
    other = nb.MLP([4, 8, 3], activation="relu", backend=backend, seed=43).get_weights()
    assert not np.array_equal(other[0], weights[0])


def test_fit_records_history_with_validation_loss(backend):
    X, y = nb.datasets.xor()
    model = nb.MLP([2, 4, 1], backend=backend, seed=0)
    history = model.fit(X, y, lr=1.0, epochs=20, batch_size=2, seed=0,
                        validation_data=(X, y))
    assert history is model.history and len(history) == 20
    assert history.epoch == list(range(1, 21))
    assert len(history.loss) == len(history.val_loss) == 20
    assert all(isinstance(value, float) for value in history.loss)
    assert set(history.history) == {"loss", "val_loss"}


def test_fit_lowers_the_loss_and_does_not_touch_the_inputs(backend):
    X, y = RNG.normal(size=(64, 3)), RNG.normal(size=(64, 2))
    X_before, y_before = X.copy(), y.copy()
    model = nb.MLP([3, 16, 2], activation="tanh", output="identity", backend=backend, seed=0)
    history = model.fit(X, y, optimizer="adam", lr=0.01, epochs=30, batch_size=16, seed=0)
    assert history.loss[-1] < 0.8 * history.loss[0]
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)


def test_fit_with_the_same_seed_is_reproducible(backend):
    X, y = RNG.normal(size=(32, 3)), RNG.normal(size=(32, 1))

    def train():
        model = nb.MLP([3, 5, 1], output="identity", backend=backend, seed=1)
        model.fit(X, y, lr=0.05, epochs=5, batch_size=8, seed=7)
        return model.get_weights()

    for first, second in zip(train(), train()):
        np.testing.assert_array_equal(first, second)


def test_last_partial_batch_is_used(backend):
    # 10 samples in batches of 4: 4 + 4 + 2; the epoch loss weighs each batch by its rows
    X, y = RNG.normal(size=(10, 2)), RNG.normal(size=(10, 1))
    model = nb.MLP([2, 1], output="identity", backend=backend, dtype="float64", seed=0)
    weights = model.get_weights()
    history = model.fit(X, y, optimizer=nb.SGD(lr=1e-12), epochs=1, batch_size=4,
                        shuffle=False)
    expected = np.mean((X @ weights[0] + weights[1] - y) ** 2)  # lr ~ 0: weights unchanged
    assert history.loss[0] == pytest.approx(expected, rel=1e-9)


def test_optimizer_instance_keeps_its_state_across_fits(backend):
    X, y = nb.datasets.xor()
    model = nb.MLP([2, 3, 1], backend=backend, seed=0)
    optimizer = nb.Adam(lr=0.01)
    model.fit(X, y, optimizer=optimizer, epochs=3)
    model.fit(X, y, optimizer=optimizer, epochs=2)
    assert optimizer.iterations == 5
    with pytest.raises(ValueError, match="lr is for an optimizer given by name"):
        model.fit(X, y, optimizer=optimizer, lr=0.1)


def test_train_step_follows_the_optimizer_loss_and_alpha_of_each_call():
    X, y = nb.datasets.xor()
    model, reference = (nb.MLP([2, 3, 1], dtype="float64", seed=0) for _ in range(2))
    slow, fast = nb.SGD(lr=0.1), nb.SGD(lr=0.5)
    calls = [(slow, "mse", 0.0), (fast, "mse", 0.0), (fast, "sse", 0.0), (fast, "sse", 0.1),
             (slow, "mse", 0.0)]
    for optimizer, loss, alpha in calls:
        model.train_step(X, y, loss, optimizer, alpha=alpha)
    for optimizer, loss, alpha in calls:  # a fresh model, each step by hand
        trainer = nb.training.Trainer(reference, nb.losses.get_loss(loss), optimizer, alpha)
        trainer.step(reference.backend.asarray(X), reference.backend.asarray(y))
    for got, expected in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    copied = copy.deepcopy(model)  # a copy trains its own arrays, not the original's
    copied.train_step(X, y, "mse", slow)
    assert not np.array_equal(copied.get_weights()[0], model.get_weights()[0])


def test_train_step_returns_the_loss_before_the_update(backend):
    X, y = nb.datasets.xor()
    model = nb.MLP([2, 3, 1], backend=backend, dtype="float64", seed=0)
    expected = model.evaluate(X, y, "mse")
    value = model.train_step(X, y, nb.MSE(), nb.SGD(lr=0.5))
    assert isinstance(value, float) and value == pytest.approx(expected, rel=1e-12)
    assert model.evaluate(X, y, "mse") < value


def test_l2_penalty_adds_alpha_w_over_batch_to_the_weight_gradients(backend):
    X, y = RNG.normal(size=(8, 2)), RNG.normal(size=(8, 1))
    model = nb.MLP([2, 1], output="identity", backend=backend, dtype="float64", seed=0)
    W, b = model.get_weights()
    alpha = 0.3
    value = model.train_step(X, y, "mse", nb.SGD(lr=1.0), alpha=alpha)
    residual = X @ W + b - y
    expected_loss = np.mean(residual ** 2) + 0.5 * alpha * np.sum(W ** 2) / 8
    assert value == pytest.approx(expected_loss, rel=1e-12)
    expected_W = W - (2 * X.T @ residual / 8 + alpha * W / 8)
    expected_b = b - 2 * residual.sum(axis=0) / 8  # biases are not penalised
    np.testing.assert_allclose(model.get_weights()[0], expected_W, rtol=1e-12)
    np.testing.assert_allclose(model.get_weights()[1], expected_b, rtol=1e-12)


def test_fit_with_an_absurd_learning_rate_raises_divergence_and_restores(backend):
    X, y = RNG.normal(size=(16, 2)) * 100, RNG.normal(size=(16, 1)) * 100
    model = nb.MLP([2, 8, 1], activation="relu", output="identity", backend=backend, seed=0)
    with pytest.raises(nb.DivergenceError, match=r"epoch \d+ with learning rate 1e\+?20") as info:
        model.fit(X, y, lr=1e20, epochs=50)
    assert info.value.lr == 1e20 and info.value.epoch >= 1
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
    assert len(model.history.loss) == info.value.epoch - 1


def test_verbose_prints_one_line_per_epoch_to_stderr_without_tqdm(backend, capsys,
                                                                  monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    X, y = nb.datasets.xor()
    nb.MLP([2, 2, 1], backend=backend, seed=0).fit(X, y, epochs=3, verbose=True,
                                                   validation_data=(X, y))
    printed = capsys.readouterr()
    lines = printed.err.strip().splitlines()
    assert printed.out == "" and len(lines) == 3 and lines[2].startswith("epoch 3/3 - loss ")
    assert "val_loss" in lines[0]


def test_verbose_shows_a_tqdm_bar_when_installed(capsys):
    pytest.importorskip("tqdm")
    X, y = nb.datasets.xor()
    nb.MLP([2, 2, 1], backend="numpy", seed=0).fit(X, y, epochs=3, verbose=True)
    assert "3/3" in capsys.readouterr().err


def test_verbose_2_prints_a_line_per_epoch_even_with_tqdm(capsys):
    pytest.importorskip("tqdm")  # Keras's verbose=2: lines for logs, never a bar
    X, y = nb.datasets.xor()
    nb.MLP([2, 2, 1], backend="numpy", seed=0).fit(X, y, epochs=3, verbose=2)
    printed = capsys.readouterr()
    assert [line.split(" - ")[0] for line in printed.err.splitlines()] == \
        ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert "3/3 [" not in printed.err and printed.out == ""


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"batch_size": -1}, "batch_size must be a positive integer"),
    ({"lr": 0.0}, "lr must be a positive finite number"),
    ({"loss": "hinge"}, "unknown loss 'hinge'"),
    ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'"),
    ({"validation_data": ([[0, 0]],)}, r"validation_data must be a pair"),
])
def test_fit_rejects_bad_arguments_and_changes_nothing(backend, kwargs, message):
    X, y = nb.datasets.xor()
    model = nb.MLP([2, 2, 1], backend=backend, seed=0)
    before = model.get_weights()
    with pytest.raises(ValueError, match=message):
        model.fit(X, y, **kwargs)
    for got, expected in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, expected)
    assert model.history is None


def test_fit_rejects_target_with_wrong_rows(backend):
    model = nb.MLP([2, 2, 1], backend=backend, seed=0)
    with pytest.raises(ValueError, match=r"y has shape \(3, 1\) but the model's output has "
                                         r"shape \(4, 1\)"):
        model.fit(np.zeros((4, 2)), np.zeros((3, 1)))


def test_mlp_rejects_bad_layer_sizes():
    with pytest.raises(ValueError, match=r"layer_sizes\[1\] must be a positive integer"):
        nb.MLP([2, 0, 1])
    with pytest.raises(ValueError, match="at least an input and an output"):
        nb.MLP([2])


def test_sequential_rejects_non_layers():
    with pytest.raises(TypeError, match="layer 1 must be an nnback layer"):
        nb.Sequential([nb.Dense(2, 2), "relu"])


def test_dtype_is_validated():
    with pytest.raises(ValueError, match="dtype must be one of float32, float64"):
        nb.MLP([2, 1], dtype="float16")


def test_float64_input_to_float32_model_is_cast_once(backend):
    model = nb.MLP([2, 1], backend=backend, seed=0)
    out = model.forward(np.ones((3, 2), dtype=np.float64))
    assert backend.dtype_name(out.dtype) == "float32"


def test_repr_names_layers_backend_and_dtype():
    text = repr(nb.MLP([2, 3, 1], backend="numpy"))
    assert text.startswith("MLP([Dense(n_in=2, n_out=3, bias=True), Sigmoid()")
    assert "backend='numpy'" in text and "dtype='float32'" in text
