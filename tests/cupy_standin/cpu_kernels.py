"""Run a ``cupy.ElementwiseKernel``'s own CUDA C operation text on the CPU.

The CuPy stand-in (``tests/cupy_standin/cupy``) computes with NumPy; for the fused kernels it
hands their operation text to :class:`CpuElementwise`, which wraps it the way CuPy does (one
loop over the broadcast index ``i``, each argument bound to its element) and compiles it with
the system C++ compiler into a small shared library called through ctypes. So the text that
runs on the GPU is the text under test, with CuPy's binding rules.

Interface::

    CpuElementwise(in_params, out_params, operation, name="kernel", preamble="",
                   loop_prep="", after_loop="", options=())(inputs, outputs, size=None)

``inputs`` in ``in_params`` order (NumPy arrays or Python/NumPy scalars); ``outputs`` in
``out_params`` order (NumPy arrays written in place), or all None / empty to allocate them.
Returns the list of outputs.

Rules reproduced, from CuPy 13.6 / 14.2 ``cupy/_core/_kernel.pyx`` (ParameterInfo,
_decide_params_type_core, _broadcast, _get_out_args_with_params, ElementwiseKernel.__call__)
and ``_scalar.pyx`` (CScalar), with CuPy's exception types and wording:

- Parameter lists: ``"[raw] [_non_const] TYPE name, ..."``; TYPE of one character is a type
  placeholder, anything longer a NumPy dtype name. CuPy 13 requires the dtype's own name
  (``float32``, ``int64``, ``bool``: ``ValueError: Wrong type float`` otherwise) while CuPy 14
  accepts any NumPy spelling and reads ``float`` as float64 (C double) and ``int`` as int64:
  this stand-in follows CuPy 13, the rule both accept, and says why in the message.
  A parameter may not be called ``i``; the kernel name must be a C identifier.
- Type placeholders are fixed by array arguments, outputs first, then inputs; one placeholder
  bound to two dtypes, or an array whose dtype differs from its parameter's concrete type,
  raises ``TypeError: Type is mismatched. ...``. A placeholder no array fixes raises
  ``KeyError`` (scalars never fix a type). Python scalars take the bool/int64/uint64/float64/
  complex128 default dtype, NumPy scalars their own, and are then assigned to the parameter's
  type with NumPy's assignment rules (``-1`` into uint8: OverflowError; NaN into an integer:
  ValueError), as CuPy's ``CScalar.apply_dtype`` does.
- Every non-raw array argument (inputs and given outputs) broadcasts together; failures raise
  ``ValueError: operands could not be broadcast together with shapes ...``; a given output of
  another shape than the broadcast one raises ``ValueError: Out shape is mismatched``; outputs
  are given all or none (a single None among them is ``TypeError: Unsupported type``).
- ``size=`` only where every array is raw (``ValueError: Specified 'size' can be used only if
  all of the ndarray are 'raw'.``); without arrays and without size: ``Loop size is
  undecided.``; raw outputs are never allocated without size (``Output array size is
  Undecided``). A zero-size loop returns the outputs without running (nor casting scalars).
- Bindings as CuPy emits them: inputs ``const T &x = <element>``, outputs ``T &y``, scalars
  ``const T x`` (a value), raw arrays a ``CArray``-like object (``x[j]`` flat index over
  its own shape and strides, ``x[idx]`` with an index array, ``x.size()``, ``x.shape()``,
  ``x.strides()``). Elements are read and written where they live: non-contiguous, broadcast
  (stride 0) and aliased arguments need no copies, an input that is the same array as an
  output sees the output's writes within the element, as on the GPU (inputs that share no
  memory with anything written are read by value instead: the same results, and the
  vectoriser may load them unconditionally). The loop runs in the order of ``i`` (the flat
  C-order index of the broadcast shape) on one thread; where the GPU would race (one output
  element written by several ``i``, overlapping shifted views) the result is the one of a
  sequential schedule.
- ``preamble``, ``loop_prep``, ``after_loop`` go where CuPy puts them; ``options``: only
  ``-DNAME[=value]`` / ``--define-macro=...`` are honoured (as ``#define`` lines), the other
  NVRTC options are ignored (``--use_fast_math`` included: the CPU build stays IEEE).

CUDA on the CPU: ``__device__`` / ``__host__`` / ``__forceinline__`` are defined away; the math
functions are C++'s with CUDA's overloads (``exp(float)`` is single precision, as on the GPU;
``pow(float, int)`` is float), CUDA's ``min``/``max`` (fmin/fmax for floating types: NaN
loses, as in CUDA), ``rsqrt``, ``__expf``-style intrinsics (computed accurately), bit casts,
``CUDART_*`` constants, ``atomicAdd`` and friends (exact: the loop is sequential), ``printf``.

Numerics: compiled with ``-O2 -fno-fast-math -ffp-contract=off -fno-math-errno`` (plus
``-fvect-cost-model=dynamic``: run-time alias checks for the vectoriser, which change no
result): each operation rounds as IEEE says. NVRTC contracts ``a*b + c`` into an FMA by
default (``--fmad=true``); this build deliberately does not (the result would depend on the
CPU and on GCC's contraction choices, not on NVRTC's), so a GPU result may differ from this
one by an FMA's rounding, and libm's expf/tanhf by an ulp or two from CUDA's. Compare with
tolerances, never bit for bit. NaN follows C/CUDA: ``s > 0 ? s : 0`` maps NaN to 0.

Not supported (NotImplementedError or a compile error naming it): float16 / complex /
structured dtypes, ``CIndexer`` parameters, texture objects, ``_ind.get()`` beyond a one-axis
view (``_ind.get()[0] == i``; ``_ind.size()`` works), warp/block intrinsics
(``__syncthreads``, ``__shfl_*``, ``threadIdx``), ``thrust``, ``block_size=`` / ``stream=``
(the stand-in's business), CuPy's ``reduce_dims=False`` (no visible effect here anyway).
Outputs are given all or none (CuPy's rule), so a None among given outputs is an error.

Compilation is lazy (first call per dtype binding), cached in memory and on disk under
``$NNBACK_CPU_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/nnback-cpu-kernels``, else
``~/.cache/nnback-cpu-kernels``, keyed by a SHA-256 of the C++ text and the compiler flags.
The library is written to a temporary file and renamed into place, so concurrent first
calls (threads or processes) never load a half-written file. Calls release the GIL (ctypes)
and keep no state between calls, so concurrent calls are safe.
"""
import ctypes
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading

