"""Losses: each has ``forward(pred, target)`` (a 0-d backend array) and, right below it,
``backward(pred, target)`` (dLoss/dpred, the shape of pred).

pred: (n_samples, n_outputs). target: the shape of pred; a 1-output model also takes
(n_samples,). SoftmaxCrossEntropy also takes integer class labels of shape (n_samples,).

The public ``forward``/``backward`` check the target (shape, values) and bring it to the
backend; models do that once per fit with ``prepare_target`` and then call ``value`` and
``gradient``, which assume a prepared target.

Sample weights: ``value`` and ``gradient`` take ``weights``, None or per-row weights of
shape (n_samples, 1) that average 1 (the training loop normalises a batch's sample weights
so). Each row's terms are multiplied by its weight: a mean over rows becomes scikit-learn's
weighted average Σ w_i L_i / Σ w_i.
"""
import math

from .layers import Exp, Sigmoid, Softmax
from . import validation


class Loss:
    """Base class. ``output_activation``: the output layer class (Sigmoid, Softmax) whose
    backward this loss folds into one stable expression (``gradient_through_activation``;
    it was called ``fused_activation``, a name now kept for the Dense layers that a backend
    fuses with their activation). ``reduction``: "mean" when the loss averages over the
    batch, "sum" when it adds up (data-parallel training weights the ranks' gradients by
    it). ``gradient_is_scaled_difference``: the gradient is (pred − target) ·
    gradient_scale(pred), which a backend computes in one pass."""

    reduction = "mean"
    output_activation = None
    gradient_is_scaled_difference = False
    target_kind = "values"  # "values", "probabilities" (in [0, 1]) or "classes"
    pred_kind = "values"  # "values" or "probabilities" (in [0, 1])

    def prepare_target(self, backend, target, pred_shape, dtype):
        """``target`` checked against ``pred_shape`` and moved to ``backend`` as ``dtype``:
        an array of shape ``pred_shape``. Raises ValueError naming both shapes."""
        return validation.prepare_target(backend, target, pred_shape, dtype, self)

    def _checked(self, pred, target):
        """(xp, target prepared for pred) after checking both (ValueError/TypeError)."""
        backend = validation.prepare_prediction(pred, self)
        target = self.prepare_target(backend, target, tuple(pred.shape),
                                     backend.dtype_name(pred.dtype))
        return backend.xp, target

    def forward(self, pred, target):
        xp, target = self._checked(pred, target)
        return self.value(xp, pred, target)

    def backward(self, pred, target):
        xp, target = self._checked(pred, target)
        return self.gradient(xp, pred, target)

    def __call__(self, pred, target):
        return self.forward(pred, target)

    def value(self, xp, pred, target, weights=None):
        raise NotImplementedError

    def gradient(self, xp, pred, target, weights=None):
        raise NotImplementedError

    def gradient_scale(self, output):
        """c where the gradient is (output − target)·c: with respect to the logits z when
        the output activation is folded in (output = activation(z)), else with respect
        to the prediction (for a loss whose gradient_is_scaled_difference)."""
        raise NotImplementedError

    def folds(self, last_layer):
        """Whether this loss folds ``last_layer`` (a model's output layer) into its
        gradient, so that backpropagation starts below it."""
        return self.output_activation is not None and type(last_layer) is self.output_activation

    def reads_logits(self, last_layer):
        """Whether this loss takes the input of ``last_layer`` (the logits of a folded
        Softmax) rather than the model's output."""
        return getattr(self, "takes_logits", False) and self.folds(last_layer)

    def gradient_through_activation(self, xp, output, target, weights=None):
        """dL/dz where output = output_activation(z): (output − target) · gradient_scale. A
        model computes it as ``backend.scaled_difference`` (one kernel on cupy); a loss
        changes it through ``gradient_scale``."""
        return (output - target) * _weighted(self.gradient_scale(output), weights)

    def __repr__(self):
        return f"{type(self).__name__}()"


class MSE(Loss):
    """L = mean((pred − target)²) over all elements."""

    gradient_is_scaled_difference = True

    def value(self, xp, pred, target, weights=None):
        error = pred - target  # the mean as numpy.mean computes it: a sum, then a division
        return xp.sum(_weighted(error * error, weights)) / _size(pred)

    def gradient(self, xp, pred, target, weights=None):
        return (pred - target) * _weighted(self.gradient_scale(pred), weights)

    def gradient_scale(self, pred):
        """dL/dpred = 2 (pred − target) / n_elements."""
        return 2.0 / _size(pred)


class SSE(Loss):
    """L = ½ Σ (pred − target)², the classic tutorial loss (its gradient is pred − target)."""

    reduction = "sum"
    gradient_is_scaled_difference = True

    def value(self, xp, pred, target, weights=None):
        error = pred - target
        return 0.5 * xp.sum(_weighted(error * error, weights))

    def gradient(self, xp, pred, target, weights=None):
        return _weighted(pred - target, weights)

    def gradient_scale(self, pred):
        return 1.0


class HalfSquaredError(MSE):
    """scikit-learn's squared_error for MLPRegressor. Its value is ½·mean((pred − target)²)
    over all elements (what loss_ reports); the gradient it trains with is
    (pred − target)/n_samples, the gradient of ½·Σ(pred − target)²/n_samples. The two agree
    for one output and differ by the factor n_outputs for several; both are kept as
    scikit-learn has them so that loss_curve_ and tol mean the same."""

    def value(self, xp, pred, target, weights=None):
        return 0.5 * super().value(xp, pred, target, weights)

    def gradient_scale(self, pred):
        return 1.0 / pred.shape[0]


