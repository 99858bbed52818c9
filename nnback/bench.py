"""``python -m nnback bench``: how fast nnback runs on this machine, next to references
timed in the same run.

Every case builds a few zero-argument functions ("implementations") that do the same work:
nnback itself and, where they apply and are installed, references — the bare GEMM floor
(only the matrix multiplies of that work, through the same backend, into preallocated
outputs), PyTorch eager, scikit-learn's MLPClassifier and a hand-written NumPy loop. The
functions are timed interleaved (A B C A B C ...) and the minimum per call over the repeats
is kept, since the other load on a shared machine only ever adds time. Ratios compare
nnback with each reference: below 1 nnback is faster.

The pytest-benchmark suites in ``benchmarks/`` time the same functions (``make_case``).
PyTorch and scikit-learn are optional: a reference whose package is missing is skipped
with a note saying what to install. Nothing here runs at import time.
"""
import json
import math
import os
import platform
import time

import numpy

from .backend import get_backend

# -- what is timed ------------------------------------------------------------------------
XOR_SIZES = [2, 3, 1]
MEDIUM_SIZES = [784, 512, 512, 10]
LARGE_SIZES = [4096, 4096, 4096, 4096, 10]
MEDIUM_BATCH = 256
LARGE_BATCH = 4096
FIT_SAMPLES = 10_000
LEARNING_RATE = 0.01

# 2-D GEMMs at MLP shapes: (batch, n_in, n_out); stacked 3-D matmuls: (stack, m, k, n)
QUICK_GEMMS = [(256, 784, 512), (256, 512, 512), (4096, 512, 512)]
FULL_GEMMS = ([(batch, 784, 512) for batch in (1, 16, 128, 1024, 8192)]
              + [(batch, 512, 512) for batch in (1, 16, 128, 1024, 8192)]
              + [(batch, 4096, 4096) for batch in (16, 256, 4096)])
QUICK_BMMS = [(64, 128, 128, 128)]
FULL_BMMS = [(64, 128, 128, 128), (16, 1024, 1024, 1024)]

XOR_EPOCHS = 2000
QUICK_CASES = ("gemm", "bmm", "step-small", "fit-small", "step-medium", "fit-medium")
ALL_CASES = ("gemm", "bmm", "step-small", "fit-small", "step-medium", "step-large",
             "fit-medium")

INSTALL_HINTS = {
    "torch": "pip install torch (the CPU build: pip install torch==2.13.0 here)",
    "sklearn": "pip install scikit-learn (or the 'bench' extra: pip install 'nnback[bench]')",
}


class Case:
    """One row group of the table: ``implementations`` maps a name ("nnback", "gemm floor",
    "torch", "sklearn", "hand numpy") to a zero-argument function that does the work and
    synchronises the device before returning. ``flops``: floating-point operations of one
    call (the matrix multiplies), for GFLOP/s. ``info``: what extra_info records."""

    def __init__(self, name, backend, dtype, shapes, flops, implementations, notes=()):
        self.name = name
        self.backend = backend
        self.dtype = dtype
        self.shapes = shapes
        self.flops = flops
        self.implementations = implementations
        self.notes = list(notes)

    @property
    def info(self):
        return {"case": self.name, "backend": self.backend.name,
                "device": self.backend.device_name(), "dtype": self.dtype,
                "shapes": self.shapes, "tf32": tf32_enabled(self.backend),
                "gflop": self.flops / 1e9}


def tf32_enabled(backend):
    """Whether reduced-precision TF32 matrix multiplies are on (the backend's allow_tf32,
    or CuPy's CUPY_TF32=1); never on NumPy."""
    return backend.name == "cupy" and (
        backend.allow_tf32 or os.environ.get("CUPY_TF32", "0") == "1")


def step_flops(sizes, batch):
    """Matrix-multiply FLOPs of one training step: forward x·W, backward xᵀ·g for every
    layer and g·Wᵀ for every layer but the first (its input gradient is skipped)."""
    products = [n_in * n_out for n_in, n_out in zip(sizes, sizes[1:])]
    return 2 * batch * (2 * sum(products) + sum(products[1:]))