import numpy

__all__ = ["CpuElementwise", "CompilerUnavailable", "CompileException", "ParameterInfo",
           "compiler_available", "cache_dir", "CXX_FLAGS"]

# -O2 and IEEE arithmetic: no fast-math, no contraction into FMAs (see the module docstring).
# -fvect-cost-model=dynamic lets -O2's vectoriser check for aliasing at run time (20-40x on a
# relu over 131072 floats): elementwise SIMD rounds each operation as the scalar code does and
# never reassociates. -fno-math-errno only stops libm calls from setting errno.
CXX_FLAGS = ("-O2", "-fvect-cost-model=dynamic", "-std=c++17", "-fPIC", "-shared",
             "-fno-fast-math", "-ffp-contract=off", "-fno-math-errno")
CACHE_ENV = "NNBACK_CPU_KERNEL_CACHE"
_INSTALL_HINT = (
    "install one (Debian/Ubuntu: `apt-get install g++`; Fedora: `dnf install gcc-c++`; "
    "macOS: `xcode-select --install`; conda: `conda install -c conda-forge cxx-compiler`) "
    "or point the CXX environment variable at it")


class CompilerUnavailable(RuntimeError):
    """No C++ compiler was found to build a kernel (the message says what to install)."""


class CompileException(Exception):
    """The compiler refused a kernel's C++ text. Like ``cupy.cuda.compiler.CompileException``
    (``source``, ``name``, ``options``, ``backend``, ``get_message()``, ``dump(f)``); its
    message holds the compiler's log and the numbered generated source."""

    def __init__(self, msg, source, name, options, backend="g++"):
        self._msg = msg
        self.source = source
        self.name = name
        self.options = tuple(options)
        self.backend = backend
        super().__init__(msg)

    def __reduce__(self):
        return (type(self), (self._msg, self.source, self.name, self.options, self.backend))

    def __str__(self):
        return (f"{self.backend} could not compile the CPU build of kernel {self.name!r}:\n"
                f"{self._msg.rstrip()}\n----- generated C++ source -----\n"
                f"{_numbered(self.source)}-----")

    def get_message(self):
        return self._msg

    def dump(self, f):
        f.write(f"{self.backend.upper()} compilation error: {self._msg}\n-----\n")
        f.write(f"Name: {self.name}\nOptions: {' '.join(self.options)}\nC++ source:\n")
        f.write(_numbered(self.source))
        f.write("-----\n")
        f.flush()


def _numbered(source):
    lines = source.split("\n")
    width = len(str(len(lines)))
    return "".join(f"{n:0{width}d} {line.rstrip()}\n" for n, line in enumerate(lines, 1))


class _UnfixedPlaceholder(KeyError):
    """CuPy raises a bare ``KeyError('T')`` when no array fixes the placeholder T; this is
    that KeyError, with a readable message."""

    def __str__(self):
        return (f"{self.args[0]!r} (as CuPy: no array argument fixes the type placeholder "
                f"{self.args[0]}; scalars never fix a type)")


# -- dtypes --------------------------------------------------------------------------------
_TYPENAMES = {numpy.dtype(name): ctype for name, ctype in (
    ("bool", "bool"), ("int8", "signed char"), ("uint8", "unsigned char"),
    ("int16", "short"), ("uint16", "unsigned short"), ("int32", "int"),
    ("uint32", "unsigned int"), ("int64", "long long"), ("uint64", "unsigned long long"),
    ("float32", "float"), ("float64", "double"))}
# what CuPy has and this engine has not
_CUPY_ONLY = {numpy.dtype(name) for name in ("float16", "complex64", "complex128")}
_PY_SCALARS = {bool: numpy.dtype(bool), float: numpy.dtype(numpy.float64),
               complex: numpy.dtype(numpy.complex128)}
_INT64 = numpy.dtype(numpy.int64)
_UINT64 = numpy.dtype(numpy.uint64)


def _typename(dtype):
    """The C++ type of a dtype (CuPy's _scalar.get_typename), or CuPy's error."""
    name = _TYPENAMES.get(dtype)
    if name is None:
        if dtype in _CUPY_ONLY:
            raise NotImplementedError(
                f"the CPU kernel stand-in does not support dtype {dtype} (CuPy does)")
        raise TypeError(f"Unable to find C++ type for dtype {dtype}")
    return name


