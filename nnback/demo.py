"""The tutorial networks, trained on one backend, with what they predict (``python -m
nnback demo``). Each function trains (or sets) one network and returns a dict of its
results (the trained ``model``, its ``history``, ``loss``, ``predictions``, ...); ``run``
prints them. docs/tutorial.md rebuilds every one of them by hand and checks that it gets
the same numbers as these functions, and docs/plot_loss_curves.py plots their histories.
"""
import time

import numpy

from . import datasets
from .layers import Dense, Sigmoid
from .model import MLP, Sequential


def single_neuron(backend="auto"):
    """The sigmoid neuron with w = [0, 1], b = 4 on input [2, 3]: sigmoid(7)."""
    neuron = MLP([2, 1], output="sigmoid", backend=backend, dtype="float64")
    neuron.set_weights([numpy.array([[0.0], [1.0]]), numpy.array([4.0])])
    return {"output": float(neuron.predict([2.0, 3.0])[0])}


def neuron_network(backend="auto"):
    """Two hidden sigmoid neurons and an output neuron, each with w = [0, 1] and b = 0, on
    input [2, 3]: both hidden neurons give sigmoid(3), the output sigmoid(sigmoid(3))."""
    network = MLP([2, 2, 1], output="sigmoid", backend=backend, dtype="float64")
    network.set_weights([numpy.array([[0.0, 0.0], [1.0, 1.0]]), numpy.zeros(2),
                         numpy.array([[0.0], [1.0]]), numpy.zeros(1)])
    return {"output": float(network.predict([2.0, 3.0])[0])}


def _trained(model, X, y, **fit_options):
    history = model.fit(X, y, **fit_options)
    return {"model": model, "history": history, "loss": history.loss[-1],
            "predictions": model.predict(X).ravel()}


def _xor(backend, layer_sizes, bias, init, loss, lr, epochs, seed, dtype):
    X, y = datasets.xor()
    model = MLP(layer_sizes, activation="sigmoid", output="sigmoid", bias=bias, init=init,
                backend=backend, seed=seed, dtype=dtype)
    return _trained(model, X, y, loss=loss, optimizer="sgd", lr=lr, epochs=epochs)


def xor(backend="auto", hidden=3, seed=0, epochs=2000, dtype="float32"):
    """A 2-hidden-1 sigmoid network learning XOR with plain SGD on the MSE loss (lr 2)."""
    return _xor(backend, [2, hidden, 1], True, "auto", "mse", 2.0, epochs, seed, dtype)


def xor_without_biases(backend="auto", seed=0, epochs=5000, lr=1.0, dtype="float32"):
    """The classic 2-2-1 XOR network without biases: standard normal initial weights, full
    batch gradient descent on the ½·sum-of-squares loss (nb.SSE)."""
    return _xor(backend, [2, 2, 1], False, "normal", "sse", lr, epochs, seed, dtype)


def xor_with_biases(backend="auto", seed=0, epochs=10000, lr=0.1, dtype="float32"):
    """The classic 2-3-1 XOR network with biases at learning rate 0.1: standard normal
    initial weights and biases, full-batch gradient descent on nb.SSE. At this learning
    rate it sits near 0.5 for the first thousand epochs and needs thousands more."""
    return _xor(backend, [2, 3, 1], True, "normal", "sse", lr, epochs, seed, dtype)


def hours_studied(backend="auto", seed=0, epochs=2000, dtype="float32"):
    """The 2-3-1 network predicting test scores from hours studied and slept."""
    X, y, x_new = datasets.hours_studied()
    model = MLP([2, 3, 1], activation="sigmoid", output="sigmoid", bias=False,
                backend=backend, seed=seed, init="normal", dtype=dtype)
    result = _trained(model, X, y, loss="sse", lr=1.0, epochs=epochs)
    result["scores"] = 100 * result["predictions"]
    result["new_student"] = 100 * float(model.predict(x_new)[0])
    return result


def weight_height(backend="auto", seed=0, epochs=1000, batch_size=1, dtype="float32"):
    """The 2-2-1 network separating four people by weight and height (MSE, lr 0.1),
    trained per sample (batch_size=1, the default) or on all four at once
    (batch_size=None); ``new`` holds what it says of Emily and Frank."""
    X, y, new_people = datasets.weight_height()
    model = Sequential([Dense(2, 2, init="normal"), Sigmoid(), Dense(2, 1, init="normal"),
                        Sigmoid()], backend=backend, seed=seed, dtype=dtype)
    result = _trained(model, X, y, loss="mse", lr=0.1, epochs=epochs, batch_size=batch_size,
                      seed=seed)
    result["new"] = {name: float(model.predict(x)[0]) for name, x in new_people.items()}
    return result


def _xor_line(title, result):
    return f"  {title}: " + "  ".join(
        f"{a:.0f} xor {b:.0f} -> {p:.3f}" for (a, b), p in
        zip(datasets.xor()[0], result["predictions"]))


def _people_line(title, result):
    return (f"  {title}: " + ", ".join(
        f"{name} {p:.3f}" for name, p in zip(datasets.PEOPLE, result["predictions"])) +
        "; new: " + ", ".join(f"{name} {p:.3f}" for name, p in result["new"].items()) +
        " (1 = female)")


def run(backend="auto", out=print):
    """Train every tutorial network on ``backend`` and print what they predict."""
    from .backend import get_backend

    backend = get_backend(backend)
    out(f"nnback demo on the {backend.name} backend ({backend.device_name()})")
    started = time.perf_counter()
    out(f"  sigmoid neuron w=[0, 1], b=4 on [2, 3]: {single_neuron(backend)['output']:.16f}")
    out("  2-2-1 network, every w=[0, 1], b=0, on [2, 3]: "
        f"{neuron_network(backend)['output']:.16f}")
    out(_xor_line("XOR, 2-2-1 net without biases, SSE", xor_without_biases(backend)))
    out(_xor_line("XOR, 2-3-1 net with biases, lr 0.1", xor_with_biases(backend)))
    out(_xor_line("XOR, 2-3-1 sigmoid net, lr 2", xor(backend)))
    result = hours_studied(backend)
    out("  test scores, 2-3-1 net: predicted " + ", ".join(
        f"{score:.1f}" for score in result["scores"]) + " for 92, 86, 89; new student (4 h "
        f"studied, 8 h slept): {result['new_student']:.1f}")
    out(_people_line("weight/height, 2-2-1 net, full batch",
                     weight_height(backend, batch_size=None)))
    out(_people_line("weight/height, 2-2-1 net, per-sample SGD", weight_height(backend)))
    out(f"trained in {time.perf_counter() - started:.2f} s")