class BinaryCrossEntropy(Loss):
    """L = −mean(t·log p + (1 − t)·log(1 − p)) over all elements; pred p are probabilities
    (a sigmoid output), clipped to [eps, 1 − eps] so the log stays finite. Targets in [0, 1].
    After a Sigmoid output layer the gradient with respect to the logits is (p − t)/n."""

    output_activation = Sigmoid
    target_kind = "probabilities"
    pred_kind = "probabilities"

    def value(self, xp, pred, target, weights=None):
        p = _clip_probability(xp, pred)
        terms = target * xp.log(p) + (1.0 - target) * xp.log(1.0 - p)
        return -xp.sum(_weighted(terms, weights)) / _size(pred)

    def gradient(self, xp, pred, target, weights=None):
        p = _clip_probability(xp, pred)
        return _weighted((p - target) / (p * (1.0 - p) * _size(pred)), weights)

    def gradient_scale(self, output):
        """dL/dz where output = sigmoid(z) is (output − target) / n_elements."""
        return 1.0 / _size(output)


class BinaryLogLoss(BinaryCrossEntropy):
    """scikit-learn's binary_log_loss for MLPClassifier: the cross-entropy summed over the
    outputs (labels) and averaged over samples, so that each label of a multilabel problem
    weighs as one binary problem. After the Sigmoid output the gradient is
    (p − t)/n_samples."""

    def value(self, xp, pred, target, weights=None):
        return super().value(xp, pred, target, weights) * pred.shape[1]

    def gradient(self, xp, pred, target, weights=None):
        return super().gradient(xp, pred, target, weights) * pred.shape[1]

    def gradient_scale(self, output):
        return 1.0 / output.shape[0]


class SoftmaxCrossEntropy(Loss):
    """Cross-entropy of softmax(logits) against one-hot or probability targets (or integer
    labels), averaged over samples: L = −(1/n) Σ_i Σ_k t_ik log softmax(z)_ik.

    pred are the logits z: (n_samples, n_classes). The log-softmax is computed shifted by the
    row maximum (stable for any logits) and the gradient is the fused (softmax(z) − t)/n. A
    model whose last layer is Softmax passes that layer's input (the logits) to this loss."""

    output_activation = Softmax
    takes_logits = True
    target_kind = "classes"

    def value(self, xp, pred, target, weights=None):
        shifted = pred - xp.max(pred, axis=1, keepdims=True)
        log_softmax = shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
        return -xp.sum(_weighted(target * log_softmax, weights)) / pred.shape[0]

    def gradient(self, xp, pred, target, weights=None):
        shifted = xp.exp(pred - xp.max(pred, axis=1, keepdims=True))
        softmax = shifted / xp.sum(shifted, axis=1, keepdims=True)
        return self.gradient_through_activation(xp, softmax, target, weights)

    def gradient_scale(self, output):
        """dL/dz where output = softmax(z) is (output − target) / n_samples."""
        return 1.0 / output.shape[0]


class PoissonDeviance(Loss):
    """Half the Poisson deviance, scikit-learn's loss="poisson" for MLPRegressor: for counts
    or rates t ≥ 0 and predicted means p > 0 (an Exp output),
    L = (1/n) Σ_i Σ_k (t log(t/p) − t + p), with t log(t/p) = 0 where t = 0. After an Exp
    output layer (p = e^z) the gradient with respect to z is (p − t)/n_samples."""

    output_activation = Exp
    target_kind = "counts"

    def value(self, xp, pred, target, weights=None):
        positive = xp.where(target > 0, target, 1.0)  # t log t is 0 where t = 0
        terms = target * (xp.log(positive) - xp.log(pred)) - target + pred
        return xp.sum(_weighted(terms, weights)) / pred.shape[0]

    def gradient(self, xp, pred, target, weights=None):
        return _weighted((1.0 - target / pred) / pred.shape[0], weights)

    def gradient_scale(self, output):
        """dL/dz where output = exp(z) is (output − target) / n_samples."""
        return 1.0 / output.shape[0]


LOSSES = {
    "mse": MSE,
    "sse": SSE,
    "binary_crossentropy": BinaryCrossEntropy,
    "bce": BinaryCrossEntropy,
    "softmax_crossentropy": SoftmaxCrossEntropy,
    "crossentropy": SoftmaxCrossEntropy,
    "half_squared_error": HalfSquaredError,
    "binary_log_loss": BinaryLogLoss,
    "poisson": PoissonDeviance,
}


_NAMED = {}  # name as given -> its Loss: the built-in losses keep no state, so one serves


def get_loss(loss):
    """A Loss from an instance, a class or a name ("mse", "sse", "bce", "crossentropy")."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, type) and issubclass(loss, Loss):
        return loss()
    if isinstance(loss, str):
        named = _NAMED.get(loss)
        if named is None and loss.strip().lower() in LOSSES:
            named = _NAMED.setdefault(loss, LOSSES[loss.strip().lower()]())
        if named is not None:
            return named
    raise ValueError(f"unknown loss {loss!r}; valid names: {', '.join(LOSSES)}")


def _weighted(terms, weights):
    """``terms`` with each row multiplied by its weight (weights: None or (n_samples, 1))."""
    return terms if weights is None else terms * weights


def _size(array):
    return math.prod(array.shape)


def _clip_probability(xp, p):
    eps = float(xp.finfo(p.dtype).eps)
    return xp.clip(p, eps, 1.0 - eps)