# -- parameter lists (CuPy's ParameterInfo) ------------------------------------------------
class ParameterInfo:
    """One parameter of ``"[raw] [_non_const] TYPE name"``: name, dtype (numpy dtype, None
    for a placeholder), ctype (the C++ type, or the placeholder), raw, is_const."""

    __slots__ = ("name", "dtype", "ctype", "raw", "is_const")

    def __init__(self, param, is_const):
        self.name = None
        self.dtype = None
        self.ctype = None
        self.raw = False
        self.is_const = is_const
        s = tuple(part for part in param.split() if len(part) != 0)
        if len(s) < 2:
            raise Exception("Syntax error: %s" % param)
        t, self.name = s[-2:]
        if t == "CIndexer":
            raise NotImplementedError(
                "the CPU kernel stand-in does not support CIndexer parameters")
        if len(t) == 1:
            self.ctype = t
        else:
            dtype = numpy.dtype(t)  # TypeError: data type 'Tx' not understood (as CuPy)
            if dtype.name != t:
                raise ValueError(
                    "Wrong type %s (CuPy 13 accepts only a NumPy dtype's own name such as "
                    "float32, float64, int32, int64, bool; CuPy 14 reads %r as %s, C %s: "
                    "write %s)" % (t, t, dtype.name, _TYPENAMES.get(dtype, "?"), dtype.name))
            self.dtype = dtype
            self.ctype = _typename(dtype)
        for keyword in s[:-2]:
            if keyword == "raw":
                self.raw = True
            elif keyword == "_non_const":
                self.is_const = False
            else:
                raise Exception('Unknown keyword "%s"' % keyword)

    def __repr__(self):
        return (f"<ParameterInfo(name={self.name!r} dtype={self.dtype!r} ctype={self.ctype!r}"
                f" raw={self.raw!r} is_const={self.is_const!r})>")


def _param_info(s, is_const):
    if len(s) == 0:
        return ()
    return tuple(ParameterInfo(part, is_const) for part in s.strip().split(","))


def _bind_types(type_dict, params, dtypes):
    """Check each array's dtype against its parameter's type, binding type placeholders in
    ``type_dict`` on first sight (a None dtype: a scalar, bound later)."""
    for p, a in zip(params, dtypes):
        if a is None:
            continue
        if p.dtype is not None:
            if a != p.dtype:
                raise TypeError("Type is mismatched. %s %s %s" % (p.name, a, p.dtype))
        elif p.ctype in type_dict:
            t = type_dict[p.ctype]
            if t != a:
                raise TypeError("Type is mismatched. %s %s %s %s" % (p.name, a, t, p.ctype))
        else:
            type_dict[p.ctype] = a


def _decide_params_type(in_params, out_params, in_dtypes, out_dtypes):
    """CuPy's _decide_params_type_core: (in_types, out_types, typedef pairs)."""
    type_dict = {}
    _bind_types(type_dict, out_params, out_dtypes)  # outputs fix placeholders first
    _bind_types(type_dict, in_params, in_dtypes)

    def resolve(p):
        if p.dtype is not None:
            return p.dtype
        try:
            return type_dict[p.ctype]
        except KeyError:
            raise _UnfixedPlaceholder(p.ctype) from None

    in_types = tuple(resolve(p) for p in in_params)
    out_types = tuple(resolve(p) for p in out_params)
    pairs = tuple(sorted((ctype, _typename(dtype)) for ctype, dtype in type_dict.items()))
    return in_types, out_types, pairs


# -- scalars (CuPy's CScalar) --------------------------------------------------------------
def _scalar_dtype(value):
    """The dtype CuPy gives a scalar argument, or CuPy's TypeError/OverflowError."""
    typ = type(value)
    if typ is int:
        if value >= 0x8000000000000000:
            if value > 0xFFFFFFFFFFFFFFFF:
                raise OverflowError("Python int too large to convert to C long")
            return _UINT64
        if value < -0x8000000000000000:
            raise OverflowError("Python int too large to convert to C long")
        return _INT64
    dtype = _PY_SCALARS.get(typ)
    if dtype is not None:
        return dtype
    if isinstance(value, numpy.generic) and (value.dtype in _TYPENAMES
                                             or value.dtype in _CUPY_ONLY):
        return value.dtype
    raise TypeError(f"Unsupported type {typ}")


