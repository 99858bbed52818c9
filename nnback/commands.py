"""The ``train`` and ``predict`` commands: a network from a CSV file, and predictions for
another CSV file from the saved network (``python -m nnback train --help``).

CSV files have a header row of column names and one sample per row. Feature cells must be
numbers; the target column of ``train`` may hold numbers or class names. ``train`` decides
between classification and regression (``--task auto``): a target with text in it, or with
at most MAX_AUTO_CLASSES distinct whole numbers, is classified; anything else is regressed.

What ``predict`` needs besides the weights (the task, the column names, the class labels and
the scaling of inputs and targets) is saved inside the model file, in the ``extra``
metadata of nnback.io under the key "csv".

Problems with the user's files, columns or settings raise CommandError, whose message
``python -m nnback`` prints on one line before it exits with status 1. Reading the files,
missing values included, is nnback.csvtable's; a long run's early stopping, checkpoints and
Ctrl-C are the callbacks of nnback.callbacks and TrainingInterrupted.
"""
import argparse
import contextlib
import csv
import math
import sys

import numpy

from . import distributed
from .backend import VALID_DTYPES, get_backend
from .callbacks import Callback, EarlyStopping, ModelCheckpoint
from .csvtable import CommandError, counted, listed, names, read_csv
from .io import load, save
from .model import MLP
from .training import Checkpoint, TrainingInterrupted
from .validation import (check_fraction, check_positive_int, check_positive_number,
                         check_writable)

MAX_AUTO_CLASSES = 20
TASKS = ("auto", "classify", "regress")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "leaky_relu")


# -- the task and its targets -------------------------------------------------------------
def _as_number(cell):
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _label(cell):
    """A class label's canonical text: "1", "1.0" and " 1" are the same class "1"."""
    value = _as_number(cell)
    if value is not None and value == int(value):
        return str(int(value))
    return cell.strip()


def choose_task(task, cells):
    """"classify" or "regress" for target ``cells`` (strings) under --task ``task``."""
    if task != "auto":
        return task
    values = [_as_number(cell) for cell in cells]
    if any(value is None for value in values):
        return "classify"
    whole = all(value == int(value) for value in values)
    return "classify" if whole and len(set(values)) <= MAX_AUTO_CLASSES else "regress"


def class_labels(cells):
    """(sorted class labels, index of each cell's class). Numeric labels sort by value."""
    labels = [_label(cell) for cell in cells]
    distinct = set(labels)
    if all(_as_number(label) is not None for label in distinct):
        classes = sorted(distinct, key=float)
    else:
        classes = sorted(distinct)
    position = {label: index for index, label in enumerate(classes)}
    return classes, numpy.array([position[label] for label in labels], dtype=numpy.int64)


def _scaling(values):
    """(mean, scale) per column; a constant column gets scale 1, not a division by 0."""
    mean = values.mean(axis=0)
    scale = values.std(axis=0)
    return mean, numpy.where(scale > 0, scale, 1.0)


# -- train ----------------------------------------------------------------------------------
EARLY_STOPPING_SPLIT = 0.1  # scikit-learn's validation_fraction
EARLY_STOPPING = {"n_iter_no_change": 10, "tol": 1e-4}  # scikit-learn's defaults


