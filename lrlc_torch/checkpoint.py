"""Neutral parameters and checkpoints for lrlc_torch (spec sections 9, 11 and 13).

Only layouts change, never values, so round trips are exact. Every LRLC parameter keeps
its neutral layout except the basis, one torch convolution weight per member: neutral
(K, kh, kw, C_in, C_out) <-> torch (K, C_out, C_in, kh, kw). A locally connected kernel is
neutral (..., H_out, W_out, kh, kw, C_in, C_out) and torch (..., H_out, W_out, C_out, C_in,
kh, kw); its bias neutral (H_out, W_out, C_out) and torch (C_out, H_out, W_out).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

import lrlc_numpy
from lrlc_numpy import LRLCConfig, lc_shapes, param_shapes

__all__ = [
    "from_neutral",
    "lc_from_neutral",
    "lc_to_neutral",
    "load_checkpoint",
    "save_checkpoint",
    "to_neutral",
    "torch_lc_shapes",
    "torch_param_shapes",
]

_BASIS_TO_TORCH = (0, 4, 3, 1, 2)
_BASIS_TO_NEUTRAL = (0, 3, 4, 2, 1)
# A locally connected kernel's last four axes (the window and channels).
_LC_TO_TORCH = (3, 2, 0, 1)
_LC_TO_NEUTRAL = (2, 3, 1, 0)


def torch_param_shapes(config: LRLCConfig) -> dict[str, tuple[int, ...]]:
    """`lrlc_numpy.param_shapes(config)` with the basis in torch layout."""
    shapes = param_shapes(config)
    shapes["basis"] = tuple(shapes["basis"][axis] for axis in _BASIS_TO_TORCH)
    return shapes


def torch_lc_shapes(config: LRLCConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """`lrlc_numpy.lc_shapes(config)` in torch layout: the locally connected weight
    (H_out, W_out, C_out, C_in, kh, kw) and bias (C_out, H_out, W_out)."""
    kernel, (out_h, out_w, out_channels) = lc_shapes(config)
    return (out_h, out_w, *(kernel[2 + a] for a in _LC_TO_TORCH)), (out_channels, out_h, out_w)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A detached CPU copy as NumPy; bfloat16 (which NumPy lacks) widens exactly to float32."""
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.numpy().copy()


def _tensor(name, value, dtype, device) -> torch.Tensor:
    """`value` (NumPy or a tensor) as a tensor; integers are refused, never silently cast."""
    tensor = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {tensor.dtype}")
    return tensor.to(device=device, dtype=dtype)


def to_neutral(tensors: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """LRLC tensors by neutral name (parameters, or their gradients) as neutral NumPy arrays."""
    return {
        name: _numpy(value.permute(_BASIS_TO_NEUTRAL) if name == "basis" else value)
        for name, value in tensors.items()
    }


def from_neutral(params: Mapping, *, dtype=None, device=None) -> dict[str, torch.Tensor]:
    """Neutral arrays (NumPy or tensors) as lrlc_torch tensors by neutral name.

    `dtype=None` keeps each array's own floating dtype.
    """
    out = {}
    for name, value in params.items():
        tensor = _tensor(f"params[{name!r}]", value, dtype, device)
        out[name] = tensor.permute(_BASIS_TO_TORCH).contiguous() if name == "basis" else tensor
    return out


def lc_to_neutral(weight: torch.Tensor, bias: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """A locally connected (weight, bias) in torch layout as the neutral (kernel, bias)."""
    lead = tuple(range(weight.dim() - 4))
    kernel = weight.permute(*lead, *(len(lead) + a for a in _LC_TO_NEUTRAL))
    return _numpy(kernel), _numpy(bias.permute(1, 2, 0))


def lc_from_neutral(kernel, bias, *, dtype=None, device=None):
    """Neutral locally connected (kernel, bias) as torch-layout (weight, bias) tensors."""
    kernel = _tensor("kernel", kernel, dtype, device)
    lead = tuple(range(kernel.dim() - 4))
    weight = kernel.permute(*lead, *(len(lead) + a for a in _LC_TO_TORCH)).contiguous()
    return weight, _tensor("bias", bias, dtype, device).permute(2, 0, 1).contiguous()


def save_checkpoint(path, params: Mapping[str, torch.Tensor], config: LRLCConfig) -> None:
    """Write lrlc_torch parameters (neutral names, torch layouts) as a neutral checkpoint."""
    lrlc_numpy.save_params(path, to_neutral(params), config)


def load_checkpoint(path, *, dtype=None, device=None):
    """(params, config) read from a neutral checkpoint, params as lrlc_torch tensors by
    neutral name; `dtype=None` keeps the file's dtype."""
    params, config = lrlc_numpy.load_params(path)
    return from_neutral(params, dtype=dtype, device=device), config
