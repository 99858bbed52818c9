"""The model file format: a portable archive that any backend can read and that never
unpickles. ``write`` and ``read`` work on a model's parts (layers, description, named
weights); nnback.model saves through ``write`` and nnback.io builds a model from ``read``.

The file is an uncompressed NumPy ``.npz`` (zip) archive holding one array per parameter
(``param_0``, ``param_1``, ... in get_weights order) and ``meta``: UTF-8 JSON as a uint8
array with the format version, the nnback version, the dtype, the layers and a SHA-256
checksum over the rest of the metadata and every parameter's dtype, shape and bytes.

``read`` never calls pickle and never lets NumPy decide how to read a member: it reads the
zip directory and each member's ``.npy`` header itself, refuses object dtypes (they would
need allow_pickle), checks every declared size against the bytes really there and every
shape against the layers before it allocates anything, and checks the checksum. Anything
off is a ModelFileError (a ValueError) naming the file and what is wrong.

Writing is atomic: the archive is written to a temporary file in the target's folder,
flushed and fsynced, then renamed over the target, so a crash leaves the old file or the
new one, never a mix. Everything that can fail before writing (a model that cannot be
described, non-finite weights) fails before the temporary file exists.
"""
import hashlib
import json
import math
import os
import stat
import struct
import tempfile
import zipfile
import zlib

import numpy
import numpy.lib.format as npy_format

from . import __version__
from .backend import VALID_DTYPES
from .layers import Dense, LAYER_TYPES, layer_from_config
from .validation import check_path

FORMAT = "nnback-model"
FORMAT_VERSION = 1
ZIP_MAGIC = b"PK\x03\x04"

# What zipfile, the .npy header parser and json raise on damaged input.
_DAMAGE = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
           TypeError, KeyError, IndexError, OverflowError, NotImplementedError,
           RecursionError, struct.error, zlib.error)


class ModelFileError(ValueError):
    """A model file cannot be loaded: unreadable, damaged, tampered with or from a newer
    nnback. The message names the file and what is wrong."""


def checksum(meta, arrays):
    """SHA-256 (hex) over ``meta`` without its "checksum" entry (as canonical JSON) and each
    array's dtype, shape and bytes, in order."""
    digest = hashlib.sha256()
    described = {key: value for key, value in meta.items() if key != "checksum"}
    digest.update(json.dumps(described, sort_keys=True, separators=(",", ":")).encode())
    for array in arrays:
        array = numpy.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


# -- write ------------------------------------------------------------------------------------
def write(path, layers, config, dtype, named_weights, extra=None):
    """Write a model to ``path`` atomically (any file name; ".nnb" is customary): its
    ``layers``, its JSON-ready ``config`` (get_config), its ``dtype`` name and
    ``named_weights``, [(name, host array), ...] in get_weights order.

    extra: an optional JSON-ready dict stored in the metadata (the command line keeps the
    column names and scaling there); ``load(path, return_extra=True)`` gives it back. The
    checksum covers it like the rest of the metadata.

    A model that cannot be written (non-finite weights, a layer type load cannot rebuild)
    raises ValueError/TypeError before anything touches the disk; a failing write (no such
    folder, no permission, disk full) raises the OSError with the target named. Either way
    a file already at ``path`` is left as it was."""
    path = check_path(path)
    arrays = _serialise(layers, config, dtype, named_weights, extra)
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"cannot save the model to {path}: it is a folder; give a file name such as "
            f"{os.path.join(path, 'model.nnb')}")
    folder = os.path.dirname(os.path.abspath(path))
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.",
                                             suffix=".tmp")
        # mkstemp makes the file owner-only (0600): give it the mode open(path, "w") would
        # (the umask's for a new file), or the mode of the file it replaces
        os.fchmod(handle, _mode_for(path))
        with os.fdopen(handle, "wb") as stream:
            numpy.savez(stream, **arrays)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        if temporary is not None:
            try:
                os.unlink(temporary)
            except OSError:
                pass
        if isinstance(exc, OSError):
            raise type(exc)(exc.errno, f"cannot save the model to {path}: "
                                       f"{exc.strerror or exc}; a file already there is "
                                       "unchanged") from exc
        raise
    _fsync_folder(folder)