def add_train_arguments(parser):
    parser.add_argument("data", help="CSV file with a header row; one sample per row "
                                     "(- reads standard input)")
    parser.add_argument("-t", "--target", required=True, metavar="COLUMN",
                        help="the column to predict")
    parser.add_argument("--features", type=column_list, metavar="A,B,...",
                        help="the input columns (default: every column but the target and "
                             "the --id-column)")
    parser.add_argument("--id-column", metavar="COLUMN",
                        help="a column that names the rows (not a feature)")
    parser.add_argument("--task", choices=TASKS, default="auto",
                        help="classify or regress; auto: classify a target with text or "
                             f"with at most {MAX_AUTO_CLASSES} distinct whole numbers, "
                             "else regress (default: auto)")
    parser.add_argument("--layers", type=layer_sizes, default=[64, 32], metavar="N,N,...",
                        help="hidden layer sizes (default: 64,32)")
    parser.add_argument("--activation", choices=ACTIVATIONS, default="relu",
                        help="activation of the hidden layers (default: relu)")
    parser.add_argument("--epochs", type=positive_int, default=50, help="default: 50")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="default: 32")
    parser.add_argument("--lr", type=positive_float, default=1e-3,
                        help="learning rate of Adam (default: 0.001)")
    parser.add_argument("--validation-split", type=fraction, default=None, metavar="FRACTION",
                        help="hold out this fraction of the rows, drawn at random (the last "
                             "rows with --no-shuffle), and report the loss on them (default: "
                             f"0, or {EARLY_STOPPING_SPLIT} with --early-stopping)")
    parser.add_argument("--no-shuffle", action="store_true",
                        help="hold out the last rows for validation, in file order (time "
                             "series); the batches of each epoch are still shuffled")
    parser.add_argument("--early-stopping", action="store_true",
                        help="stop when the validation loss has not improved by --tol for "
                             "more than --n-iter-no-change epochs, and keep the best epoch's "
                             "weights (as scikit-learn's early_stopping)")
    parser.add_argument("--n-iter-no-change", type=positive_int, metavar="N",
                        help="with --early-stopping: the epochs without improvement it "
                             f"allows (default: {EARLY_STOPPING['n_iter_no_change']})")
    parser.add_argument("--tol", type=non_negative_float,
                        help="with --early-stopping: the least improvement that counts "
                             f"(default: {EARLY_STOPPING['tol']})")
    parser.add_argument("--drop-missing", action="store_true",
                        help="skip rows with missing values (empty, NA, NaN, ?, ...) instead "
                             "of stopping at them")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the initial weights, the validation split and the "
                             "shuffling (default: 0)")
    parser.add_argument("--dtype", choices=VALID_DTYPES, default="float32",
                        help="default: float32")
    parser.add_argument("--backend", default="auto", choices=("auto", "numpy", "cupy"),
                        help="where to train (default: auto = cupy if a GPU works, else numpy)")
    parser.add_argument("--save", metavar="MODEL", help="write the trained model here "
                        "(e.g. model.nnb), for `predict`; Ctrl-C saves the last complete "
                        "epoch")
    parser.add_argument("--checkpoint", metavar="MODEL",
                        help="during training, keep the best model so far in this file "
                             "(lowest validation loss, or training loss without a split)")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    shown.add_argument("-v", "--verbose", action="store_true",
                       help="one progress line per epoch (for logs) instead of a bar")




class _LastEpoch(Callback):
    """Keeps a copy of the weights after each completed epoch, to save on Ctrl-C."""

    def on_fit_begin(self, model, has_validation):
        self.weights = Checkpoint(model.backend, model.trainable_arrays()[0])

    def on_epoch_end(self, model, epoch, history):
        self.weights.save()


