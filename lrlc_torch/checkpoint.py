"""Neutral parameters and checkpoints for lrlc_torch (spec sections 9, 11, 13, 16.4, 17.5).

Only layouts change, never values, so round trips are exact. Every LRLC parameter keeps
its neutral layout except the basis, kept as torch convolution weights (so that
`channels_last` applies to it as to `nn.Conv2d.weight`): neutral `basis` (K, kh, kw, C_in,
C_out) <-> torch (K C_out, C_in, kh, kw), the members stacked along the output channels
(spec section 4.3's stacked kernel, member k at rows k C_out ... (k + 1) C_out - 1); a mixed
basis's `basis.k` (kh, kw, C_in, C_out) <-> (C_out, C_in, kh, kw). A locally connected
kernel is neutral (..., H_out, W_out, kh, kw, C_in, C_out) and torch (..., H_out, W_out,
C_out, C_in, kh, kw); its bias neutral (H_out, W_out, C_out) and torch (C_out, H_out, W_out).
In 1-D and 3-D the grid and window have one or three axes in the same places (spec section
17.1): `basis` (K, *kernel, C_in, C_out) <-> (K C_out, C_in, *kernel), as `nn.Conv1d` and
`nn.Conv3d` hold their weights.

Checkpoint files are read and written with safetensors' torch functions, so every tensor
keeps its stored dtype, bfloat16 included (NumPy has none); writes are atomic.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping

import numpy as np
import torch

import lrlc_numpy
from lrlc_numpy import LRLCConfig, lc_shapes, param_shapes
from lrlc_numpy.checkpoint import CONFIG_KEY, config_from_metadata

__all__ = [
    "FLOAT_DTYPES",
    "check_torch_params",
    "from_neutral",
    "lc_from_neutral",
    "lc_to_neutral",
    "load_checkpoint",
    "neutral_tensors",
    "save_checkpoint",
    "to_neutral",
    "torch_lc_shapes",
    "torch_param_shapes",
]

# The dtypes a layer computes in; float8 and the like are refused with the tensor's name.
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_EXPECTED_DTYPES = "float16, bfloat16, float32 or float64"


def _is_basis(name: str) -> bool:
    return name == "basis" or name.startswith("basis.")


def _member_to_torch(value, lead: int):
    """(lead axes, *kernel, C_in, C_out) -> (lead axes, C_out, C_in, *kernel), a view."""
    n = value.dim() - lead - 2
    return value.permute(*range(lead), lead + n + 1, lead + n, *range(lead, lead + n))


def _member_to_neutral(value, lead: int):
    """(lead axes, C_out, C_in, *kernel) -> (lead axes, *kernel, C_in, C_out), a view."""
    n = value.dim() - lead - 2
    return value.permute(*range(lead), *range(lead + 2, lead + 2 + n), lead + 1, lead)


def _basis_to_torch(name: str, value):
    """A neutral basis tensor in torch layout (a view): `basis` stacked, `basis.k` as is."""
    if name == "basis":  # (K, *kernel, C_in, C_out) -> (K C_out, C_in, *kernel)
        return _member_to_torch(value, 1).flatten(0, 1)
    return _member_to_torch(value, 0)  # (*kernel, C_in, C_out) -> (C_out, C_in, *kernel)


def _basis_to_neutral(name: str, value, config: LRLCConfig):
    """A torch-layout basis tensor in neutral layout (a view)."""
    if name == "basis":  # (K C_out, C_in, *kernel) -> (K, *kernel, C_in, C_out)
        return _member_to_neutral(value.unflatten(0, (config.rank, config.out_channels)), 1)
    return _member_to_neutral(value, 0)


def _torch_shapes(config: LRLCConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    shapes = param_shapes(config)
    for name in config.basis_names:
        if name == "basis":  # (K, *kernel, C_in, C_out) -> (K C_out, C_in, *kernel)
            rank, *kernel, in_channels, out_channels = shapes[name]
            shapes[name] = (rank * out_channels, in_channels, *kernel)
        else:  # (*kernel, C_in, C_out) -> (C_out, C_in, *kernel)
            *kernel, in_channels, out_channels = shapes[name]
            shapes[name] = (out_channels, in_channels, *kernel)
    return tuple(shapes.items())


# The window axes as shapes in messages show them, per spatial rank.
_WINDOW_AXES = {1: "k", 2: "kh, kw", 3: "kd, kh, kw"}


def torch_param_shapes(config: LRLCConfig) -> dict[str, tuple[int, ...]]:
    """`lrlc_numpy.param_shapes(config)` with the basis tensors in torch layout."""
    return dict(_torch_shapes(config))


def torch_lc_shapes(config: LRLCConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """`lrlc_numpy.lc_shapes(config)` in torch layout: the locally connected weight
    (H_out, W_out, C_out, C_in, kh, kw) and bias (C_out, H_out, W_out), (*out, C_out, C_in,
    *window) and (C_out, *out) in n-D; the window is that of
    `config.locally_connected_config()` (a mixed basis's union window)."""
    kernel, (*out, out_channels) = lc_shapes(config)
    *window, in_channels, _ = kernel[len(out) :]
    return (*out, out_channels, in_channels, *window), (out_channels, *out)


def check_torch_params(params: Mapping, config: LRLCConfig, *, what: str = "params") -> None:
    """Raise unless `params` holds exactly `config`'s tensors, in lrlc_torch's layouts, each a
    floating tensor (spec section 14: names, shapes, then dtypes, each error naming the
    tensor)."""
    _check_config(config, "check_params")
    if not isinstance(params, Mapping):
        raise TypeError(f"{what} must be a mapping of name -> tensor, got {type(params).__name__}")
    shapes = _torch_shapes(config)
    if params.keys() != {name for name, _ in shapes}:  # the reference's message, from stand-ins
        neutral = param_shapes(config)
        stand_ins = {name: np.empty((0,) * len(neutral.get(name, ()))) for name in params}
        lrlc_numpy.check_params(stand_ins, config, what=what)
    for name, shape in shapes:
        value = params[name]
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{what}[{name!r}] must be a torch.Tensor, got {type(value).__name__}")
        if tuple(value.shape) != shape:
            window = _WINDOW_AXES[config.spatial_dims]
            layout = f" (K C_out, C_in, {window})" if name == "basis" else ""
            if name.startswith("basis."):
                layout = f" (C_out, C_in, {window})"
            raise ValueError(
                f"{what}[{name!r}] has shape {tuple(value.shape)}; expected {shape}{layout}"
            )
        if value.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"{what}[{name!r}] must be a floating tensor ({_EXPECTED_DTYPES}), "
                f"got {value.dtype}"
            )