# -- the C++ side --------------------------------------------------------------------------
_PRELUDE = r"""
#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <type_traits>

#define __device__
#define __host__
#define __global__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))

// C++'s math in the global namespace with CUDA's overloads (float in, float out)
using std::abs; using std::fabs; using std::exp; using std::exp2; using std::expm1;
using std::log; using std::log2; using std::log10; using std::log1p; using std::sqrt;
using std::cbrt; using std::pow; using std::sin; using std::cos; using std::tan;
using std::asin; using std::acos; using std::atan; using std::atan2; using std::sinh;
using std::cosh; using std::tanh; using std::asinh; using std::acosh; using std::atanh;
using std::erf; using std::erfc; using std::tgamma; using std::lgamma; using std::floor;
using std::ceil; using std::trunc; using std::round; using std::rint; using std::nearbyint;
using std::fmod; using std::remainder; using std::fmax; using std::fmin; using std::fdim;
using std::fma; using std::hypot; using std::copysign; using std::isnan; using std::isinf;
using std::isfinite; using std::signbit; using std::ldexp; using std::frexp; using std::modf;
using std::nextafter; using std::lrint; using std::llrint; using std::lround;
using std::llround; using std::logb; using std::ilogb; using std::scalbn;

inline float pow(float x, int n) { return powf(x, (float)n); }   // CUDA: float result
inline float exp10(float x) { return powf(10.0f, x); }
inline double exp10(double x) { return std::pow(10.0, x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float rsqrt(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
inline float rcbrt(float x) { return 1.0f / cbrtf(x); }
inline double rcbrt(double x) { return 1.0 / std::cbrt(x); }
inline float normcdff(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }
inline float normcdf(float x) { return normcdff(x); }
inline double normcdf(double x) { return 0.5 * std::erfc(-x * 0.70710678118654752440); }
inline void sincos(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
// CUDA's fast intrinsics, computed accurately here
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return powf(10.0f, x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __saturatef(float x) { return x != x ? 0.0f : fminf(fmaxf(x, 0.0f), 1.0f); }
inline float __fadd_rn(float x, float y) { return x + y; }
inline float __fsub_rn(float x, float y) { return x - y; }
inline float __fmul_rn(float x, float y) { return x * y; }
inline float __fdiv_rn(float x, float y) { return x / y; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fmaf_rn(float x, float y, float z) { return fmaf(x, y, z); }
inline double __dadd_rn(double x, double y) { return x + y; }
inline double __dsub_rn(double x, double y) { return x - y; }
inline double __dmul_rn(double x, double y) { return x * y; }
inline double __ddiv_rn(double x, double y) { return x / y; }
inline double __dsqrt_rn(double x) { return std::sqrt(x); }
inline double __fma_rn(double x, double y, double z) { return std::fma(x, y, z); }
inline float __int_as_float(int x) { float r; std::memcpy(&r, &x, 4); return r; }
inline int __float_as_int(float x) { int r; std::memcpy(&r, &x, 4); return r; }
inline float __uint_as_float(unsigned x) { float r; std::memcpy(&r, &x, 4); return r; }
inline unsigned __float_as_uint(float x) { unsigned r; std::memcpy(&r, &x, 4); return r; }
inline double __longlong_as_double(long long x) { double r; std::memcpy(&r, &x, 8); return r; }
inline long long __double_as_longlong(double x) { long long r; std::memcpy(&r, &x, 8); return r; }

// CUDA's min/max: fminf/fmin for floating types (NaN loses), a comparison for integers
template <class A, class B>
inline typename std::enable_if<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value,
                               typename std::common_type<A, B>::type>::type
min(A a, B b) {
  typedef typename std::common_type<A, B>::type C;
  if constexpr (std::is_floating_point<C>::value) return std::fmin((C)a, (C)b);
  else return (C)a < (C)b ? (C)a : (C)b;
}
template <class A, class B>
inline typename std::enable_if<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value,
                               typename std::common_type<A, B>::type>::type
max(A a, B b) {
  typedef typename std::common_type<A, B>::type C;
  if constexpr (std::is_floating_point<C>::value) return std::fmax((C)a, (C)b);
  else return (C)a > (C)b ? (C)a : (C)b;
}

// atomics: exact, the loop is sequential
template <class T> inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
template <class T> inline T atomicSub(T* p, T v) { T old = *p; *p = old - v; return old; }
template <class T> inline T atomicExch(T* p, T v) { T old = *p; *p = v; return old; }
template <class T> inline T atomicMin(T* p, T v) { T old = *p; if (v < old) *p = v; return old; }
template <class T> inline T atomicMax(T* p, T v) { T old = *p; if (v > old) *p = v; return old; }
template <class T> inline T atomicCAS(T* p, T cmp, T v) {
  T old = *p; if (old == cmp) *p = v; return old; }

#define CUDART_INF_F __builtin_huge_valf()
#define CUDART_NAN_F __builtin_nanf("")
#define CUDART_INF __builtin_huge_val()
#define CUDART_NAN __builtin_nan("")
#define CUDART_PI_F 3.141592654f
#define CUDART_PI 3.1415926535897931e+0
#define CUDART_SQRT_2PI 2.5066282746310002e+0
#define CUDART_MAX_NORMAL_F 3.40282347e+38f
#define CUDART_MIN_DENORM_F 1.40129846e-45f

// CuPy's _floor_divide (carray.cuh)
inline int _floor_divide(int x, int y) {
  if (y == 0) return 0; int q = x / y; return q - (((x < 0) != (y < 0)) && q * y != x); }
inline long long _floor_divide(long long x, long long y) {
  if (y == 0) return 0; long long q = x / y; return q - (((x < 0) != (y < 0)) && q * y != x); }
inline unsigned _floor_divide(unsigned x, unsigned y) { return y == 0 ? 0 : x / y; }
inline unsigned long long _floor_divide(unsigned long long x, unsigned long long y) {
  return y == 0 ? 0 : x / y; }
inline float _floor_divide(float x, float y) { return floorf(x / y); }
inline double _floor_divide(double x, double y) { return std::floor(x / y); }

// a raw argument: CuPy's CArray (flat index over its own shape and strides)
template <class T>
class _CpuRaw {
  T* data_; ptrdiff_t size_; int ndim_; bool contig_;
  const ptrdiff_t* shape_; const ptrdiff_t* strides_;
 public:
  _CpuRaw(void* data, const long long*& meta)
      : data_(static_cast<T*>(data)), size_((ptrdiff_t)meta[1]), ndim_((int)meta[0]),
        contig_(meta[2] != 0), shape_(reinterpret_cast<const ptrdiff_t*>(meta + 3)),
        strides_(reinterpret_cast<const ptrdiff_t*>(meta + 3 + meta[0])) {
    meta += 3 + 2 * meta[0];
  }
  ptrdiff_t size() const { return size_; }
  const ptrdiff_t* shape() const { return shape_; }
  const ptrdiff_t* strides() const { return strides_; }
  T* data() const { return data_; }
  const T& operator[](ptrdiff_t idx) const {
    if (ndim_ == 0) return *data_;
    if (contig_) return data_[idx];
    ptrdiff_t diff = 0, i = idx;
    for (int dim = ndim_; --dim > 0; ) {
      diff += strides_[dim] * (i % shape_[dim]);
      i /= shape_[dim];
    }
    diff += strides_[0] * i;
    return *reinterpret_cast<const T*>(reinterpret_cast<const char*>(data_) + diff);
  }
  T& operator[](ptrdiff_t idx) {
    return const_cast<T&>(static_cast<const _CpuRaw&>(*this)[idx]); }
  template <class Int, size_t N>
  const T& operator[](const Int (&idx)[N]) const {
    ptrdiff_t diff = 0;
    for (int dim = 0; dim < (int)N && dim < ndim_; ++dim)
      diff += strides_[dim] * (ptrdiff_t)idx[dim];
    return *reinterpret_cast<const T*>(reinterpret_cast<const char*>(data_) + diff);
  }
  template <class Int, size_t N>
  T& operator[](const Int (&idx)[N]) {
    return const_cast<T&>(static_cast<const _CpuRaw&>(*this)[idx]); }
  template <class Int>
  const T& operator[](std::initializer_list<Int> idx) const {
    ptrdiff_t diff = 0; int dim = 0;
    for (Int v : idx) { if (dim >= ndim_) break; diff += strides_[dim++] * (ptrdiff_t)v; }
    return *reinterpret_cast<const T*>(reinterpret_cast<const char*>(data_) + diff);
  }
  template <class Int>
  T& operator[](std::initializer_list<Int> idx) {
    return const_cast<T&>(static_cast<const _CpuRaw&>(*this)[idx]); }
};

// CuPy's CIndexer, as the one-axis view CuPy reduces contiguous arguments to
class _CpuIndexer {
  ptrdiff_t size_; ptrdiff_t index_[1];
 public:
  explicit _CpuIndexer(ptrdiff_t n) : size_(n) { index_[0] = 0; }
  ptrdiff_t size() const { return size_; }
  void set(ptrdiff_t i) { index_[0] = i; }
  const ptrdiff_t* get() const { return index_; }
};

// byte offsets of N strided arguments at the start of each row (the innermost axis), the
// outer axes advanced in C order; strides[k * row + d] is array k's stride along axis d
template <int N>
struct _CpuRows {
  int outer; int row; const long long* shape; const long long* strides;
  long long idx[64]; ptrdiff_t off[N > 0 ? N : 1];
  _CpuRows(int nd, const long long* sh, const long long* st)
      : outer(nd > 0 ? nd - 1 : 0), row(nd), shape(sh), strides(st) {
    for (int d = 0; d < 64; ++d) idx[d] = 0;
    for (int k = 0; k < (N > 0 ? N : 1); ++k) off[k] = 0;
  }
  inline void next() {
    for (int d = outer - 1; d >= 0; --d) {
      if (++idx[d] < shape[d]) {
        for (int k = 0; k < N; ++k) off[k] += strides[k * row + d];
        return;
      }
      idx[d] = 0;
      for (int k = 0; k < N; ++k) off[k] -= strides[k * row + d] * (shape[d] - 1);
    }
  }
};
"""