def train(args, out=print, tell=None):
    """Under ``mpiexec -n N`` every rank trains on its shard of each batch
    (nnback.distributed); only rank 0 prints and saves. Returns the exit status: 0, or 130
    after a Ctrl-C (the model of the last complete epoch saved, with --save)."""
    tell = tell or _to_stderr  # what is not a result: warnings, the interruption
    root = distributed.is_root()
    if not root:
        out = tell = _silent
    for name in EARLY_STOPPING:
        if getattr(args, name) is not None and not args.early_stopping:
            raise CommandError(f"--{name.replace('_', '-')} is a setting of --early-stopping;"
                               " add --early-stopping, or leave it out")
    for path, flag in ((args.save, "--save"), (args.checkpoint, "--checkpoint")):
        if path:  # before any epoch: a bad path must not cost the training
            check_writable(path, flag)
    if args.backend == "cupy" and distributed.launched():
        distributed.select_gpu()  # this rank's GPU, before the backend's first use
    backend = get_backend(args.backend)  # a missing CuPy is said before the data is read
    table = read_csv(args.data)
    features = _train_columns(table, args)
    _missing_values(table, [args.target] + features, args, out)
    X = table.numbers(features, hint="; feature columns must hold numbers (choose them with "
                                     "--features)")
    training_rows, validation_rows = _split(len(X), args)
    x_mean, x_scale = _scaling(X[training_rows])  # the training rows' statistics only
    metadata = {"columns": table.columns, "features": features, "target": args.target,
                "x_mean": x_mean.tolist(), "x_scale": x_scale.tolist()}
    y, output, loss, described = _targets(table, args, training_rows, metadata)
    if metadata["task"] == "classify":
        _warn_missing_classes(metadata["classes"], y[training_rows], args, tell)
    n_outputs = len(metadata["classes"]) if metadata["task"] == "classify" else 1
    model = MLP([len(features), *args.layers, n_outputs], activation=args.activation,
                output=output, backend=backend, dtype=args.dtype, seed=args.seed)
    out(f"task: {described}; use --task to change it")
    out(f"data: {len(training_rows)} rows for training"
        + (f", {len(validation_rows)} for validation ({_split_kind(args)})"
           if len(validation_rows) else "")
        + f"; {len(features)} feature columns ({listed(features)})")
    out(f"network: {'-'.join(map(str, model.layer_sizes))} ({args.activation}, {output}) on "
        f"{model.backend.name} ({model.backend.device_name()}), {args.dtype}")
    X_scaled = (X - x_mean) / x_scale
    training = (X_scaled[training_rows], y[training_rows])
    validation = (X_scaled[validation_rows], y[validation_rows]) \
        if len(validation_rows) else None
    history, kept, status = _fit(model, loss, training, validation, args, metadata,
                                 root, out, tell)
    out(_summary(model, history, kept, training, validation, metadata))
    if args.save and root:
        _save(model, args.save, metadata)
        out(f"saved {args.save}" + (f", the weights of epoch {kept}" if kept != len(history)
                                    else "") + f" (python -m nnback predict {args.save} "
                                               "DATA.csv)")
    return status


def _targets(table, args, training_rows, metadata):
    """(y, output activation, loss, description of the task) for the target column, and
    in ``metadata`` the task, the classes or the target's scaling (from the training
    rows): class indices (n_rows,) for classification, the standardised target
    (n_rows, 1) for regression."""
    cells = table.column(args.target)
    task = metadata["task"] = choose_task(args.task, cells)
    if task == "classify":
        classes, y = class_labels(cells)
        if len(classes) < 2:
            raise CommandError(f"the target column {args.target!r} holds one class only "
                               f"({classes[0]!r}); classification needs at least two")
        metadata["classes"] = classes
        return y, "softmax", "crossentropy", (f"classify {args.target!r} ({len(classes)} "
                                             f"classes: {listed(classes)})")
    y = table.numbers([args.target], hint="; a regression target must hold numbers "
                                          "(--task classify for class labels)")
    y_mean, y_scale = _scaling(y[training_rows])
    metadata.update(y_mean=float(y_mean[0]), y_scale=float(y_scale[0]))
    return (y - y_mean) / y_scale, "identity", "mse", f"regress {args.target!r} (numbers)"


