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
``python -m nnback`` prints on one line before it exits with status 1.
"""
import argparse
import contextlib
import csv
import difflib
import math
import os
import sys

import numpy

from . import distributed
from .backend import VALID_DTYPES
from .io import load, save
from .model import MLP
from .validation import check_fraction, check_positive_int, check_positive_number

MAX_AUTO_CLASSES = 20
TASKS = ("auto", "classify", "regress")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "leaky_relu")


class CommandError(Exception):
    """A problem with the user's input that the command line reports on one line (exit 1)."""


# -- reading CSV files ---------------------------------------------------------------------
class Table:
    """A CSV file read as text: ``columns`` (the header), ``rows`` (lists of cell strings)
    and ``lines`` (the file line each row starts on, for messages)."""

    def __init__(self, path, columns, rows, lines):
        self.path, self.columns, self.rows, self.lines = path, columns, rows, lines

    def column(self, name):
        """The cells of column ``name``; CommandError naming the columns there are if absent."""
        if name not in self.columns:
            raise CommandError(f"{self.path} has no column {name!r}" + _closest(name,
                                                                             self.columns))
        index = self.columns.index(name)
        return [row[index] for row in self.rows]

    def numbers(self, names, hint=""):
        """Columns ``names`` as a float64 array (n_rows, len(names)); CommandError naming the
        line and column of the first cell that is not a finite number (``hint`` appended)."""
        indices = [self.columns.index(name) for name in names]
        cells = numpy.array([[row[index] for index in indices] for row in self.rows],
                            dtype=str).reshape(len(self.rows), len(indices))
        try:
            values = cells.astype(numpy.float64)
        except ValueError:
            values = None
        if values is not None and numpy.isfinite(values).all():
            return values
        for row, line in zip(cells, self.lines):
            for name, cell in zip(names, row):
                self._check_number(str(cell), name, line, hint)
        raise AssertionError("unreachable: a bad cell was not found")

    def check_filled(self, name):
        """CommandError naming the first empty cell of column ``name``, if any."""
        for cell, line in zip(self.column(name), self.lines):
            if not cell.strip():
                raise CommandError(f"{self.path}, line {line}, column {name!r}: the cell is "
                                   "empty; fill it in or drop the row")

    def _check_number(self, cell, name, line, hint):
        where = f"{self.path}, line {line}, column {name!r}"
        if not cell.strip():
            raise CommandError(f"{where}: the cell is empty; fill it in or drop the row")
        try:
            value = float(cell)
        except ValueError:
            raise CommandError(f"{where}: {cell!r} is not a number{hint}") from None
        if not math.isfinite(value):
            raise CommandError(f"{where}: {cell!r} is not a finite number")


def _opened(path):
    """The text stream to read CSV from: the file at ``path``, or standard input for "-"
    (the POSIX convention), left open on leaving."""
    if path == "-":
        return contextlib.nullcontext(sys.stdin)
    return open(path, newline="", encoding="utf-8-sig")


def read_csv(path):
    """The Table in the CSV file at ``path`` ("-": standard input); CommandError for a file
    that cannot be read,
    has no header or no rows, repeats a column name, or has rows of the wrong length."""
    try:
        with _opened(path) as stream:
            reader = csv.reader(stream)
            header = next(reader, None)
            if header is None:
                raise CommandError(f"{path} is empty; a header row of column names is needed")
            columns = [name.strip() for name in header]
            _check_header(path, columns)
            rows, lines = [], []
            line = reader.line_num + 1
            for row in reader:
                if any(cell.strip() for cell in row):
                    if len(row) != len(columns):
                        raise CommandError(
                            f"{path}, line {line}: {len(row)} cells, but the header has "
                            f"{len(columns)} columns")
                    rows.append(row)
                    lines.append(line)
                line = reader.line_num + 1
    except UnicodeDecodeError as error:
        raise CommandError(f"{path} is not a UTF-8 text file ({error.reason} at byte "
                           f"{error.start})") from None
    except csv.Error as error:
        raise CommandError(f"{path} is not a readable CSV file ({error})") from None
    except OSError as error:
        raise CommandError(f"{path}: {error.strerror or error}") from None
    if not rows:
        raise CommandError(f"{path} has a header but no rows of data")
    return Table(path, columns, rows, lines)


def _check_header(path, columns):
    for position, name in enumerate(columns, start=1):
        if not name:
            raise CommandError(f"{path}: column {position} of the header has no name")
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:
        raise CommandError(f"{path}: the header repeats the column name(s) {_names(repeated)}")


def _closest(name, columns, most=8):
    """"; did you mean 'x'?" and the columns there are, at most ``most`` of them named."""
    close = difflib.get_close_matches(name, columns, n=3, cutoff=0.6)
    if not close:  # a different case is a likely slip too
        close = [column for column in columns if column.lower() == name.lower()]
    guess = f"; did you mean {' or '.join(map(repr, close))}?" if close else "."
    shown = _names(columns[:most]) + (f", ... ({len(columns) - most} more)"
                                      if len(columns) > most else "")
    return f"{guess} It has {len(columns)} columns: {shown}"