# entry k runs mode k % 3 (0: all contiguous, 1: unit-stride rows, 2: any strides), with the
# const inputs bound by reference (k < 3) or, where no input shares memory with anything the
# kernel writes, by value (k >= 3: the same results, and lets the vectoriser load them freely)
_ENTRIES = tuple(f"_cpu_entry_{mode}_{binding}" for binding in ("ref", "val")
                 for mode in ("contiguous", "unit_rows", "strided"))


def _defines(options):
    """``#define`` lines for NVRTC's -D / --define-macro options (the rest are ignored)."""
    lines = []
    options = list(options)
    k = 0
    while k < len(options):
        opt = str(options[k])
        macro = None
        if opt in ("-D", "--define-macro") and k + 1 < len(options):
            macro = str(options[k + 1])
            k += 1
        elif opt.startswith("--define-macro="):
            macro = opt[len("--define-macro="):]
        elif opt.startswith("-D") and len(opt) > 2:
            macro = opt[2:]
        if macro:
            name, _, value = macro.partition("=")
            lines.append(f"#define {name} {value if value else '1'}")
        k += 1
    return "".join(line + "\n" for line in lines)


def _generate_source(name, params, kinds, pairs, operation, preamble, loop_prep, after_loop,
                     options):
    """The C++ translation unit for one binding: kinds[k] is 'a' (array, bound per
    element), 'r' (raw array) or 's' (scalar) for params[k].

    One loop body, instantiated six times: mode 0 when every array is C-contiguous in the
    broadcast shape (one flat loop), mode 1 when each array's innermost stride is its item
    size (rows of unit stride, the outer axes stepped between rows: a broadcast bias), mode 2
    for any strides; each with the const inputs bound as ``const T&`` (CuPy's binding) or,
    where no input shares memory with what the kernel writes, as ``const T`` values (the
    same results; the vectoriser may then load them unconditionally). ``i`` is the flat
    C-order index in every mode."""
    nparams = len(params)
    n_arrays = kinds.count("a")
    scalars, raws, bases, rows, steps, binds = [], [], [], [], [], []
    a = 0
    for k, (p, kind) in enumerate(zip(params, kinds)):
        const = "const " if p.is_const else ""
        if kind == "s":
            scalars.append(f"  {const}{p.ctype} {p.name} = "
                           f"*reinterpret_cast<const {p.ctype}*>(_cpu_buf + {k});")
        elif kind == "r":
            raws.append(f"  {const}_CpuRaw<{p.ctype}> {p.name}("
                        f"reinterpret_cast<void*>(_cpu_buf[{k}]), _cpu_rawmeta);")
        else:
            bases.append(f"  char* const _cpu_p{a} = reinterpret_cast<char*>(_cpu_buf[{k}]);")
            steps.append(f"  const ptrdiff_t _cpu_s{a} = _cpu_mode == 2 ? "
                         f"(ptrdiff_t)_cpu_strides[{a} * _cpu_ndim + _cpu_ndim - 1] "
                         f": (ptrdiff_t)sizeof({p.ctype});")
            rows.append(f"    char* const _cpu_q{a} = _cpu_p{a} + _cpu_rows.off[{a}];")
            if p.is_const:
                decl = (f"typename std::conditional<_cpu_byval, const {p.ctype}, "
                        f"const {p.ctype}&>::type {p.name}")
            else:
                decl = f"{p.ctype} &{p.name}"
            binds.append(f"      {decl} = *reinterpret_cast<{const}{p.ctype}*>("
                         f"_cpu_q{a} + _cpu_j * _cpu_s{a});")
            a += 1
    typedefs = "".join(f"typedef {cname} {ctype};\n" for ctype, cname in pairs)
    lines = [
        f"// CPU build of cupy.ElementwiseKernel {name!r} (nnback tests/cupy_standin)",
        _defines(options) + _PRELUDE,
        typedefs,
        preamble,
        "template <int _cpu_mode, bool _cpu_byval>",
        f"static inline void _cpu_kernel_{name}(long long* _cpu_buf) {{",
        f"  const ptrdiff_t _cpu_n = (ptrdiff_t)_cpu_buf[{nparams}];",
        f"  const int _cpu_ndim = _cpu_mode == 0 ? 0 : (int)_cpu_buf[{nparams + 1}];",
        f"  const long long* _cpu_shape = _cpu_buf + {nparams + 2};",
        "  const long long* _cpu_strides = _cpu_shape + _cpu_ndim;",
        f"  const long long* _cpu_rawmeta = _cpu_strides + {n_arrays} * _cpu_ndim;",
        "  (void)_cpu_rawmeta; (void)_cpu_strides;",
        *scalars, *raws, *bases, *steps,
        "  const ptrdiff_t _cpu_inner = _cpu_mode == 0 ? _cpu_n : "
        "(ptrdiff_t)_cpu_shape[_cpu_ndim - 1];",
        f"  _CpuRows<{n_arrays}> _cpu_rows(_cpu_ndim, _cpu_shape, _cpu_strides);",
        "  _CpuIndexer _ind(_cpu_n);",
        f"  {loop_prep};",
        "  for (ptrdiff_t i = 0; i < _cpu_n; _cpu_rows.next()) {",
        *rows,
        "    for (ptrdiff_t _cpu_j = 0; _cpu_j < _cpu_inner; ++_cpu_j, ++i) {",
        "      _ind.set(i);",
        *binds,
        f"      {operation};",
        "    }",
        "  }",
        f"  {after_loop};",
        "}",
        *(f'extern "C" void {entry}(long long* b) '
          f'{{ _cpu_kernel_{name}<{k % 3}, {"true" if k >= 3 else "false"}>(b); }}'
          for k, entry in enumerate(_ENTRIES)),
        "",
    ]
    return "\n".join(lines)


