"""The neutral checkpoint: a .safetensors file of neutral tensors plus the config as JSON
(spec section 13). Loading parses tensors and JSON only; nothing is ever unpickled.

Every tensor keeps the dtype it was stored in. NumPy has no bfloat16, so `load_params`
refuses a bfloat16 tensor, and `read_checkpoint`, which the framework backends build on,
returns its values widened exactly to float32 with the stored dtype beside them.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import struct
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from .config import LRLCConfig, check_config, check_param_shapes, check_params

CONFIG_KEY = "lrlc_config"
# The dtypes a checkpoint tensor may have: safetensors code -> NumPy-style name.
STORED_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}
_CODES = {name: code for code, name in STORED_DTYPES.items()}
# Names for the other safetensors codes, for error messages only.
_OTHER_DTYPES = {
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "F4": "float4_e2m1fn",
    "F6_E2M3": "float6_e2m3fn",
    "F6_E3M2": "float6_e3m2fn",
    "BOOL": "bool",
    **{f"I{n}": f"int{n}" for n in (8, 16, 32, 64)},
    **{f"U{n}": f"uint{n}" for n in (8, 16, 32, 64)},
    "C64": "complex64",
}
_BACKENDS_WITH_BFLOAT16 = "lrlc_torch, lrlc_jax and lrlc_tf"


class Checkpoint(NamedTuple):
    """A checkpoint as read: `params` by neutral name, `config`, and `stored_dtypes`, the
    dtype name each tensor has in the file. A 'bfloat16' tensor's array is float32 holding
    exactly the stored values (NumPy has no bfloat16); every other array has its stored
    dtype."""

    params: dict[str, np.ndarray]
    config: LRLCConfig
    stored_dtypes: dict[str, str]


def _checked_path(path, where: str) -> str:
    if isinstance(path, (bytes, bytearray)):
        path = os.fsdecode(bytes(path))
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{where}: path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path:
        raise ValueError(f"{where}: path is empty; expected a .safetensors file path")
    return path


def _os_error(number: int, message: str, path: str) -> OSError:
    """The OSError subclass for `number` (FileNotFoundError, IsADirectoryError, ...),
    whose message and `filename` name the requested path."""
    return OSError(number, message, path)


# ---------------------------------------------------------------------------------------------
# Writing


def _as_array(name: str, value) -> np.ndarray:
    """`value` as a NumPy array (array-likes converted, as the reference converts them)."""
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"save_params: params[{name!r}] is not an array ({err})") from None


def _stored_array(name: str, value, stored: str | None) -> tuple[str, np.ndarray]:
    """(dtype name, contiguous little-endian array of the stored bits) of one tensor, stored
    as `stored` (None: its own dtype). A change of dtype must be exact: nothing is rounded."""
    if getattr(getattr(value, "dtype", None), "name", None) == "bfloat16":  # ml_dtypes arrays
        if stored not in (None, "bfloat16"):
            raise ValueError(
                f"save_params: params[{name!r}] is bfloat16; it can be stored as bfloat16 only"
            )
        return "bfloat16", np.ascontiguousarray(value).view(np.uint16).astype("<u2")
    array = value
    own = array.dtype.name
    if own not in _CODES:
        raise TypeError(
            f"save_params: params[{name!r}] has dtype {array.dtype}; a checkpoint stores "
            f"{', '.join(_CODES)}"
        )
    stored = own if stored is None else stored
    inexact = (
        f"save_params: params[{name!r}] ({own}) holds values that {stored} cannot represent "
        "exactly; round them first (a checkpoint never rounds silently)"
    )
    if stored == "bfloat16":  # bfloat16 is float32's upper 16 bits
        as32 = array.astype(np.float32)
        bits = as32.view(np.uint32)
        if not np.array_equal(as32, array, equal_nan=True) or (bits & 0xFFFF).any():
            raise ValueError(inexact)
        return stored, (bits >> 16).astype("<u2")
    with np.errstate(over="ignore"):
        converted = array.astype(stored)
    if not np.array_equal(converted.astype(own), array, equal_nan=True):
        raise ValueError(inexact)
    return stored, np.ascontiguousarray(converted, dtype=converted.dtype.newbyteorder("<"))


def _writable_target(path: str, where: str) -> str:
    """The file `path` names (through a symbolic link), after checking that it can be
    written: not a directory, in a directory that exists. Errors name `path`."""
    target = os.path.realpath(path) if os.path.islink(path) else path
    if os.path.isdir(target):
        raise _os_error(
            errno.EISDIR, f"{where}: cannot write the checkpoint onto a directory", path
        )
    directory = os.path.dirname(target) or "."
    if not os.path.isdir(directory):
        number = errno.ENOTDIR if os.path.exists(directory) else errno.ENOENT
        raise _os_error(
            number,
            f"{where}: cannot write the checkpoint, its directory {directory!r} does not exist",
            path,
        )
    return target


def _write_atomically(path: str, target: str, data: bytes, where: str) -> None:
    """Write `data` to `target` through a temporary file in the same directory and
    os.replace, so the file is either the old one or the whole new one. Errors name the
    requested `path`, never the temporary file, which is removed."""
    directory, name = os.path.split(target)
    temporary = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
    created = False
    try:
        # 0o666 under the umask: the permissions a plain open() would give the file.
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        created = True
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException as err:
        if created and os.path.exists(temporary):
            os.unlink(temporary)
        if isinstance(err, OSError):
            message = f"{where}: cannot write the checkpoint ({err.strerror or err})"
            raise _os_error(err.errno or errno.EIO, message, path) from None
        raise


def save_params(path, params: Mapping, config: LRLCConfig, *, stored_dtypes=None) -> None:
    """Write `params` (neutral names, canonical layouts) and `config` to `path`, atomically.

    Each tensor is stored in its own dtype (float16, bfloat16, float32 or float64), or in
    `stored_dtypes[name]` where given: e.g. 'bfloat16' for a bfloat16 tensor that NumPy
    holds as float32. The values must then be exactly representable; nothing is rounded.
    """
    path = _checked_path(path, "save_params")
    check_config(config, "save_params")
    if not isinstance(params, Mapping):
        raise TypeError(
            f"save_params: params must be a mapping of name -> array, got {type(params).__name__}"
        )
    stored_dtypes = {} if stored_dtypes is None else stored_dtypes
    if not isinstance(stored_dtypes, Mapping):
        raise TypeError(
            "save_params: stored_dtypes must be a mapping of name -> dtype name, got "
            f"{type(stored_dtypes).__name__}"
        )
    unknown = sorted((name for name in stored_dtypes if name not in params), key=repr)
    if unknown:
        raise ValueError(f"save_params: stored_dtypes names {unknown}, which are not in params")
    for name, stored in stored_dtypes.items():
        if stored not in _CODES:
            raise ValueError(
                f"save_params: stored_dtypes[{name!r}] is {stored!r}; expected one of "
                f"{sorted(_CODES)}"
            )
    params = {name: _as_array(name, value) for name, value in params.items()}
    check_params(params, config, what="save_params: params")
    target = _writable_target(path, "save_params")
    from safetensors import TensorSpec, serialize

    arrays = {
        name: _stored_array(name, value, stored_dtypes.get(name)) for name, value in params.items()
    }
    specs = {
        name: TensorSpec(
            dtype=dtype,
            shape=list(params[name].shape),
            data_ptr=array.ctypes.data,
            data_len=array.nbytes,
        )
        for name, (dtype, array) in arrays.items()
    }
    data = bytes(serialize(specs, metadata={CONFIG_KEY: config.to_json()}))
    _write_atomically(path, target, data, "save_params")


# ---------------------------------------------------------------------------------------------
# Reading


def _dtype_name(code: str) -> str:
    return STORED_DTYPES.get(code) or _OTHER_DTYPES.get(code) or code


def config_from_metadata(metadata: Mapping, path: str) -> LRLCConfig:
    """The LRLCConfig stored in a checkpoint's metadata (spec section 13); errors name `path`."""
    if CONFIG_KEY not in metadata:
        raise ValueError(
            f"{path}: metadata has no {CONFIG_KEY!r} entry (keys {sorted(metadata)}); "
            "expected the layer config as JSON"
        )
    try:
        return LRLCConfig.from_json(metadata[CONFIG_KEY])
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint {path}: invalid {CONFIG_KEY!r} metadata: {err}") from None