def _serialise(layers, config, dtype, named_weights, extra=None):
    """{member name: array} for the archive; ValueError/TypeError if the model (or
    ``extra``) cannot be saved in a form that load rebuilds."""
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict, got {type(extra).__name__}")
    for position, layer in enumerate(layers):
        if LAYER_TYPES.get(layer.kind) is not type(layer):
            raise TypeError(
                f"cannot save layer {position} ({layer.kind}): load rebuilds only "
                f"{', '.join(LAYER_TYPES)}; nothing was written")
    weights = [weight for _, weight in named_weights]
    for name, weight in named_weights:
        if not numpy.all(numpy.isfinite(weight)):
            raise ValueError(f"cannot save: {name} holds NaN or infinity (did training "
                             "diverge?); nothing was written")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "nnback_version": __version__,
        "model": config,
        "dtype": dtype,
        "n_params": len(weights),
    }
    if extra is not None:
        meta["extra"] = extra
    try:
        meta["checksum"] = checksum(meta, weights)
        text = json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot save: the model's description is not plain JSON ({exc}); "
                        "nothing was written") from None
    arrays = {f"param_{index}": weight for index, weight in enumerate(weights)}
    arrays["meta"] = numpy.frombuffer(text.encode("utf-8"), dtype=numpy.uint8)
    return arrays


def _mode_for(path):
    """The permission bits the file at ``path`` should have: those of the file there now,
    else 0666 less the process's umask (what a plain open(path, "w") creates)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _umask():
    """The process's umask, read without changing it where Linux says it (/proc), else
    set and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder):
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


# -- read -------------------------------------------------------------------------------------
def read(path):
    """(meta, layers, weights) of the model file at ``path``: its metadata, its layers
    (not yet built) and its parameter arrays in get_weights order, after every check
    above. ModelFileError (a ValueError) for a file that is damaged, tampered with, pickled
    or from a newer format; FileNotFoundError, PermissionError or IsADirectoryError when
    ``path`` cannot be opened."""
    with open(path, "rb") as stream:
        members = _read(path, stream)
    meta = _meta(path, members)
    weights = _weights(path, meta, members)
    layers = _layers(path, meta)
    expected = _parameter_shapes(layers)
    if [tuple(weight.shape) for weight in weights] != expected:
        raise ModelFileError(
            f"{path}: the arrays have shapes {[tuple(w.shape) for w in weights]} but its "
            f"layers need {expected}")
    if meta.get("checksum") != checksum(meta, weights):
        raise ModelFileError(f"{path}: checksum mismatch: the file was damaged or changed "
                             "after it was saved")
    return meta, layers, weights


def _read(path, stream):
    """{member name without ".npy": array} from the open file ``stream``. ModelFileError
    unless it is an uncompressed zip of plain (non-object) .npy arrays whose declared sizes
    match the bytes present."""
    head = stream.read(len(ZIP_MAGIC))
    if head[:1] == b"\x80":  # the PROTO opcode that starts every pickle since protocol 2
        raise ModelFileError(f"{path} holds pickled data, which nnback never loads (it could "
                             "run code); it is not an nnback model file")
    if head != ZIP_MAGIC:
        raise ModelFileError(f"{path} is not an nnback model file (not an .npz archive; "
                             f"it starts with {head!r})")
    stream.seek(0, os.SEEK_END)
    file_size = stream.tell()
    stream.seek(0)
    try:
        with zipfile.ZipFile(stream) as archive:
            infos = archive.infolist()
            names = [info.filename for info in infos]
            if len(set(names)) != len(names):
                raise ModelFileError(f"{path}: the archive lists an entry twice")
            return {info.filename[:-len(".npy")]: _read_member(path, archive, info, file_size)
                    for info in infos}
    except ModelFileError:
        raise
    except _DAMAGE as exc:
        raise ModelFileError(f"{path} is not a readable nnback model file "
                             f"({type(exc).__name__}: {exc}); it is damaged or was not "
                             "written by nnback") from None


