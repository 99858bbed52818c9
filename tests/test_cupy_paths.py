"""The cupy fast path: fused kernels against the generic Backend methods, TF32 as an
explicit opt-in, pinned transfers.

Two kinds of tests:
- ``gpu``-marked ones run the fused CuPy kernels and compare them with the generic
  ``Backend`` over the cupy module (the readable xp code on the same device arrays): on
  real CuPy where a GPU works, and on the CuPy stand-in (tests/cupy_standin: the kernels'
  CUDA text compiled for the CPU) everywhere else.
- The others need no cupy: the CUDA text of every kernel (and, where nvcc is installed,
  that it compiles), when a fast path applies, the fused-pair hook of the models on the
  CPU, and allow_tf32 on CPU backends.
"""
import copy
import re
import shutil
import subprocess
import types

import numpy as np
import pytest

import nnback as nb
from nnback import _cupy_kernels as kernels
from nnback.backend import Backend, CupyBackend, NumpyBackend
from nnback.bench import tf32_enabled

from conftest import PARITY_RTOL, backend_or_skip

RNG = np.random.default_rng(3)
ACTIVATIONS = list(kernels.ACTIVATIONS)


# -- the CUDA text (no CuPy needed) ---------------------------------------------------------
@pytest.mark.parametrize("variant", list(kernels.variants()), ids=lambda v: "-".join(map(str, v)))
def test_kernel_source_declares_and_uses_every_parameter(variant):
    in_params, out_params, operation = kernels.SOURCES[variant[0]](*variant[1:])
    for params in (in_params, out_params):
        for param in params.split(","):
            type_name, param_name = param.split()
            assert type_name == "T", f"{variant}: {param} is not of the generic type T"
            assert re.search(rf"\b{param_name}\b", operation), f"{variant}: {param_name} unused"
    for output in out_params.split(","):
        assert f"{output.split()[1]} =" in operation, f"{variant}: {output} never written"
    assert operation.count("(") == operation.count(")")
    assert operation.rstrip().endswith(";")


def test_kernel_without_a_fused_formula_is_refused():
    with pytest.raises(ValueError, match="no fused kernel for activation 'leaky_relu'"):
        kernels.activation_source("leaky_relu")