# -- building the cases -------------------------------------------------------------------
def optional(module):
    """The module when it imports, else None."""
    try:
        if module == "torch":
            import torch
            return torch
        if module == "sklearn":
            import sklearn.neural_network
            return sklearn.neural_network
    except ImportError:
        return None
    raise ValueError(module)


def make_case(name, backend="auto", full=False):
    """The Case(s) called ``name`` ("gemm" and "bmm" give one per shape) as a list."""
    backend = get_backend(backend)
    if name == "gemm":
        return [gemm_case(backend, shape, "float32") for shape in
                (FULL_GEMMS if full else QUICK_GEMMS)] + (
            [gemm_case(backend, shape, "float64") for shape in QUICK_GEMMS] if full else [])
    if name == "bmm":
        return [bmm_case(backend, shape, "float32") for shape in
                (FULL_BMMS if full else QUICK_BMMS)]
    if name == "step-small":
        return [small_step_case(backend)]
    if name == "fit-small":
        return [small_fit_case(backend)]
    if name == "step-medium":
        return [step_case(backend, "step-medium", MEDIUM_SIZES, MEDIUM_BATCH)]
    if name == "step-large":
        return [step_case(backend, "step-large", LARGE_SIZES, LARGE_BATCH)]
    if name == "fit-medium":
        return [fit_case(backend, epochs=5 if full else 2)]
    raise ValueError(f"unknown case {name!r}; valid cases: {', '.join(ALL_CASES)}")


def _random(backend, shape, dtype, seed=0):
    return backend.asarray(numpy.random.default_rng(seed).standard_normal(shape), dtype)


def gemm_case(backend, shape, dtype):
    batch, n_in, n_out = shape
    a = _random(backend, (batch, n_in), dtype)
    b = _random(backend, (n_in, n_out), dtype, seed=1)
    out = backend.empty((batch, n_out), dtype)

    def run():
        backend.matmul(a, b, out=out)
        backend.synchronize()

    return Case(f"gemm {batch}x{n_in}x{n_out}", backend, dtype,
                {"a": [batch, n_in], "b": [n_in, n_out]}, 2 * batch * n_in * n_out,
                {"nnback": run})


def bmm_case(backend, shape, dtype):
    stack, m, k, n = shape
    a = _random(backend, (stack, m, k), dtype)
    b = _random(backend, (stack, k, n), dtype, seed=1)
    out = backend.empty((stack, m, n), dtype)

    def run():
        backend.matmul(a, b, out=out)
        backend.synchronize()

    return Case(f"bmm {stack}x{m}x{k}x{n}", backend, dtype,
                {"a": [stack, m, k], "b": [stack, k, n]}, 2 * stack * m * k * n,
                {"nnback": run})


def gemm_floor(backend, sizes, batch, dtype):
    """Just the matrix multiplies of one training step of an MLP of ``sizes`` on ``batch``
    rows, into preallocated outputs: forward x·W, backward xᵀ·g and g·Wᵀ (not for the
    first layer), with the same transposes as the step. Returns a function."""
    weights = [_random(backend, (n_in, n_out), dtype, seed=i)
               for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:]))]
    inputs = [_random(backend, (batch, n), dtype) for n in sizes[:-1]]
    grads = [_random(backend, (batch, n), dtype) for n in sizes[1:]]
    outs = [backend.empty((batch, n), dtype) for n in sizes[1:]]
    weight_grads = [backend.empty(tuple(w.shape), dtype) for w in weights]
    input_grads = [backend.empty((batch, n), dtype) for n in sizes[:-1]]

    def run():
        for x, w, y in zip(inputs, weights, outs):
            backend.matmul(x, w, out=y)
        for layer in range(len(weights) - 1, -1, -1):
            backend.matmul(inputs[layer].T, grads[layer], out=weight_grads[layer])
            if layer:
                backend.matmul(grads[layer], weights[layer].T, out=input_grads[layer])
        backend.synchronize()

    return run