def _names(names):
    return ", ".join(repr(name) for name in names)


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
def add_train_arguments(parser):
    parser.add_argument("data", help="CSV file with a header row; one sample per row "
                                     "(- reads standard input)")
    parser.add_argument("-t", "--target", required=True, metavar="COLUMN",
                        help="the column to predict")
    parser.add_argument("--features", type=column_list, metavar="A,B,...",
                        help="the input columns (default: every column but the target)")
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
    parser.add_argument("--validation-split", type=fraction, default=0.0, metavar="FRACTION",
                        help="hold out this fraction of the rows (the last ones, as Keras "
                             "does) and report the loss on them (default: 0)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the initial weights and the shuffling (default: 0)")
    parser.add_argument("--dtype", choices=VALID_DTYPES, default="float32",
                        help="default: float32")
    parser.add_argument("--backend", default="auto", choices=("auto", "numpy", "cupy"),
                        help="where to train (default: auto = cupy if a GPU works, else numpy)")
    parser.add_argument("--save", metavar="MODEL", help="write the trained model here "
                        "(e.g. model.nnb), for `predict`")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def train(args, out=print):
    """Under ``mpiexec -n N`` every rank trains on its shard of each batch
    (nnback.distributed); only rank 0 prints and saves."""
    if not distributed.is_root():
        out = _silent
    if args.save:  # before any epoch: a bad path must not cost the training
        check_writable(args.save, "--save")
    if args.backend == "cupy" and distributed.launched():
        distributed.select_gpu()  # this rank's GPU, before the backend's first use
    table = read_csv(args.data)
    table.check_filled(args.target)
    target_cells = table.column(args.target)
    features = args.features or [name for name in table.columns if name != args.target]
    if args.target in features:
        raise CommandError(f"the target column {args.target!r} is also listed in --features")
    for name in features:
        table.column(name)
    if not features:
        raise CommandError(f"{args.data} has no feature columns besides the target "
                           f"{args.target!r}")
    X = table.numbers(features, hint="; feature columns must hold numbers (choose them with "
                                     "--features)")
    task = choose_task(args.task, target_cells)
    x_mean, x_scale = _scaling(X)
    metadata = {"task": task, "columns": table.columns, "features": features,
                "target": args.target, "x_mean": x_mean.tolist(), "x_scale": x_scale.tolist()}
    if task == "classify":
        classes, y = class_labels(target_cells)
        if len(classes) < 2:
            raise CommandError(f"the target column {args.target!r} holds one class only "
                               f"({classes[0]!r}); classification needs at least two")
        metadata["classes"] = classes
        n_outputs, output, loss = len(classes), "softmax", "crossentropy"
        described = f"classify {args.target!r} ({len(classes)} classes: {_shown(classes)})"
    else:
        y = table.numbers([args.target], hint="; a regression target must hold numbers "
                                              "(--task classify for class labels)")
        y_mean, y_scale = _scaling(y)
        metadata.update(y_mean=float(y_mean[0]), y_scale=float(y_scale[0]))
        y = (y - y_mean) / y_scale
        n_outputs, output, loss = 1, "identity", "mse"
        described = f"regress {args.target!r} (numbers)"
    X_scaled = (X - x_mean) / x_scale
    n_train = len(X) - int(round(args.validation_split * len(X)))
    if n_train < 1 or (args.validation_split and n_train == len(X)):
        raise CommandError(f"--validation-split {args.validation_split} leaves "
                           f"{n_train} of {len(X)} rows for training and "
                           f"{len(X) - n_train} for validation; both need at least one")
    model = MLP([len(features), *args.layers, n_outputs], activation=args.activation,
                output=output, backend=args.backend, dtype=args.dtype, seed=args.seed)
    out(f"task: {described}; use --task to change it")
    out(f"data: {n_train} rows for training"
        + (f", {len(X) - n_train} for validation" if n_train < len(X) else "")
        + f"; {len(features)} feature columns ({_shown(features)})")
    out(f"network: {'-'.join(map(str, model.layer_sizes))} ({args.activation}, {output}) on "
        f"{model.backend.name} ({model.backend.device_name()}), {args.dtype}")
    validation = (X_scaled[n_train:], y[n_train:]) if n_train < len(X) else None
    history = model.fit(X_scaled[:n_train], y[:n_train], loss=loss, optimizer="adam",
                        lr=args.lr, epochs=args.epochs, batch_size=args.batch_size,
                        seed=args.seed, validation_data=validation, verbose=not args.quiet,
                        distributed=True)
    summary = [f"loss {history.loss[-1]:.4g}",
               _metric("training", model.predict(X_scaled[:n_train]), y[:n_train], metadata)]
    if validation is not None:
        summary += [f"validation loss {history.val_loss[-1]:.4g}",
                    _metric("validation", model.predict(validation[0]), validation[1],
                            metadata)]
    out(f"after {_count(len(history), 'epoch')}: " + "; ".join(summary))
    if args.save and distributed.is_root():
        try:
            save(model, args.save, extra={"csv": metadata})
        except OSError as error:  # its message names the path and what a failed save kept
            raise CommandError(str(error.strerror or error)) from None
        out(f"saved {args.save} (python -m nnback predict {args.save} DATA.csv)")
    return 0


