"""The one training loop. ``Sequential.fit``/``train_step``, the estimators' stochastic
solvers and L-BFGS, gradcheck and the benchmarks all train through :class:`Trainer`:

- ``compute_gradients``: forward, loss and backward on one prepared batch (plus the L2
  term), the gradients left in the model's layers;
- ``step``: that and the optimizer's update (plain SGD's −lr folded into the loss
  gradient, so that the backward pass computes the update itself);
- ``epoch``: the batches of one pass, in an order that can be injected;
- ``fit``: epochs under one guard (Ctrl-C stops between steps; a device error is
  explained), with one :class:`Checkpoint` restored when the loss diverges, a
  :class:`History`, and a hook after each epoch for stopping rules.

A model hands the Trainer its layers and its flat parameter and gradient arrays
(``model.trainable_arrays()``); a :class:`nnback.distributed.DataParallel` is handed in
explicitly. Arrays are the model's backend arrays; x: (n_samples, n_features), target:
(n_samples, n_outputs), prepared (checked and on the device) by the caller.
"""
import math
import signal
import sys
import threading

from .flat import flat_pieces
from .layers import Dense, backward_through, forward_through


class DivergenceError(FloatingPointError):
    """The training loss (or the weights) became NaN or infinite; the model holds the
    weights of the last finite epoch (``epoch`` and ``lr`` say where and with what learning
    rate; ``loss`` is the non-finite loss, or None where only the weights were)."""

    def __init__(self, message, epoch=None, lr=None, loss=None):
        super().__init__(message)
        self.epoch = epoch
        self.lr = lr
        self.loss = loss


class History:
    """What fit recorded, one entry per completed epoch (Keras's History).

    loss: mean training loss of each epoch (each mini-batch's loss weighted by its size).
    val_loss: loss on validation_data after each epoch (empty without validation data).
    """

    def __init__(self):
        self.loss = []
        self.val_loss = []
        self.epoch = []

    @property
    def history(self):
        """{"loss": [...], "val_loss": [...]} (Keras's History.history)."""
        record = {"loss": self.loss}
        if self.val_loss:
            record["val_loss"] = self.val_loss
        return record

    def __len__(self):
        return len(self.epoch)

    def __repr__(self):
        last = f", last loss {self.loss[-1]:.6g}" if self.loss else ""
        return f"<History: {len(self)} epochs{last}>"


class Checkpoint:
    """Device copies of ``params`` (and of ``optimizer``'s state and step count, when
    given) to go back to: ``save()`` overwrites the copies, ``restore()`` writes them
    back. Flat arrays are copied in one piece. backend: the arrays' Backend."""

    def __init__(self, backend, params, optimizer=None):
        self.backend = backend
        self.params = params
        self.optimizer = optimizer
        self.copies = None
        self.save()

    def _arrays(self):
        arrays = flat_pieces(self.params)
        if self.optimizer is not None and self.optimizer.state:
            state = self.optimizer.state
            arrays += [piece for name in sorted(state) for piece in flat_pieces(state[name])]
        return arrays

    def save(self):
        arrays = self._arrays()
        if self.copies is not None and len(self.copies) == len(arrays):
            for copy, array in zip(self.copies, arrays):
                copy[...] = array
        else:  # the first save, or the optimizer's state appeared since
            self.copies = [self.backend.copy(array) for array in arrays]
        if self.optimizer is not None:
            self.iterations = self.optimizer.iterations
            self.had_state = self.optimizer.state is not None
        return self

    def restore(self):
        if self.optimizer is not None:
            if not self.had_state:
                self.optimizer.reset()
            self.optimizer.iterations = self.iterations
        for array, copy in zip(self._arrays(), self.copies):
            array[...] = copy