def read_checkpoint(path) -> Checkpoint:
    """Read and check a neutral checkpoint (spec section 13): (params, config, stored_dtypes).

    Checks, in order: an existing regular file; a valid safetensors header; its
    `lrlc_config` metadata; a valid config; exactly the tensor names and shapes of that
    config; every tensor a float of 16, 32 or 64 bits. Only then are the tensors read, so a
    large file of another kind is refused from its header. A bfloat16 tensor comes back as
    float32 holding the same values.
    """
    from safetensors import SafetensorError, safe_open

    path = _checked_path(path, "load_params")
    if os.path.isdir(path):
        raise _os_error(
            errno.EISDIR,
            "load_params: the checkpoint is a directory, not a .safetensors file",
            path,
        )
    if not os.path.exists(path):
        raise _os_error(errno.ENOENT, "load_params: no such checkpoint file", path)
    if not os.path.isfile(path):  # a FIFO or a device would block or stream forever
        raise ValueError(f"checkpoint {path!r} is not a regular file; expected a .safetensors file")
    try:  # safetensors validates the header and the offsets; no tensor is read here
        with safe_open(path, framework="numpy") as handle:
            metadata = handle.metadata() or {}
            layout = {}
            for name in handle.keys():
                tensor = handle.get_slice(name)
                layout[name] = (tensor.get_dtype(), tuple(tensor.get_shape()))
    except SafetensorError as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    except OSError as err:
        message = f"load_params: cannot read the checkpoint ({err.strerror or err})"
        raise _os_error(err.errno or errno.EIO, message, path) from None
    config = config_from_metadata(metadata, path)
    shapes = {name: shape for name, (_, shape) in layout.items()}
    check_param_shapes(shapes, config, what=f"checkpoint {path}")
    for name, (code, _) in layout.items():
        if code not in STORED_DTYPES:
            raise ValueError(
                f"checkpoint {path}: tensor {name!r} has dtype {_dtype_name(code)}; "
                f"expected a float of 16, 32 or 64 bits ({', '.join(_CODES)})"
            )
    params = {name: _array(code, shape, data) for name, (code, shape, data) in _read(path).items()}
    stored = {name: STORED_DTYPES[code] for name, (code, _) in layout.items()}
    return Checkpoint(params, config, stored)