def classification_data(n_samples, n_features, n_classes, dtype, seed=0):
    """Host NumPy (X, labels): normal features, uniform labels (the values do not matter
    for timing)."""
    rng = numpy.random.default_rng(seed)
    return (rng.standard_normal((n_samples, n_features)).astype(dtype),
            rng.integers(0, n_classes, n_samples))


def _nnback_step(backend, sizes, batch, dtype, activation, output, loss, lr, X, y,
                 host_arrays=False):
    """nnback's training step on (X, y). host_arrays: the public ``model.train_step`` with
    the host arrays, checked and converted every call, as a user's own loop runs it;
    otherwise the step as fit runs it on a batch already on the device
    (``nnback.training.Trainer.step``)."""
    from .losses import get_loss
    from .model import MLP
    from .optim import SGD
    from .training import Trainer

    model = MLP(sizes, activation=activation, output=output, backend=backend, dtype=dtype,
                seed=0)
    optimizer = SGD(lr=lr)
    if host_arrays:
        def run():
            model.train_step(X, y, loss, optimizer)
            backend.synchronize()

        return run
    loss = get_loss(loss)
    x = backend.asarray(X, dtype)
    target = loss.prepare_target(backend, y, (batch, sizes[-1]), dtype)
    trainer = Trainer(model, loss, optimizer)

    def run():
        trainer.step(x, target)
        backend.synchronize()

    return run


def _torch_device(torch, backend):
    if backend.name == "cupy":
        return torch.device("cuda") if torch.cuda.is_available() else None
    return torch.device("cpu")


def _torch_mlp(torch, sizes, activation, output, dtype, device):
    layers = []
    for position, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        layers.append(torch.nn.Linear(n_in, n_out))
        last = position == len(sizes) - 2
        name = output if last else activation
        if name == "relu":
            layers.append(torch.nn.ReLU())
        elif name == "sigmoid":
            layers.append(torch.nn.Sigmoid())
        # "softmax" output: folded into cross_entropy, as nnback folds it into its loss
    return torch.nn.Sequential(*layers).to(device=device, dtype=getattr(torch, dtype))


def torch_step(backend, sizes, batch, dtype, activation, output, loss, lr, X, y):
    """PyTorch eager: the same network, loss and plain SGD on the same batch; None when
    torch is missing or has no device matching the backend."""
    torch = optional("torch")
    if torch is None:
        return None
    device = _torch_device(torch, backend)
    if device is None:
        return None
    model = _torch_mlp(torch, sizes, activation, output, dtype, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    x = torch.as_tensor(X, dtype=getattr(torch, dtype), device=device)
    if loss == "crossentropy":
        target = torch.as_tensor(y, dtype=torch.long, device=device)
        loss_fn = torch.nn.functional.cross_entropy
    else:
        target = torch.as_tensor(y, dtype=getattr(torch, dtype), device=device)
        loss_fn = torch.nn.functional.mse_loss
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), target).backward()
        optimizer.step()
        synchronize()

    return run


def hand_numpy_xor_step(X, y, lr):
    """The tutorial's 2-3-1 sigmoid network trained by hand in NumPy: the same math as
    nnback's step (sigmoid layers, MSE loss, plain SGD), with no library around it."""
    rng = numpy.random.default_rng(0)
    W1, b1 = rng.uniform(-1, 1, (2, 3)), numpy.zeros(3)
    W2, b2 = rng.uniform(-1, 1, (3, 1)), numpy.zeros(1)

    def run():
        nonlocal W1, b1, W2, b2  # updated in place by -=
        hidden = 1 / (1 + numpy.exp(-(X @ W1 + b1)))
        out = 1 / (1 + numpy.exp(-(hidden @ W2 + b2)))
        error = out - y
        numpy.mean(error * error)
        delta_out = (2 / error.size) * error * out * (1 - out)
        delta_hidden = (delta_out @ W2.T) * hidden * (1 - hidden)
        dW2, db2 = hidden.T @ delta_out, delta_out.sum(0)
        dW1, db1 = X.T @ delta_hidden, delta_hidden.sum(0)
        W1 -= lr * dW1
        b1 -= lr * db1
        W2 -= lr * dW2
        b2 -= lr * db2

    return run