def _check_config(config, where: str) -> None:
    if not isinstance(config, LRLCConfig):
        raise TypeError(
            f"{where}: config must be an lrlc_numpy.LRLCConfig, got {type(config).__name__} "
            "(build one with LRLCConfig(...) or LRLCConfig.from_dict(mapping))"
        )


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A detached CPU copy as NumPy; bfloat16 (which NumPy lacks) widens exactly to float32."""
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.numpy().copy()


def _tensor(name, value, dtype, device) -> torch.Tensor:
    """`value` (a NumPy array or a tensor) as a tensor. Anything else (a list, a number) and
    non-floating dtypes are refused with `name`, never silently converted or cast."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
    elif isinstance(value, np.ndarray) and value.dtype.name == "bfloat16":  # ml_dtypes'
        tensor = torch.from_numpy(np.ascontiguousarray(value).view(np.uint16)).view(torch.bfloat16)
    elif isinstance(value, np.ndarray):
        if not np.issubdtype(value.dtype, np.floating):
            raise TypeError(
                f"{name} must have a floating dtype ({_EXPECTED_DTYPES}), got {value.dtype}"
            )
        tensor = torch.from_numpy(np.ascontiguousarray(value))
    else:
        raise TypeError(
            f"{name} must be a NumPy array or a torch.Tensor, got {type(value).__name__}"
        )
    if tensor.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must have a floating dtype ({_EXPECTED_DTYPES}), got {tensor.dtype}"
        )
    return tensor.to(device=device, dtype=dtype)


def to_neutral(tensors: Mapping[str, torch.Tensor], config: LRLCConfig) -> dict[str, np.ndarray]:
    """LRLC tensors by neutral name (parameters, or their gradients) as neutral NumPy arrays;
    `config` gives the rank that splits the stacked basis."""
    _check_config(config, "to_neutral")
    return {
        name: _numpy(_basis_to_neutral(name, value, config) if _is_basis(name) else value)
        for name, value in tensors.items()
    }