def _read(path: str) -> dict[str, tuple[str, tuple, bytes]]:
    """name -> (dtype code, shape, raw bytes) of every tensor, read through the header that
    safetensors has validated (NumPy cannot give a bfloat16 tensor, so the bytes are read
    here, for every dtype alike)."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
        out = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            begin, end = entry["data_offsets"]
            handle.seek(8 + length + begin)
            out[name] = (entry["dtype"], tuple(entry["shape"]), handle.read(end - begin))
    return out


def _array(code: str, shape: tuple, data: bytes) -> np.ndarray:
    """One tensor's little-endian bytes as a native NumPy array of its stored dtype, or, for
    bfloat16, float32 with the same values (its bits are float32's upper half)."""
    if code == "BF16":
        bits = np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    name = STORED_DTYPES[code]
    little = np.dtype(name).newbyteorder("<")
    return np.frombuffer(data, dtype=little).astype(name).reshape(shape)


def load_params(path) -> tuple[dict[str, np.ndarray], LRLCConfig]:
    """Read a neutral checkpoint: (params, config), every tensor in its stored dtype.

    Errors (spec section 14): FileNotFoundError or IsADirectoryError naming the path,
    ValueError for a file that is not a valid checkpoint. NumPy has no bfloat16, so a
    bfloat16 tensor is a ValueError here; `read_checkpoint` returns its exact values as
    float32, and lrlc_torch, lrlc_jax and lrlc_tf load it as bfloat16.
    """
    checkpoint = read_checkpoint(path)
    for name, stored in checkpoint.stored_dtypes.items():
        if stored == "bfloat16":
            raise ValueError(
                f"checkpoint {os.fspath(path)}: tensor {name!r} is stored as bfloat16, which "
                f"NumPy has no dtype for; {_BACKENDS_WITH_BFLOAT16} load it as bfloat16, and "
                "lrlc_numpy.read_checkpoint(path) returns its exact values as float32 with "
                "the stored dtype in .stored_dtypes"
            )
    return checkpoint.params, checkpoint.config


# The layer packages' name for the same two functions (one verb across the four packages).
save_checkpoint = save_params
load_checkpoint = load_params