def small_step_case(backend):
    """The tutorial XOR network (2-3-1, sigmoid, MSE, SGD) on its 4 samples, float64, one
    ``train_step`` with the host arrays (checked every call): a measure of per-step
    Python overhead."""
    from .datasets import xor

    X, y = xor()
    dtype = "float64"
    args = (backend, XOR_SIZES, 4, dtype, "sigmoid", "sigmoid", "mse", 0.5, X, y)
    implementations = {"nnback": _nnback_step(*args, host_arrays=True)}
    notes = []
    if backend.name == "numpy":
        implementations["hand numpy"] = hand_numpy_xor_step(X, y, 0.5)
    _add_torch(implementations, notes, torch_step(*args))
    return Case("step-small", backend, dtype, {"layers": XOR_SIZES, "batch": 4},
                step_flops(XOR_SIZES, 4), implementations, notes)


def small_fit_case(backend, epochs=XOR_EPOCHS):
    """The tutorial's whole training: ``MLP([2, 3, 1]).fit`` on XOR for ``epochs`` epochs
    (full batch, plain SGD, MSE, float64), against the hand-written NumPy loop running the
    same steps; each call is a whole fit, so the time per epoch is the time / epochs."""
    from .datasets import xor
    from .model import MLP

    X, y = xor()

    def nnback_fit():
        model = MLP(XOR_SIZES, backend=backend, dtype="float64", seed=0)
        model.fit(X, y, loss="mse", optimizer="sgd", lr=0.5, epochs=epochs, shuffle=False)
        backend.synchronize()

    implementations = {"nnback": nnback_fit}
    if backend.name == "numpy":
        hand_step = hand_numpy_xor_step(X, y, 0.5)

        def hand_fit():
            for _ in range(epochs):
                hand_step()

        implementations["hand numpy"] = hand_fit
    return Case("fit-small", backend, "float64",
                {"layers": XOR_SIZES, "batch": 4, "samples": 4, "epochs": epochs},
                epochs * step_flops(XOR_SIZES, 4), implementations)


def step_case(backend, name, sizes, batch, dtype="float32"):
    """One training step (forward, loss, backward, SGD update) of a ReLU MLP with a
    softmax output and cross-entropy loss, on one batch."""
    X, y = classification_data(batch, sizes[0], sizes[-1], dtype)
    args = (backend, sizes, batch, dtype, "relu", "softmax", "crossentropy", LEARNING_RATE,
            X, y)
    implementations = {"nnback": _nnback_step(*args),
                       "gemm floor": gemm_floor(backend, sizes, batch, dtype)}
    notes = []
    _add_torch(implementations, notes, torch_step(*args))
    return Case(name, backend, dtype, {"layers": sizes, "batch": batch},
                step_flops(sizes, batch), implementations, notes)


def _add_torch(implementations, notes, run):
    if run is not None:
        implementations["torch"] = run
    elif optional("torch") is None:
        notes.append(f"torch reference skipped: not installed ({INSTALL_HINTS['torch']})")
    else:
        notes.append("torch reference skipped: no torch device matches this backend")