# -- compiler, disk cache, loaded libraries ------------------------------------------------
def _find_compiler():
    """The compiler command (a list), or CompilerUnavailable."""
    cxx = os.environ.get("CXX")
    if cxx:
        command = shlex.split(cxx)
        path = shutil.which(command[0]) if command else None
        if path is None:
            raise CompilerUnavailable(
                f"the C++ compiler named by CXX={cxx!r} was not found: {_INSTALL_HINT}")
        return [path] + command[1:]
    for candidate in ("g++", "c++", "clang++"):
        path = shutil.which(candidate)
        if path is not None:
            return [path]
    raise CompilerUnavailable(
        "no C++ compiler found (looked for $CXX, g++, c++, clang++ on PATH); the CPU "
        f"kernel stand-in compiles CuPy kernels with one: {_INSTALL_HINT}")


def compiler_available():
    """Whether a C++ compiler is there to build kernels."""
    try:
        _find_compiler()
    except CompilerUnavailable:
        return False
    return True


def cache_dir():
    """The folder for compiled kernels (created if needed)."""
    path = os.environ.get(CACHE_ENV)
    if not path:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
            os.path.expanduser("~"), ".cache")
        path = os.path.join(base, "nnback-cpu-kernels")
    try:
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError(path)
    except OSError:
        uid = os.getuid() if hasattr(os, "getuid") else "user"
        path = os.path.join(tempfile.gettempdir(), f"nnback-cpu-kernels-{uid}")
        os.makedirs(path, exist_ok=True)
    return path


_LIBS = {}               # digest -> (the _ENTRIES functions..., library)
_LIB_LOCKS = {}          # digest -> lock held while compiling/loading it
_LIB_LOCKS_GUARD = threading.Lock()


def _load_entries(path):
    lib = ctypes.CDLL(path)
    entries = []
    for symbol in _ENTRIES:
        fn = lib[symbol]
        fn.argtypes = (ctypes.c_void_p,)
        fn.restype = None
        entries.append(fn)
    return (*entries, lib)


def _build(source, name, options):
    """(the _ENTRIES functions..., lib) for a C++ text: from memory, disk, or compiled."""
    digest = hashlib.sha256(
        (source + "\0" + " ".join(CXX_FLAGS) + "\0" + sys.platform).encode()).hexdigest()
    entries = _LIBS.get(digest)
    if entries is not None:
        return entries
    with _LIB_LOCKS_GUARD:
        lock = _LIB_LOCKS.setdefault(digest, threading.Lock())
    with lock:
        entries = _LIBS.get(digest)
        if entries is not None:
            return entries
        folder = cache_dir()
        path = os.path.join(folder, f"{name}-{digest[:40]}.so")
        entries = None
        if os.path.exists(path):
            try:
                entries = _load_entries(path)
            except (OSError, AttributeError):
                entries = None  # damaged: build it again
        if entries is None:
            _compile_to(source, path, folder, name, options)
            entries = _load_entries(path)
        _LIBS[digest] = entries
        return entries


