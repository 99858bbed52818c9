"""The CPU engine of the CuPy stand-in: ElementwiseKernel operation text compiled with the
system C++ compiler and run with CuPy's binding rules (tests/cupy_standin/cpu_kernels.py).

The expected error types and wording are CuPy's (cupy/_core/_kernel.pyx and _scalar.pyx of
CuPy 13.6 and 14.2). The engine is loaded from its file, so these tests need neither CuPy nor
the stand-in package; the tests that compile are skipped where no C++ compiler is installed.

Tolerances for the nnback kernels against the generic NumPy formulas of Backend: relative
1e-6 (float32) and 1e-14 (float64), never bit for bit: the engine's libm (expf, tanhf) and
NumPy's own loops may differ by an ulp or two, the rest of each formula rounds the same.
"""
import importlib.util
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import numpy
import pytest

ENGINE_PATH = Path(__file__).resolve().parent / "cupy_standin" / "cpu_kernels.py"


def _load_engine():
    spec = importlib.util.spec_from_file_location("_nnback_cpu_kernels_under_test", ENGINE_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ck = _load_engine()
Kernel = ck.CpuElementwise

needs_cxx = pytest.mark.skipif(
    not ck.compiler_available(),
    reason="no C++ compiler (g++, c++ or clang++, or $CXX) here: the CPU kernel engine "
           "compiles each kernel with one (apt-get install g++)")

RTOL = {"float32": 1e-6, "float64": 1e-14}
RELU_NAN_TO_ZERO = "y = s > (T)0 ? s : (T)0;"


@pytest.fixture(scope="module", autouse=True)
def kernel_cache(tmp_path_factory):
    """Compiled kernels of this module go to a fresh folder, not the user's cache."""
    folder = tmp_path_factory.mktemp("cpu-kernel-cache")
    old = os.environ.get(ck.CACHE_ENV)
    os.environ[ck.CACHE_ENV] = str(folder)
    yield folder
    if old is None:
        os.environ.pop(ck.CACHE_ENV, None)
    else:
        os.environ[ck.CACHE_ENV] = old


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(ck.CACHE_ENV, str(folder))
    return folder


def unique(prefix="k"):
    """A kernel name no other test compiles (the name is part of the C++ text)."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def rng():
    return numpy.random.default_rng(20251202)


# -- parameter lists (no compiler needed) ---------------------------------------------------
def test_parameter_lists_parse_like_cupy():
    k = Kernel("T x, float32 y, raw T z, _non_const U w", "T out, raw int64 idx", "")
    x, y, z, w = k.in_params
    assert (x.name, x.dtype, x.ctype, x.raw, x.is_const) == ("x", None, "T", False, True)
    assert (y.dtype, y.ctype) == (numpy.dtype("float32"), "float")
    assert z.raw and z.ctype == "T"
    assert w.ctype == "U" and not w.is_const
    out, idx = k.out_params
    assert not out.is_const and idx.raw and idx.ctype == "long long"
    assert (k.nin, k.nout, k.nargs) == (4, 2, 6)
    assert Kernel("", "float64 y", "").in_params == ()
    for name, ctype in (("bool", "bool"), ("int8", "signed char"), ("uint8", "unsigned char"),
                        ("int32", "int"), ("uint64", "unsigned long long"),
                        ("float64", "double")):
        assert Kernel(f"{name} a", "T b", "").in_params[0].ctype == ctype


@pytest.mark.parametrize("in_params, error, match", [
    # CuPy 13: the dtype's own name only; CuPy 14 would read float as float64: refused
    ("float x", ValueError, "Wrong type float"),
    ("double x", ValueError, "Wrong type double"),
    ("int n", ValueError, "Wrong type int"),
    ("Tx x", TypeError, "data type 'Tx' not understood"),  # placeholders are one letter
    ("x", Exception, "Syntax error: x"),
    ("T x,", Exception, "Syntax error: "),
    ("const T x", Exception, 'Unknown keyword "const"'),
    ("T i", ValueError, "Can not use 'i' as a parameter name"),
    ("float16 h", NotImplementedError, "does not support dtype float16"),
    ("complex64 c", NotImplementedError, "does not support dtype complex64"),
    ("CIndexer _ind", NotImplementedError, "CIndexer"),
])
def test_bad_parameter_lists_raise_cupys_errors(in_params, error, match):
    with pytest.raises(error, match=match):
        Kernel(in_params, "T y", "y = x;")


def test_wrong_type_message_says_what_cupy_14_would_do():
    with pytest.raises(ValueError) as info:
        Kernel("float x", "float32 y", "y = x;")
    assert "float64" in str(info.value) and "float32" in str(info.value)


def test_kernel_name_must_be_an_identifier():
    with pytest.raises(ValueError, match='Invalid kernel name: "my kernel"'):
        Kernel("T x", "T y", "y = x;", name="my kernel")


def test_nothing_is_compiled_before_the_first_call(fresh_cache):
    Kernel("T x", "T y", "this is not C++", name=unique())
    assert not fresh_cache.exists() or not list(fresh_cache.iterdir())


# -- errors raised before compiling (no compiler needed) ------------------------------------
def f32(*shape):
    return rng().standard_normal(shape).astype(numpy.float32)


def f64(*shape):
    return rng().standard_normal(shape)


@pytest.mark.parametrize("params, inputs, outputs, error, match", [
    (("T x, T y", "T z"), lambda: [f32(3), f64(3)], None,
     TypeError, r"^Type is mismatched\. y float64 float32 T$"),
    # outputs fix the placeholders first
    (("T x", "T z"), lambda: [f32(3)], lambda: [f64(3)],
     TypeError, r"^Type is mismatched\. x float32 float64 T$"),
    (("T x, float32 y", "T z"), lambda: [f32(3), f64(3)], None,
     TypeError, r"^Type is mismatched\. y float64 float32$"),
    (("T x", "float32 z"), lambda: [f32(3)], lambda: [f64(3)],
     TypeError, r"^Type is mismatched\. z float64 float32$"),
    # scalars never fix a placeholder: CuPy raises KeyError
    (("T x, U s", "T z"), lambda: [f32(3), 2.0], None, KeyError, "U"),
    (("T x", "U z"), lambda: [f32(3)], None, KeyError, "U"),
    (("T x, T y", "T z"), lambda: [f32(2, 3), f32(4)], None,
     ValueError, r"^operands could not be broadcast together with shapes \(2, 3\) \(4,\)$"),
    (("T x, T s", "T z"), lambda: [f32(2, 3), 1.0], lambda: [f32(4, 3)],
     ValueError, r"^operands could not be broadcast together with shapes \(2, 3\) \(\) "
                 r"\(4, 3\)$"),
    # a given output takes part in broadcasting, then must have the broadcast shape
    (("T x", "T z"), lambda: [f32(2, 3)], lambda: [f32(3)], ValueError,
     "^Out shape is mismatched$"),
    (("T x", "T z"), lambda: [f32(2, 3)], lambda: [f32(1, 3)], ValueError,
     "^Out shape is mismatched$"),
    (("T x", "T z"), lambda: [[1.0, 2.0]], None, TypeError,
     "^Unsupported type <class 'list'>$"),
    (("T x", "T z"), lambda: [f32(3)], lambda: [1.0], TypeError,
     "^Output arguments type must be cupy.ndarray$"),
    (("T x", "T z, T w"), lambda: [f32(3)], lambda: [f32(3), None], TypeError,
     "^Unsupported type <class 'NoneType'>$"),
    (("T x, T y", "T z"), lambda: [f32(3)], None, TypeError,
     r"^Wrong number of arguments for 'kern'\. It must be either 2 or 3 \(with outputs\), "
     r"but given 1\.$"),
    (("T x", "T z"), lambda: [f32(3)], lambda: [f32(3), f32(3)], TypeError,
     "Wrong number of arguments"),
    (("T x", "T z"), lambda: [numpy.ones(3, numpy.complex64)], None, NotImplementedError,
     "does not support dtype complex64"),
    (("T x", "T z"), lambda: [numpy.ones(3, numpy.float16)], None, NotImplementedError,
     "does not support dtype float16"),
    (("T x", "T z"), lambda: [numpy.ones(3, object)], None, TypeError,
     "Unable to find C\\+\\+ type for dtype object"),
    (("T x", "T z"), lambda: [numpy.ones(3, ">f4")], None, TypeError,
     "Unable to find C\\+\\+ type"),
    (("T x", "T z"), lambda: [f32(3)], lambda: [numpy.broadcast_to(f32(1), (3,))], ValueError,
     "read-only"),
    (("T x, T s", "T z"), lambda: [f32(3), 2 ** 64], None, OverflowError,
     "too large"),
])
def test_argument_errors_match_cupy(params, inputs, outputs, error, match):
    kernel = Kernel(*params, "z = x;", name="kern")
    with pytest.raises(error, match=match):
        kernel(inputs(), outputs() if outputs else None)


def test_size_rules_match_cupy():
    with pytest.raises(ValueError, match="^Specified 'size' can be used only if all of the "
                                         "ndarray are 'raw'.$"):
        Kernel("T x", "T y", "y = x;")([f32(3)], None, size=3)
    with pytest.raises(ValueError, match="^Loop size is undecided.$"):
        Kernel("float32 a", "float32 y", "y = a;")([1.0], None)
    with pytest.raises(ValueError, match="^Loop size is undecided.$"):
        Kernel("raw T x", "raw T y", "y[i] = x[i];")([f32(3)], None)
    with pytest.raises(ValueError, match="^Output array size is Undecided$"):
        Kernel("T x", "raw T y", "y[i] = x;")([f32(3)], None)


# -- running kernels ------------------------------------------------------------------------
@needs_cxx
def test_placeholders_bind_to_the_array_dtype_and_scalars_are_cast_to_it():
    kernel = Kernel("T x, T s", "T y", "y = x * s;", name="scale")
    for make in (f32, f64):
        x = make(50)
        (y,) = kernel([x, 1.0 / 3.0], None)
        assert y.dtype == x.dtype and y.shape == x.shape
        # s is cast to T before the product: bit-equal to NumPy's product in T
        assert numpy.array_equal(y, x * x.dtype.type(1.0 / 3.0))
    (y,) = kernel([f32(4), numpy.float64(0.1)], None)  # NumPy scalar: cast too
    assert y.dtype == numpy.float32


@needs_cxx
def test_concrete_scalar_parameters_use_numpys_assignment_rules():
    kernel = Kernel("T x, int32 n, uint8 u, bool b", "T y", "y = x * n + u + (b ? 100 : 0);",
                    name="concrete")
    x = numpy.ones(3)
    (y,) = kernel([x, 2.7, 3, 1.5], None)  # 2.7 -> 2 (truncates), 1.5 -> true
    assert numpy.array_equal(y, [105.0, 105.0, 105.0])
    with pytest.raises(OverflowError, match="-1 out of bounds for uint8"):
        kernel([x, 1, -1, True], None)
    with pytest.raises(ValueError, match="cannot convert float NaN to integer"):
        kernel([x, float("nan"), 1, True], None)
    with pytest.raises(TypeError, match="^Unsupported type <class 'str'>$"):
        kernel([x, "1", 1, True], None)


@needs_cxx
def test_outputs_are_allocated_with_the_broadcast_shape_and_their_own_dtype():
    kernel = Kernel("T x, T bias", "T y, int64 n, bool pos",
                    "y = x + bias; n = i; pos = y > 0;", name="alloc")
    x, bias = f32(4, 5), f32(5)
    y, n, pos = kernel([x, bias], None)
    assert (y.dtype, n.dtype, pos.dtype) == (numpy.float32, numpy.int64, numpy.bool_)
    assert y.shape == n.shape == pos.shape == (4, 5)
    assert numpy.array_equal(y, x + bias)
    assert numpy.array_equal(n, numpy.arange(20).reshape(4, 5))  # i: flat C-order index
    assert numpy.array_equal(pos, (x + bias) > 0)


@needs_cxx
def test_a_placeholder_only_on_outputs_is_fixed_by_a_given_output():
    kernel = Kernel("T x", "U y", "y = (U)(x * 2);", name="two_types")
    out = numpy.zeros(3, numpy.int32)
    (result,) = kernel([numpy.array([1.6, -1.6, 2.0])], [out])
    assert result is out and out.tolist() == [3, -3, 4]  # C truncation towards zero


LAYOUTS = {
    "contiguous": lambda a, b: (a, b),
    "transposed": lambda a, b: (a.transpose(2, 0, 1), b.transpose(2, 0, 1)),
    "reversed and strided": lambda a, b: (a[::-1, ::2], b[0, ::2, :]),
    "broadcast column": lambda a, b: (a[:, :, :1], b[0, 0]),
    "broadcast row": lambda a, b: (a, b[0, 0, :]),
    "0-d array": lambda a, b: (a, numpy.array(3.0)),
    "both 0-d": lambda a, b: (numpy.array(2.0), numpy.array(3.0)),
    "one element, odd strides": lambda a, b: (a[:1, 3:4, ::-5], b[:1, :1, :1].T),
}


@needs_cxx
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_any_layout_broadcasts_and_writes_in_place(layout):
    kernel = Kernel("T a, T b", "T y", "y = a * (T)10 + b;", name="axpb")
    a, b = LAYOUTS[layout](f64(6, 7, 5), f64(6, 7, 5) + 1)
    expected = a * 10.0 + b
    (y,) = kernel([a, b], None)
    assert y.shape == expected.shape and numpy.array_equal(y, expected)
    # a given non-contiguous output is written where it lives, and nothing else is
    big = numpy.full(tuple(2 * n for n in expected.shape), -7.0)
    every_other = tuple(slice(None, None, 2) for _ in expected.shape) or Ellipsis
    out = big[every_other]
    (result,) = kernel([a, b], [out])
    assert result is out and numpy.array_equal(out, expected)
    rest = big.copy()
    rest[every_other] = -7.0
    assert (rest == -7.0).all()


@needs_cxx
def test_outputs_take_part_in_broadcasting():
    kernel = Kernel("T x", "T y", "y = x + (T)1;", name="plus_one")
    out = numpy.zeros((3, 4), numpy.float32)
    kernel([numpy.arange(4, dtype=numpy.float32)], [out])
    assert numpy.array_equal(out, numpy.tile(numpy.arange(1, 5, dtype=numpy.float32), (3, 1)))


@needs_cxx
def test_same_array_as_input_and_output_reads_the_element_before_and_after_writes():
    # inputs bind as const T& to the element: with the output's own array they see its writes
    # within the element, as on the GPU (CuPy copies nothing for ElementwiseKernel)
    kernel = Kernel("T x", "T y", "y = (T)2 * x; y = y + x;", name="alias")
    x = f64(100)
    (separate,) = kernel([x], None)
    assert numpy.allclose(separate, 3 * x, rtol=1e-15)
    same = x.copy()
    kernel([same], [same])
    assert numpy.allclose(same, 4 * x, rtol=1e-15)


@needs_cxx
def test_overlapping_views_run_in_the_order_of_i():
    # on the GPU a race; here each element is read where it lives when its turn comes, so an
    # input one element behind the output sees the values written just before
    kernel = Kernel("T x", "T y", "y = x + (T)1;", name="shifted")
    buf = numpy.zeros(100)
    kernel([buf[:-1]], [buf[1:]])
    assert numpy.array_equal(buf, numpy.arange(100.0))
    buf = numpy.zeros(100)
    kernel([buf[1:]], [buf[:-1]])  # one element ahead: reads before they are written
    assert numpy.array_equal(buf, numpy.r_[numpy.ones(99), 0.0])


@needs_cxx
def test_inputs_are_read_only_and_non_const_inputs_are_written_in_place():
    with pytest.raises(ck.CompileException):
        Kernel("T x", "T y", "x = y;", name=unique("write_input"))([f32(3)], None)
    kernel = Kernel("_non_const T x", "T y", "x = x * (T)2; y = x;", name="non_const")
    x = numpy.arange(4.0)
    (y,) = kernel([x], None)
    assert x.tolist() == [0.0, 2.0, 4.0, 6.0] and y.tolist() == x.tolist()


@needs_cxx
def test_zero_size_returns_the_outputs_without_running_or_casting_scalars():
    kernel = Kernel("T x, uint8 u", "T y", "y = x + u;", name="empty")
    (y,) = kernel([numpy.ones((0, 3)), -1], None)  # -1 into uint8 is never attempted
    assert y.shape == (0, 3) and y.dtype == numpy.float64


@needs_cxx
def test_size_loops_over_a_range_without_arrays():
    kernel = Kernel("float64 a", "float64 y", "y = a * i;", name="ramp")
    (y,) = kernel([0.5], None, size=5)
    assert y.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    raw = Kernel("raw T x, int32 n", "raw T y", "y[i] = x[n - 1 - i] + x.size();",
                 name="reverse")
    v = numpy.arange(6.0)
    (r,) = raw([v, 6], None, size=6)
    assert r.tolist() == [11.0, 10.0, 9.0, 8.0, 7.0, 6.0]
    out = numpy.zeros(8)
    raw([v, 6], [out], size=6)
    assert out.tolist() == [11.0, 10.0, 9.0, 8.0, 7.0, 6.0, 0.0, 0.0]
    (empty,) = kernel([0.5], None, size=0)
    assert empty.shape == (0,)


@needs_cxx
def test_raw_arrays_index_their_own_flat_shape_and_strides():
    kernel = Kernel("raw T x, T w", "T y", "y = x[i % x.size()] * w;", name="raw_flat")
    grid = numpy.arange(12.0).reshape(3, 4)
    (y,) = kernel([grid.T, numpy.ones(7)], None)  # non-contiguous raw input
    assert y.tolist() == grid.T.ravel()[:7].tolist()
    multi = Kernel("raw T x", "T y",
                   "ptrdiff_t idx[2] = {i / x.shape()[1], i % x.shape()[1]}; y = x[idx];",
                   name="raw_multi")
    (y,) = multi([grid[:, ::-1]], None, size=12)
    assert y.tolist() == grid[:, ::-1].ravel().tolist()
    scatter = Kernel("T x", "raw T y", "y[_ind.size() - 1 - i] = x;", name="raw_out")
    out = numpy.zeros(5)
    scatter([numpy.arange(5.0)], [out])
    assert out.tolist() == [4.0, 3.0, 2.0, 1.0, 0.0]


@needs_cxx
def test_nan_follows_c_semantics_not_numpy():
    relu = Kernel("T x", "T y", "T s = x; " + RELU_NAN_TO_ZERO, name="relu_text")
    for dtype in (numpy.float32, numpy.float64):
        x = numpy.linspace(-3, 3, 131).astype(dtype)  # vector loop and its tail
        x[[0, 5, 64, 130]] = numpy.nan
        x[7] = -0.0
        (y,) = relu([x], None)
        assert not numpy.isnan(y).any()  # NaN > 0 is false: 0, where maximum keeps NaN
        assert (y[[0, 5, 64, 130]] == 0).all() and not numpy.signbit(y[7])
        assert numpy.isnan(numpy.maximum(x, 0)[[0, 5, 64, 130]]).all()
        finite = ~numpy.isnan(x)
        assert numpy.array_equal(y[finite], numpy.maximum(x[finite], 0))
    # CUDA's min/max are fminf/fmaxf: NaN loses
    minmax = Kernel("T x", "T lo, T hi", "lo = min(x, (T)1); hi = max(x, (T)1);",
                    name="minmax")
    lo, hi = minmax([numpy.array([numpy.nan, 0.0, 2.0], numpy.float32)], None)
    assert lo.tolist() == [1.0, 0.0, 1.0] and hi.tolist() == [1.0, 1.0, 2.0]


@needs_cxx
def test_math_has_cudas_float_overloads():
    kernel = Kernel("float32 x", "float64 single, float64 double_",
                    "single = exp(x) + tanh(x) * sqrt(fabs(x)); "
                    "double_ = exp((double)x);", name="overloads")
    x = numpy.linspace(-2, 2, 41).astype(numpy.float32)
    single, double_ = kernel([x], None)
    # exp(float) is single precision (as in CUDA): its sum still fits a float exactly
    assert numpy.array_equal(single, single.astype(numpy.float32).astype(numpy.float64))
    assert not numpy.array_equal(double_, double_.astype(numpy.float32).astype(numpy.float64))
    numpy.testing.assert_allclose(single, numpy.exp(x) + numpy.tanh(x) * numpy.sqrt(abs(x)),
                                  rtol=1e-6, atol=1e-6)
    ints = Kernel("int32 a, int32 b", "int32 q, int32 r", "q = a / b; r = a % b;", name="cdiv")
    q, r = ints([numpy.array([-7, 7], numpy.int32), numpy.array([2, -2], numpy.int32)], None)
    assert q.tolist() == [-3, -3] and r.tolist() == [-1, 1]  # C truncation, unlike NumPy


@needs_cxx
def test_cuda_c_conveniences():
    preamble = "__device__ __forceinline__ float twice(float v) { return 2.0f * v; }"
    kernel = Kernel("float32 x, bool m", "float32 y, raw float32 total",
                    "if (!m) continue; acc += twice(x); y = acc", name="conveniences",
                    preamble=preamble, loop_prep="float acc = SCALE",
                    after_loop="total[0] = acc", options=("-DSCALE=100", "--std=c++17"))
    x = numpy.arange(1, 6, dtype=numpy.float32)
    m = numpy.array([True, False, True, True, False])
    y = numpy.full(5, -1.0, numpy.float32)
    total = numpy.zeros(1, numpy.float32)
    kernel([x, m], [y, total])
    # continue skips an element; loop_prep, after_loop and the -D option are in place
    assert y.tolist() == [102.0, -1.0, 108.0, 116.0, -1.0] and total[0] == 116.0
    atomic = Kernel("T x", "raw T sum", "atomicAdd(&sum[0], x);", name="atomic")
    s = numpy.zeros(1)
    atomic([numpy.arange(10.0)], [s])
    assert s[0] == 45.0


@needs_cxx
def test_compile_errors_show_the_compiler_log_and_the_source():
    name = unique("broken")
    kernel = Kernel("T x", "T y", "y = undefined_function(x);", name=name)
    with pytest.raises(ck.CompileException) as info:
        kernel([f32(3)], None)
    message = str(info.value)
    assert "error" in message and "undefined_function" in message
    assert "generated C++ source" in message and "y = undefined_function(x);" in message
    assert info.value.name == name and "undefined_function" in info.value.source
    assert "error" in info.value.get_message()


# -- caching, compilers, threads and processes ----------------------------------------------
@needs_cxx
def test_compiled_once_per_dtype_binding_and_kept_on_disk(fresh_cache, monkeypatch):
    calls = []
    compile_to = ck._compile_to
    monkeypatch.setattr(ck, "_compile_to", lambda *a: calls.append(a) or compile_to(*a))
    name = unique("cached")
    kernel = Kernel("T x", "T y", "y = x + x;", name=name)
    for _ in range(3):
        kernel([f32(4)], None)
        kernel([f64(4)], None)
    assert len(calls) == 2
    libraries = sorted(p.name for p in fresh_cache.iterdir() if p.suffix == ".so")
    assert len(libraries) == 2 and all(p.startswith(name) for p in libraries)
    # another kernel object with the same text finds the compiled library in memory
    Kernel("T x", "T y", "y = x + x;", name=name)([f32(4)], None)
    assert len(calls) == 2
    assert not [p for p in fresh_cache.iterdir() if p.name.endswith(".tmp")]


def _child_script(name, operation):
    return textwrap.dedent(f"""
        import importlib.util, sys, numpy
        spec = importlib.util.spec_from_file_location("engine", {str(ENGINE_PATH)!r})
        ck = importlib.util.module_from_spec(spec); spec.loader.exec_module(ck)
        k = ck.CpuElementwise("T x", "T y", {operation!r}, name={name!r})
        (y,) = k([numpy.arange(5.0)], None)
        print(y.tolist())
    """)


@needs_cxx
def test_a_new_process_loads_from_disk_without_a_compiler(fresh_cache):
    name = unique("disk")
    Kernel("T x", "T y", "y = x * (T)3;", name=name)([numpy.arange(5.0)], None)
    env = dict(os.environ, PATH="", **{ck.CACHE_ENV: str(fresh_cache)})
    env.pop("CXX", None)
    result = subprocess.run([sys.executable, "-c", _child_script(name, "y = x * (T)3;")],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[0.0, 3.0, 6.0, 9.0, 12.0]"


def test_no_compiler_raises_compiler_unavailable(fresh_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    kernel = Kernel("T x", "T y", "y = x;", name=unique("nocxx"))
    with pytest.raises(ck.CompilerUnavailable, match="install"):
        kernel([f32(3)], None)
    monkeypatch.delenv("CXX")
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on it
    with pytest.raises(ck.CompilerUnavailable, match="g\\+\\+"):
        kernel([f32(3)], None)
    assert not ck.compiler_available()


@needs_cxx
def test_threads_calling_a_new_kernel_first_compile_it_once(fresh_cache, monkeypatch):
    calls = []
    compile_to = ck._compile_to
    monkeypatch.setattr(ck, "_compile_to", lambda *a: calls.append(a) or compile_to(*a))
    kernel = Kernel("T x, T s", "T y", "y = x * s;", name=unique("threads"))
    barrier = threading.Barrier(6)
    results, errors = {}, []

    def work(t):
        try:
            x = numpy.arange(1000.0) + t
            barrier.wait()
            for _ in range(50):
                (y,) = kernel([x, 2.0], None)
                assert numpy.array_equal(y, 2 * x)
            results[t] = True
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 6
    assert len(calls) == 1
    names = [p.name for p in fresh_cache.iterdir()]
    assert len([n for n in names if n.endswith(".so")]) == 1
    assert not [n for n in names if n.endswith(".tmp")]


@needs_cxx
def test_processes_compiling_the_same_kernel_at_once_both_succeed(fresh_cache):
    name = unique("procs")
    script = _child_script(name, "y = x - (T)1;")
    env = dict(os.environ, **{ck.CACHE_ENV: str(fresh_cache)})
    children = [subprocess.Popen([sys.executable, "-c", script], env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for _ in range(3)]
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert out.strip() == "[-1.0, 0.0, 1.0, 2.0, 3.0]"
    names = [p.name for p in fresh_cache.iterdir()]
    assert len([n for n in names if n.endswith(".so")]) == 1
    assert not [n for n in names if n.endswith(".tmp")]


@needs_cxx
def test_a_call_on_small_arrays_costs_microseconds():
    kernel = Kernel("T x", "T y", "T s = x; " + RELU_NAN_TO_ZERO, name="relu_speed")
    x = f32(64)
    out = numpy.empty_like(x)
    kernel([x], [out])
    times = []
    for _ in range(300):
        start = time.perf_counter()
        kernel([x], [out])
        times.append(time.perf_counter() - start)
    median = sorted(times)[len(times) // 2]
    assert median < 300e-6, f"{median * 1e6:.1f} us per call"  # about 5-10 us measured


# -- nnback's fused kernels against the generic formulas ------------------------------------
def _nnback_cases():
    from nnback import _cupy_kernels as kernels
    return [pytest.param(variant, id=kernels.kernel_name(*variant))
            for variant in kernels.variants()]


def _nnback_run(variant, dtype):
    """(kernel results, generic Backend results) for one nnback kernel on one dtype."""
    from nnback import _cupy_kernels as kernels
    from nnback.backend import Backend

    backend = Backend(numpy)
    name = variant[0]
    in_params, out_params, operation = kernels.SOURCES[name](*variant[1:])
    kernel = Kernel(in_params, out_params, operation, name=kernels.kernel_name(*variant))
    generator = numpy.random.default_rng(7)

    def array(*shape, scale=3.0):
        return (generator.standard_normal(shape) * scale).astype(dtype)

    shape = (67, 129)  # not a multiple of any vector width
    if name in ("bias_activation", "activation", "activation_backward"):
        activation = variant[1]
        x = array(*shape)
        x[0, :8] = [-40.0, -20.0, -1e-3, 0.0, 1e-3, 20.0, 40.0, -0.0]
        if name == "bias_activation":
            bias = array(shape[1], scale=1.0)
            return kernel([x, bias], None), [getattr(backend, activation)(x + bias)]
        if name == "activation":
            return kernel([x], None), [getattr(backend, activation)(x)]
        y = getattr(backend, activation)(x)
        grad_y = array(*shape)
        return (kernel([grad_y, y], None),
                [getattr(backend, activation + "_backward")(grad_y, y)])
    if name == "scaled_difference":
        output, target = array(*shape), array(*shape)
        return kernel([output, target, 1.0 / 67], None), [(output - target) * (1.0 / 67)]
    param, grad = array(*shape), array(*shape)
    if name == "momentum":
        nesterov = variant[1]
        lr, momentum = 0.05, 0.9
        velocity = array(*shape, scale=0.1)
        expected_param, expected_velocity = param.copy(), velocity.copy()
        backend.momentum_step(expected_param, grad, expected_velocity, lr, momentum, nesterov)
        scalars = [momentum, -lr, -lr * momentum] if nesterov else [momentum, -lr]
        results = kernel([grad, *scalars], [param, velocity])
        assert results[0] is param and results[1] is velocity  # in place
        return results, [expected_param, expected_velocity]
    assert name == "adam"
    beta1, beta2, step_size, eps = 0.9, 0.999, 1e-3 * (0.999 ** 0.5) / 0.1, 1e-8
    m, v = array(*shape, scale=0.1), abs(array(*shape, scale=0.01))
    expected = [param.copy(), m.copy(), v.copy()]
    backend.adam_step(expected[0], grad, expected[1], expected[2], (beta1, beta2), step_size,
                      eps)
    results = kernel([grad, beta1, 1 - beta1, beta2, 1 - beta2, step_size, eps], [param, m, v])
    return results, expected


@needs_cxx
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("variant", _nnback_cases())
def test_nnback_kernels_match_the_generic_formulas(variant, dtype):
    results, expected = _nnback_run(variant, dtype)
    assert len(results) == len(expected)
    for got, want in zip(results, expected):
        assert got.dtype == numpy.dtype(dtype) and got.shape == want.shape
        numpy.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=0,
                                      err_msg=f"{variant} {dtype}")


@needs_cxx
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nnback_relu_kernel_runs_its_cuda_text_faithfully_on_nan(dtype):
    from nnback import _cupy_kernels as kernels

    in_params, out_params, operation = kernels.activation_source("relu")
    kernel = Kernel(in_params, out_params, operation, name="nnback_activation_relu")
    x = numpy.array([numpy.nan, -1.0, 2.0] * 11, dtype=dtype)
    (y,) = kernel([x], None)
    if kernels.ACTIVATIONS["relu"] == RELU_NAN_TO_ZERO:
        # today's text maps NaN to 0, unlike Backend.relu (maximum keeps NaN): the engine
        # reproduces the CUDA text, not the intended formula
        assert (y[::3] == 0).all()
    else:
        # a fixed kernel must agree with Backend.relu
        assert numpy.isnan(y[::3]).all()
    assert numpy.array_equal(y[1::3], numpy.zeros(11)) and (y[2::3] == 2).all()