def fit_case(backend, epochs, sizes=MEDIUM_SIZES, batch=MEDIUM_BATCH,
             n_samples=FIT_SAMPLES, dtype="float32"):
    """A whole fit: the medium network on ``n_samples`` samples, plain SGD, ``batch`` rows
    per step, shuffled every epoch; against scikit-learn's MLPClassifier with the same
    layers, solver, batch size and epochs, and the GEMM floor of all its steps."""
    from .model import MLP

    X, y = classification_data(n_samples, sizes[0], sizes[-1], dtype)
    batches = [min(batch, n_samples - start) for start in range(0, n_samples, batch)]
    backend_x = backend.asarray(X, dtype)  # the data is on the device before the clock runs

    def nnback_fit():
        model = MLP(sizes, activation="relu", output="softmax", backend=backend, dtype=dtype,
                    seed=0)
        model.fit(backend_x, y, loss="crossentropy", optimizer="sgd", lr=LEARNING_RATE,
                  epochs=epochs, batch_size=batch, seed=0)
        backend.synchronize()

    floors = {size: gemm_floor(backend, sizes, size, dtype) for size in set(batches)}

    def floor():
        for _ in range(epochs):
            for size in batches:
                floors[size]()

    implementations = {"nnback": nnback_fit, "gemm floor": floor}
    notes = []
    sklearn = optional("sklearn") if backend.name == "numpy" else None
    if sklearn is not None:
        implementations["sklearn"] = _sklearn_fit(sklearn, sizes, batch, epochs, X, y)
    elif backend.name == "numpy":
        notes.append(f"sklearn reference skipped: not installed ({INSTALL_HINTS['sklearn']})")
    return Case("fit-medium", backend, dtype,
                {"layers": sizes, "batch": batch, "samples": n_samples, "epochs": epochs},
                epochs * sum(step_flops(sizes, size) for size in batches),
                implementations, notes)


def _sklearn_fit(sklearn, sizes, batch, epochs, X, y):
    import warnings

    def run():
        classifier = sklearn.MLPClassifier(
            hidden_layer_sizes=tuple(sizes[1:-1]), activation="relu", solver="sgd",
            batch_size=batch, learning_rate_init=LEARNING_RATE, momentum=0.0,
            nesterovs_momentum=False, alpha=0.0, max_iter=epochs, shuffle=True, tol=0.0,
            n_iter_no_change=10 ** 9, random_state=0)
        with warnings.catch_warnings():  # "max_iter reached": wanted here
            warnings.simplefilter("ignore")
            classifier.fit(X, y)

    return run


# -- timing -------------------------------------------------------------------------------
def calibrate(function, min_time):
    """How many calls fill ``min_time`` seconds (after a warm-up call)."""
    function()
    start = time.perf_counter()
    function()
    once = time.perf_counter() - start
    return max(1, math.ceil(min_time / max(once, 1e-9)))


CLOCKS = {
    # wall-clock time: what a user waits
    "wall": time.perf_counter,
    # CPU time of the whole process, all threads: on a machine shared with other work it
    # leaves out the time spent waiting for a core; meaningful with one thread per library
    # (OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1), since idle BLAS
    # threads that spin count as busy
    "cpu": time.process_time,
}


def measure(implementations, repeats, min_time, clock="wall"):
    """{name: [seconds of each call]}: the implementations timed interleaved — ``repeats``
    rounds, each running every implementation for about ``min_time`` seconds — with every
    call timed on its own, so that the minimum is that of single calls (timer overhead,
    about 0.1 µs, is far below the shortest case)."""
    calls = {name: calibrate(function, min_time) for name, function in implementations.items()}
    samples = {name: [] for name in implementations}
    clock = CLOCKS[clock]
    for _ in range(repeats):
        for name, function in implementations.items():
            times = samples[name]
            for _ in range(calls[name]):
                start = clock()
                function()
                times.append(clock() - start)
    return samples


def run_case(case, repeats, min_time, clock="wall"):
    """The case timed: a dict per implementation (JSON-ready) with ratios of nnback to each
    reference (nnback time / reference time, from the minima)."""
    samples = measure(case.implementations, repeats, min_time, clock)
    best = {name: min(times) for name, times in samples.items()}
    rows = []
    for name, times in samples.items():
        row = dict(case.info)
        row.update({"implementation": name, "min_s": best[name],
                    "median_s": float(numpy.median(times)), "calls": len(times),
                    "clock": clock,
                    "gflops": case.flops / best[name] / 1e9})
        if name == "nnback":
            row["ratios"] = nnback_ratios(best)
        rows.append(row)
    return rows


def nnback_ratios(best):
    """{reference: nnback's time / the reference's time} from {implementation: seconds}."""
    return {name: best["nnback"] / seconds for name, seconds in best.items() if name != "nnback"}


