import numpy as np
import pytest

import nnback as nb
from nnback.optim import get_optimizer

RNG = np.random.default_rng(0)
START = RNG.normal(size=(3, 2))
GRADS = [RNG.normal(size=(3, 2)) for _ in range(5)]


def run(backend, optimizer):
    """Apply the five GRADS to a copy of START on ``backend``; returns the host result."""
    param = backend.asarray(START.copy(), "float64")  # asarray may share memory on numpy
    for grad in GRADS:
        optimizer.step([param], [backend.asarray(grad, "float64")])
    return backend.to_numpy(param)


def reference_sgd(lr, momentum, nesterov):
    param, velocity = START.copy(), np.zeros_like(START)
    for grad in GRADS:
        velocity = momentum * velocity + grad
        param = param - lr * ((grad + momentum * velocity) if nesterov else velocity)
    return param


def reference_adam(lr, beta1, beta2, eps):
    param, m, v = START.copy(), np.zeros_like(START), np.zeros_like(START)
    for t, grad in enumerate(GRADS, start=1):
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad ** 2
        m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
        param = param - lr * m_hat / (np.sqrt(v_hat) + eps)
    return param


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_matches_its_update_rule(backend, momentum, nesterov):
    result = run(backend, nb.SGD(lr=0.1, momentum=momentum, nesterov=nesterov))
    np.testing.assert_allclose(result, reference_sgd(0.1, momentum, nesterov), rtol=1e-12)


def test_adam_matches_its_update_rule(backend):
    result = run(backend, nb.Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-7))
    np.testing.assert_allclose(result, reference_adam(0.01, 0.8, 0.99, 1e-7), rtol=1e-12)


@pytest.mark.parametrize("make", [
    lambda: (nb.SGD(lr=0.1, momentum=0.9, nesterov=True),
             lambda p, torch: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True)),
    lambda: (nb.Adam(lr=0.01), lambda p, torch: torch.optim.Adam(p, lr=0.01)),
], ids=["sgd-nesterov", "adam"])
def test_optimizers_match_pytorch(make):
    torch = pytest.importorskip("torch")
    ours, theirs = make()
    param = torch.tensor(START, requires_grad=True)
    optimizer = theirs([param], torch)
    for grad in GRADS:
        param.grad = torch.tensor(grad)
        optimizer.step()
    np.testing.assert_allclose(run(nb.get_backend("numpy"), ours), param.detach().numpy(),
                               rtol=1e-12)


@pytest.mark.parametrize("make, message", [
    (lambda: nb.SGD(lr=0), "lr must be a positive finite number"),
    (lambda: nb.SGD(lr=-1), "lr must be a positive finite number"),
    (lambda: nb.SGD(momentum=1.5), r"momentum must be a number in \[0.0, 1.0\)"),
    (lambda: nb.SGD(nesterov=True), "nesterov=True needs momentum > 0"),
    (lambda: nb.Adam(betas=(0.9,)), "betas must be a pair"),
    (lambda: nb.Adam(eps=0), "eps must be a positive finite number"),
])
def test_optimizer_rejects_bad_settings(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_optimizer_by_name_takes_the_learning_rate():
    optimizer = get_optimizer("adam", lr=0.5)
    assert isinstance(optimizer, nb.Adam) and optimizer.lr == 0.5
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'.*sgd, adam"):
        get_optimizer("rmsprop")
