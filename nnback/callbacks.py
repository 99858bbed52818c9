"""Callbacks of ``Sequential.fit(..., callbacks=[...])``: objects told when a fit begins,
after each epoch and when it ends (Keras's idea), with scikit-learn's stopping rule.

A callback defines any of ``on_fit_begin(model, has_validation)`` (before the first epoch:
check settings here, so that a bad one fails before any training),
``on_epoch_end(model, epoch, history)`` (True stops the fit after this epoch) and
``on_fit_end(model)`` (after the last epoch, when the fit ends without an error).
:class:`Callback` is a base with all three doing nothing.
"""
from .training import Checkpoint, NoImprovement
from .validation import check_bool, check_fraction, check_positive_int, check_writable

MONITORED = ("loss", "val_loss")


class Callback:
    """A callback that does nothing; subclasses override what they need."""

    def on_fit_begin(self, model, has_validation):
        pass

    def on_epoch_end(self, model, epoch, history):
        return False

    def on_fit_end(self, model):
        pass


def _monitored(callback, monitor, has_validation):
    """The History list a callback follows: ``monitor`` ("loss" or "val_loss"; None picks
    "val_loss" when fit has validation_data, else "loss")."""
    if monitor is None:
        return "val_loss" if has_validation else "loss"
    if monitor not in MONITORED:
        raise ValueError(f"{type(callback).__name__}: unknown monitor {monitor!r}; valid "
                         "names: 'loss', 'val_loss' (or None: 'val_loss' with validation_data, "
                         "else 'loss')")
    if monitor == "val_loss" and not has_validation:
        raise ValueError(f"{type(callback).__name__}(monitor='val_loss') needs validation_data "
                         "in fit; pass validation_data=(X_val, y_val) or monitor='loss'")
    return monitor


class EarlyStopping(Callback):
    """Stop when the monitored loss has not improved for a while, and go back to the best
    epoch's weights (scikit-learn's early_stopping, on a loss).

    An epoch improves when its loss is below the best so far minus ``tol``; the fit stops
    after more than ``n_iter_no_change`` epochs in a row without improvement, as
    scikit-learn counts them (n_iter_no_change=10 stops at the 11th such epoch; Keras's
    ``patience`` is n_iter_no_change + 1). restore_best_weights: when the fit ends, the model
    gets the weights of the epoch with the lowest loss. monitor: "val_loss", "loss", or None
    for "val_loss" when fit has validation_data and "loss" otherwise.

    After a fit: ``best_epoch``, ``best`` (its loss), ``stopped_epoch`` (None if the fit ran
    all its epochs) and ``monitor_`` (what was followed).
    """

    def __init__(self, monitor=None, n_iter_no_change=10, tol=1e-4,
                 restore_best_weights=True):
        self.monitor = monitor
        self.n_iter_no_change = check_positive_int("n_iter_no_change", n_iter_no_change)
        self.tol = check_fraction("tol", tol, high=float("inf"))
        self.restore_best_weights = check_bool("restore_best_weights", restore_best_weights)

    def on_fit_begin(self, model, has_validation):
        self.monitor_ = _monitored(self, self.monitor, has_validation)
        self.rule = NoImprovement(self.tol, self.n_iter_no_change)
        self.best_weights = Checkpoint(model.backend, model.trainable_arrays()[0]) \
            if self.restore_best_weights else None
        self.best_epoch = self.best = self.stopped_epoch = None

    def on_epoch_end(self, model, epoch, history):
        value = getattr(history, self.monitor_)[-1]
        if self.rule.update(-value):
            self.best_epoch, self.best = epoch, value
            if self.best_weights is not None:
                self.best_weights.save()
        if self.rule.stalled:
            self.stopped_epoch = epoch
            return True
        return False

    def on_fit_end(self, model):
        self.restore_best()

    def restore_best(self):
        """Put the best epoch's weights back (with restore_best_weights and after at least
        one epoch); returns the best epoch, or None."""
        if self.best_weights is not None and self.best_epoch is not None:
            self.best_weights.restore()
        return self.best_epoch


class ModelCheckpoint(Callback):
    """Save the model to ``path`` during the fit: after each epoch whose monitored loss is
    the lowest so far (save_best_only=True), or after every epoch. The file is written
    atomically (``model.save``), so an interrupted run leaves the last saved model whole;
    ``extra`` is saved with it (see nnback.io.save). The path's folder is checked when the
    fit begins. monitor: as for EarlyStopping. After a fit: ``saved_epoch`` (the epoch in
    the file, or None) and ``best``."""

    def __init__(self, path, monitor=None, save_best_only=True, extra=None):
        self.path = path
        self.monitor = monitor
        self.save_best_only = check_bool("save_best_only", save_best_only)
        self.extra = extra

    def on_fit_begin(self, model, has_validation):
        self.path = check_writable(self.path, "ModelCheckpoint path")
        self.monitor_ = _monitored(self, self.monitor, has_validation)
        self.saved_epoch = self.best = None

    def on_epoch_end(self, model, epoch, history):
        value = getattr(history, self.monitor_)[-1]
        if not self.save_best_only or self.best is None or value < self.best:
            model.save(self.path, extra=self.extra)
            self.saved_epoch = epoch
            self.best = value if self.best is None else min(self.best, value)
        return False


class CallbackList:
    """The callbacks of one fit, called in order: ``begin()`` before the first epoch,
    the instance itself after each epoch (the Trainer's end_of_epoch: True when any
    callback asks to stop; all are called), ``end()`` after the last."""

    def __init__(self, model, callbacks, has_validation):
        if callbacks is None:
            callbacks = ()
        if not isinstance(callbacks, (list, tuple)):
            raise TypeError("callbacks must be a list of callbacks (see nnback.Callback), "
                            f"got {type(callbacks).__name__}")
        for index, callback in enumerate(callbacks):
            if not any(callable(getattr(callback, name, None)) for name in
                       ("on_fit_begin", "on_epoch_end", "on_fit_end")):
                raise TypeError(f"callbacks[{index}] ({type(callback).__name__}) is not a "
                                "callback: it has none of on_fit_begin, on_epoch_end, "
                                "on_fit_end (see nnback.Callback)")
        self.model, self.has_validation = model, has_validation
        self.begins, self.epoch_ends, self.ends = (
            [getattr(callback, name) for callback in callbacks
             if callable(getattr(callback, name, None))]
            for name in ("on_fit_begin", "on_epoch_end", "on_fit_end"))

    def begin(self):
        for method in self.begins:
            method(self.model, self.has_validation)
        return self if self.begins or self.epoch_ends or self.ends else None

    def __call__(self, epoch, history):
        stops = [bool(method(self.model, epoch, history)) for method in self.epoch_ends]
        return any(stops)

    def end(self):
        for method in self.ends:
            method(self.model)