def _fit(model, loss, training, validation, args, metadata, root, out, tell):
    """Train with Adam; returns (history, the epoch whose weights the model holds, exit
    status). A first Ctrl-C keeps the last complete epoch (or, with --early-stopping, the
    best so far) and gives status 130; a second one quits (KeyboardInterrupt)."""
    last = _LastEpoch()
    settings = {name: EARLY_STOPPING[name] if getattr(args, name) is None
                else getattr(args, name) for name in EARLY_STOPPING}
    stopper = EarlyStopping("val_loss", **settings) if args.early_stopping else None
    callbacks = [last] + ([stopper] if stopper else []) + (
        [ModelCheckpoint(args.checkpoint, extra={"csv": metadata})]
        if args.checkpoint and root else [])
    try:
        history = model.fit(*training, loss=loss, optimizer="adam", lr=args.lr,
                            epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                            validation_data=validation,
                            verbose=0 if args.quiet else 2 if args.verbose else 1,
                            distributed=True, callbacks=callbacks)
    except TrainingInterrupted as stop:  # a first Ctrl-C: keep the completed epochs
        if not stop.epochs_completed:
            raise
        kept = stopper.restore_best() if stopper else stop.epochs_completed
        if not stopper:
            last.weights.restore()
        which = f"{'the best epoch so far, ' if stopper else ''}epoch {kept}"
        done = stop.epochs_completed
        during = f"after epoch {done}" if done == args.epochs or (
            stopper and stopper.stopped_epoch) else f"in epoch {done + 1}"  # or after the last
        tell(f"interrupted {during} of {args.epochs}: "
             + (f"saving the model as it was after {which} (Ctrl-C again quits without "
                "saving)" if args.save else f"the model as it was after {which} is not "
                                            "saved (no --save)"))
        return model.history, kept, 130
    if stopper and stopper.stopped_epoch:
        out(f"stopped early after epoch {stopper.stopped_epoch}: the validation loss did not "
            f"improve by more than {stopper.tol:g} for more than "
            f"{counted(stopper.n_iter_no_change, 'epoch')}")
    return history, (stopper.best_epoch if stopper else len(history)), 0


def _train_columns(table, args):
    """The feature columns of ``train`` (checked): --features, or every column but the
    target and the --id-column."""
    table.check_column(args.target, "--target")
    if args.id_column is not None:
        table.check_column(args.id_column, "--id-column")
        if args.id_column == args.target:
            raise CommandError(f"--id-column {args.id_column!r} is the --target column; the "
                               "id column names the rows and is neither target nor feature")
    features = args.features or [name for name in table.columns
                                 if name not in (args.target, args.id_column)]
    for name, flag in ((args.target, "the target column"), (args.id_column, "--id-column")):
        if name is not None and name in features:
            raise CommandError(f"{flag} {name!r} is also listed in --features")
    for name in features:
        table.check_column(name, "--features" if args.features else None)
    if not features:
        raise CommandError(f"{args.data} has no feature columns besides the target "
                           f"{args.target!r}")
    return features


def _missing_values(table, columns, args, out):
    """Refuse missing values among ``columns``, or (--drop-missing) drop their rows and say
    which (with ``out``)."""
    if not args.drop_missing:
        table.refuse_missing(columns)
        return
    lines = table.drop_missing(columns)
    if lines:
        out(f"missing values: skipped {counted(len(lines), 'row')} (line{'s' * (len(lines) > 1)}"
            f" {listed(lines)})")


def _split(n_rows, args):
    """(training rows, validation rows) as index arrays: --validation-split of the rows at
    random (seeded by --seed), or the last ones with --no-shuffle."""
    fraction = args.validation_split
    if fraction is None:
        fraction = EARLY_STOPPING_SPLIT if args.early_stopping else 0.0
    if args.early_stopping and not fraction:
        raise CommandError("--early-stopping needs a validation split; leave out "
                           "--validation-split 0 (default with early stopping: "
                           f"{EARLY_STOPPING_SPLIT})")
    n_train = n_rows - int(round(fraction * n_rows))
    if n_train < 1 or (fraction and n_train == n_rows):
        raise CommandError(f"--validation-split {fraction} leaves {n_train} of {n_rows} rows "
                           f"for training and {n_rows - n_train} for validation; both need "
                           "at least one")
    order = numpy.arange(n_rows) if args.no_shuffle else \
        numpy.random.default_rng(args.seed).permutation(n_rows)
    return order[:n_train], order[n_train:]