def _compile_to(source, path, folder, name, options):
    """Compile ``source`` into the library ``path``: the source is kept beside it (``.cpp``,
    which the compiler's messages name), the library is built under a temporary name and
    renamed into place."""
    compiler = _find_compiler()
    stem = path[:-3]
    cpp = stem + ".cpp"
    fd, tmp_cpp = tempfile.mkstemp(prefix=os.path.basename(stem) + ".", suffix=".cpp.tmp",
                                   dir=folder)
    with os.fdopen(fd, "w") as f:
        f.write(source)
    os.replace(tmp_cpp, cpp)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(stem) + ".", suffix=".so.tmp",
                               dir=folder)
    os.close(fd)
    try:
        result = subprocess.run([*compiler, *CXX_FLAGS, "-fmax-errors=20", "-o", tmp, cpp],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                universal_newlines=True)
        if result.returncode != 0:
            raise CompileException(result.stdout, source, name, options,
                                   backend=os.path.basename(compiler[0]))
        os.replace(tmp, path)  # atomic: a reader sees no file or a whole one
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


# -- the kernel ----------------------------------------------------------------------------
_VALID_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z_0-9]*$")
_ndarray = numpy.ndarray
_may_share_memory = numpy.may_share_memory


def _broadcast_error(args, params):
    shapes = " ".join(
        str(a.shape) if isinstance(a, _ndarray) and not p.raw else "()"
        for a, p in zip(args, params))
    return ValueError("operands could not be broadcast together with shapes " + shapes)


