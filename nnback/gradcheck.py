"""gradcheck: backpropagation against central finite differences, in float64.

For every parameter element θ (and every input element when ``check_input``), the numeric
derivative is (L(θ + h) − L(θ − h)) / 2h; the analytic one comes from the model's backward
pass. The error of one array is the normwise relative error
    ‖analytic − numeric‖ / max(‖analytic‖ + ‖numeric‖, tiny)
and gradcheck returns the largest over all arrays. In float64 with h = 1e-6 a correct
backward pass gives about 1e-8 or less; 1e-6 is the usual bar.

The check runs on a float64 copy of the model on the model's own backend, so the backend's
backward pass is what gets checked. Costs two forward passes per element: for small models.
"""
import copy

import numpy

from .losses import get_loss
from .model import Sequential
from .training import Trainer, prediction_loss
from . import validation


def float64_copy(model):
    """A float64 Sequential with ``model``'s layers and weights, on ``model``'s backend."""
    layers = [copy.copy(layer) for layer in model.layers]  # custom layers too; rebuilt below
    clone = Sequential(layers, backend=model.backend, dtype="float64")
    clone.set_weights([weight.astype(numpy.float64) for weight in model.get_weights()])
    return clone


def _relative_error(analytic, numeric):
    difference = numpy.linalg.norm(analytic - numeric)
    scale = numpy.linalg.norm(analytic) + numpy.linalg.norm(numeric)
    return float(difference / max(scale, numpy.finfo(numpy.float64).tiny))


def gradcheck(model, X, y, loss="mse", eps=1e-6, check_input=False, details=False):
    """Max relative error between backprop and central differences (see module docstring).

    model: a Sequential/MLP (left unchanged). X: (n_samples, n_features). y: targets as
    for fit. loss: a Loss or its name. check_input: also compare dLoss/dX. details: return
    (max error, {name: error}) instead of the max alone.
    """
    loss = get_loss(loss)
    clone = float64_copy(model)
    backend = clone.backend
    host_x = validation.check_numeric(validation.to_host(backend, X, "X")[0], "X")
    x, _ = validation.prepare_input(backend, host_x, clone.n_features_in, "float64")
    target = loss.prepare_target(backend, y, (x.shape[0], clone.n_outputs), "float64")

    def loss_at(x_device):
        return float(backend.to_numpy(prediction_loss(clone, x_device, target, loss)))

    def loss_with_weights():
        clone.set_weights(weights)
        return loss_at(x)

    _, grad_x = Trainer(clone, loss).compute_gradients(x, target, need_input_grad=True)
    analytic = clone.get_gradients()
    weights = clone.get_weights()
    errors = {}
    for name, weight, weight_grad in zip(clone.parameter_names(), weights, analytic):
        errors[name] = _relative_error(weight_grad,
                                       _central_differences(weight, loss_with_weights, eps))
    if check_input:
        x_host = backend.to_numpy(x)
        numeric = _central_differences(
            x_host, lambda: loss_at(backend.asarray(x_host, "float64")), eps)
        errors["X"] = _relative_error(backend.to_numpy(grad_x), numeric)
    worst = max(errors.values()) if errors else 0.0
    return (worst, errors) if details else worst


def _central_differences(values, loss_of, eps):
    """dL/dvalues by central differences. ``values`` (a host array) is perturbed in place
    one element at a time and restored; ``loss_of()`` evaluates the loss as it stands."""
    numeric = numpy.zeros_like(values)
    for position in numpy.ndindex(values.shape):
        original = values[position]
        values[position] = original + eps
        upper = loss_of()
        values[position] = original - eps
        lower = loss_of()
        values[position] = original
        numeric[position] = (upper - lower) / (2 * eps)
    loss_of()  # leave the model as the restored values say
    return numeric