def neutral_tensors(params: Mapping, *, what="params", dtype=None, device=None):
    """Neutral arrays (NumPy or tensors) as tensors, still in neutral layout, after checking
    that each is a floating array or tensor (the error names it; nothing is converted
    silently). `dtype=None` keeps each array's own dtype."""
    if not isinstance(params, Mapping):
        raise TypeError(f"{what} must be a mapping of name -> array, got {type(params).__name__}")
    return {
        name: _tensor(f"{what}[{name!r}]", value, dtype, device) for name, value in params.items()
    }


def from_neutral(params: Mapping, *, dtype=None, device=None) -> dict[str, torch.Tensor]:
    """Neutral arrays (NumPy or tensors) as lrlc_torch tensors by neutral name.

    `dtype=None` keeps each array's own floating dtype.
    """
    return {
        name: _basis_to_torch(name, tensor).contiguous() if _is_basis(name) else tensor
        for name, tensor in neutral_tensors(params, dtype=dtype, device=device).items()
    }


def lc_to_neutral(weight: torch.Tensor, bias: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """A locally connected (weight, bias) in torch layout as the neutral (kernel, bias); the
    bias (C_out, *out) tells the spatial rank."""
    n = bias.dim() - 1
    kernel = _member_to_neutral(weight, weight.dim() - n - 2)
    return _numpy(kernel), _numpy(bias.movedim(0, -1))


def lc_from_neutral(kernel, bias, *, dtype=None, device=None):
    """Neutral locally connected (kernel, bias) as torch-layout (weight, bias) tensors; the
    bias (*out, C_out) tells the spatial rank n (1, 2 or 3)."""
    kernel = _tensor("kernel", kernel, dtype, device)
    bias = _tensor("bias", bias, dtype, device)
    n = bias.dim() - 1
    if n not in (1, 2, 3) or kernel.dim() < 2 * n + 2:
        raise ValueError(
            f"locally connected kernel has shape {tuple(kernel.shape)} and bias "
            f"{tuple(bias.shape)}; expected (..., *out, *window, C_in, C_out) and "
            "(*out, C_out) with 1, 2 or 3 grid axes, (..., H_out, W_out, kh, kw, C_in, C_out) "
            "and (H_out, W_out, C_out) in 2-D"
        )
    weight = _member_to_torch(kernel, kernel.dim() - n - 2).contiguous()
    return weight, bias.movedim(-1, 0).contiguous()


# ---------------------------------------------------------------------------------------------
# Files (spec section 13)


def _writable_path(path) -> str:
    """`path` as a string after checking that a file can be created there."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"save_checkpoint: path must be a str or os.PathLike, got {path!r}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"save_checkpoint: {path} is a directory; expected a file path")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(
            f"save_checkpoint: cannot write {path}: directory {parent} does not exist"
        )
    return path


def save_checkpoint(path, params: Mapping[str, torch.Tensor], config: LRLCConfig) -> None:
    """Write lrlc_torch parameters (neutral names, torch layouts) as a neutral checkpoint,
    each tensor in its own dtype, atomically (a temporary file in the same directory, then
    renamed over `path`)."""
    from safetensors.torch import save_file

    _check_config(config, "save_checkpoint")
    path = _writable_path(path)
    check_torch_params(params, config)
    tensors = {
        name: (_basis_to_neutral(name, value, config) if _is_basis(name) else value)
        .detach()
        .cpu()
        .contiguous()
        for name, value in params.items()
    }
    handle, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.",
        suffix=".tmp",
        dir=os.path.dirname(os.path.abspath(path)),
    )
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata={CONFIG_KEY: config.to_json()})
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _read(path):
    """(tensors, metadata) of a safetensors file, errors naming `path` (spec section 14)."""
    from safetensors import SafetensorError, safe_open

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"load_checkpoint: path must be a str or os.PathLike, got {path!r}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"checkpoint {path} is a directory; expected a .safetensors file")
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    return path, tensors, metadata


def load_checkpoint(path, *, dtype=None, device=None):
    """(params, config) read from a neutral checkpoint, params as lrlc_torch tensors by
    neutral name; `dtype=None` keeps each tensor's stored dtype (bfloat16 included)."""
    path, tensors, metadata = _read(path)
    config = config_from_metadata(metadata, path)
    lrlc_numpy.check_params(tensors, config, what=f"checkpoint {path}")
    for name, value in tensors.items():
        if value.dtype not in FLOAT_DTYPES:
            raise ValueError(
                f"checkpoint {path}: tensor {name!r} has dtype {value.dtype}; expected "
                f"{_EXPECTED_DTYPES}"
            )
    return from_neutral(tensors, dtype=dtype, device=device), config