class CpuElementwise:
    """A ``cupy.ElementwiseKernel`` run on the CPU (see the module docstring)."""

    def __init__(self, in_params, out_params, operation, name="kernel", preamble="",
                 loop_prep="", after_loop="", options=()):
        if not _VALID_NAME.match(name):
            raise ValueError('Invalid kernel name: "%s"' % name)
        self.in_params = _param_info(in_params, True)
        self.out_params = _param_info(out_params, False)
        self.params = self.in_params + self.out_params
        self.nin = len(self.in_params)
        self.nout = len(self.out_params)
        self.nargs = self.nin + self.nout
        if "i" in [p.name for p in self.params]:
            raise ValueError("Can not use 'i' as a parameter name")
        self.operation = operation
        self.name = name
        self.preamble = preamble
        self.loop_prep = loop_prep
        self.after_loop = after_loop
        self.options = tuple(options)
        self._types_memo = {}
        self._kernel_memo = {}
        self._sources = {}

    def __repr__(self):
        return f"<CpuElementwise {self.name!r}>"

    @property
    def cached_sources(self):
        """{(typedef pairs, kinds): C++ source} for every binding compiled so far."""
        return dict(self._sources)

    def source_for(self, pairs, kinds):
        """The C++ text for one binding (typedef pairs as _decide_params_type returns them,
        kinds a string of 'a'/'r'/'s' per parameter)."""
        return _generate_source(self.name, self.params, kinds, pairs, self.operation,
                                self.preamble, self.loop_prep, self.after_loop,
                                self.options)

    def _entries(self, pairs, kinds):
        key = (pairs, kinds)
        entries = self._kernel_memo.get(key)
        if entries is None:
            source = self.source_for(pairs, kinds)
            entries = _build(source, self.name, self.options)
            self._sources.setdefault(key, source)
            entries = self._kernel_memo.setdefault(key, entries)
        return entries

    def __call__(self, inputs, outputs=None, size=None):
        nin, nout = self.nin, self.nout
        params = self.params
        inputs = list(inputs)
        outputs = [] if outputs is None else list(outputs)
        given = [o for o in outputs if o is not None]
        n_args = len(inputs) + len(given)
        if len(inputs) != nin or len(outputs) not in (0, nout):
            raise TypeError(
                "Wrong number of arguments for {!r}. It must be either {} or {} (with "
                "outputs), but given {}.".format(self.name, nin, self.nargs, n_args))
        if given and len(given) != nout:
            raise TypeError(f"Unsupported type {type(None)}")  # CuPy: None is no argument
        args = inputs + given
        use_size = size is not None and size != -1

        # preprocess: arrays stay, scalars get CuPy's default dtype
        kinds = []
        arrays = []            # non-raw arrays: they broadcast
        for k, a in enumerate(args):
            p = params[k]
            if isinstance(a, _ndarray):
                if a.dtype not in _TYPENAMES:
                    _typename(a.dtype)
                if p.raw:
                    kinds.append("r")
                else:
                    kinds.append("a")
                    arrays.append(a)
            elif k >= nin:
                raise TypeError("Output arguments type must be cupy.ndarray")
            else:
                _scalar_dtype(a)  # CuPy's CScalar(a): refuses what it cannot hold
                kinds.append("s")

        # broadcast (CuPy's _broadcast / internal._broadcast_core)
        if use_size:
            if arrays:
                raise ValueError("Specified 'size' can be used only if all of the ndarray "
                                 "are 'raw'.")
            shape = (int(size),)
        else:
            if not arrays:
                raise ValueError("Loop size is undecided.")
            shape = arrays[0].shape
            for a in arrays:
                if a.shape != shape:
                    shape = self._broadcast_shape(args, arrays)
                    break

        # types
        in_dtypes = tuple(a.dtype if isinstance(a, _ndarray) else None for a in inputs)
        out_dtypes = tuple(a.dtype for a in given)
        key = (in_dtypes, out_dtypes)
        decided = self._types_memo.get(key)
        if decided is None:
            decided = _decide_params_type(self.in_params, self.out_params, in_dtypes,
                                          out_dtypes)
            self._types_memo[key] = decided
        in_types, out_types, pairs = decided

        # outputs
        if not given:
            if not use_size:
                for p in self.out_params:
                    if p.raw:
                        raise ValueError("Output array size is Undecided")
            outs = [numpy.empty(shape, dtype=t) for t in out_types]
            args = inputs + outs
            kinds.extend("r" if p.raw else "a" for p in self.out_params)
            arrays.extend(o for o, p in zip(outs, self.out_params) if not p.raw)
        else:
            outs = given
            for a, p in zip(given, self.out_params):
                if not p.raw and a.shape != shape:
                    raise ValueError("Out shape is mismatched")
        for k in range(nin, self.nargs):
            if not args[k].flags.writeable:
                raise ValueError("assignment destination is read-only")
        for k in range(nin):
            if kinds[k] != "s" and not params[k].is_const and not args[k].flags.writeable:
                raise ValueError("assignment destination is read-only")
        n = 1
        for extent in shape:
            n *= extent
        if n == 0:
            return outs

        # one int64 buffer: a slot per parameter (pointer or scalar bits), then n, ndim,
        # shape, strides of the non-raw arrays, descriptors of the raw arrays
        kinds = "".join(kinds)
        mode = 0
        for a in arrays:
            if a.shape != shape or not a.flags.c_contiguous or not a.flags.aligned:
                mode = 1
                break
        if mode == 0:
            nd, run_shape, strides = 0, (), ()
        else:
            args, run_shape, strides, mode = self._strided_layout(args, kinds, shape)
            nd = len(run_shape)
        raw_meta = []
        for k, kind in enumerate(kinds):
            if kind == "r":
                a = args[k]
                if not a.flags.aligned:
                    if k >= nin:
                        raise ValueError("unaligned output arrays are not supported")
                    a = args[k] = a.copy()
                raw_meta.append(a.ndim)
                raw_meta.append(a.size)
                raw_meta.append(1 if a.flags.c_contiguous else 0)
                raw_meta.extend(a.shape)
                raw_meta.extend(a.strides)
        nparams = self.nargs
        buf = numpy.empty(nparams + 2 + nd + len(strides) + len(raw_meta), dtype=numpy.int64)
        views = {}
        for k, kind in enumerate(kinds):
            if kind == "s":
                t = in_types[k]
                view = views.get(t)
                if view is None:
                    view = views[t] = buf.view(t)
                # CuPy's CScalar.apply_dtype: NumPy's assignment rules (may raise)
                view[k * (8 // t.itemsize)] = args[k]
            else:
                buf[k] = args[k].ctypes.data
        buf[nparams] = n
        buf[nparams + 1] = nd
        at = nparams + 2
        if nd:
            buf[at:at + nd] = run_shape
            at += nd
            buf[at:at + len(strides)] = strides
            at += len(strides)
        if raw_meta:
            buf[at:] = raw_meta
        entries = self._kernel_memo.get((pairs, kinds)) or self._entries(pairs, kinds)
        entries[mode + 3 * self._by_value(args, kinds)](buf.ctypes.data)
        return outs

    def _by_value(self, args, kinds):
        """Whether the const array inputs may be read by value: none of them shares memory
        with an output or a _non_const input (else they bind by reference, as in CuPy, and
        see the writes)."""
        nin, params = self.nin, self.params
        readers = [args[k] for k in range(nin) if kinds[k] == "a" and params[k].is_const]
        if not readers:
            return 0
        writers = args[nin:] + [args[k] for k in range(nin)
                                if kinds[k] != "s" and not params[k].is_const]
        for x in readers:
            for w in writers:
                if _may_share_memory(x, w):
                    return 0
        return 1

    def _broadcast_shape(self, args, arrays):
        """CuPy's internal._broadcast_core over the non-raw arrays (and its message)."""
        nd = max(a.ndim for a in arrays)
        shape = []
        for i in range(nd):
            s = 1
            for a in arrays:
                offset = nd - a.ndim
                if i < offset:
                    continue
                extent = a.shape[i - offset]
                if extent == s or extent == 1:
                    continue
                if s == 1:
                    s = extent
                    continue
                raise _broadcast_error(args, self.params)
            shape.append(s)
        return tuple(shape)

    def _strided_layout(self, args, kinds, shape):
        """Per non-raw array, its byte strides over the broadcast shape (0 where it
        broadcasts), with axes of extent 1 dropped and mergeable axes merged (CuPy's
        _reduce_dims), and the loop mode: 1 where every array's innermost stride is its item
        size, else 2. Unaligned inputs are copied (outputs refused)."""
        nin = self.nin
        args = list(args)
        per_array = []
        itemsizes = []
        for k, kind in enumerate(kinds):
            if kind != "a":
                continue
            a = args[k]
            if not a.flags.aligned:
                if k >= nin:
                    raise ValueError("unaligned output arrays are not supported")
                a = args[k] = a.copy()
            itemsizes.append(a.itemsize)
            if a.shape == shape:
                per_array.append(a.strides)
            else:
                offset = len(shape) - a.ndim
                st = [0] * len(shape)
                for j in range(a.ndim):
                    if a.shape[j] == shape[j + offset]:
                        st[j + offset] = a.strides[j]
                per_array.append(st)
        axes = [d for d in range(len(shape)) if shape[d] != 1]
        run_shape = []
        run_strides = [[] for _ in per_array]
        for d in axes:
            if run_shape and all(st[-1] == s[d] * shape[d]
                                 for st, s in zip(run_strides, per_array)):
                run_shape[-1] *= shape[d]
                for st, s in zip(run_strides, per_array):
                    st[-1] = s[d]
            else:
                run_shape.append(shape[d])
                for st, s in zip(run_strides, per_array):
                    st.append(s[d])
        if not run_shape:  # one element
            run_shape = [1]
            run_strides = [[0] for _ in per_array]
        if len(run_shape) > 64:
            raise ValueError("more than 64 dimensions")
        mode = 1
        for st, item in zip(run_strides, itemsizes):
            if st[-1] != item:
                mode = 2
                break
        flat = [x for st in run_strides for x in st]
        return args, tuple(run_shape), flat, mode
