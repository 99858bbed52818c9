"""save/load: round trips across backends; load refuses damaged, tampered, pickled or newer
files with ModelFileError and without executing anything; a failed save leaves the old file."""
import copy
import errno
import io
import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

import nnback as nb
from nnback import fileformat, io as nnio
from nnback.layers import Layer

ROOT = Path(__file__).resolve().parent.parent



def assert_same_model(actual, expected):
    assert type(actual) is type(expected)
    assert actual.get_config() == expected.get_config()
    assert actual.dtype == expected.dtype
    for new, old in zip(actual.get_weights(), expected.get_weights(), strict=True):
        np.testing.assert_array_equal(new, old)


def read_archive(path):
    """(meta dict, {name: array}) of a model file, read with NumPy (no pickles)."""
    with np.load(path, allow_pickle=False) as archive:
        members = {name: archive[name] for name in archive.files}
    return json.loads(members.pop("meta").tobytes()), members


def overwrite(path, data):
    """Write ``data`` to ``path`` in place. (Opening with truncation makes ext4 flush the old
    contents first, which costs milliseconds a call in loops of thousands.)"""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, data)
        os.ftruncate(descriptor, len(data))
    finally:
        os.close(descriptor)


def savez(path, **arrays):
    """numpy.savez to exactly ``path`` (given a name, savez would append ".npz")."""
    with open(path, "wb") as stream:
        np.savez(stream, **arrays)


def write_archive(path, meta, arrays, fix_checksum=True):
    """An archive as save writes it, from ``meta`` and ``arrays`` (param_i order); with
    ``fix_checksum`` the checksum is recomputed, so that only the check under test can
    notice the change."""
    if fix_checksum:
        params = [arrays[f"param_{index}"] for index in range(meta["n_params"])
                  if f"param_{index}" in arrays]
        meta = {**meta, "checksum": nnio.checksum(meta, params)}
    text = json.dumps(meta).encode()
    savez(path, meta=np.frombuffer(text, dtype=np.uint8), **arrays)


def assert_load_refused(path, message=None):
    """load refuses ``path`` with a ModelFileError matching ``message``."""
    with pytest.raises(nb.ModelFileError, match=message):
        nb.load(path, backend="numpy")


def assert_refused(path, meta, arrays, message, fix_checksum=True):
    """An archive written from ``meta`` and ``arrays`` is refused (see assert_load_refused)."""
    write_archive(path, meta, arrays, fix_checksum)
    assert_load_refused(path, message)


@pytest.fixture
def saved(tmp_path):
    """(path, model): an MLP saved to a file."""
    model = nb.MLP([2, 3, 1], backend="numpy", seed=0)
    path = tmp_path / "model.nnb"
    model.save(path)
    return path, model


# -- round trips ---------------------------------------------------------------------------
MODELS = {
    "mlp": lambda backend: nb.MLP([2, 3, 1], backend=backend, seed=0),
    "mlp float64 no bias": lambda backend: nb.MLP([3, 4, 4, 2], activation="tanh",
                                                  output="identity", bias=False,
                                                  backend=backend, dtype="float64", seed=1),
    "mlp leaky relu 0.2": lambda backend: nb.MLP([2, 5, 3, 1], activation=nb.LeakyReLU(0.2),
                                                 backend=backend, seed=2),
    "one-layer mlp": lambda backend: nb.MLP([2, 1], activation="relu", backend=backend,
                                            seed=3),
    "sequential": lambda backend: nb.Sequential(
        [nb.Dense(2, 4), nb.ReLU(), nb.Dense(4, 3), nb.Softmax()], backend=backend, seed=4),
}


@pytest.mark.parametrize("kind", MODELS)
def test_round_trip_onto_every_backend(backend, kind, tmp_path):
    model = MODELS[kind]("numpy")
    model.save(tmp_path / "m.nnb")
    loaded = nb.load(tmp_path / "m.nnb", backend=backend)
    assert loaded.backend is backend
    assert_same_model(loaded, model)
    if isinstance(model, nb.MLP):
        assert (loaded.activation, loaded.output) == (model.activation, model.output)
    X = np.random.default_rng(0).normal(size=(5, model.n_features_in))
    np.testing.assert_allclose(loaded.predict(X), model.predict(X), rtol=1e-6)


def test_model_saved_on_another_backend_loads_on_numpy(backend, tmp_path):
    model = nb.MLP([2, 3, 1], backend=backend, seed=0)
    model.save(str(tmp_path / "m.nnb"))
    assert_same_model(nb.load(tmp_path / "m.nnb", backend="numpy"), model)


