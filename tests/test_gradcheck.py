import numpy as np

import nnback as nb
from nnback.layers import Tanh

from conftest import GRADCHECK_MAX

RNG = np.random.default_rng(0)


class WrongTanh(Tanh):
    """A deliberately broken backward pass (forgets the square)."""

    def backward(self, grad_y):
        return grad_y * (1.0 - self.y)


def test_gradcheck_passes_a_correct_network(backend):
    model = nb.MLP([3, 4, 4, 2], activation="tanh", output="identity", backend=backend, seed=0)
    X, y = RNG.normal(size=(5, 3)), RNG.normal(size=(5, 2))
    error, details = nb.gradcheck(model, X, y, "mse", details=True)
    assert error < GRADCHECK_MAX
    assert set(details) == {f"{p} of Dense layer {n}" for n in (1, 2, 3) for p in "Wb"}


def test_gradcheck_catches_a_wrong_backward(backend):
    model = nb.Sequential([nb.Dense(3, 4), WrongTanh(), nb.Dense(4, 1)], backend=backend, seed=0)
    error = nb.gradcheck(model, RNG.normal(size=(5, 3)), RNG.normal(size=(5, 1)), "mse")
    assert error > 1e-2


def test_gradcheck_leaves_a_float32_model_unchanged(backend):
    model = nb.MLP([2, 3, 1], backend=backend, seed=0)
    before = model.get_weights()
    assert nb.gradcheck(model, RNG.normal(size=(4, 2)), RNG.uniform(size=(4, 1)), "mse") \
        < GRADCHECK_MAX
    assert model.dtype == "float32"
    for got, expected in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, expected)
