"""CSV files for the command line: a header row of column names and one sample per row,
read as text (:class:`Table`), with messages that name the file, line and column of a bad
cell, the closest names for a column that is not there, and the rows with missing values.

Missing values are the cells pandas reads as missing by default (empty, NA, NaN, N/A,
NULL, None, ...) and "?" (as in many UCI files). nnback does not fill them in: a command
either refuses them, naming the rows and columns, or drops their rows (``--drop-missing``).
"""
import contextlib
import csv
import difflib
import math
import sys

import numpy

# pandas.read_csv's default na_values, plus "?"; compared after stripping spaces
MISSING_MARKERS = frozenset([
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null", "?"])
IMPUTE_ADVICE = ("nnback does not fill in missing values: drop those rows (--drop-missing) or "
                 "fill them in first (e.g. with scikit-learn's SimpleImputer)")


class CommandError(Exception):
    """A problem with the user's input that the command line reports on one line (exit 1)."""


def is_missing(cell):
    return cell.strip() in MISSING_MARKERS


class Table:
    """A CSV file read as text: ``columns`` (the header), ``rows`` (lists of cell strings)
    and ``lines`` (the file line each row starts on, for messages)."""

    def __init__(self, path, columns, rows, lines):
        self.path, self.columns, self.rows, self.lines = path, columns, rows, lines

    def check_column(self, name, given_as=None):
        """CommandError naming the closest columns if there is no column ``name``
        (``given_as``: the option that named it, for the message)."""
        if name not in self.columns:
            raise CommandError(f"{self.path} has no column {name!r}"
                               + (f" ({given_as})" if given_as else "")
                               + closest(name, self.columns))

    def column(self, name):
        """The cells of column ``name``; CommandError naming the closest ones if absent."""
        self.check_column(name)
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

    def _check_number(self, cell, name, line, hint):
        where = f"{self.path}, line {line}, column {name!r}"
        if is_missing(cell):
            raise CommandError(f"{where}: {_described(cell)} is a missing value; "
                               + IMPUTE_ADVICE)
        try:
            value = float(cell)
        except ValueError:
            raise CommandError(f"{where}: {cell!r} is not a number{hint}") from None
        if not math.isfinite(value):
            raise CommandError(f"{where}: {cell!r} is not a finite number")

    def missing(self, names):
        """[(row index, [(column, cell), ...])] for each row with a missing value among the
        columns ``names``, in file order."""
        indices = [(name, self.columns.index(name)) for name in names]
        found = []
        for position, row in enumerate(self.rows):
            cells = [(name, row[index]) for name, index in indices if is_missing(row[index])]
            if cells:
                found.append((position, cells))
        return found

    def refuse_missing(self, names):
        """CommandError naming the rows and columns with missing values among ``names``."""
        found = self.missing(names)
        if not found:
            return
        places = [f"line {self.lines[position]}, column {name!r} ({_described(cell)})"
                  for position, cells in found[:3] for name, cell in cells[:3]]
        more = f"; ... ({len(found) - 3} more rows)" if len(found) > 3 else ""
        raise CommandError(f"{self.path} has missing values in {counted(len(found), 'row')}: "
                           f"{'; '.join(places)}{more}. {IMPUTE_ADVICE}")

    def drop_missing(self, names):
        """Drop the rows with a missing value among ``names``; returns the file lines of the
        dropped rows. CommandError if no row is left."""
        dropped = {position for position, _ in self.missing(names)}
        lines = [self.lines[position] for position in sorted(dropped)]
        if dropped and len(dropped) == len(self.rows):
            raise CommandError(f"{self.path}: every one of its {counted(len(self.rows), 'row')} "
                               "has a missing value, so --drop-missing leaves nothing")
        self.rows = [row for position, row in enumerate(self.rows) if position not in dropped]
        self.lines = [line for position, line in enumerate(self.lines)
                      if position not in dropped]
        return lines


def _described(cell):
    return "empty" if not cell.strip() else repr(cell)


def counted(number, thing):
    """"1 row", "3 rows"."""
    return f"{number} {thing}{'' if number == 1 else 's'}"


def _opened(path):
    """The text stream to read CSV from: the file at ``path``, or standard input for "-"
    (the POSIX convention), left open on leaving."""
    if path == "-":
        return contextlib.nullcontext(sys.stdin)
    return open(path, newline="", encoding="utf-8-sig")


def read_csv(path):
    """The Table in the CSV file at ``path`` ("-": standard input); CommandError for a file
    that cannot be read, has no header or no rows, repeats a column name, or has rows of the
    wrong length. Rows whose cells are all blank are skipped."""
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
        raise CommandError(f"{path}: the header repeats the column name(s) {names(repeated)}")


def closest(name, columns, most=8):
    """"; did you mean 'x'?" and the columns there are, at most ``most`` of them named."""
    close = difflib.get_close_matches(name, columns, n=3, cutoff=0.6)
    if not close:  # a different case is a likely slip too
        close = [column for column in columns if column.lower() == name.lower()]
    guess = f"; did you mean {' or '.join(map(repr, close))}?" if close else "."
    return f"{guess} It has {len(columns)} columns: {listed(columns, most, repr)}"


def names(columns):
    """'a', 'b', 'c': column names quoted, for messages."""
    return ", ".join(repr(name) for name in columns)


def listed(items, most=8, form=str):
    """"a, b, ... (3 more)": at most ``most`` items, each written by ``form``."""
    shown = ", ".join(map(form, items[:most]))
    return shown + (f", ... ({len(items) - most} more)" if len(items) > most else "")