def check_writable(path, flag):
    """CommandError unless a file can be written at ``path`` (given as ``flag``): its
    folder exists and is writable, and ``path`` is not a folder."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise CommandError(f"{flag} {path} is a folder; give a file name such as "
                           f"{os.path.join(path, 'model.nnb' if flag == '--save' else 'out.csv')}")
    if not os.path.isdir(folder):
        raise CommandError(f"{flag} {path}: the folder {folder} does not exist; create it "
                           "first or choose another path")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and
                                          not os.access(path, os.W_OK)):
        raise CommandError(f"{flag} {path}: no permission to write there")


def _silent(*args, **kwargs):
    """Where ``print`` would be on every rank but rank 0."""


def _metric(name, outputs, y, metadata):
    if metadata["task"] == "classify":
        return f"{name} accuracy {numpy.mean(outputs.argmax(axis=1) == y):.3f}"
    error = (outputs - y) * metadata["y_scale"]
    return f"{name} RMSE {math.sqrt(numpy.mean(error * error)):.4g}"


def _count(number, thing):
    return f"{number} {thing}{'' if number == 1 else 's'}"


def _shown(names, most=8):
    shown = ", ".join(map(str, names[:most]))
    return shown + (f", ... ({len(names) - most} more)" if len(names) > most else "")


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
                        help="classification: add one probability column per class")
    parser.add_argument("--backend", default="auto", choices=("auto", "numpy", "cupy"),
                        help="where to compute (default: auto)")


def predict(args, out=print):
    if args.output and args.output != "-":
        check_writable(args.output, "--output")
    try:
        model, extra = load(args.model, backend=args.backend, return_extra=True)
    except OSError as error:
        raise CommandError(f"{args.model}: {error.strerror or error}") from None
    table = read_csv(args.data)
    metadata = extra.get("csv")
    if metadata is None:  # saved from Python: every column is an input, in order
        features = table.columns
        if len(features) != model.n_features_in:
            raise CommandError(
                f"{args.data} has {_count(len(features), 'column')} but {args.model} expects "
                f"{_count(model.n_features_in, 'feature')} (it has no column names: it was not "
                "saved by `nnback train`, so every column is taken as an input)")
        outputs = model.predict(table.numbers(features))
        names = ["output"] if outputs.shape[1] == 1 else \
            [f"output_{index}" for index in range(outputs.shape[1])]
        return _write(args, names, [[_number(v) for v in row] for row in outputs], out)
    features = metadata["features"]
    missing = [name for name in features if name not in table.columns]
    unknown = [name for name in table.columns if name not in metadata["columns"]]
    if missing or unknown:
        given = [name for name in table.columns if name != metadata["target"]]
        problems = ([f"missing {_names(missing)}"] if missing else []) + \
            ([f"unknown {_names(unknown)}"] if unknown else [])
        raise CommandError(
            f"{args.data} has {_count(len(given), 'feature column')} but {args.model} was "
            f"trained on {len(features)} ({_shown(features)}): {'; '.join(problems)}")
    X = (table.numbers(features) - numpy.array(metadata["x_mean"])) / \
        numpy.array(metadata["x_scale"])
    outputs = model.predict(X)
    target = metadata["target"]
    if metadata["task"] == "classify":
        classes = metadata["classes"]
        names = [target] + ([f"proba_{label}" for label in classes] if args.proba else [])
        rows = [[classes[int(row.argmax())]] +
                ([_number(p) for p in row] if args.proba else []) for row in outputs]
    else:
        if args.proba:
            raise CommandError("--proba is for classification; this model regresses "
                               f"{target!r}")
        values = outputs[:, 0] * metadata["y_scale"] + metadata["y_mean"]
        names, rows = [target], [[_number(value)] for value in values]
    return _write(args, names, rows, out)


def _number(value):
    return f"{float(value):.8g}"


def _write(args, names, rows, out):
    """The predictions as CSV to --output, or to standard output."""
    to_stdout = args.output in (None, "", "-")
    target = contextlib.nullcontext(sys.stdout) if to_stdout else \
        open(args.output, "w", newline="", encoding="utf-8")
    with target as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(rows)
    if not to_stdout:
        out(f"wrote {len(rows)} predictions to {args.output}")
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
