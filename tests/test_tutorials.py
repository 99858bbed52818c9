"""Each classic from-scratch tutorial network, with the numbers the tutorials print.
The networks are the ones `python -m nnback demo` trains (nnback/demo.py)."""
import numpy as np
import pytest

import nnback as nb
from nnback import datasets, demo

# sigmoid(0·2 + 1·3 + 4) = sigmoid(7), as printed by the single-neuron tutorial
NEURON_OUTPUT = 0.9990889488055994
# the 2-2-1 network, every neuron with w = [0, 1] and b = 0, on [2, 3]
NETWORK_221_OUTPUT = 0.7216325609518421


def test_single_neuron(backend):
    assert demo.single_neuron(backend)["output"] == pytest.approx(NEURON_OUTPUT, rel=1e-15)


def test_221_network_with_fixed_weights(backend):
    model = nb.MLP([2, 2, 1], backend=backend, dtype="float64")
    model.set_weights([np.array([[0.0, 0.0], [1.0, 1.0]]), np.zeros(2),
                       np.array([[0.0], [1.0]]), np.zeros(1)])
    assert model.predict(np.array([2.0, 3.0]))[0] == pytest.approx(NETWORK_221_OUTPUT, rel=1e-15)


@pytest.mark.parametrize("hidden", [2, 3])
def test_xor_is_learnt(backend, hidden):
    result = demo.xor(backend, hidden=hidden, seed=0)
    _, y = datasets.xor()
    np.testing.assert_array_equal(result["predictions"].round(), y.ravel())
    assert np.all(np.abs(result["predictions"] - y.ravel()) < 0.1)


def test_hours_studied_network_fits_the_three_scores(backend):
    result = demo.hours_studied(backend)
    _, y, _ = datasets.hours_studied(scaled=False)
    assert np.all(np.abs(result["scores"] - y.ravel()) < 2.5)  # within 2.5 of 92, 86, 89
    assert 80 < result["new_student"] < 100


def test_weight_height_network_separates_the_four_people(backend):
    result = demo.weight_height(backend)
    _, y, _ = datasets.weight_height()
    np.testing.assert_array_equal(result["predictions"].round(), y.ravel())
    assert result["new"]["Emily"] > 0.9 and result["new"]["Frank"] < 0.1


def test_demo_prints_the_backend_and_every_network(capsys):
    demo.run("numpy")
    out = capsys.readouterr().out
    assert "numpy backend" in out and f"{NEURON_OUTPUT:.16f}" in out
    for word in ("XOR", "test scores", "Emily", "Frank"):
        assert word in out