def memory_estimate(model, batch_size, training=True):
    """Rough bytes a step of ``model`` on ``batch_size`` rows needs on the device: the
    parameters (with gradients and up to two optimizer state arrays when training) and
    every layer's output for the batch (with its gradient when training)."""
    itemsize = 4 if model.dtype == "float32" else 8
    n_params = sum(math.prod(param.shape) for param in model.parameters())
    widths = model.n_features_in + sum(layer.n_out for layer in model.dense_layers) * 2
    copies = 2 if training else 1
    return itemsize * (batch_size * widths * copies + n_params * (4 if training else 1))


class DeviceErrors:
    """Within the block, a backend's own error that it can explain (a GPU out of memory)
    comes out as the nnback error it translates to, naming the batch size and the memory
    the model needs for it (``memory_estimate``)."""

    def __init__(self, model, batch_size, training=True):
        self.model = model
        self.batch_size = batch_size
        self.training = training

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is None or not isinstance(error, Exception):
            return False
        translated = self.model.backend.translate_error(
            error, self.batch_size, memory_estimate(self.model, self.batch_size, self.training))
        if translated is None:
            return False
        raise translated from error


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a fit between two steps: the model holds the weights of the last
    step, and ``epochs_completed`` epochs of this fit had ended before it. A KeyboardInterrupt,
    so ``except KeyboardInterrupt`` catches it as before."""

    epochs_completed = 0


class DeferredInterrupt:
    """Within the block, a first Ctrl-C (SIGINT) sets a flag instead of raising at once, so
    that training stops between steps and never inside an in-place update. The block sees
    the flag as ``interrupted`` (a list that becomes non-empty); a Ctrl-C after the last step
    raises TrainingInterrupted on leaving. A second Ctrl-C raises KeyboardInterrupt at once,
    wherever the block is (the caller puts the weights back). Off the main thread signals
    cannot be caught; then it does nothing."""

    def __enter__(self):
        self.interrupted = []
        self.installed = threading.current_thread() is threading.main_thread()
        if self.installed:
            self.previous = signal.signal(signal.SIGINT, self._interrupt)
        return self.interrupted

    def _interrupt(self, signum, frame):
        self.interrupted.append(signum)
        if len(self.interrupted) > 1:
            raise KeyboardInterrupt

    def __exit__(self, kind, error, traceback):
        if self.installed:
            signal.signal(signal.SIGINT, self.previous)
        if self.interrupted and kind is None:
            raise TrainingInterrupted
        return False


def prediction_loss(model, x, target, loss, weights=None):
    """The loss of ``model`` on a prepared batch by the prediction path (nothing saved, any
    thread): a loss that takes logits (SoftmaxCrossEntropy after a Softmax) reads the
    output of the layers below the last. weights: None or sample weights (n, 1), for a
    weighted mean."""
    stop = len(model.layers) - 1 if loss.reads_logits(model.layers[-1]) else None
    pred = model.infer(x, stop=stop)
    if weights is None:
        return loss.value(model.xp, pred, target)
    return loss.value(model.xp, pred, target, row_weights(model.xp, weights)[0])


def row_weights(xp, weights):
    """(weights scaled to average 1 over their rows, their sum, whether it is positive): the
    form a loss takes them in. Weights that are all 0 stay 0 (nothing is divided by 0)."""
    total = xp.sum(weights)
    positive = total > 0
    safe = xp.where(positive, total, xp.ones_like(total))
    return weights * (weights.shape[0] / safe), safe, positive


class Trainer:
    """Trains ``model`` with ``loss`` (a Loss) and ``optimizer`` (an Optimizer, or None to
    only compute gradients), with the L2 penalty ``alpha`` on the weights as in
    scikit-learn (alpha/2·Σ‖W‖² divided by the batch rows), and ``parallel`` (a
    DataParallel attached to this fit, or None) sharding each batch and summing the
    ranks' gradients before the update."""

    def __init__(self, model, loss, optimizer=None, alpha=0.0, parallel=None):
        self.model = model
        self.backend = model.backend
        self.loss = loss
        self.optimizer = optimizer
        self.alpha = alpha
        self.parallel = parallel
        last = model.layers[-1]
        # a loss that folds the output activation's backward into its own (Sigmoid + BCE,
        # Softmax + cross-entropy) starts backpropagation below that layer
        self.folded = loss.folds(last)
        self.reads_logits = loss.reads_logits(last)
        self.layers = model.layers[:-1] if self.folded else model.layers
        self.batches = None
        model.trainable_arrays()  # the gradients get their flat array before the first pass

    # -- one batch --------------------------------------------------------------------------
    def compute_gradients(self, x, target, scale=1.0, need_input_grad=False, weights=None):
        """Forward, loss and backward on the batch: the layers' gradients become ``scale``
        times dLoss/dparameters (``model.gradient_scale`` records it; get_gradients
        divides it out). weights: None, or the batch's sample weights (n_rows, 1) on any
        scale: the loss becomes their weighted mean, as scikit-learn's (rows scaled by
        weight · n_rows / Σ weights), and the L2 term is divided by Σ weights instead of
        the row count; a batch whose weights are all 0 changes nothing. Returns (loss as
        a 0-d array, dLoss/dx or None)."""
        n_rows = x.shape[0]
        self.model.gradient_scale = scale
        if self.parallel is not None:
            x, target = self.parallel.shard(x, target)
        model, loss, xp = self.model, self.loss, self.model.xp
        l2 = self.alpha / n_rows
        if weights is not None:
            weights, l2 = self._normalised(weights)
        by_row = () if weights is None else (weights,)  # a loss of one's own may lack them
        out = forward_through(model.layers, x)
        if self.folded or loss.gradient_is_scaled_difference:
            last = model.layers[-1]
            value = loss.value(xp, last.x if self.reads_logits else out, target, *by_row)
            # (output − target) · scale: with respect to the logits when folded
            factor = loss.gradient_scale(out) * scale
            grad = self.backend.scaled_difference(
                out, target, factor if weights is None else weights * factor,
                out=last.buffer("grad_output", tuple(out.shape)))
        else:
            value = loss.value(xp, out, target, *by_row)
            grad = loss.gradient(xp, out, target, *by_row)
            grad = grad if scale == 1.0 else grad * scale
        grad_x = backward_through(self.layers, grad, need_input_grad)
        if self.parallel is not None:
            value = self.parallel.reduce(value, model.gradients())
        if self.alpha:
            value = value + self._add_l2(l2, scale)
        return value, grad_x

    def _normalised(self, weights):
        """(weights · n_rows / Σ weights, alpha / Σ weights), both 0 where Σ weights is 0."""
        xp = self.model.xp
        weights, total, positive = row_weights(xp, weights)
        return weights, xp.where(positive, self.alpha / total, xp.zeros_like(total))

    def _add_l2(self, alpha, scale):
        """dW += scale·alpha·W for the weights (not the biases); returns ½·alpha·Σ‖W‖²."""
        penalty = 0.0
        for layer in self.model.layers:
            if isinstance(layer, Dense):
                self.backend.scaled_add(layer.dW, layer.W, alpha * scale)
                penalty = penalty + self.model.xp.sum(layer.W * layer.W)
        return 0.5 * alpha * penalty

    def step(self, x, target, weights=None):
        """Train on one batch; returns the loss before the update (0-d array, no sync).

        An optimizer whose update is a fixed multiple of the gradient (plain SGD: −lr)
        has it folded into the loss gradient: everything backpropagated is linear in it,
        so the gradients computed are the update itself, added in one pass."""
        fold = self.optimizer.folded_scale()
        value, _ = self.compute_gradients(x, target, 1.0 if fold is None else fold,
                                          weights=weights)
        params, grads = self.model.trainable_arrays()
        if fold is None:
            self.optimizer.step(params, grads)
        else:
            self.optimizer.step_folded(params, grads)
        return value

    # -- epochs -----------------------------------------------------------------------------
    def epoch(self, x, target, batch_size, order=None, interrupted=(), weights=None):
        """One pass over (x, target) in batches of ``batch_size`` rows; returns
        Σ batch loss · batch rows as a 0-d array. order: None for the rows as they are, or
        an object whose ``permutation(n_samples)`` gives this epoch's host row order (a
        NumPy Generator; the estimators pass scikit-learn's). weights: None or sample
        weights (n_samples, 1), cut into batches alongside (see compute_gradients). Stops
        after the step in which ``interrupted`` became non-empty (TrainingInterrupted)."""
        n_samples = x.shape[0]
        rows = None
        if order is not None and batch_size < n_samples:
            rows = self.backend.asarray(order.permutation(n_samples))
        total = None
        for start in range(0, n_samples, batch_size):
            stop = min(start + batch_size, n_samples)
            batch = (x, target) if weights is None else (x, target, weights)
            if rows is not None:  # this batch's rows, gathered into arrays reused per batch
                batch = [self._gather(name, array, rows[start:stop])
                         for name, array in zip(("x", "target", "weights"), batch)]
            elif batch_size < n_samples:
                batch = [array[start:stop] if self.backend.is_sparse(array)
                         else array[start:stop, ...] for array in batch]
            weighted = self.step(*batch) * (stop - start)
            total = weighted if total is None else total + weighted
            if interrupted:
                raise TrainingInterrupted
        return total

    def _gather(self, name, array, rows):
        """array[rows] (rows: a backend integer array), in a buffer reused per batch shape
        (a sparse array gives a sparse batch of its own: no dense buffer of its width)."""
        if self.backend.is_sparse(array):
            return self.backend.take_rows(array, rows)
        if self.batches is None:
            self.batches = self.backend.buffers(self.model.dtype)
        out = self.batches.get(name, (rows.shape[0],) + tuple(array.shape[1:]))
        return self.backend.take_rows(array, rows, out=out)

    def _epoch_result(self, total, n_samples):
        """(mean loss of the epoch, whether the weights are finite): one transfer."""
        params = flat_pieces(self.model.trainable_arrays()[0])
        marker = self.backend.zero_if_finite(params[0])
        for array in params[1:]:
            marker = marker + self.backend.zero_if_finite(array)
        total, marker = self.backend.scalars_to_host(total, marker)
        return total / n_samples, marker == 0.0

    def fit(self, x, target, epochs, batch_size, order=None, validation=None,
            end_of_epoch=None, progress=None, history=None, sample_weight=None):
        """Train for up to ``epochs`` epochs; returns the History (``history`` if given,
        filled as epochs complete). validation: a prepared (x_val, target_val) or
        (x_val, target_val, weights_val) whose loss is recorded after each epoch.
        sample_weight: None or (n_samples, 1) weights of the rows (see compute_gradients).
        end_of_epoch(epoch, history): called after each epoch; True stops the fit.
        progress: a Progress, or None.

        If the loss or the weights become NaN or infinite, the weights (and optimizer
        state) of the last finite epoch are restored and DivergenceError is raised; any
        other error restores them too. A first Ctrl-C stops after the current step with a
        consistent model (TrainingInterrupted, whose ``epochs_completed`` History holds); a
        second one stops at once and restores the weights of the last completed epoch."""
        history = History() if history is None else history
        checkpoint = Checkpoint(self.backend, self.model.trainable_arrays()[0],
                                self.optimizer)
        progress = progress or Progress(epochs, False)
        completed = 0
        try:
            with DeferredInterrupt() as interrupted, progress, \
                    DeviceErrors(self.model, batch_size):
                for epoch in range(1, epochs + 1):
                    try:
                        loss, weights_finite, val_loss = self._one_epoch(
                            x, target, batch_size, order, interrupted, sample_weight,
                            validation)
                    except BaseException as error:  # an error, or a second Ctrl-C mid-step
                        if not isinstance(error, TrainingInterrupted):
                            checkpoint.restore()  # a first Ctrl-C keeps the last step
                        raise
                    # the loss is taken before each update: the epoch's last update can
                    # still make the weights infinite while the loss looks fine
                    loss_finite = math.isfinite(loss)
                    if not (loss_finite and weights_finite):
                        checkpoint.restore()
                        raise self._divergence(epoch, loss, loss_finite)
                    checkpoint.save()
                    completed = epoch
                    history.epoch.append(epoch)
                    history.loss.append(loss)
                    if val_loss is not None:
                        history.val_loss.append(val_loss)
                    progress.update(epoch, history)
                    if end_of_epoch is not None and end_of_epoch(epoch, history):
                        break
        except TrainingInterrupted as stop:
            stop.epochs_completed = completed
            raise
        return history

    def _one_epoch(self, x, target, batch_size, order, interrupted, weights, validation):
        """(mean training loss, whether the weights are finite, validation loss or None)."""
        total = self.epoch(x, target, batch_size, order, interrupted, weights)
        loss, weights_finite = self._epoch_result(total, x.shape[0])
        val_loss = None if validation is None else float(self.backend.to_numpy(
            prediction_loss(self.model, validation[0], validation[1], self.loss,
                            *validation[2:]))) + 0.0
        return loss + 0.0, weights_finite, val_loss  # + 0.0: a loss of -0.0 shows as 0

    def _divergence(self, epoch, loss, loss_finite):
        what = "the weights became NaN or infinite" if loss_finite \
            else f"the training loss became {loss}"
        restored = f"after epoch {epoch - 1}" if epoch > 1 else "from before this fit"
        lr = getattr(self.optimizer, "lr", None)
        return DivergenceError(
            f"{what} in epoch {epoch} with learning rate {lr}; the weights {restored} are "
            "restored. Lower the learning rate or scale the inputs (e.g. X / X.max(axis=0)).",
            epoch=epoch, lr=lr, loss=None if loss_finite else loss)


