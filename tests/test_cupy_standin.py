"""The CuPy stand-in (tests/cupy_standin) against its own promises: CuPy's surface, its
refusals, the transfers and allocations it counts, its memory pool, streams and pinned
memory, TF32, ElementwiseKernel's array layer, and the recorded surface itself."""
import gc
import importlib
import json
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
import types
import warnings
from pathlib import Path

import numpy
import pytest

STANDIN_PATH = Path(__file__).resolve().parent / "cupy_standin"
SURFACE_DIR = STANDIN_PATH / "surface"
REAL_CUPY_FOLDERS = {"14": Path("/opt/cupy14"), "13": Path("/opt/cupy13")}


def standin():
    """The stand-in module: ``sys.modules["cupy"]`` when that is the stand-in, else the
    stand-in imported from tests/cupy_standin (skip when a real CuPy holds the name)."""
    module = sys.modules.get("cupy")
    if module is not None:
        if getattr(module, "__standin__", False) is True:
            return module
        pytest.skip("a real CuPy is imported as `cupy` in this run; the stand-in's own "
                    "tests need the name")
    if str(STANDIN_PATH) not in sys.path:
        sys.path.insert(0, str(STANDIN_PATH))
    module = importlib.import_module("cupy")
    assert module.__standin__ is True, module.__file__
    return module


@pytest.fixture
def cp():
    cupy = standin()
    yield cupy
    cupy.get_default_memory_pool().set_limit(size=0)
    from cupy._core import _routines_linalg as linalg

    linalg.set_compute_type(numpy.float32, linalg.COMPUTE_TYPE_DEFAULT)


def run_python(code, **env):
    """Run ``code`` in a fresh interpreter with the stand-in first on the path; its
    stdout (the test fails with stderr if it fails)."""
    environment = dict(os.environ, PYTHONPATH=str(STANDIN_PATH), **env)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=environment,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def recorded(version_major):
    path = next(SURFACE_DIR.glob(f"cupy-{version_major}.*.json"))
    return json.loads(path.read_text())