def test_standalone_cuda_types_the_kernel_by_dtype():
    source = kernels.standalone_cuda("adam", dtype="float64")
    assert source.startswith("typedef double T;")
    assert "const T* grad_" in source and "T* param_" in source and "param_[i] = param;" in source
    assert "grad_[i] = grad" not in source  # inputs are never written back


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed here")
def test_every_kernel_compiles_with_nvcc(tmp_path):
    """Each kernel's operation, wrapped in a __global__ function, compiles to PTX for both
    dtypes: evidence that the CUDA text is valid without a GPU (CuPy wraps the same
    operation in its own loop and compiles it with NVRTC)."""
    for dtype in kernels.DTYPES:
        source = tmp_path / f"kernels_{dtype}.cu"
        source.write_text("\n".join(kernels.standalone_cuda(*variant, dtype=dtype)
                                    for variant in kernels.variants()))
        result = subprocess.run(["nvcc", "--ptx", str(source), "-o", str(tmp_path / "out.ptx")],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        ptx = (tmp_path / "out.ptx").read_text()
        for variant in kernels.variants():
            assert kernels.kernel_name(*variant) in ptx


# -- when a fast path applies (a stand-in for cupy) ----------------------------------------
class FakeArray:
    def __init__(self, dtype, contiguous=True):
        self.dtype = np.dtype(dtype)
        self.flags = types.SimpleNamespace(c_contiguous=contiguous)


@pytest.mark.parametrize("arrays, dtype, expected", [
    ([FakeArray("float32")], None, True),
    ([FakeArray("float64"), FakeArray("float64")], "float64", True),
    ([FakeArray("float16")], None, False),
    ([FakeArray("int64")], None, False),
    ([FakeArray("float32", contiguous=False)], None, False),
    ([FakeArray("float32"), FakeArray("float64")], None, False),
    ([FakeArray("float32")], "float64", False),
    ([], None, False),
])
def test_fast_path_applies_to_contiguous_float_arrays_of_one_dtype(arrays, dtype, expected):
    assert kernels.fits(*arrays, dtype=dtype) is expected


@pytest.fixture
def fresh_kernels(monkeypatch):
    """An empty kernel cache, so a test sees which kernels a call compiles."""
    monkeypatch.setattr(kernels, "_compiled", {})
    return kernels._compiled


@pytest.mark.gpu
def test_kernels_compile_once_and_lazily(cupy_backend, fresh_kernels):
    backend = CupyBackend(cupy_backend.module)
    assert fresh_kernels == {}  # nothing is compiled before it is used
    x = backend.asarray(np.ones((4, 3)), "float32")
    backend.relu(x)
    first = fresh_kernels[("activation", "relu")]
    backend.relu(x)
    backend.sigmoid(x)
    assert sorted(fresh_kernels) == [("activation", "relu"), ("activation", "sigmoid")]
    assert fresh_kernels[("activation", "relu")] is first


@pytest.mark.gpu
def test_fused_activation_falls_back_to_generic_where_it_does_not_apply(cupy_backend,
                                                                        fresh_kernels):
    backend = CupyBackend(cupy_backend.module)
    generic = Backend(cupy_backend.module)
    x = RNG.normal(size=(6, 4))
    cases = {"non-contiguous": backend.asarray(x, "float32").T,
             "float16": backend.module.asarray(x.astype("float16"))}
    for what, array in cases.items():
        for name in ACTIVATIONS:
            got = getattr(backend, name)(array)
            expected = getattr(generic, name)(array)
            np.testing.assert_array_equal(backend.to_numpy(got), backend.to_numpy(expected),
                                          err_msg=f"{name} on {what}")
    assert fresh_kernels == {}
    backend.relu(backend.asarray(x, "float32"))
    assert list(fresh_kernels) == [("activation", "relu")]


@pytest.mark.gpu
def test_fused_optimizer_steps_fall_back_on_mismatched_dtypes(cupy_backend, fresh_kernels):
    backend = CupyBackend(cupy_backend.module)
    param = backend.asarray(np.ones(5), "float32")
    grad = backend.asarray(np.full(5, 2.0), "float64")
    velocity = backend.zeros((5,), "float32")
    backend.momentum_step(param, grad, velocity, 0.5, 0.9, False)
    np.testing.assert_array_equal(backend.to_numpy(param), 0.0)  # 1 − 0.5·(0.9·0 + 2)
    assert fresh_kernels == {}
    backend.momentum_step(param, backend.astype(grad, "float32"), velocity, 0.5, 0.9, True)
    assert list(fresh_kernels) == [("momentum", True)]


@pytest.mark.gpu
def test_scaled_difference_kernel_falls_back_on_mismatched_arrays(cupy_backend, fresh_kernels):
    backend = CupyBackend(cupy_backend.module)
    output = backend.asarray(RNG.uniform(size=(4, 3)), "float32")
    target = backend.asarray(np.round(RNG.uniform(size=(4, 3))), "float32")
    expected = backend.to_numpy((output - target) * 0.25)
    np.testing.assert_allclose(backend.to_numpy(backend.scaled_difference(
        output, backend.astype(target, "float64"), 0.25)), expected, rtol=1e-6)
    assert fresh_kernels == {}
    np.testing.assert_allclose(backend.to_numpy(backend.scaled_difference(
        output, target, 0.25)), expected, rtol=1e-6)
    assert list(fresh_kernels) == [("scaled_difference",)]


@pytest.mark.gpu
def test_the_estimators_binary_log_loss_takes_the_fused_kernel(cupy_backend, fresh_kernels):
    """Its gradient through the sigmoid differs from BinaryCrossEntropy's only in the scale
    (1/n_samples, not 1/n_elements): it overrides gradient_scale, so the GPU classifier
    takes the kernel too."""
    from nnback.losses import BinaryLogLoss

    model = nb.MLP([5, 4, 3], output="sigmoid", backend=cupy_backend, seed=0)
    X, y = RNG.normal(size=(8, 5)), np.round(RNG.uniform(size=(8, 3)))
    model.train_step(X, y, BinaryLogLoss(), nb.SGD(lr=0.1))
    assert ("scaled_difference",) in fresh_kernels
    reference = nb.MLP([5, 4, 3], output="sigmoid", backend="numpy", seed=0)
    reference.train_step(X, y, BinaryLogLoss(), nb.SGD(lr=0.1))
    for got, expected in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# -- the fused Dense + activation pairs, on the CPU ------------------------------------------
class PairFusingNumpy(NumpyBackend):
    """The NumPy backend, marking its activations as fused with the Dense layer before
    them: the model hook runs the generic Backend.affine_activation on the CPU."""

    fused_dense_activations = ("relu", "sigmoid", "tanh")


class SeparateNumpy(NumpyBackend):
    """The NumPy backend with every Dense layer and activation run apart."""

    fused_dense_activations = ()


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fused_pairs_compute_what_separate_layers_compute(activation):
    X = RNG.normal(size=(9, 5))
    target = RNG.normal(size=(9, 2))
    results = []
    for backend in (SeparateNumpy(), PairFusingNumpy()):
        model = nb.MLP([5, 7, 2], activation=activation, output="identity", backend=backend,
                       dtype="float64", seed=2)
        model.train_step(X, target, "mse", nb.SGD(lr=0.1, momentum=0.5))
        out = model.forward(X)
        results.append([out, model.backward(out)] + model.get_gradients() + model.get_weights())
        fused = [layer.fused_activation for layer in model.dense_layers]
        assert fused == ([activation, None] if backend.fused_dense_activations else [None, None])
    for got, expected in zip(*results):
        np.testing.assert_allclose(got, expected, rtol=PARITY_RTOL["float64"])


# -- allow_tf32 on the CPU --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["numpy", "array_api_strict"])
def test_allow_tf32_on_a_cpu_backend_raises(name):
    backend = backend_or_skip(name)
    with pytest.raises(ValueError, match="allow_tf32=True is for the cupy backend"):
        nb.get_backend(name, allow_tf32=True)
    with pytest.raises(ValueError, match="TF32 is a CUDA tensor-core feature"):
        nb.get_backend(backend, allow_tf32=True)
    with pytest.raises(ValueError, match="allow_tf32=True is for the cupy backend"):
        nb.MLP([2, 3, 1], backend=name, allow_tf32=True)


def test_allow_tf32_with_auto_is_dropped_when_auto_picks_numpy(monkeypatch):
    monkeypatch.setenv("NNBACK_BACKEND", "numpy")
    backend = nb.get_backend("auto", allow_tf32=True)
    assert backend.name == "numpy" and backend.allow_tf32 is False
    model = nb.MLP([2, 3, 1], allow_tf32=True, seed=0)
    assert model.backend is nb.get_backend("numpy") and not tf32_enabled(model.backend)


def test_allow_tf32_is_off_by_default_and_must_be_a_bool():
    assert nb.get_backend("numpy").allow_tf32 is False
    assert nb.MLP([2, 3, 1], backend="numpy").backend.allow_tf32 is False
    with pytest.raises(TypeError, match="allow_tf32 must be True or False"):
        nb.get_backend("numpy", allow_tf32="yes")
    with pytest.raises(TypeError, match="allow_tf32 must be True or False"):
        nb.MLP([2, 3, 1], backend="numpy", allow_tf32=1)


def test_cupy_with_tf32_without_cupy_raises_backend_unavailable(no_cupy):
    with pytest.raises(nb.BackendUnavailableError):
        nb.get_backend("cupy", allow_tf32=True)


# -- on the GPU: fused kernels against the generic Backend ------------------------------------
def gpu_close(got, expected, dtype, what):
    got, expected = np.asarray(got), np.asarray(expected)
    rtol = PARITY_RTOL[dtype]
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * np.nanmax(np.abs(expected)),
                               err_msg=what)  # NaN where the other has NaN, nowhere else


