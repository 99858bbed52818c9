"""Who may use a model at a time, when several threads share it.

A model's weights change only while it trains, and its layers keep the state of the last
forward pass (what backward reads) only while it trains or is driven by hand
(``forward``/``backward``). Predictions read nothing but the weights, each into buffers
of its own thread. So:

- any number of threads may predict at once (``predict``, ``evaluate``,
  ``forward(training=False)``, the estimators' predict methods);
- one thread at a time may train (``fit``, ``train_step``, ``partial_fit``): a second one
  is refused with RuntimeError, and predictions from other threads are refused while it
  runs (they would read weights half-way through an update); training waits for the
  predictions already in flight;
- ``forward``/``backward`` by hand take turns: a call waits for another thread's call to
  end, and is refused while another thread trains.

This module imports nothing of nnback.
"""
import functools
import threading

# what a thread may be doing with a model, as named in the errors
TRAINING = frozenset({"fit", "partial_fit", "train_step"})


class ModelGuard:
    """The rules above for one model (or estimator). Cheap when uncontended: one lock taken
    on the way in and one on the way out."""

    def __init__(self):
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified when a thread leaves
        self._owner = None  # the thread training or driving forward/backward
        self._what = None  # what the owner runs (a name of TRAINING, "forward", "backward")
        self._depth = 0  # nested entries of the owner
        self._readers = {}  # thread -> predictions in flight
        self._waiting = 0  # threads waiting on _changed (notified only when some do)

    def begin(self, what):
        """Enter ``what`` (fit, train_step, partial_fit, forward, backward) in this thread;
        RuntimeError where another thread trains (or, for a training, drives the model by
        hand); waits where another thread is in forward/backward, and, for a training,
        until other threads' predictions in flight are done. Pair with ``end``."""
        me = threading.get_ident()
        with self._lock:
            while self._owner not in (None, me):
                if what in TRAINING or self._what in TRAINING:
                    raise self._refusal(what)
                self._wait()
            if self._owner is None:
                self._owner, self._what = me, what
            self._depth += 1
            if what in TRAINING:
                # claimed first, so that new predictions are refused from here on; then
                # the ones in flight finish
                while self._readers and (len(self._readers) > 1 or me not in self._readers):
                    self._wait()

    def end(self):
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                self._owner = self._what = None
                if self._waiting:
                    self._changed.notify_all()

    def begin_prediction(self, what):
        """Enter a prediction in this thread; RuntimeError where another thread trains."""
        me = threading.get_ident()
        with self._lock:
            if self._owner is not None and self._owner != me and self._what in TRAINING:
                raise self._refusal(what)
            self._readers[me] = self._readers.get(me, 0) + 1

    def end_prediction(self):
        me = threading.get_ident()
        with self._lock:
            left = self._readers.pop(me) - 1
            if left:
                self._readers[me] = left
            elif self._owner is not None and self._waiting:  # a training may wait for it
                self._changed.notify_all()

    def _wait(self):
        """Wait (holding the lock) until another thread leaves."""
        self._waiting += 1
        try:
            self._changed.wait()
        finally:
            self._waiting -= 1

    def _refusal(self, what):
        return RuntimeError(
            f"this model is being trained in another thread ({self._what} is running there), "
            f"so {what} was refused: a model trains in one thread at a time, and predicts "
            "only between trainings. Wait for that call to return, or train a separate "
            "model per thread (copy.deepcopy(model), or nb.load of a saved file)")


def training(what, guard_of):
    """Decorator: the method trains (or drives forward/backward by hand) as ``what``, under
    ``guard_of(self)``'s rules: one thread at a time."""
    return _guarded(what, guard_of, prediction=False)


def predicting(what, guard_of):
    """Decorator: the method only predicts, as ``what``: any number of threads at once,
    none while another thread trains (``guard_of(self)``)."""
    return _guarded(what, guard_of, prediction=True)


def _guarded(what, guard_of, prediction):
    def decorate(method):
        @functools.wraps(method)
        def guarded(self, *args, **kwargs):
            guard = guard_of(self)
            if prediction:
                guard.begin_prediction(what)
            else:
                guard.begin(what)
            try:
                return method(self, *args, **kwargs)
            finally:
                if prediction:
                    guard.end_prediction()
                else:
                    guard.end()
        return guarded
    return decorate