# -- the recorded surface ------------------------------------------------------------------
@pytest.mark.parametrize("major", sorted(REAL_CUPY_FOLDERS))
def test_make_surface_reproduces_the_committed_json(major):
    folder = REAL_CUPY_FOLDERS[major]
    if not folder.exists():
        pytest.skip(f"no real CuPy {major} installed at {folder}")
    env = dict(os.environ, PYTHONPATH=str(folder))
    probe = subprocess.run([sys.executable, "-c", "import cupy; print(cupy.__version__)"],
                           env=env, capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"the CuPy at {folder} does not import: {probe.stderr.strip()[-200:]}")
    version = probe.stdout.strip()
    result = subprocess.run(
        [sys.executable, str(STANDIN_PATH / "make_surface.py"), "--stdout"], env=env,
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    committed = (SURFACE_DIR / f"cupy-{version}.json").read_text()
    assert result.stdout == committed, (
        f"the recorded surface of CuPy {version} is stale: regenerate it with "
        f"PYTHONPATH={folder} python tests/cupy_standin/make_surface.py")


def test_recorded_surfaces_hold_what_the_stand_in_relies_on():
    for major in ("13", "14"):
        surface = recorded(major)
        cupy = surface["namespaces"]["cupy"]
        assert cupy["exp"]["kind"] == "ufunc" and cupy["exp"]["call_keywords"] == [
            "casting", "dtype", "out"]
        assert cupy["matmul"]["kind"] == "gufunc"
        assert "device" not in {p["name"] for p in cupy["zeros"]["params"]}
        assert "mode" not in {p["name"] for p in cupy["take"]["params"]}
        assert "__array_namespace__" not in surface["classes"]["cupy.ndarray"]["attributes"]
        assert surface["classes"]["cupy.ndarray"]["attributes"]["set"]["params"][0][
            "name"] == "arr"
    assert "astype" not in recorded("13")["namespaces"]["cupy"]
    assert "copy" not in {p["name"] for p in recorded("13")["namespaces"]["cupy"]["asarray"][
        "params"]}
    assert "copy" in {p["name"] for p in recorded("14")["namespaces"]["cupy"]["asarray"][
        "params"]}


# -- selection -------------------------------------------------------------------------------
def test_module_identity(cp):
    assert cp.__standin__ is True
    assert cp.__version__ == cp.__standin_surface__[-1]
    assert cp.ndarray.__module__ == "cupy" and cp.ndarray.__name__ == "ndarray"
    assert cp.is_available() is True
    assert cp.float32 is numpy.float32 and cp.finfo is numpy.finfo
    assert isinstance(cp.linalg, types.ModuleType) and isinstance(cp.fft, types.ModuleType)
    assert cp.get_array_module(cp.zeros(1)) is cp
    assert cp.get_array_module(numpy.zeros(1), 1.0) is numpy


@pytest.mark.parametrize("choice, versions, has_astype, copy_ok", [
    ("13", ["13.6.0"], False, False),
    ("14", ["14.2.0"], True, True),
    ("both", ["13.6.0", "14.2.0"], False, False),
])
def test_surface_selection(choice, versions, has_astype, copy_ok):
    out = run_python("""
        import cupy, numpy
        print(list(cupy.__standin_surface__), cupy.__version__)
        print(hasattr(cupy, "astype"), hasattr(cupy.ndarray, "mT"))
        try:
            cupy.asarray(numpy.ones(2), copy=True)
            print("copy ok")
        except TypeError as exc:
            print("copy refused:", exc)
    """, NNBACK_CUPY_STANDIN_SURFACE=choice)
    lines = out.splitlines()
    assert lines[0] == f"{versions} {versions[-1]}"
    assert lines[1] == f"{has_astype} {has_astype}"
    assert lines[2].startswith("copy ok" if copy_ok else "copy refused: asarray() got an "
                               "unexpected keyword argument 'copy'")


def test_bad_surface_choice_fails_the_import():
    environment = dict(os.environ, PYTHONPATH=str(STANDIN_PATH),
                       NNBACK_CUPY_STANDIN_SURFACE="12")
    result = subprocess.run([sys.executable, "-c", "import cupy"], env=environment,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "NNBACK_CUPY_STANDIN_SURFACE='12'" in result.stderr


def test_names_are_exactly_the_recorded_ones(cp):
    from cupy._surface import SURFACE

    for namespace, module in [("cupy", cp), ("cupy.linalg", cp.linalg),
                              ("cupy.fft", cp.fft), ("cupy.cuda", cp.cuda),
                              ("cupy.cuda.runtime", cp.cuda.runtime)]:
        public = {name for name in dir(module) if not name.startswith("_")}
        assert public - {"standin"} == SURFACE.names(namespace), namespace


def test_ndarray_attributes_are_a_subset_of_cupys(cp):
    from cupy._surface import SURFACE

    allowed = SURFACE.class_attributes("cupy.ndarray") | {"__weakref__"}
    extra = [name for name in dir(cp.ndarray)
             if name not in allowed and not name.startswith("_sd_")]
    assert extra == []
    x = cp.zeros(3)
    for name in ("__array_namespace__", "__index__", "to_device", "device_put"):
        assert not hasattr(x, name)
    with pytest.raises(AttributeError):
        x.anything = 1


def test_other_classes_keep_to_the_recorded_attributes(cp):
    from cupy._surface import SURFACE

    python_artefacts = {"__dict__", "__module__", "__weakref__", "__slots__"}
    for recorded_name, cls in [
            ("cupy.cuda.Device", cp.cuda.Device), ("cupy.cuda.Stream", cp.cuda.Stream),
            ("cupy.cuda.Event", cp.cuda.Event), ("cupy.cuda.MemoryPool", cp.cuda.MemoryPool),
            ("cupy.cuda.PinnedMemoryPool", cp.cuda.PinnedMemoryPool),
            ("cupy.ufunc", cp.ufunc), ("cupy.ElementwiseKernel", cp.ElementwiseKernel),
            ("cupy.cuda.memory.OutOfMemoryError", cp.cuda.memory.OutOfMemoryError)]:
        extra = {name for name in dir(cls) if not name.startswith("_sd_")} - \
            SURFACE.class_attributes(recorded_name) - python_artefacts
        assert not extra, (recorded_name, extra)


# -- refusals ------------------------------------------------------------------------------------
CONVERSION = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
              "construct a NumPy array explicitly.")


def test_implicit_conversion_is_refused(cp):
    x = cp.arange(3)
    with pytest.raises(TypeError) as info:
        numpy.asarray(x)
    assert str(info.value) == CONVERSION
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # NumPy's, as with real CuPy
        with pytest.raises(TypeError, match="Implicit conversion"):
            numpy.array(x)
    with pytest.raises(TypeError, match="Implicit conversion"):
        x.__array__()
    assert not isinstance(x, numpy.ndarray)


def test_host_arrays_in_arithmetic_are_refused(cp):
    x = cp.arange(3, dtype=cp.float32)
    host = numpy.ones(3, numpy.float32)
    for operation in (lambda: x + host, lambda: host + x, lambda: x * host,
                      lambda: cp.add(x, host), lambda: cp.maximum(host, 0.0)):
        with pytest.raises(TypeError, match=r"Unsupported type <class 'numpy.ndarray'>"):
            operation()
    with pytest.raises(TypeError, match="Unsupported type <class 'list'>"):
        x + [1, 2, 3]
    assert (x + 1).dtype == cp.float32 and (2.5 * x).dtype == cp.float32
    assert (x + numpy.float32(1)).dtype == cp.float32


def test_functions_refuse_host_arrays_and_unknown_keywords(cp):
    host = numpy.ones((2, 2))
    for call in (lambda: cp.sum(host), lambda: cp.concatenate([cp.ones(2), numpy.ones(2)]),
                 lambda: cp.matmul(host, host), lambda: cp.exp(host),
                 lambda: cp.reshape(host, 4)):
        with pytest.raises(TypeError, match="Unsupported type"):
            call()
    x = cp.ones((2, 2))
    for call, message in [
            (lambda: cp.zeros(3, device=None), "zeros() got an unexpected keyword argument "
                                               "'device'"),
            (lambda: cp.asarray(host, device=None), "asarray() got an unexpected keyword"),
            (lambda: cp.take(x, [0], mode="wrap"), "take() got an unexpected keyword "
                                                   "argument 'mode'"),
            (lambda: x.reshape(4, device=None), "reshape() got an unexpected keyword"),
            (lambda: x.sum(where=True), "sum() got an unexpected keyword argument 'where'"),
            (lambda: x.astype(cp.float32, device=None), "astype() got an unexpected"),
            (lambda: cp.exp(x, where=True), "Wrong arguments {'where': True}"),
            (lambda: cp.exp(x, x, x), "Wrong number of arguments for 'cupy_exp'. It must be "
                                      "either 1 or 2 (with outputs), but given 3."),
    ]:
        with pytest.raises(TypeError) as info:
            call()
        assert message in str(info.value)
    with pytest.raises(TypeError, match="casting is not supported yet"):
        x.astype(cp.float32, casting="unsafe")


def test_matmul_unknown_keyword_error_is_cupys(cp):
    x = cp.ones((2, 2))
    with pytest.raises((TypeError, RuntimeError)) as info:
        cp.matmul(x, x, bogus=1)
    versions = cp.__standin_surface__
    # CuPy 13: RuntimeError("Unknown kwargs bogus"); CuPy 14: TypeError
    assert isinstance(info.value, RuntimeError) == ("13.6.0" in versions)
    assert isinstance(info.value, TypeError) == ("14.2.0" in versions)
    assert "bogus" in str(info.value)


def test_ufunc_messages_match_the_recorded_ones(cp):
    from cupy._surface import SURFACE

    wrong_count = SURFACE.behaviour("ufunc.__call__")["wrong_argument_count_error"]
    with pytest.raises(TypeError) as info:
        cp.exp(1, 2, 3)
    assert str(info.value) == wrong_count["message"]


def test_not_implemented_names_say_so(cp):
    with pytest.raises(NotImplementedError, match="does not implement cupy.RawKernel"):
        cp.RawKernel("", "k")
    with pytest.raises(NotImplementedError, match="the CuPy stand-in does not implement"):
        cp.fuse(lambda v: v)


def test_numpy_dispatch_follows_cupys_rules(cp):
    x = cp.arange(6, dtype=cp.float64).reshape(2, 3)
    assert type(numpy.exp(x)) is cp.ndarray
    assert type(numpy.sum(x)) is cp.ndarray and numpy.sum(x).shape == ()
    assert type(numpy.concatenate([x, x])) is cp.ndarray
    assert type(numpy.add.reduce(x, axis=0)) is cp.ndarray
    with pytest.raises(TypeError, match="no implementation found"):
        numpy.busday_count(x, x)
    with pytest.raises(TypeError, match="Unsupported type"):
        numpy.concatenate([x, numpy.ones((2, 3))])
    out = cp.empty((2, 3))
    assert numpy.add(x, 1, out=out) is out


# -- arrays, views, results -------------------------------------------------------------------
def test_views_share_memory_with_their_base(cp):
    x = cp.arange(12, dtype=cp.float32)
    assert x.base is None and x.flags.owndata
    m = x.reshape(3, 4)
    for view in (m, m[1:], m[:, 1], m.T, m.ravel(), x[::2], m[1], m.transpose(),
                 m.view(), m.squeeze(), m[None]):
        assert view.base is x and not view.flags.owndata
    m[1, 2] = 100
    assert x[6].item() == 100
    m.T[0, 0] = -1
    assert x[0].item() == -1
    assert m.strides == (16, 4) and m.T.strides == (4, 16)
    assert m.flags.c_contiguous and m.T.flags.f_contiguous and not m[:, 1].flags.c_contiguous
    assert m[1].data.ptr - m.data.ptr == 16 and m.data.ptr == x.data.ptr
    assert x.nbytes == 48 and x.itemsize == 4
    y = cp.arange(12, dtype=cp.float32)
    assert y.data.ptr != x.data.ptr
    assert m.__cuda_array_interface__["data"][0] == x.data.ptr
    assert isinstance(x.device, cp.cuda.Device) and x.device.id == 0


def test_results_are_device_arrays_never_numpy_scalars(cp):
    x = cp.arange(6, dtype=cp.float32).reshape(2, 3)
    for result in (x.sum(), cp.sum(x), x.max(), cp.mean(x), x[1, 2], x[-1, -1],
                   cp.exp(cp.float32(1)), cp.dot(x[0], x[1]), x.argmax(),
                   cp.count_nonzero(x), cp.allclose(x, x)):
        assert type(result) is cp.ndarray and result.shape == ()
    assert x[1, 2].base is x.base or x[1, 2].base is x


def test_iteration_len_and_zero_d_rules(cp):
    x = cp.arange(6).reshape(3, 2)
    assert [row.shape for row in x] == [(2,), (2,), (2,)]
    assert len(x) == 3
    scalar = x.sum()
    with pytest.raises(TypeError, match="iteration over a 0-d array"):
        iter(scalar)
    with pytest.raises(TypeError, match="len\\(\\) of unsized object"):
        len(scalar)
    with pytest.raises(TypeError):
        range(scalar)  # no __index__ in CuPy


def test_indexing_follows_cupy(cp):
    x = cp.arange(12).reshape(3, 4)
    with pytest.raises(IndexError, match="Index 5 is out of bounds for axis 0 with size 3"):
        x[5]
    with pytest.raises(IndexError, match="Index 9 is out of bounds for axis 1 with size 4"):
        x[1, 9]
    assert x[cp.asarray([0, 4])][1].tolist() == [4, 5, 6, 7]  # wraps around, no error
    assert x[cp.asarray([-1])].tolist() == [[8, 9, 10, 11]]
    cp.standin.reset_stats()
    with cp.standin.counting() as counts:
        picked = x[numpy.array([0, 2])]
    assert picked.tolist() == [[0, 1, 2, 3], [8, 9, 10, 11]]
    assert counts.host_to_device == 1
    with cp.standin.counting() as counts:
        masked = x[x > 8]
    assert counts.device_to_host == 1 and type(masked) is cp.ndarray
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for fill"):
        x[0] = numpy.arange(4)
    first = cp.asarray([0])
    with cp.standin.counting() as counts:
        x[first] = numpy.full((1, 4), 7)
    assert counts.host_to_device == 1 and x[0].tolist() == [7, 7, 7, 7]
    x[1] = 5
    x[2] = cp.arange(4)
    x[...] = numpy.int64(3)
    assert x.sum().item() == 36


# -- transfers and counters ---------------------------------------------------------------
def test_device_to_host_transfers_are_counted(cp):
    x = cp.arange(4, dtype=cp.float64)
    one = x[1]
    with cp.standin.counting() as counts:
        for action in (x.get, lambda: cp.asnumpy(x), lambda: float(one), lambda: int(one),
                       lambda: bool(one), one.item, x.tolist, lambda: repr(x), lambda: str(x),
                       lambda: f"{one}", lambda: pickle.dumps(x)):
            action()
        assert counts.device_to_host == 11
    assert counts.host_to_device == 0
    assert counts.as_dict()["device_to_host"] == 11


def test_host_to_device_transfers_and_allocations_are_counted(cp):
    host = numpy.arange(8, dtype=numpy.float32)
    with cp.standin.counting() as counts:
        x = cp.asarray(host)
        y = cp.empty(8, dtype=cp.float32)
        y.set(host)
        z = x + y
        view = z[2:]
        assert cp.asarray(x) is x
    assert counts.host_to_device == 2
    assert counts.allocations == 3 and counts.allocated_bytes == 96
    assert counts.kernel_launches == 1
    assert view.base is z and counts.device_to_host == 0
    stats = cp.standin.stats()
    assert set(stats) == {"device_to_host", "host_to_device", "allocations",
                          "allocated_bytes", "kernel_launches"}
    cp.standin.reset_stats()
    assert cp.standin.stats()["allocations"] == 0


def test_counters_are_thread_safe(cp):
    x = cp.ones(16)

    def work():
        for _ in range(200):
            x + 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    with cp.standin.counting() as counts:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert counts.kernel_launches == 800 and counts.allocations == 800


# -- memory pool ---------------------------------------------------------------------------------
def test_memory_pool_tracks_live_and_cached_bytes(cp):
    pool = cp.get_default_memory_pool()
    assert isinstance(pool, cp.cuda.MemoryPool)
    gc.collect()
    pool.free_all_blocks()
    used = pool.used_bytes()
    x = cp.empty(1000, dtype=cp.float32)  # 4000 bytes -> 4096 in the pool
    assert pool.used_bytes() == used + 4096
    ptr = x.data.ptr
    del x
    gc.collect()
    assert pool.used_bytes() == used and pool.free_bytes() >= 4096
    assert pool.n_free_blocks() >= 1
    y = cp.empty(1000, dtype=cp.float32)
    assert y.data.ptr == ptr  # the freed block is reused
    del y
    pool.free_all_blocks()
    assert pool.free_bytes() == 0 and pool.total_bytes() == pool.used_bytes()


def test_out_of_memory_past_the_pool_limit(cp):
    pool = cp.get_default_memory_pool()
    gc.collect()
    pool.free_all_blocks()
    pool.set_limit(size=pool.used_bytes() + (1 << 20))
    assert pool.get_limit() == pool.used_bytes() + (1 << 20)
    keep = cp.empty(1 << 18, dtype=cp.uint8)
    with pytest.raises(cp.cuda.memory.OutOfMemoryError) as info:
        cp.zeros(1 << 20, dtype=cp.uint8)
    assert isinstance(info.value, MemoryError)
    assert str(info.value).startswith("Out of memory allocating 1,048,576 bytes (allocated "
                                      "so far: ")
    assert str(info.value).endswith(f"limit set to: {pool.get_limit():,} bytes).")
    with pytest.raises(ValueError):
        pool.set_limit(size=1, fraction=0.5)
    del keep


def test_out_of_memory_message_is_cupys(cp):
    from cupy._surface import SURFACE

    messages = SURFACE.behaviour("OutOfMemoryError")
    error = cp.cuda.memory.OutOfMemoryError
    assert str(error(1000, 2000)) == messages["message(1000, 2000)"]
    assert str(error(1000, 2000, 3000)) == messages["message(1000, 2000, 3000)"]
    with pytest.raises(TypeError):
        error(1000)


def test_device_memory_budget_from_the_environment():
    out = run_python("""
        import cupy
        print(cupy.cuda.Device().mem_info, cupy.cuda.runtime.memGetInfo()[1])
        a = cupy.empty(600, dtype=cupy.uint8)
        try:
            cupy.empty(600, dtype=cupy.uint8)
        except cupy.cuda.memory.OutOfMemoryError as exc:
            print(exc)
    """, NNBACK_CUPY_STANDIN_MEMORY="1024")
    lines = out.splitlines()
    assert lines[0] == "(1024, 1024) 1024"
    assert lines[1] == "Out of memory allocating 1,024 bytes (allocated so far: 2,048 bytes)."


# -- cupy.cuda ---------------------------------------------------------------------------------
def test_devices_and_runtime(cp):
    device = cp.cuda.Device()
    capability = os.environ.get("NNBACK_CUPY_STANDIN_COMPUTE_CAPABILITY", "90")
    assert device.id == 0 and device.compute_capability == capability
    assert repr(device) == "<CUDA Device 0>"
    free, total = device.mem_info
    assert total == int(os.environ.get("NNBACK_CUPY_STANDIN_MEMORY", 80 * 2**30))
    assert 0 < free <= total
    with cp.cuda.Device(0) as used:
        assert used.id == 0
    device.synchronize()
    runtime = cp.cuda.runtime
    assert runtime.getDeviceCount() == 1
    properties = runtime.getDeviceProperties(0)
    assert properties["name"] == b"CuPy stand-in (NumPy on the CPU)"
    assert properties["totalGlobalMem"] == total
    assert f"{properties['major']}{properties['minor']}" == capability
    with pytest.raises(runtime.CUDARuntimeError, match="invalid device ordinal"):
        cp.cuda.Device(1).use()
    with pytest.raises(TypeError):
        cp.cuda.Device(id=0)  # CuPy's parameter is called device


def test_device_count_from_the_environment():
    out = run_python("""
        import cupy
        print(cupy.cuda.runtime.getDeviceCount())
        with cupy.cuda.Device(2):
            print(cupy.cuda.Device().id, cupy.zeros(1).device.id)
    """, NNBACK_CUPY_STANDIN_DEVICES="3")
    assert out.split() == ["3", "2", "2"]
    out = run_python("""
        import cupy
        print(cupy.is_available())
        try:
            cupy.cuda.runtime.getDeviceCount()
        except cupy.cuda.runtime.CUDARuntimeError as exc:
            print(exc)
    """, NNBACK_CUPY_STANDIN_DEVICES="0")
    assert out.splitlines() == ["False", "cudaErrorNoDevice: no CUDA-capable device is "
                                         "detected"]


def test_current_stream_is_per_thread_and_restored(cp):
    null = cp.cuda.Stream.null
    assert null.ptr == 0 and cp.cuda.get_current_stream() == null
    stream = cp.cuda.Stream(non_blocking=True)
    assert stream.ptr != 0
    seen = {}
    with stream:
        assert cp.cuda.get_current_stream() is stream
        worker = threading.Thread(target=lambda: seen.update(
            other=cp.cuda.get_current_stream()))
        worker.start()
        worker.join()
    assert seen["other"] == null
    assert cp.cuda.get_current_stream() == null
    stream.use()
    try:
        assert cp.cuda.get_current_stream() is stream
    finally:
        null.use()


def test_events_and_elapsed_time(cp):
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    cp.arange(10).sum()
    end.record()
    end.synchronize()
    assert start.done and end.done
    assert cp.cuda.get_elapsed_time(start, end) >= 0.0


# -- pinned memory and asynchronous copies --------------------------------------------------
def _staged_set(cp, values, nbytes=4096):
    """nnback's pattern: stage through a pinned block, set(), drop the block."""
    pinned = cp.cuda.alloc_pinned_memory(nbytes)
    staging = numpy.frombuffer(pinned, numpy.float32, values.size)
    staging[...] = values
    device = cp.empty(values.shape, dtype=cp.float32)
    device.set(staging)
    return device


def test_pinned_memory_supports_the_buffer_protocol_and_is_pooled(cp):
    pinned = cp.cuda.alloc_pinned_memory(1000)
    assert isinstance(pinned, cp.cuda.PinnedMemoryPointer) and pinned.size() == 1024
    view = numpy.frombuffer(pinned, numpy.float32, 250)
    view[:] = numpy.arange(250)
    assert view.__array_interface__["data"][0] == pinned.ptr
    ptr = pinned.ptr
    del pinned, view
    gc.collect()
    again = cp.cuda.alloc_pinned_memory(1020)  # same rounded size: the same block
    assert again.ptr == ptr
    assert cp.get_default_pinned_memory_pool().n_free_blocks() >= 0


def test_reusing_a_pinned_block_with_a_pending_copy_raises(cp):
    stream = cp.cuda.Stream(non_blocking=True)
    values = numpy.arange(8, dtype=numpy.float32)
    with stream:
        device = _staged_set(cp, values)
        gc.collect()
        with pytest.raises(cp.standin.PinnedReuseError) as info:
            cp.cuda.alloc_pinned_memory(4096)
        assert isinstance(info.value, RuntimeError)
        message = str(info.value)
        assert "pinned host block 0x" in message and repr(stream) in message
        assert "event" in message and "cupy.asarray" in message
        stream.synchronize()
        cp.cuda.alloc_pinned_memory(4096)  # the copy has passed: fine now
    assert device.get().tolist() == values.tolist()  # the data is right all along


def test_a_pending_copy_on_the_null_stream_is_a_hazard_too(cp):
    """From pinned memory the copy is asynchronous on the null stream as well (nnback's
    first cupy backend staged its transfers that way)."""
    values = numpy.arange(8, dtype=numpy.float32)
    device = _staged_set(cp, values)
    gc.collect()
    with pytest.raises(cp.standin.PinnedReuseError):
        cp.cuda.alloc_pinned_memory(4096)
    cp.cuda.get_current_stream().synchronize()
    cp.cuda.alloc_pinned_memory(4096)
    assert device.get().tolist() == values.tolist()


def test_no_pinned_hazard_when_waited_for(cp):
    values = numpy.arange(8, dtype=numpy.float32)
    stream = cp.cuda.Stream()
    with stream:
        pinned = cp.cuda.alloc_pinned_memory(8192)
        staging = numpy.frombuffer(pinned, numpy.float32, 8)
        staging[...] = values
        device = cp.empty(8, dtype=cp.float32)
        device.set(staging)
        event = stream.record()
        event.synchronize()  # the event after the copy has passed
        del pinned, staging
        gc.collect()
        cp.cuda.alloc_pinned_memory(8192)
        assert cp.asarray(values).get().tolist() == values.tolist()  # asarray is safe


def test_asynchronous_get_into_pinned_memory_is_pending(cp):
    stream = cp.cuda.Stream(non_blocking=True)
    device = cp.arange(4, dtype=cp.float32)
    with stream:
        pinned = cp.cuda.alloc_pinned_memory(16384)
        out = numpy.frombuffer(pinned, numpy.float32, 4)
        device.get(out=out, blocking=False)
        assert out.tolist() == [0, 1, 2, 3]
        del pinned, out
        gc.collect()
        with pytest.raises(cp.standin.PinnedReuseError, match="device-to-host"):
            cp.cuda.alloc_pinned_memory(16384)
        assert not stream.done  # polling: not yet, then the GPU finishes
        assert stream.done
        cp.cuda.alloc_pinned_memory(16384)


# -- TF32 -----------------------------------------------------------------------------------------
def _tf32(values):
    bits = numpy.ascontiguousarray(values, numpy.float32).view(numpy.uint32).astype(
        numpy.uint64)
    rounded = (bits + 0x0FFF + ((bits >> 13) & 1)) & 0xFFFFE000
    return rounded.astype(numpy.uint32).view(numpy.float32)


def test_tf32_rounds_two_d_float32_products(cp):
    from cupy._core import _routines_linalg as linalg

    rng = numpy.random.default_rng(0)
    a_host = rng.standard_normal((32, 48)).astype(numpy.float32)
    b_host = rng.standard_normal((48, 16)).astype(numpy.float32)
    a, b = cp.asarray(a_host), cp.asarray(b_host)
    assert linalg.get_compute_type(numpy.float32) == linalg.COMPUTE_TYPE_DEFAULT
    exact = (a @ b).get()
    numpy.testing.assert_allclose(exact, a_host @ b_host, rtol=1e-5, atol=1e-5)
    linalg.set_compute_type(numpy.float32, linalg.COMPUTE_TYPE_TF32)
    expected = _tf32(a_host) @ _tf32(b_host)
    for product in (a @ b, cp.matmul(a, b), cp.dot(a, b), a.dot(b)):
        numpy.testing.assert_allclose(product.get(), expected, rtol=1e-6, atol=1e-6)
    assert numpy.abs((a @ b).get() - exact).max() > 1e-4  # TF32 error is visible
    stacked = cp.matmul(a[None], b[None]).get()[0]
    numpy.testing.assert_allclose(stacked, exact, rtol=1e-6, atol=1e-6)  # no TF32
    a64, b64 = a.astype(cp.float64), b.astype(cp.float64)
    numpy.testing.assert_allclose((a64 @ b64).get(), a_host.astype(float) @ b_host,
                                  rtol=1e-12)
    with pytest.raises(ValueError, match="Unknown compute type"):
        linalg.set_compute_type(numpy.float32, 99)
    assert linalg.COMPUTE_TYPE_TF32 == recorded("14")["namespaces"][
        "cupy._core._routines_linalg"]["COMPUTE_TYPE_TF32"]["value"]


def test_tf32_from_the_environment_and_refused_on_old_gpus():
    out = run_python("""
        import warnings, numpy
        from cupy._core import _routines_linalg as linalg
        print(linalg.get_compute_type(numpy.float32) == linalg.COMPUTE_TYPE_TF32)
    """, CUPY_TF32="1")
    assert out.strip() == "True"
    out = run_python("""
        import warnings, numpy
        from cupy._core import _routines_linalg as linalg
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            linalg.set_compute_type(numpy.float32, linalg.COMPUTE_TYPE_TF32)
        print(linalg.get_compute_type(numpy.float32) == linalg.COMPUTE_TYPE_DEFAULT,
              "compute capability 8.0" in str(caught[0].message))
    """, NNBACK_CUPY_STANDIN_COMPUTE_CAPABILITY="75")
    assert out.split() == ["True", "True"]


# -- functions ------------------------------------------------------------------------------------
def test_creation_and_conversion_functions(cp):
    x = cp.asarray([[1, 2], [3, 4]], dtype=cp.float32)
    assert x.dtype == cp.float32 and x.shape == (2, 2)
    assert cp.asarray(x) is x and cp.asarray(x, dtype=cp.float64).dtype == cp.float64
    assert x.astype(cp.float32, copy=False) is x and x.copy() is not x
    assert cp.asnumpy(x).tolist() == [[1, 2], [3, 4]] and type(cp.asnumpy(x)) is numpy.ndarray
    stacked = cp.asarray([x[0], x[1]])
    assert stacked.tolist() == x.tolist()
    for made in (cp.empty((2, 3)), cp.zeros(3, dtype=cp.int32), cp.ones((2,)), cp.full(2, 7),
                 cp.arange(5), cp.linspace(0, 1, 5), cp.eye(3), cp.zeros_like(x)):
        assert type(made) is cp.ndarray
    assert cp.full(2, 7).tolist() == [7, 7]
    assert cp.take(x, cp.asarray([1, 3])).tolist() == [2, 4]
    assert cp.take(x, [0], axis=1).tolist() == [[1], [3]]
    out = cp.empty(2, dtype=cp.float32)
    assert cp.take(x, cp.asarray([0, 1]), out=out) is out
    assert cp.reshape(x, (4,)).base is x  # CuPy's "newshape" maps onto NumPy
    assert cp.reshape(x, newshape=(4,)).shape == (4,)
    assert cp.concatenate((x, x), axis=0).shape == (4, 2)
    assert cp.argmax(x, axis=1, dtype=cp.int32).dtype == cp.int32
    assert cp.linalg.norm(x).shape == () and cp.fft.fft(x).dtype == cp.complex64
    assert cp.where(x > 2, x, 0.0).tolist() == [[0, 0], [3, 4]]
    assert cp.result_type(x, numpy.ones(1, numpy.float64)) == numpy.float64


def test_cupy_argument_names_map_onto_numpys(cp):
    x = cp.arange(12.0).reshape(3, 4)
    assert cp.stack(tup=[x, x]).shape == (2, 3, 4)  # NumPy calls it "arrays"
    assert cp.flip(a=x)[0, 0].item() == 11  # NumPy calls it "m"
    assert cp.einsum("ij,kj->ik", x, x).shape == (3, 3)  # NumPy: *operands
    assert cp.arange(start=1, stop=5).tolist() == [1, 2, 3, 4]
    assert cp.percentile(x, 50, interpolation="linear").item() == 5.5
    assert cp.random.standard_normal((2,), dtype=cp.float32).dtype == cp.float32
    assert cp.alltrue(x >= 0).item() is True  # a CuPy name NumPy 2 dropped


def test_every_recorded_function_name_is_callable(cp):
    from cupy._surface import SURFACE

    for namespace, module in [("cupy", cp), ("cupy.linalg", cp.linalg), ("cupy.fft", cp.fft),
                              ("cupy.random", cp.random)]:
        for name in SURFACE.names(namespace):
            if SURFACE.entry(namespace, name)["kind"] in ("function", "ufunc", "gufunc"):
                assert callable(getattr(module, name)), f"{namespace}.{name}"
    namespace = {}
    exec("from cupy import *", namespace)  # what array-api-compat's cupy wrapper does
    assert namespace["ndarray"] is cp.ndarray


def test_arrays_on_another_arrays_memory(cp):
    x = cp.arange(12, dtype=cp.float32)
    y = cp.ndarray((2, 3), dtype=cp.float32, memptr=x.data + 8)
    assert y.tolist() == [[2, 3, 4], [5, 6, 7]]
    y[0, 0] = -5
    assert x[2].item() == -5
    assert cp.ndarray((2, 2), cp.float64).shape == (2, 2)
    assert x.get(order="F").flags.f_contiguous


def test_writing_into_out(cp):
    x = cp.arange(4, dtype=cp.float32)
    out = cp.empty(4, dtype=cp.float32)
    assert cp.exp(x, out=out) is out and cp.add(x, x, out) is out
    assert cp.sum(x, out=cp.empty((), dtype=cp.float32)).item() == 6
    product = cp.empty((2, 2), dtype=cp.float32)
    a = x.reshape(2, 2)
    assert cp.matmul(a, a, out=product) is product
    x += 1
    assert x.tolist() == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="Cannot specify 'out' as both"):
        cp.exp(x, out, out=out)