def _read_member(path, archive, info, file_size):
    name = info.filename
    if not name.endswith(".npy"):
        raise ModelFileError(f"{path}: unexpected entry {name!r} (an nnback file holds only "
                             ".npy arrays)")
    if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size \
            or info.file_size > file_size or info.flag_bits & 0x1:
        raise ModelFileError(f"{path}: entry {name!r} is compressed, encrypted or larger than "
                             "the file (nnback writes plain uncompressed archives)")
    with archive.open(info) as member:
        version = npy_format.read_magic(member)
        if version == (1, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_2_0(member)
        else:
            raise ModelFileError(f"{path}: entry {name!r} has .npy version {version}")
        if dtype.hasobject:
            raise ModelFileError(
                f"{path}: entry {name!r} holds Python objects, which would need "
                "allow_pickle (unpickling could run code); nnback never loads them")
        n_bytes = math.prod(shape) * dtype.itemsize
        present = info.file_size - member.tell()
        if n_bytes != present:
            raise ModelFileError(f"{path}: entry {name!r} declares {dtype} {shape} "
                                 f"({n_bytes} bytes) but holds {present} bytes")
        data = member.read(n_bytes)  # reading to the end checks the zip's CRC-32
    return numpy.frombuffer(data, dtype=dtype).reshape(shape,
                                                      order="F" if fortran_order else "C")


def _meta(path, members):
    if "meta" not in members:
        raise ModelFileError(f"{path} has no 'meta' entry: not an nnback model file")
    raw = members["meta"]
    if raw.dtype != numpy.uint8 or raw.ndim != 1:
        raise ModelFileError(f"{path}: 'meta' must be UTF-8 bytes, got {raw.dtype} {raw.shape}")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeError included
        raise ModelFileError(f"{path}: its metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not an nnback model file (format is not {FORMAT!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(f"{path}: format_version must be a positive integer, got "
                             f"{version!r}")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} was written in format version {version} by nnback "
            f"{meta.get('nnback_version')}; this nnback {__version__} reads up to version "
            f"{FORMAT_VERSION}: upgrade nnback (pip install -U nnback)"
        )
    if meta.get("dtype") not in VALID_DTYPES:
        raise ModelFileError(f"{path}: dtype must be one of {VALID_DTYPES}, got "
                             f"{meta.get('dtype')!r}")
    return meta


def _weights(path, meta, members):
    """The parameter arrays in order, after checking that the archive holds exactly
    ``meta``'s n_params of them, all of ``meta``'s dtype."""
    n_params = meta.get("n_params")
    if not isinstance(n_params, int) or isinstance(n_params, bool) \
            or not 0 <= n_params <= len(members):
        raise ModelFileError(f"{path}: n_params must be the number of parameter arrays "
                             f"(the archive holds {len(members)} entries), got {n_params!r}")
    expected = {"meta"} | {f"param_{index}" for index in range(n_params)}
    if set(members) != expected:
        raise ModelFileError(
            f"{path}: the arrays do not match its metadata (missing "
            f"{sorted(expected - set(members)) or 'none'}, unexpected "
            f"{sorted(set(members) - expected) or 'none'})")
    weights = [members[f"param_{index}"] for index in range(n_params)]
    for index, weight in enumerate(weights):
        if weight.dtype != numpy.dtype(meta["dtype"]):
            raise ModelFileError(f"{path}: param_{index} is {weight.dtype}, expected "
                                 f"{meta['dtype']}")
    return weights


def _layers(path, meta):
    """The model's layers, not yet built (nothing allocated)."""
    config = meta.get("model")
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise ModelFileError(f"{path}: its metadata has no layer list")
    layers = []
    try:
        for entry in config["layers"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("config", {}), dict):
                raise ValueError(f"bad layer entry {entry!r}")
            layers.append(layer_from_config(entry.get("type"), entry.get("config", {})))
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: its layers cannot be rebuilt ({exc})") from None
    return layers


def _parameter_shapes(layers):
    shapes = []
    for layer in layers:
        if isinstance(layer, Dense):
            shapes.append((layer.n_in, layer.n_out))
            if layer.bias:
                shapes.append((layer.n_out,))
    return shapes
