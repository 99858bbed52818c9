import sys

import numpy as np
import pytest

import nnback as nb
from nnback import backend as backend_module
from nnback.backend import Backend


def test_unknown_backend_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown backend 'tpu'.*numpy.*cupy"):
        nb.get_backend("tpu")


def test_backend_argument_of_wrong_type_is_a_type_error():
    with pytest.raises(TypeError, match="backend must be a name"):
        nb.get_backend(3)


def test_backend_instance_passes_through():
    be = nb.get_backend("numpy")
    assert nb.get_backend(be) is be


def test_cupy_without_cupy_says_which_extra_to_install(no_cupy):
    with pytest.raises(nb.BackendUnavailableError, match=r"not installed.*nnback\[cuda12\]"):
        nb.get_backend("cupy")


def test_auto_falls_back_to_numpy_without_cupy(no_cupy):
    assert nb.get_backend("auto").name == "numpy"


def test_cupy_without_gpu_says_no_gpu(monkeypatch):
    class FakeCupy:
        @staticmethod
        def is_available():
            return False

    monkeypatch.setitem(sys.modules, "cupy", FakeCupy)
    monkeypatch.setattr(backend_module, "_cache", {})
    with pytest.raises(nb.BackendUnavailableError, match="no working CUDA GPU"):
        nb.get_backend("cupy")


def test_environment_variable_sets_the_default(monkeypatch):
    monkeypatch.setenv("NNBACK_BACKEND", "array_api_strict")
    pytest.importorskip("array_api_strict")
    assert nb.get_backend("auto").name == "array_api_strict"
    assert nb.MLP([2, 1], seed=0).backend.name == "array_api_strict"


def test_environment_variable_with_unknown_name_is_rejected(monkeypatch):
    monkeypatch.setenv("NNBACK_BACKEND", "tpu")
    with pytest.raises(ValueError, match="NNBACK_BACKEND='tpu'"):
        nb.get_backend("auto")


def test_asarray_and_to_numpy_round_trip(backend, dtype):
    host = np.arange(6, dtype=np.float64).reshape(2, 3) / 7
    device = backend.asarray(host, dtype)
    assert backend.dtype_name(device.dtype) == dtype
    back = backend.to_numpy(device)
    assert isinstance(back, np.ndarray) and back.dtype == np.dtype(dtype)
    np.testing.assert_allclose(back, host.astype(dtype))


def test_to_numpy_returns_an_independent_copy(backend):
    device = backend.asarray(np.zeros(3), "float64")
    host = backend.to_numpy(device)
    host[0] = 5.0
    assert backend.to_numpy(device)[0] == 0.0


def test_synchronize_and_device_name(backend):
    backend.synchronize()
    assert isinstance(backend.device_name(), str) and backend.device_name()


def test_available_backends_reports_numpy():
    status = nb.available_backends()
    assert status["numpy"] is None
    assert set(status) == {"numpy", "cupy", "array_api_strict"}


def test_backend_of_finds_the_owner(backend):
    array = backend.asarray([1.0, 2.0])
    if type(backend) is Backend:  # a generic backend (torch): one of the same namespace
        assert backend_module.backend_of(array).xp is backend.xp
    else:
        assert backend_module.backend_of(array) is backend
    with pytest.raises(TypeError, match="expected an array"):
        backend_module.backend_of([1.0])