def test_array_api_compat_works_on_the_stand_in(cp):
    compat = pytest.importorskip("array_api_compat")
    import array_api_compat.cupy as xp

    a = xp.asarray([1.0, 2.0, 3.0])
    assert compat.is_cupy_array(a) and compat.array_namespace(a) is xp
    assert xp.zeros((2, 2)).shape == (2, 2)
    assert xp.matmul(xp.ones((2, 3)), xp.ones((3, 2))).shape == (2, 2)
    assert xp.sum(a).item() == 6.0
    assert xp.astype(a, xp.float32).dtype == xp.float32
    assert xp.reshape(a, (3, 1)).shape == (3, 1)
    assert compat.array_namespace(a, use_compat=False) is cp


# -- ElementwiseKernel ------------------------------------------------------------------------
class _FakeEngine:
    """A stand-in for cpu_kernels.CpuElementwise: out = in + 1 for every pair."""

    calls = []

    def __init__(self, in_params, out_params, operation, name="kernel", preamble="",
                 loop_prep="", after_loop="", options=()):
        self.nout = len([p for p in out_params.split(",") if p.strip()])

    def __call__(self, inputs, outputs, size=None):
        type(self).calls.append((inputs, outputs, size))
        arrays = [value for value in inputs if isinstance(value, numpy.ndarray)]
        shape = numpy.broadcast_shapes(*(a.shape for a in arrays)) if arrays else ()
        results = []
        for index in range(self.nout):
            target = outputs[index] if outputs else numpy.empty(shape, arrays[0].dtype)
            target[...] = inputs[0] + 1
            results.append(target)
        return results


