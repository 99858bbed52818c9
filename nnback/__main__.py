"""Command line: ``python -m nnback info | bench | demo | train | predict`` (``--help`` on each).

Each command is one entry of COMMANDS: the function that runs it (it gets the parsed
arguments and returns the exit status), the function that adds its arguments to its
parser, and a one-line summary. Adding a command is writing those two functions and one
line in COMMANDS.

Exit status: 0 on success; 1 for a problem with the user's files, data or machine (one line
on stderr, no traceback); 2 for bad arguments (argparse's usage message); 130 on Ctrl-C.
"""
import argparse
import os
import platform
import re
import sys
from collections import namedtuple

from . import __version__
from .backend import (BackendUnavailableError, DeviceOutOfMemoryError, VALID_BACKENDS,
                      available_backends, get_backend)
from .commands import CommandError, add_predict_arguments, add_train_arguments, predict, train
from .io import ModelFileError
from .model import DivergenceError

Command = namedtuple("Command", "run add_arguments summary")


def info(args, out=print):
    """Version, which backends work here (and why not), the device and its memory, the BLAS
    in use."""
    import numpy

    out(f"nnback {__version__} (Python {platform.python_version()}, NumPy {numpy.__version__})")
    for name, reason in available_backends().items():
        if reason is None:
            backend = get_backend(name)
            out(f"  {name}: available on {backend.device_name()}{_memory(backend)}")
        else:
            out(f"  {name}: unavailable: {reason}")
    default = get_backend("auto")
    out(f"default backend (auto): {default.name}")
    blas = _blas_name(numpy)
    if blas:
        out(f"BLAS: {blas}")
    return 0


def _memory(backend):
    total = backend.device_memory()
    return f" ({total / 2 ** 30:.1f} GiB memory)" if total else ""


def _blas_name(numpy):
    try:
        config = numpy.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version', '')}".strip()
    except Exception:
        return None


def demo(args, out=print):
    from .demo import run

    run(args.backend, out=out)
    return 0


def bench(args, out=print):
    from .bench import run

    return run(args, out=out)


def _bench_arguments(parser):
    from .bench import add_arguments

    add_arguments(parser)


def _no_arguments(parser):
    pass


def _demo_arguments(parser):
    parser.add_argument("--backend", default="auto", choices=VALID_BACKENDS,
                        help="where to train (default: auto = cupy if a GPU works, else numpy)")


COMMANDS = {
    "info": Command(info, _no_arguments,
                    "version, backends (and why not), device, memory and BLAS"),
    "bench": Command(bench, _bench_arguments,
                     "time training steps, a fit and matrix multiplies next to references "
                     "(GEMM floor, PyTorch, scikit-learn)"),
    "demo": Command(demo, _demo_arguments, "train the tutorial networks and print them"),
    "train": Command(train, add_train_arguments,
                     "train a network on a CSV file (classification or regression)"),
    "predict": Command(predict, add_predict_arguments,
                       "predictions for a CSV file from a model saved by train"),
}

# Problems with the user's input or machine: reported on one line, exit status 1.
USER_ERRORS = (CommandError, ModelFileError, BackendUnavailableError, DivergenceError,
               DeviceOutOfMemoryError, OSError)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m nnback",
        description="nnback: multilayer perceptrons on NumPy (CPU) or CuPy (GPU).")
    parser.add_argument("--version", action="version", version=f"nnback {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for name, command in COMMANDS.items():
        subparser = commands.add_parser(name, help=command.summary,
                                        description=command.summary)
        command.add_arguments(subparser)
        subparser.set_defaults(run=command.run)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except USER_ERRORS as error:
        print(f"{parser.prog} {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line(error):
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    else:
        text = str(error)
    return _for_the_command_line(" ".join(text.split()))


def _for_the_command_line(text):
    """Advice written for Python callers, in the command line's terms: backend='numpy'
    becomes --backend numpy, and an install hint 'nnback[extra]' names the command for a
    checkout too ('.[extra]'), since how nnback was installed is not known here."""
    text = re.sub(r"\bbackend='(\w+)'", r"--backend \1", text)
    return re.sub(r"'nnback\[([\w,]+)\]'", r"'nnback[\1]' (from a checkout: '.[\1]')", text)


if __name__ == "__main__":
    sys.exit(main())
