import numpy as np
import pytest

import nnback as nb
from nnback.losses import get_loss
from nnback.training import Trainer

from conftest import GRADCHECK_MAX

RNG = np.random.default_rng(0)
PRED = RNG.uniform(0.05, 0.95, size=(4, 3))  # valid probabilities, also fine as logits
ONE_HOT = np.eye(3)[[0, 2, 1, 2]]


def closed_form(loss, pred, target):
    if isinstance(loss, nb.MSE):
        return np.mean((pred - target) ** 2)
    if isinstance(loss, nb.SSE):
        return 0.5 * np.sum((pred - target) ** 2)
    if isinstance(loss, nb.BinaryCrossEntropy):
        return -np.mean(target * np.log(pred) + (1 - target) * np.log(1 - pred))
    log_softmax = pred - np.log(np.exp(pred).sum(axis=1, keepdims=True))
    return -np.sum(target * log_softmax) / pred.shape[0]


LOSSES = [nb.MSE(), nb.SSE(), nb.BinaryCrossEntropy(), nb.SoftmaxCrossEntropy()]


@pytest.mark.parametrize("loss", LOSSES, ids=lambda loss: type(loss).__name__)
def test_loss_value_matches_closed_form(backend, loss):
    value = loss.forward(backend.asarray(PRED, "float64"), ONE_HOT)
    assert tuple(value.shape) == ()
    assert float(backend.to_numpy(value)) == pytest.approx(closed_form(loss, PRED, ONE_HOT),
                                                           rel=1e-12)


@pytest.mark.parametrize("loss", LOSSES, ids=lambda loss: type(loss).__name__)
def test_loss_backward_matches_central_differences(backend, loss):
    eps = 1e-6
    numeric = np.zeros_like(PRED)
    for index in np.ndindex(PRED.shape):
        upper, lower = PRED.copy(), PRED.copy()
        upper[index] += eps
        lower[index] -= eps
        numeric[index] = (closed_form(loss, upper, ONE_HOT) -
                          closed_form(loss, lower, ONE_HOT)) / (2 * eps)
    analytic = backend.to_numpy(loss.backward(backend.asarray(PRED, "float64"), ONE_HOT))
    error = np.linalg.norm(analytic - numeric) / (np.linalg.norm(analytic) +
                                                  np.linalg.norm(numeric))
    assert error < GRADCHECK_MAX


@pytest.mark.parametrize("loss, output", [("mse", "identity"), ("sse", "tanh"),
                                          ("bce", "sigmoid"), ("crossentropy", "softmax"),
                                          ("crossentropy", "identity")])
def test_loss_in_a_model_passes_gradcheck(backend, loss, output):
    # sigmoid+bce and softmax+crossentropy take the fused gradient path
    model = nb.MLP([3, 4, 3], activation="tanh", output=output, backend=backend, seed=2)
    target = ONE_HOT if loss in ("bce", "crossentropy") else RNG.normal(size=(4, 3))
    assert nb.gradcheck(model, RNG.normal(size=(4, 3)), target, loss) < GRADCHECK_MAX


def test_softmax_crossentropy_takes_labels_or_one_hot(backend):
    logits = backend.asarray(RNG.normal(size=(4, 3)), "float64")
    loss = nb.SoftmaxCrossEntropy()
    labels = np.array([0, 2, 1, 2])
    assert float(backend.to_numpy(loss.forward(logits, labels))) == pytest.approx(
        float(backend.to_numpy(loss.forward(logits, ONE_HOT))), rel=1e-14)
    np.testing.assert_allclose(backend.to_numpy(loss.backward(logits, labels)),
                               backend.to_numpy(loss.backward(logits, ONE_HOT)), rtol=1e-14)


def test_softmax_crossentropy_is_stable_for_huge_logits(backend):
    logits = backend.asarray(np.array([[1000.0, -1000.0], [-1000.0, 1000.0]]), "float64")
    loss = nb.SoftmaxCrossEntropy()
    assert float(backend.to_numpy(loss.forward(logits, np.array([0, 1])))) == 0.0
    assert float(backend.to_numpy(loss.forward(logits, np.array([1, 0])))) == pytest.approx(2000)


def test_fused_sigmoid_bce_gradient_equals_the_chain_rule(backend):
    model = nb.MLP([3, 2], output="sigmoid", backend=backend, dtype="float64", seed=0)
    X, y = RNG.normal(size=(5, 3)), RNG.integers(0, 2, size=(5, 2)).astype(float)
    loss = nb.BinaryCrossEntropy()
    out = model.forward(X)
    unfused = backend.to_numpy(model.backward(loss.backward(out, y)))
    x = backend.asarray(X, "float64")
    target = loss.prepare_target(backend, y, (5, 2), "float64")
    _, grad_x = Trainer(model, loss).compute_gradients(x, target, need_input_grad=True)
    fused = backend.to_numpy(grad_x)
    np.testing.assert_allclose(fused, unfused, rtol=1e-10)


def test_target_with_other_rows_is_an_error_not_a_broadcast(backend):
    pred = backend.asarray(np.zeros((4, 1)), "float64")
    with pytest.raises(ValueError, match=r"y has shape \(3, 1\) but the model's output has "
                                         r"shape \(4, 1\).*3 rows but X has 4"):
        nb.MSE().forward(pred, np.zeros((3, 1)))


def test_one_output_takes_a_1d_target(backend):
    pred = backend.asarray(np.array([[0.5], [1.0]]), "float64")
    assert float(backend.to_numpy(nb.SSE().forward(pred, np.array([0.0, 1.0])))) == 0.125


def test_multi_output_rejects_a_1d_target(backend):
    pred = backend.asarray(np.zeros((4, 2)), "float64")
    with pytest.raises(ValueError, match=r"shape \(4,\) but the model's output has shape"):
        nb.MSE().forward(pred, np.zeros(4))


def test_bce_rejects_targets_outside_0_1(backend):
    pred = backend.asarray(np.full((2, 1), 0.5), "float64")
    with pytest.raises(ValueError, match=r"targets in \[0, 1\].*from -1.0 to 1.0"):
        nb.BinaryCrossEntropy().forward(pred, np.array([[-1.0], [1.0]]))


def test_crossentropy_rejects_out_of_range_labels(backend):
    logits = backend.asarray(np.zeros((2, 3)), "float64")
    with pytest.raises(ValueError, match=r"must be in \[0, 2\].*from 0 to 3"):
        nb.SoftmaxCrossEntropy().forward(logits, np.array([0, 3]))


def test_bce_is_finite_for_saturated_probabilities(backend):
    pred = backend.asarray(np.array([[0.0], [1.0]]), "float64")
    value = float(backend.to_numpy(nb.BinaryCrossEntropy().forward(pred, np.array([1.0, 0.0]))))
    assert np.isfinite(value) and value > 30  # clipped at machine epsilon: −log(2.2e-16) ≈ 36


@pytest.mark.parametrize("name, cls", [("mse", nb.MSE), ("sse", nb.SSE),
                                       ("bce", nb.BinaryCrossEntropy),
                                       ("crossentropy", nb.SoftmaxCrossEntropy)])
def test_loss_by_name(name, cls):
    assert type(get_loss(name)) is cls


def test_unknown_loss_lists_valid_names():
    with pytest.raises(ValueError, match="unknown loss 'hinge'.*mse"):
        get_loss("hinge")
