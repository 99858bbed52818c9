"""Optimizers: ``step(params, grads)`` updates each parameter array in place.

params, grads: lists of backend arrays of matching shapes (a model's parameters() and
gradients()). State (velocities, moments) is created on the first step, one array per
parameter, on the parameters' backend. The update rules follow PyTorch's; the arithmetic
goes through the backend (``scaled_add``, ...), whose NumPy version allocates nothing.

When params and grads are :class:`FlatArrays` (views of one flat array each, as a model on
numpy passes them), the state is made the same way and every elementwise update runs once
over the flat arrays instead of once per parameter: the same numbers, fewer calls.
"""
import array_api_compat

from .backend import backend_of
from .flat import FlatArrays, flat_pieces, views_of
from .validation import check_fraction, check_positive_number


def _flat_if_all(*lists):
    """([flat], ...) for lists that all are FlatArrays (one update over each flat array),
    else the lists as they are."""
    for arrays in lists:
        if type(arrays) is not FlatArrays:
            return lists
    return tuple([arrays.flat] for arrays in lists)


def _zeros_like(arrays):
    """Zero arrays shaped like ``arrays``: FlatArrays over one zero flat array when they
    are FlatArrays."""
    if isinstance(arrays, FlatArrays):
        flat = arrays.flat
        return views_of(array_api_compat.array_namespace(flat).zeros_like(flat),
                        [array.shape for array in arrays])
    return [array_api_compat.array_namespace(array).zeros_like(array) for array in arrays]


class Optimizer:
    """Base class: holds the learning rate and per-parameter state."""

    def __init__(self, lr):
        self.lr = check_positive_number("lr", lr)
        self.state = None
        self.iterations = 0
        self.backend = None

    def step(self, params, grads):
        """Update ``params`` in place from ``grads``. The arithmetic goes through
        ``self.backend``: the Backend the arrays belong to, unless set before."""
        if self.state is None:
            self.state = self.initial_state(params)
        if self.backend is None and params:
            self.backend = backend_of(params[0])
        self.iterations += 1
        self.update(params, grads)

    def initial_state(self, params):
        return {}

    def update(self, params, grads):
        raise NotImplementedError

    def folded_scale(self):
        """A factor a model may fold into its loss gradient before backpropagating, when
        this optimizer's update is that multiple of the gradient: the model then computes
        the update itself and calls step_folded. None (the default): no such factor."""
        return None

    def step_folded(self, params, updates):
        """params += updates, in place: the step, given gradients computed with
        folded_scale() folded in."""
        if self.state is None:
            self.state = self.initial_state(params)
        self.iterations += 1
        if type(params) is FlatArrays and type(updates) is FlatArrays:
            params.flat += updates.flat
            return
        for param, update in zip(params, updates):
            param += update

    def iteration_ends(self, time_step):
        """Called after each epoch (scikit-learn's hook) with the samples seen so far; a
        learning-rate schedule changes lr here. Nothing by default."""

    def trigger_stopping(self, message, verbose=False):
        """Training has not improved for a while (``message`` says how): True to stop;
        an optimizer with an adaptive learning rate lowers it instead (scikit-learn's
        hook). Prints the decision when ``verbose``."""
        if verbose:
            print(message + " Stopping.")
        return True

    def reset(self):
        """Forget the state (velocities, moments, step count)."""
        self.state = None
        self.iterations = 0

    def state_arrays(self):
        """Every state array, for snapshots and restores (in a fixed order)."""
        if not self.state:
            return []
        return [array for name in sorted(self.state) for array in self.state[name]]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["backend"] = None  # found again from the arrays on the next step
        return state