def _split_kind(args):
    return "the last rows of the file" if args.no_shuffle else f"drawn at random, --seed " \
                                                               f"{args.seed}"


def _warn_missing_classes(classes, y_train, args, tell):
    counts = numpy.bincount(y_train, minlength=len(classes))
    absent = [label for label, count in zip(classes, counts) if count == 0]
    if absent:
        cause = ("the file may be sorted by class: leave out --no-shuffle"
                 if args.no_shuffle else "try another --seed or a smaller --validation-split")
        tell(f"warning: {counted(len(absent), 'class')} ({listed(absent)}) "
             f"{'has' if len(absent) == 1 else 'have'} no rows in the training part, so the "
             f"model cannot learn {'it' if len(absent) == 1 else 'them'}; {cause}")


def _summary(model, history, kept, training, validation, metadata):
    """"after N epochs: loss ...; training accuracy ...; ..." for the weights of epoch
    ``kept`` (the last one, or the best one early stopping went back to)."""
    summary = [f"loss {history.loss[kept - 1]:.4g}",
               _metric("training", model.predict(training[0]), training[1], metadata)]
    if validation is not None:
        summary += [f"validation loss {history.val_loss[kept - 1]:.4g}",
                    _metric("validation", model.predict(validation[0]), validation[1],
                            metadata)]
    best = f" (the weights of epoch {kept})" if kept != len(history) else ""
    return f"after {counted(len(history), 'epoch')}{best}: " + "; ".join(summary)


def _save(model, path, metadata):
    try:
        save(model, path, extra={"csv": metadata})
    except OSError as error:  # its message names the path and what a failed save kept
        raise CommandError(str(error.strerror or error)) from None


def _silent(*args, **kwargs):
    """Where ``print`` would be on every rank but rank 0."""


def _to_stderr(text):
    print(text, file=sys.stderr)


def _metric(name, outputs, y, metadata):
    if metadata["task"] == "classify":
        return f"{name} accuracy {numpy.mean(outputs.argmax(axis=1) == y):.3f}"
    error = (outputs - y) * metadata["y_scale"]
    return f"{name} RMSE {math.sqrt(numpy.mean(error * error)):.4g}"


# -- predict --------------------------------------------------------------------------------
def add_predict_arguments(parser):
    parser.add_argument("model", help="a model file written by `train --save` (or by "
                                      "model.save in Python)")
    parser.add_argument("data", help="CSV file with the feature columns the model was "
                                     "trained on (a target column, if present, is ignored; "
                                     "- reads standard input)")
    parser.add_argument("-o", "--output", metavar="CSV",
                        help="write the predictions here (default, or -: standard output)")
    parser.add_argument("--proba", action="store_true",
                        help="classification: add one probability column per class, named "
                             "proba_<class>")
    parser.add_argument("--id-column", metavar="COLUMN",
                        help="copy this column (the rows' names) into the output, first")
    parser.add_argument("--drop-missing", action="store_true",
                        help="skip rows with missing values (empty, NA, NaN, ?, ...), saying "
                             "which on standard error, instead of stopping at them")
    parser.add_argument("--backend", default="auto", choices=("auto", "numpy", "cupy"),
                        help="where to compute (default: auto)")