def test_save_overwrites_and_leaves_no_temporary_file(saved):
    path, _ = saved
    other = nb.MLP([2, 3, 1], backend="numpy", seed=9)
    other.save(path)
    assert_same_model(nb.load(path, backend="numpy"), other)
    assert sorted(os.listdir(path.parent)) == ["model.nnb"]


# -- load refuses ------------------------------------------------------------------------
def test_truncated_files_are_refused(saved):
    path, _ = saved
    data = path.read_bytes()
    # every length near both ends (headers, central directory) and a spread in between
    lengths = sorted({*range(64), *range(0, len(data), 7), *range(len(data) - 64, len(data))})
    for length in lengths:
        overwrite(path, data[:length])
        assert_load_refused(path, re.escape(str(path)))


def test_random_bytes_and_empty_files_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.nnb"
    for size in (0, 1, 3, 4, 100, 5000):
        overwrite(path, rng.bytes(size))
        assert_load_refused(path, "not an nnback model file")
    # random bytes behind a valid zip signature
    path.write_bytes(b"PK\x03\x04" + rng.bytes(2000))
    assert_load_refused(path, "is not a readable nnback model file .* it is damaged or was "
                              "not written by nnback")


def test_single_npy_file_is_refused(tmp_path):
    path = tmp_path / "weights.npy"
    np.save(path, np.zeros(3))
    assert_load_refused(path, r"not an \.npz archive")


def test_missing_file_and_wrong_path_types(tmp_path):
    with pytest.raises(FileNotFoundError):
        nb.load(tmp_path / "absent.nnb")
    with pytest.raises(IsADirectoryError):
        nb.load(tmp_path)
    with pytest.raises(TypeError, match=r"path must be a file name .* got NoneType"):
        nb.load(None)


def test_tampered_shape_is_refused(saved):
    path, _ = saved
    meta, arrays = read_archive(path)
    arrays["param_0"] = arrays["param_0"].reshape(3, 2)
    assert_refused(path, meta, arrays, r"the arrays have shapes \[\(3, 2\), .* but "
                                               r"its layers need \[\(2, 3\)")


def test_tampered_dtype_is_refused(saved):
    path, _ = saved
    meta, arrays = read_archive(path)
    arrays["param_2"] = arrays["param_2"].astype(np.float64)
    assert_refused(path, meta, arrays, "param_2 is float64, expected float32")
    meta["dtype"] = "float16"
    assert_refused(path, meta, arrays, "dtype must be one of")


def test_tampered_layer_description_is_refused(saved):
    path, _ = saved
    meta, arrays = read_archive(path)
    huge = copy.deepcopy(meta)
    huge["model"]["layers"][0]["config"]["n_out"] = 10 ** 9  # would allocate 8 GB if built
    assert_refused(path, huge, arrays, r"its layers need \[\(2, 1000000000\)")
    unknown = copy.deepcopy(meta)
    unknown["model"]["layers"][1]["type"] = "Swish"
    assert_refused(path, unknown, arrays, "unknown layer type 'Swish'")


def test_missing_and_extra_arrays_are_refused(saved):
    path, _ = saved
    meta, arrays = read_archive(path)
    assert_refused(path, meta, {**arrays, "param_4": np.zeros(1, np.float32)},
                   r"unexpected \['param_4'\]")
    del arrays["param_3"]
    assert_refused(path, meta, arrays, r"missing \['param_3'\]")
    assert_refused(path, {**meta, "n_params": 10 ** 12}, arrays,
                   "n_params must be the number of parameter", fix_checksum=False)


def test_newer_format_version_says_upgrade(saved):
    path, _ = saved
    meta, arrays = read_archive(path)
    newer = {**meta, "format_version": nnio.FORMAT_VERSION + 1, "nnback_version": "9.0"}
    assert_refused(path, newer, arrays, r"format version 2 by nnback 9.0; this nnback .* reads "
                                        r"up to version 1: upgrade nnback")
    for version in (0, "1", True, None):
        assert_refused(path, {**meta, "format_version": version}, arrays,
                       "format_version must be a positive")


def test_metadata_that_is_not_ours_is_refused(saved):
    path, _ = saved
    meta, arrays = read_archive(path)
    assert_refused(path, {**meta, "format": "keras"}, arrays, "format is not 'nnback-model'")
    savez(path, meta=np.frombuffer(b"[" * 100000, dtype=np.uint8), **arrays)
    assert_load_refused(path, "metadata is not valid JSON")
    savez(path, meta=np.zeros(3, np.float32), **arrays)
    assert_load_refused(path, "'meta' must be UTF-8 bytes")
    savez(path, **arrays)
    assert_load_refused(path, "has no 'meta' entry")


def test_header_declaring_more_than_the_file_holds_is_refused(saved):
    path, _ = saved
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10 ** 12,)})
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("huge.npy", header.getvalue() + b"\0" * 16)
    assert_load_refused(path, r"'huge.npy' declares float32 \(1000000000000,"
                                               r"\) \(4000000000000 bytes\) but holds 16")


