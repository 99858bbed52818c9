"""The cupy backend's fused elementwise kernels: their CUDA text, and their compilation.

The CUDA operation text of each kernel is built by plain Python functions (``*_source``),
so that it can be read, tested and compile-checked with nvcc where CuPy is not installed.
``kernel(cupy, name, *variant)`` compiles one through ``cupy.ElementwiseKernel`` on first
use and keeps it in a module-level cache: a kernel is never built per call. (CuPy also
caches the compiled binary on disk, so a new process pays NVRTC only for new kernels.)

This module never imports cupy: the cupy backend passes its module in.

Each operation mirrors the generic Backend formula it replaces, in the same order, so that
the two agree to rounding (fused multiply-adds aside); the parity tests in
tests/test_cupy_paths.py hold them together.
"""

DTYPES = ("float32", "float64")
CUDA_TYPES = {"float32": "float", "float64": "double"}

# y from the pre-activation s, both of type T (the generic formulas of Backend)
ACTIVATIONS = {
    # max(s, 0) as maximum() computes it: NaN stays NaN (NaN < 0 is false)
    "relu": "y = s < (T)0 ? (T)0 : s;",
    # 1 / (1 + e^-s) without overflow: e^-|s| never exceeds 1
    "sigmoid": "T e = exp(-fabs(s)); y = (s >= (T)0 ? (T)1 : e) / ((T)1 + e);",
    "tanh": "y = tanh(s);",
}
# grad_x from grad_y and the saved output y (generic order of the products)
DERIVATIVES = {
    "relu": "grad_x = y > (T)0 ? grad_y : (T)0;",
    "sigmoid": "grad_x = grad_y * y * ((T)1 - y);",
    "tanh": "grad_x = grad_y * ((T)1 - y * y);",
}


def _check_activation(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"no fused kernel for activation {activation!r}; fused: "
                         f"{', '.join(ACTIVATIONS)}")


# -- the kernels: (in_params, out_params, operation) -----------------------------------------
def bias_activation_source(activation):
    """y = activation(z + bias); bias (n_out,) broadcasts over the rows of z (n, n_out)."""
    _check_activation(activation)
    return "T z, T bias", "T y", "T s = z + bias; " + ACTIVATIONS[activation]


def activation_source(activation):
    """y = activation(x)."""
    _check_activation(activation)
    return "T x", "T y", "T s = x; " + ACTIVATIONS[activation]


def activation_backward_source(activation):
    """grad_x = grad_y · activation'(x), from the saved output y."""
    _check_activation(activation)
    return "T grad_y, T y", "T grad_x", DERIVATIVES[activation]


def scaled_difference_source():
    """(output − target) · scale: the loss gradient through a fused output activation
    (softmax + cross-entropy, sigmoid + binary cross-entropy)."""
    return "T output, T target, T scale", "T grad", "grad = (output - target) * scale;"


def momentum_source(nesterov):
    """SGD with momentum, in place over a flat buffer (param and velocity are read and
    written): v ← μ·v + g; p ← p − lr·v (Nesterov: p ← p − lr·g − lr·μ·v)."""
    if nesterov:
        return ("T grad, T momentum, T neg_lr, T neg_lr_momentum", "T param, T velocity",
                "velocity = velocity * momentum + grad; param = param + neg_lr * grad; "
                "param = param + neg_lr_momentum * velocity;")
    return ("T grad, T momentum, T neg_lr", "T param, T velocity",
            "velocity = velocity * momentum + grad; param = param + neg_lr * velocity;")


def adam_source():
    """Adam, in place over a flat buffer: m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²;
    p ← p − step_size·m / (√v + eps) (bias corrections folded into step_size and eps)."""
    return ("T grad, T beta1, T one_minus_beta1, T beta2, T one_minus_beta2, T step_size, "
            "T eps", "T param, T m, T v",
            "m = m * beta1 + one_minus_beta1 * grad; "
            "v = v * beta2 + one_minus_beta2 * (grad * grad); "
            "param = param - step_size * m / (sqrt(v) + eps);")


SOURCES = {
    "bias_activation": bias_activation_source,
    "activation": activation_source,
    "activation_backward": activation_backward_source,
    "scaled_difference": scaled_difference_source,
    "momentum": momentum_source,
    "adam": adam_source,
}


def variants():
    """Every (name, *variant) this module can build, for tests and nvcc checks."""
    for name in ("bias_activation", "activation", "activation_backward"):
        for activation in ACTIVATIONS:
            yield (name, activation)
    yield ("scaled_difference",)
    yield ("momentum", False)
    yield ("momentum", True)
    yield ("adam",)


def kernel_name(name, *variant):
    """A C identifier naming one kernel (CuPy compiles it under this name)."""
    parts = ["nnback", name] + [str(part).lower() for part in variant]
    return "_".join(parts)


def standalone_cuda(name, *variant, dtype="float32"):
    """The operation of one kernel wrapped in a ``__global__`` function over flat arrays of
    ``dtype`` (T typedef'd), as a whole CUDA translation unit: what an nvcc check compiles.
    (CuPy's ElementwiseKernel wraps the same operation in its own indexing loop.)"""
    in_params, out_params, operation = SOURCES[name](*variant)
    params = [param.strip().split() for param in (in_params + ", " + out_params).split(",")]
    inputs = {param_name for _, param_name in params[:len(in_params.split(","))]}
    arguments = ", ".join(
        f"const T* {param_name}_" if param_name in inputs else f"T* {param_name}_"
        for _, param_name in params)
    loads = " ".join(f"T {param_name} = {param_name}_[i];" for _, param_name in params)
    stores = " ".join(f"{param_name}_[i] = {param_name};" for _, param_name in params
                      if param_name not in inputs)
    return (f"typedef {CUDA_TYPES[dtype]} T;\n"
            f'extern "C" __global__ void {kernel_name(name, *variant)}'
            f"({arguments}, long long n) {{\n"
            "  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
            "  if (i >= n) return;\n"
            f"  {loads}\n  {operation}\n  {stores}\n}}\n")


# -- compilation, once per kernel ----------------------------------------------------------
_compiled = {}


def kernel(cupy, name, *variant):
    """The cupy.ElementwiseKernel for SOURCES[name](*variant), compiled on first use and
    kept for the life of the process (one per (name, variant); T covers both dtypes)."""
    key = (name,) + variant
    compiled = _compiled.get(key)
    if compiled is None:
        in_params, out_params, operation = SOURCES[name](*variant)
        compiled = _compiled[key] = cupy.ElementwiseKernel(
            in_params, out_params, operation, kernel_name(name, *variant))
    return compiled


# -- when a fast path applies ----------------------------------------------------------------
def fits(*arrays, dtype=None):
    """Whether every array is C-contiguous, of float32 or float64, all of one dtype
    (``dtype``, a NumPy dtype object or name, when given): the fused kernels' condition.
    Works on anything with ``.dtype`` and ``.flags.c_contiguous`` (cupy arrays; fakes in
    tests)."""
    if not arrays:
        return False
    first = getattr(arrays[0].dtype, "name", str(arrays[0].dtype))
    if first not in DTYPES or (dtype is not None and first != getattr(dtype, "name", dtype)):
        return False
    for array in arrays:
        if getattr(array.dtype, "name", str(array.dtype)) != first:
            return False
        if not array.flags.c_contiguous:
            return False
    return True