@pytest.fixture
def fake_engine(cp, monkeypatch):
    from cupy import _kernel

    monkeypatch.setattr(_kernel, "_engine_module",
                        types.SimpleNamespace(CpuElementwise=_FakeEngine))
    _FakeEngine.calls.clear()
    return _FakeEngine


def test_elementwise_kernel_array_layer(cp, fake_engine):
    kernel = cp.ElementwiseKernel("T x, T y", "T z", "z = x + y", "standin_add")
    x = cp.arange(4, dtype=cp.float32)
    with cp.standin.counting() as counts:
        z = kernel(x, 2.0)
    assert type(z) is cp.ndarray and z.tolist() == [1, 2, 3, 4]
    assert counts.kernel_launches == 1 and counts.allocations == 1
    inputs, outputs, size = fake_engine.calls[-1]
    assert inputs[0] is x._sd_a and inputs[1] == 2.0 and outputs is None and size is None
    out = cp.empty(4, dtype=cp.float32)
    assert kernel(x, 1.0, out) is out
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        kernel(numpy.ones(4, numpy.float32), 1.0)
    with pytest.raises(TypeError, match=r"Wrong arguments \{'bogus': 1\}"):
        kernel(x, 1.0, bogus=1)
    with pytest.raises(TypeError, match="Wrong number of arguments for 'standin_add'. It must "
                                        "be either 2 or 3 \\(with outputs\\), but given 1."):
        kernel(x)
    with pytest.raises(ValueError, match="block_size must be greater than zero"):
        kernel(x, 1.0, block_size=0)
    kernel(x, 1.0, size=4, block_size=64, stream=cp.cuda.Stream.null)
    assert fake_engine.calls[-1][2] == 4
    with pytest.raises(ValueError, match="Can not use 'i' as a parameter name"):
        cp.ElementwiseKernel("T i", "T z", "z = i", "bad")
    with pytest.raises(TypeError):
        cp.ElementwiseKernel("T x", "T z", "z = x", "k", bogus_option=True)(x)