def fused_cases(backend, dtype):
    """{name: function(backend) -> the arrays it computes} on fresh device copies of the
    same inputs each call, so in-place updates start alike."""
    shape = (67, 33)
    host = {"x": RNG.normal(size=shape) * 4, "grad": RNG.normal(size=shape),
            "W": RNG.normal(size=(19, 33)), "x_in": RNG.normal(size=(67, 19)),
            "b": RNG.normal(size=33), "target": RNG.uniform(size=shape),
            "flat": RNG.normal(size=1000), "v": RNG.uniform(size=1000)}

    def arrays():
        return {key: backend.asarray(value, dtype) for key, value in host.items()}

    host["x with NaN"] = np.where(RNG.uniform(size=shape) < 0.1, np.nan, host["x"])
    cases = {}
    for name in ACTIVATIONS:
        cases[name] = lambda be, name=name: [getattr(be, name)(arrays()["x"])]
        # NaN stays NaN, as in the generic formulas (a fused ReLU once turned it into 0)
        cases[f"{name} of NaN"] = lambda be, name=name: [getattr(be, name)(arrays()["x with NaN"])]
        cases[f"affine + {name} of NaN"] = lambda be, name=name: [be.affine_activation(
            arrays()["x_in"], arrays()["W"], arrays()["x with NaN"][0], name,
            out=be.empty(shape, dtype))]
        cases[f"{name} into out"] = lambda be, name=name: [
            getattr(be, name)(arrays()["x"], out=be.empty(shape, dtype))]
        cases[f"{name}_backward"] = lambda be, name=name: [getattr(be, name + "_backward")(
            arrays()["grad"], getattr(Backend(backend.xp), name)(arrays()["x"]))]
        cases[f"affine + {name}"] = lambda be, name=name: [be.affine_activation(
            arrays()["x_in"], arrays()["W"], arrays()["b"], name, out=be.empty(shape, dtype))]
    cases["scaled difference"] = lambda be: [be.scaled_difference(
        arrays()["x"], arrays()["target"], 1.0 / 67)]
    cases["scaled difference into out"] = lambda be: [be.scaled_difference(
        arrays()["x"], arrays()["target"], -0.1 / 67, out=be.empty(shape, dtype))]
    for nesterov in (False, True):
        def momentum(be, nesterov=nesterov):
            a = arrays()
            be.momentum_step(a["flat"], a["v"], a["v"] * 0.5, 0.05, 0.9, nesterov)
            return [a["flat"]]
        cases[f"momentum nesterov={nesterov}"] = momentum

    def adam(be):
        a = arrays()
        m, v = a["v"] * 0.1, a["v"] * 0.01
        be.adam_step(a["flat"], a["v"] - 0.5, m, v, (0.9, 0.999), 0.003, 1e-8)
        return [a["flat"], m, v]
    cases["adam"] = adam
    return cases


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(fused_cases(Backend(np), "float64")))
def test_fused_cupy_method_matches_generic(cupy_backend, dtype, name):
    function = fused_cases(cupy_backend, dtype)[name]
    generic = Backend(cupy_backend.xp)
    for got, expected in zip(function(cupy_backend), function(generic)):
        assert got.dtype == np.dtype(dtype)
        gpu_close(cupy_backend.to_numpy(got), cupy_backend.to_numpy(expected), dtype, name)