def test_compressed_and_duplicate_entries_are_refused(saved, tmp_path):
    path, model = saved
    meta, arrays = read_archive(path)
    with open(path, "wb") as stream:
        np.savez_compressed(stream, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
                            **arrays)
    assert_load_refused(path, "compressed")
    model.save(path)
    with zipfile.ZipFile(path, "a") as archive, pytest.warns(UserWarning, match="Duplicate"):
        archive.writestr("param_0.npy", archive.read("param_0.npy"))
    assert_load_refused(path, "lists an entry twice")


class LeavesAMark:
    """Unpickling this creates the file ``marker``: the side effect a load must never have."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(LeavesAMark(marker))
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(LeavesAMark(proof))).close()
    assert proof.exists(), "the payload must really have a side effect when unpickled"
    path = tmp_path / "model.nnb"
    path.write_bytes(payload)
    assert_load_refused(path, "holds pickled data, which nnback never loads")
    assert not marker.exists()


def test_member_that_needs_allow_pickle_is_refused_without_running_it(saved, tmp_path):
    path, _ = saved
    marker = tmp_path / "unpickled"
    meta, arrays = read_archive(path)
    evil = np.empty(1, dtype=object)
    evil[0] = LeavesAMark(marker)
    arrays["param_1"] = evil
    text = json.dumps(meta).encode()
    savez(path, meta=np.frombuffer(text, dtype=np.uint8), **arrays)
    assert not marker.exists()
    assert_load_refused(path, r"'param_1.npy' holds Python objects, which "
                                               r"would need allow_pickle")
    assert not marker.exists()


# -- checksum ----------------------------------------------------------------------------
def test_changed_weights_with_a_valid_zip_fail_the_checksum(saved):
    path, _ = saved
    meta, arrays = read_archive(path)
    arrays["param_0"] = arrays["param_0"].copy()
    arrays["param_0"][0, 0] = np.nextafter(arrays["param_0"][0, 0], np.float32(1))
    # the zip's CRCs are new and valid: only the checksum can notice
    assert_refused(path, meta, arrays, "checksum mismatch", fix_checksum=False)


def test_extra_metadata_round_trips_and_is_covered_by_the_checksum(saved):
    path, model = saved
    nnio.save(model, path, extra={"csv": {"columns": ["a", "b"], "scale": [1.5, 2.0]}})
    loaded, extra = nb.load(path, backend="numpy", return_extra=True)
    assert extra == {"csv": {"columns": ["a", "b"], "scale": [1.5, 2.0]}}
    meta, arrays = read_archive(path)
    meta["extra"]["csv"]["scale"] = [1.5, 2.5]
    assert_refused(path, meta, arrays, "checksum mismatch", fix_checksum=False)
    meta["extra"] = ["not", "a", "dict"]
    write_archive(path, meta, arrays)
    assert nb.load(path, backend="numpy").layer_sizes == [2, 3, 1]
    with pytest.raises(nb.ModelFileError, match="'extra' metadata must be a JSON object"):
        nb.load(path, backend="numpy", return_extra=True)


def test_extra_that_cannot_be_saved_leaves_the_old_file(saved):
    path, model = saved
    old = path.read_bytes()
    with pytest.raises(TypeError, match="extra must be a dict, got list"):
        nnio.save(model, path, extra=["columns"])
    with pytest.raises(TypeError, match="description is not plain JSON"):
        nnio.save(model, path, extra={"scale": float("nan")})
    assert unchanged(path, old)


def test_changed_metadata_fails_the_checksum(tmp_path):
    path = tmp_path / "leaky.nnb"
    nb.MLP([2, 3, 1], activation=nb.LeakyReLU(0.2), backend="numpy", seed=0).save(path)
    meta, arrays = read_archive(path)
    meta["model"]["layers"][1]["config"]["negative_slope"] = 0.3
    assert_refused(path, meta, arrays, "checksum mismatch", fix_checksum=False)


def test_a_flipped_bit_anywhere_in_the_weights_is_detected(saved):
    path, _ = saved
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        params = [info for info in archive.infolist() if info.filename.startswith("param_")]
    positions = []
    for info in params:
        # the member's bytes follow its local header: 30 bytes, then the name and extra field
        offset = info.header_offset
        start = offset + 30 + int.from_bytes(data[offset + 26:offset + 28], "little") \
            + int.from_bytes(data[offset + 28:offset + 30], "little")
        positions.extend(range(start, start + info.file_size))
    assert len(positions) >= 4 * 13 + 4 * 128  # 13 float32 parameters and 4 .npy headers
    for position in positions:
        bit = 1 << (position % 8)
        data[position] ^= bit
        overwrite(path, bytes(data))
        assert_load_refused(path)
        data[position] ^= bit


# -- save that fails leaves the old file --------------------------------------------------
class Swish(Layer):
    def forward(self, x):
        return x / (1 + self.xp.exp(-x))


def unchanged(path, old_bytes):
    return path.read_bytes() == old_bytes and sorted(os.listdir(path.parent)) == [path.name]


def test_model_that_cannot_be_serialised_leaves_the_old_file(saved):
    path, _ = saved
    old = path.read_bytes()
    custom = nb.Sequential([nb.Dense(2, 3), Swish(), nb.Dense(3, 1)], backend="numpy")
    with pytest.raises(TypeError, match=r"cannot save layer 1 \(Swish\): load rebuilds only "
                                        r"Dense, Sigmoid"):
        custom.save(path)
    assert unchanged(path, old)
    with pytest.raises(TypeError, match="save expects an nnback model"):
        nnio.save({"weights": []}, path)
    assert unchanged(path, old)


def test_model_with_non_json_config_leaves_the_old_file(saved, monkeypatch):
    path, model = saved
    old = path.read_bytes()
    monkeypatch.setattr(nb.Sigmoid, "get_config", lambda self: {"gain": object()})
    with pytest.raises(TypeError, match="description is not plain JSON"):
        model.save(path)
    assert unchanged(path, old)


def test_diverged_model_is_not_saved(saved):
    path, model = saved
    old = path.read_bytes()
    broken = nb.MLP([2, 3, 1], backend="numpy", seed=0)
    broken.layers[0].W[0, 0] = np.nan
    with pytest.raises(ValueError, match="W of Dense layer 1 holds NaN or infinity"):
        broken.save(path)
    assert unchanged(path, old)


@pytest.mark.parametrize("stage", ["savez", "fsync", "replace"])
def test_write_failure_leaves_the_old_file_and_no_temporary(saved, monkeypatch, stage):
    path, model = saved
    old = path.read_bytes()

    def disk_full(*args, **kwargs):
        if stage == "savez":  # half of the archive is written, then the disk is full
            args[0].write(b"PK\x03\x04partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    target = {"savez": (fileformat.numpy, "savez"), "fsync": (fileformat.os, "fsync"),
              "replace": (fileformat.os, "replace")}[stage]
    monkeypatch.setattr(*target, disk_full)
    with pytest.raises(OSError, match=r"cannot save the model to .*model.nnb: No space left on "
                                      r"device; a file already there is unchanged") as info:
        nb.MLP([2, 3, 1], backend="numpy", seed=5).save(path)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert unchanged(path, old)
    assert_same_model(nb.load(path, backend="numpy"), model)


def test_interrupted_save_leaves_the_old_file(saved, monkeypatch):
    path, _ = saved
    old = path.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fileformat.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        nb.MLP([2, 3, 1], backend="numpy", seed=5).save(path)
    monkeypatch.undo()
    assert unchanged(path, old)


def test_save_into_a_missing_or_non_folder_names_the_target(tmp_path):
    model = nb.MLP([2, 1], backend="numpy", seed=0)
    with pytest.raises(FileNotFoundError, match=r"cannot save the model to .*absent/m.nnb"):
        model.save(tmp_path / "absent" / "m.nnb")
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=r"cannot save the model to .*file/m.nnb"):
        model.save(tmp_path / "file" / "m.nnb")
    assert (tmp_path / "file").read_text() == "not a folder"
    with pytest.raises(IsADirectoryError, match="it is a folder; give a file name such as"):
        model.save(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["file"]
    with pytest.raises(TypeError, match="path must be a file name"):
        model.save(None)


@pytest.mark.skipif(os.name != "posix", reason="file modes and umask are POSIX")
@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_saved_model_file_gets_the_umasks_mode_as_open_would(tmp_path, umask, expected):
    """In a process of its own (the umask is process-wide): a new file as open(path, "w")
    makes it, a replaced file keeps its mode; the write stays atomic."""
    script = textwrap.dedent(f"""
        import os, stat
        import nnback as nb
        os.umask({umask})
        model = nb.MLP([2, 1], seed=0)
        model.save("new.nnb")
        open("plain.txt", "w").close()
        open("kept.nnb", "w").close()
        os.chmod("kept.nnb", 0o640)
        model.save("kept.nnb")
        for name in ("new.nnb", "plain.txt", "kept.nnb"):
            print(name, oct(stat.S_IMODE(os.stat(name).st_mode)))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    modes = dict(line.split() for line in done.stdout.splitlines())
    assert modes == {"new.nnb": oct(expected), "plain.txt": oct(expected), "kept.nnb": "0o640"}
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