def test_elementwise_kernel_return_conventions(cp, fake_engine):
    x = cp.arange(3, dtype=cp.float64)
    two = cp.ElementwiseKernel("T x", "T a, T b", "a = x; b = x", "two_outputs")
    a, b = two(x)
    assert type(a) is cp.ndarray and type(b) is cp.ndarray
    single_tuple = cp.ElementwiseKernel("T x", "T a", "a = x", "tupled", return_tuple=True)
    assert isinstance(single_tuple(x), tuple)
    silent = cp.ElementwiseKernel("T x", "T a", "a = x", "silent", no_return=True)
    assert silent(x) is None


def test_elementwise_kernel_runs_the_cuda_text_on_the_cpu(cp):
    import shutil

    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("no C++ compiler here for the CPU kernel engine")
    kernel = cp.ElementwiseKernel("T x, T bias", "T y", "T s = x + bias; y = s > (T)0 ? s : "
                                  "(T)0;", "standin_bias_relu")
    x = cp.asarray([[-2.0, 1.0], [3.0, -4.0]], dtype=cp.float32)
    bias = cp.asarray([1.0, 1.0], dtype=cp.float32)
    assert kernel(x, bias).tolist() == [[0, 2], [4, 0]]
    kernel(x, bias, x)  # in place, as nnback's fused kernels do
    assert x.tolist() == [[0, 2], [4, 0]]


# -- cost ---------------------------------------------------------------------------------------
def test_a_wrapped_operation_costs_microseconds(cp):
    x = cp.ones((16, 16), dtype=cp.float32)
    x + x  # warm up
    count = 2000
    start = time.perf_counter()
    for _ in range(count):
        cp.add(x, x)
        x.sum(axis=0)
        x[1:]
    per_call = (time.perf_counter() - start) / (3 * count)
    assert per_call < 200e-6, f"{per_call * 1e6:.1f} µs per wrapped call"