def predict(args, out=print):
    if args.output and args.output != "-":
        check_writable(args.output, "--output", "out.csv")
    try:
        model, extra = load(args.model, backend=args.backend, return_extra=True)
    except OSError as error:
        raise CommandError(f"{args.model}: {error.strerror or error}") from None
    table = read_csv(args.data)
    metadata = extra.get("csv")
    if args.id_column is not None:
        table.check_column(args.id_column, "--id-column")
    features = _predict_columns(table, metadata, args, model)
    _missing_values(table, features, args, _to_stderr)  # stdout may hold the predictions
    ids = [] if args.id_column is None else [args.id_column]
    first = [table.column(args.id_column)] if ids else []
    if metadata is None:  # saved from Python: every column is an input, in order
        outputs = model.predict(table.numbers(features))
        header = ["output"] if outputs.shape[1] == 1 else \
            [f"output_{index}" for index in range(outputs.shape[1])]
        return _write(args, ids + header, first + [[_number(v) for v in column]
                                                   for column in outputs.T], out)
    X = (table.numbers(features) - numpy.array(metadata["x_mean"])) / \
        numpy.array(metadata["x_scale"])
    outputs = model.predict(X)
    target = metadata["target"]
    if metadata["task"] == "classify":
        classes = metadata["classes"]
        header = [target] + ([f"proba_{label}" for label in classes] if args.proba else [])
        columns = [[classes[index] for index in outputs.argmax(axis=1)]] + (
            [[_number(p) for p in column] for column in outputs.T] if args.proba else [])
    else:
        if args.proba:
            raise CommandError("--proba is for classification; this model regresses "
                               f"{target!r}")
        values = outputs[:, 0] * metadata["y_scale"] + metadata["y_mean"]
        header, columns = [target], [[_number(value) for value in values]]
    return _write(args, ids + header, first + columns, out)


def _predict_columns(table, metadata, args, model):
    """The columns ``predict`` reads, in the model's order (checked): those it was trained
    on, or for a model saved from Python every column (but the --id-column)."""
    if metadata is None:
        features = [name for name in table.columns if name != args.id_column]
        if len(features) != model.n_features_in:
            raise CommandError(
                f"{args.data} has {counted(len(features), 'column')} but {args.model} expects "
                f"{counted(model.n_features_in, 'feature')} (it has no column names: it was "
                "not saved by `nnback train`, so every column is taken as an input)")
        return features
    features = metadata["features"]
    missing = [name for name in features if name not in table.columns]
    unknown = [name for name in table.columns
               if name not in metadata["columns"] and name != args.id_column]
    if missing or unknown:
        given = [name for name in table.columns if name not in (metadata["target"],
                                                                  args.id_column)]
        problems = ([f"missing {names(missing)}"] if missing else []) + \
            ([f"unknown {names(unknown)}"] if unknown else [])
        hint = "; name an id column with --id-column" if unknown and not args.id_column \
            else ""
        raise CommandError(
            f"{args.data} has {counted(len(given), 'feature column')} but {args.model} was "
            f"trained on {len(features)} ({listed(features)}): {'; '.join(problems)}{hint}")
    return features


def _number(value):
    return f"{float(value):.8g}"


def _write(args, header, columns, out):
    """The predictions (a list of columns of cells) as CSV to --output, or to standard
    output."""
    to_stdout = args.output in (None, "", "-")
    target = contextlib.nullcontext(sys.stdout) if to_stdout else \
        open(args.output, "w", newline="", encoding="utf-8")
    with target as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(zip(*columns))
    if not to_stdout:
        out(f"wrote {len(columns[0])} predictions to {args.output}")
    return 0


# -- argument types (argparse turns their errors into a usage message and exit status 2) --
def _argument_type(check, convert, expected):
    """An argparse type: the text converted by ``convert`` and checked by ``check`` (one of
    nnback.validation's checks, shared with the library), else "'TEXT' is not EXPECTED"."""
    def parse(text):
        try:
            return check(expected, convert(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {expected}") from None
    return parse


positive_int = _argument_type(check_positive_int, int, "a positive integer")
positive_float = _argument_type(check_positive_number, float, "a positive number")
fraction = _argument_type(check_fraction, float, "a fraction in [0, 1)")
non_negative_float = _argument_type(
    lambda name, value: check_fraction(name, value, high=float("inf")), float,
    "a number >= 0")


def layer_sizes(text):
    """"64,32" -> [64, 32]; "" or "none" -> [] (no hidden layer)."""
    if text.strip().lower() in ("", "none"):
        return []
    try:
        return [positive_int(part) for part in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of positive layer sizes like 64,32") from None


def column_list(text):
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of column names like a,b,c")
    return names