@pytest.mark.gpu
@pytest.mark.parametrize("optimizer", [nb.SGD(lr=0.05), nb.SGD(lr=0.05, momentum=0.9),
                                       nb.SGD(lr=0.05, momentum=0.9, nesterov=True),
                                       nb.Adam(lr=0.01)], ids=repr)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_cupy_training_matches_generic_path(cupy_backend, dtype, optimizer, activation):
    """30 steps: fused kernels, flat parameters and fused pairs on cupy against the generic
    Backend over the same cupy module (per-parameter updates, no fusion)."""
    X = RNG.normal(size=(30, 7)) * 3
    y = RNG.integers(0, 5, size=30)
    generic = Backend(cupy_backend.xp)
    results = []
    for backend in (cupy_backend, generic):
        model = nb.MLP([7, 16, 8, 5], activation=activation, output="softmax",
                       backend=backend, dtype=dtype, seed=4)
        backend_optimizer = copy.deepcopy(optimizer)
        backend_optimizer.backend = backend
        history = model.fit(X, y, loss="crossentropy", optimizer=backend_optimizer, epochs=10,
                            batch_size=10, seed=1)
        results.append([np.array(history.loss)] + model.get_weights())
    rtol = 1e-4 if dtype == "float32" else 1e-10
    for position, (got, expected) in enumerate(zip(*results)):
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * np.abs(expected).max(),
                                   err_msg=f"{optimizer!r}, {activation}: result {position}")