# -- the command --------------------------------------------------------------------------
def add_arguments(parser):
    parser.add_argument("--backend", default="auto",
                        help="backend to time (default: auto = cupy if a GPU works, else numpy)")
    parser.add_argument("--full", action="store_true",
                        help="all GEMM shapes, float64 GEMMs, 16x1024^3 stacked matmuls, "
                             "5-epoch fit; and the large step on a GPU")
    parser.add_argument("--cases", default=None,
                        help=f"comma-separated cases to run (from {', '.join(ALL_CASES)}); "
                             "default: the quick set (plus step-large on a GPU)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="interleaved samples per implementation (default 5; 7 with --full)")
    parser.add_argument("--min-time", type=float, default=None,
                        help="seconds per sample (default 0.05; 0.2 with --full)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall (default) or cpu: process CPU time, for a machine shared "
                             "with other work; run it with one thread per library "
                             "(OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1)")
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="also write the results (and the machine) as JSON to PATH")


def selected_cases(args, backend):
    if args.cases:
        names = [name.strip() for name in args.cases.split(",") if name.strip()]
        for name in names:
            if name not in ALL_CASES:
                raise SystemExit(f"unknown case {name!r}; valid cases: {', '.join(ALL_CASES)}")
        return names
    names = list(QUICK_CASES)
    if backend.name == "cupy":  # the large step is for GPUs: minutes per step on a CPU
        names.insert(names.index("fit-medium"), "step-large")
    return names


def machine():
    """What the numbers were measured on."""
    info = {"python": platform.python_version(), "numpy": numpy.__version__,
            "platform": platform.platform(), "cpu": get_backend("numpy").device_name(),
            "cpu_count": os.cpu_count()}
    if hasattr(os, "getloadavg"):  # other work on the machine slows what is timed
        info["load_average"] = list(os.getloadavg())
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [{key: pool.get(key) for key in
                         ("internal_api", "version", "num_threads", "architecture")}
                        for pool in threadpool_info() if pool.get("user_api") == "blas"]
    except ImportError:
        pass
    for variable in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(variable):
            info[variable] = os.environ[variable]
    return info


def format_seconds(seconds):
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def format_table(rows):
    """The results as a text table: one line per implementation; nnback's line carries its
    ratio to each reference of the case (nnback time / reference time)."""
    header = ["case", "implementation", "backend", "dtype", "time", "GFLOP/s", "nnback ÷ ref"]
    lines = [header]
    for row in rows:
        ratio = ""
        if row["implementation"] == "nnback":
            ratio = ", ".join(f"{ref} {value:.2f}" for ref, value in row["ratios"].items())
        lines.append([row["case"], row["implementation"], row["backend"], row["dtype"],
                      format_seconds(row["min_s"]), f"{row['gflops']:.3g}", ratio])
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    text = []
    for number, line in enumerate(lines):
        text.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
        if number == 0:
            text.append("  ".join("-" * width for width in widths))
    return "\n".join(text)


def run(args, out=print):
    backend = get_backend(args.backend)
    repeats = args.repeats or (7 if args.full else 5)
    min_time = args.min_time if args.min_time is not None else (0.2 if args.full else 0.05)
    names = selected_cases(args, backend)
    out(f"nnback bench on {backend.name} ({backend.device_name()}): fastest single call of "
        f"each implementation over {repeats} interleaved rounds of about {min_time:g} s "
        f"({args.clock} clock)")
    rows, notes = [], []
    for name in names:
        for case in make_case(name, backend, full=args.full):
            rows.extend(run_case(case, repeats, min_time, args.clock))
            notes.extend(note for note in case.notes if note not in notes)
    out(format_table(rows))
    for note in notes:
        out(f"note: {note}")
    out("nnback ÷ ref: nnback's time divided by the reference's (below 1: nnback is faster)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"machine": machine(), "results": rows}, handle, indent=2)
        out(f"wrote {args.json}")
    return 0