class NoImprovement:
    """scikit-learn's stopping rule. An epoch counts as no improvement when its value (higher
    is better: a validation score, or minus a loss) does not beat the best so far by more
    than ``tol``; the rule has ``stalled`` after more than ``n_iter_no_change`` such epochs
    in a row. ``count`` and ``best`` carry over from a previous fit (partial_fit)."""

    def __init__(self, tol, n_iter_no_change, count=0, best=-float("inf")):
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.count = count
        self.best = best

    def update(self, value):
        """Count the epoch's ``value``; returns whether it is the best so far (the
        weights to keep)."""
        self.count = self.count + 1 if value < self.best + self.tol else 0
        if value > self.best:
            self.best = value
            return True
        return False

    @property
    def stalled(self):
        return self.count > self.n_iter_no_change


class Progress:
    """verbose=1 (True): a tqdm bar over epochs when tqdm is installed, else one line per
    epoch; verbose=2: one line per epoch (for logs); 0 (False): nothing. Both go to
    standard error, so that standard output keeps only results
    (``python -m nnback train ... > summary.txt``)."""

    def __init__(self, epochs, verbose):
        self.epochs = epochs
        self.verbose = int(verbose)
        self.bar = None
        if self.verbose == 1:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=epochs, unit="epoch")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self.bar is not None:
            self.bar.close()

    def update(self, epoch, history):
        if not self.verbose:
            return
        values = {"loss": f"{history.loss[-1]:.6g}"}
        if history.val_loss:
            values["val_loss"] = f"{history.val_loss[-1]:.6g}"
        if self.bar is not None:
            self.bar.set_postfix(values, refresh=False)
            self.bar.update(1)
        else:
            text = " - ".join(f"{key} {value}" for key, value in values.items())
            print(f"epoch {epoch}/{self.epochs} - {text}", file=sys.stderr, flush=True)