class SGD(Optimizer):
    """Stochastic gradient descent, with optional (Nesterov) momentum.

    momentum = 0:  p ← p − lr·g
    momentum μ:    v ← μ·v + g;  p ← p − lr·v            (Nesterov: p ← p − lr·(g + μ·v))

    schedule: scikit-learn's learning-rate schedules, applied at its hooks
    (iteration_ends, trigger_stopping): "constant" (default); "invscaling": lr =
    lr₀ / (t + 1)^power_t after each epoch, t the samples seen; "adaptive": lr / 5 each
    time training stalls, stopping once it is at most 1e-6. A schedule keeps the step of
    scikit-learn's velocity (v ← μ·v − lr·g), in which the old rate stays: v is rescaled
    by old/new rate at each change.
    """

    SCHEDULES = ("constant", "invscaling", "adaptive")

    def __init__(self, lr=0.1, momentum=0.0, nesterov=False, schedule="constant",
                 power_t=0.5):
        super().__init__(lr)
        self.momentum = check_fraction("momentum", momentum)
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0 (with momentum 0 it is plain SGD)")
        self.nesterov = bool(nesterov)
        if schedule not in self.SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(self.SCHEDULES)}, got "
                             f"{schedule!r}")
        self.schedule = schedule
        self.initial_lr = self.lr
        self.power_t = check_fraction("power_t", power_t, high=float("inf"))

    def iteration_ends(self, time_step):
        if self.schedule == "invscaling":
            self._change_lr(self.initial_lr / (time_step + 1) ** self.power_t)

    def trigger_stopping(self, message, verbose=False):
        if self.schedule != "adaptive":
            return super().trigger_stopping(message, verbose)
        if self.lr <= 1e-6:
            if verbose:
                print(message + " Learning rate too small. Stopping.")
            return True
        self._change_lr(self.lr / 5.0)
        if verbose:
            print(message + f" Setting learning rate to {self.lr:f}")
        return False

    def _change_lr(self, lr):
        for velocity in flat_pieces(self.state["velocity"]) if self.state else ():
            velocity *= self.lr / lr
        self.lr = lr

    def initial_state(self, params):
        if self.momentum == 0:
            return {}
        return {"velocity": _zeros_like(params)}

    def folded_scale(self):
        # plain SGD is p ← p + (−lr)·g; not for a subclass with its own step or update
        if self.momentum == 0 and type(self)._plain_update:
            return -self.lr
        return None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._plain_update = cls.step is Optimizer.step and cls.update is SGD.update

    def update(self, params, grads):
        lr, momentum, backend = self.lr, self.momentum, self.backend
        if momentum == 0:
            if type(params) is FlatArrays and type(grads) is FlatArrays:
                backend.scaled_add(params.flat, grads.flat, -lr)
                return
            for param, grad in zip(params, grads):
                backend.scaled_add(param, grad, -lr)
            return
        for param, grad, velocity in zip(*_flat_if_all(params, grads, self.state["velocity"])):
            backend.momentum_step(param, grad, velocity, lr, momentum, self.nesterov)

    def __repr__(self):
        schedule = "" if self.schedule == "constant" else f", schedule={self.schedule!r}"
        return f"SGD(lr={self.lr}, momentum={self.momentum}, nesterov={self.nesterov}{schedule})"


SGD._plain_update = True


class Adam(Optimizer):
    """Adam (Kingma & Ba):
    m ← β₁·m + (1 − β₁)·g;  v ← β₂·v + (1 − β₂)·g²
    p ← p − lr · m̂ / (√v̂ + eps),  m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ)
    """

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(lr)
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        self.betas = (check_fraction("betas[0]", beta1), check_fraction("betas[1]", beta2))
        self.eps = check_positive_number("eps", eps)

    def initial_state(self, params):
        return {"m": _zeros_like(params), "v": _zeros_like(params)}

    def update(self, params, grads):
        beta1, beta2 = betas = self.betas
        t = self.iterations
        # the bias corrections fold into one step size: lr·√(1−β₂ᵗ)/(1−β₁ᵗ)
        step_size = self.lr * (1 - beta2 ** t) ** 0.5 / (1 - beta1 ** t)
        eps_hat = self.eps * (1 - beta2 ** t) ** 0.5
        backend = self.backend
        for param, grad, m, v in zip(*_flat_if_all(params, grads, self.state["m"],
                                                   self.state["v"])):
            backend.adam_step(param, grad, m, v, betas, step_size, eps_hat)

    def __repr__(self):
        return f"Adam(lr={self.lr}, betas={self.betas}, eps={self.eps})"


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def get_optimizer(optimizer, lr=None):
    """An Optimizer from an instance (returned as it is), a class or a name ("sgd", "adam");
    ``lr`` is passed on when a new one is made."""
    if isinstance(optimizer, Optimizer):
        if lr is not None:
            raise ValueError("lr is for an optimizer given by name; set the learning rate "
                             "on the optimizer you built (nb.SGD(lr=...))")
        return optimizer
    kwargs = {} if lr is None else {"lr": lr}
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        return optimizer(**kwargs)
    if isinstance(optimizer, str) and optimizer.strip().lower() in OPTIMIZERS:
        return OPTIMIZERS[optimizer.strip().lower()](**kwargs)
    raise ValueError(f"unknown optimizer {optimizer!r}; valid names: {', '.join(OPTIMIZERS)}")