@pytest.mark.gpu
def test_cupy_model_parameters_stay_in_one_flat_array(cupy_backend):
    model = nb.MLP([6, 5, 3], activation="relu", backend=cupy_backend, seed=0)
    held = model.parameters()
    model.train_step(RNG.normal(size=(4, 6)), RNG.normal(size=(4, 3)), "mse", nb.Adam())
    model.train_step(RNG.normal(size=(4, 6)), RNG.normal(size=(4, 3)), "mse", nb.Adam())
    assert all(a is b for a, b in zip(held, model.parameters()))
    params, grads = model.trainable_arrays()
    assert params.flat.size == sum(int(p.size) for p in held) and grads is not None


@pytest.mark.gpu
def test_large_inputs_in_a_row_arrive_intact(cupy_backend):
    """Host arrays of a few MiB, moved one after another and cast on the way: each arrives
    as it was (an earlier version staged them through pinned blocks that went back to the
    pool while the asynchronous copy could still read them; the stand-in detects that)."""
    hosts = [RNG.normal(size=(2 ** 17 + 3, 2)) for _ in range(4)]  # 2 MiB each, float64
    for dtype in ("float32", "float64"):
        moved = [cupy_backend.asarray(host, dtype) for host in hosts]
        for host, array in zip(hosts, moved):
            np.testing.assert_array_equal(cupy_backend.to_numpy(array), host.astype(dtype))


# -- on the GPU: TF32 --------------------------------------------------------------------------
def compute_type_float32():
    from cupy._core import _routines_linalg as linalg

    return linalg.get_compute_type(np.dtype("float32")), linalg.COMPUTE_TYPE_TF32


@pytest.mark.gpu
def test_tf32_is_off_by_default(cupy_backend, monkeypatch):
    assert cupy_backend.allow_tf32 is False and cupy_backend._tf32 is None
    a = cupy_backend.asarray(RNG.normal(size=(64, 64)), "float32")
    cupy_backend.matmul(a, a)
    current, tf32 = compute_type_float32()
    if current == tf32:
        pytest.skip("CUPY_TF32=1 is set in this environment: CuPy's own process-wide switch")
    assert not tf32_enabled(cupy_backend)


@pytest.mark.gpu
def test_tf32_applies_within_a_product_and_restores_the_compute_type(cupy_backend):
    tf32_backend = nb.get_backend("cupy", allow_tf32=True)
    assert tf32_backend.allow_tf32 and tf32_backend is not cupy_backend
    assert nb.get_backend(tf32_backend, allow_tf32=True) is tf32_backend
    before, tf32 = compute_type_float32()
    with tf32_backend._tf32:
        assert compute_type_float32()[0] == tf32
    assert compute_type_float32()[0] == before
    a = tf32_backend.asarray(RNG.normal(size=(256, 256)), "float32")
    stacked = tf32_backend.asarray(RNG.normal(size=(4, 256, 256)), "float32")
    exact = a.astype("float64") @ a.astype("float64")
    for got, expected in ((tf32_backend.matmul(a, a), exact),
                          (tf32_backend.matmul(stacked, a),
                           stacked.astype("float64") @ a.astype("float64"))):
        # TF32 keeps 10 mantissa bits: within 1e-2 relative of the float64 product
        np.testing.assert_allclose(tf32_backend.to_numpy(got), tf32_backend.to_numpy(expected),
                                   rtol=1e-2, atol=1e-2 * float(abs(expected).max()))
    assert compute_type_float32()[0] == before
    model = nb.MLP([4, 8, 2], backend="cupy", allow_tf32=True, seed=0)
    assert model.backend.allow_tf32 and tf32_enabled(model.backend)
