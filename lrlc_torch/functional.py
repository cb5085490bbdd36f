"""The computations of lrlc_torch as functions (the modules call these; spec/SPEC.md sections 3-11).

Data is NCHW. `params` maps the neutral names (spec section 9) to tensors; every tensor is
in its neutral layout except `basis`, which is stored as one convolution weight per member,
`basis[k, c_out, c_in, u, v]` (torch's `[C_out, C_in, kh, kw]` with a leading K axis).
`dict(layer.named_parameters())` of a `LowRankLocallyConnected2d` is such a mapping.

Combining weights are channel-first, `w[k, i, j]` (fixed) or `w[b, k, i, j]` (input-dependent),
so that they broadcast against NCHW outputs without copies.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from lrlc_numpy import LRLCConfig, check_input_shape, resize_matrix
from lrlc_numpy.reference import L2_FLOOR

from .neutral import check_torch_params

__all__ = [
    "basis_conv2d",
    "check_input",
    "combine",
    "combining_weights",
    "fixed_logits",
    "forward",
    "g_forward",
    "layer_bias",
    "locally_connected",
    "normalize_weights",
    "pad_input",
    "resize_bilinear",
    "spatial_bias_map",
    "to_locally_connected",
]


def check_input(x, config: LRLCConfig, *, name: str = "x") -> None:
    """Raise unless `x` is a floating NCHW tensor with the layer's channels and input grid."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    check_input_shape(x.shape, config, name=name, layout="NCHW")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")


def pad_input(x: torch.Tensor, config: LRLCConfig) -> torch.Tensor:
    """Zero-pad NCHW `x` by `config.padding_pairs` (spec section 3; 'same' may be asymmetric)."""
    (top, bottom), (left, right) = config.padding_pairs
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom))


# ---------------------------------------------------------------------------------------------
# Algorithm 1, in two steps: one convolution for the whole basis, then the weighted sum.


def basis_conv2d(x: torch.Tensor, basis: torch.Tensor, config: LRLCConfig) -> torch.Tensor:
    """Every member's output z[b, k, o, i, j] = (I * F^(k))[b, o, i, j] (Algorithm 1, line 4).

    One convolution with K * C_out output channels, the basis reshaped to a single weight.
    """
    rank, out_channels = basis.shape[:2]
    weight = basis.reshape(rank * out_channels, *basis.shape[2:])
    z = F.conv2d(pad_input(x, config), weight, stride=config.stride, dilation=config.dilation)
    return z.unflatten(1, (rank, out_channels))


def combine(per_member: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """y[b, o, i, j] = sum_k w[(b,) k, i, j] z[b, k, o, i, j] (Algorithm 1, line 6; eq. 2).

    A broadcast multiply and one sum over K; fixed weights (K, H_out, W_out) are shared by
    the batch, input-dependent ones carry it (B, K, H_out, W_out).
    """
    return (per_member * weights.unsqueeze(-3)).sum(dim=-4)


# ---------------------------------------------------------------------------------------------
# Combining weights (eqs. 3, 4 and 6; spec sections 5-6, 8)


def fixed_logits(params: Mapping[str, torch.Tensor], config: LRLCConfig) -> torch.Tensor:
    """Unnormalised weights w~[k, i, j] of a fixed layer (eq. 3 and its variants)."""
    out_h, out_w = config.output_size
    shape = (config.rank, out_h, out_w)
    if config.combining == "rowcol":  # eq. 3: w~ = alpha_i + beta_j
        return params["row_logits"].t()[:, :, None] + params["col_logits"].t()[:, None, :]
    if config.combining == "row":
        return params["row_logits"].t()[:, :, None].expand(shape)
    if config.combining == "col":
        return params["col_logits"].t()[:, None, :].expand(shape)
    return params["logits"].permute(2, 0, 1)


def normalize_weights(logits: torch.Tensor, mode: str) -> torch.Tensor:
    """Normalise over the K axis (dim -3): eq. 4 for 'softmax', spec section 6 for 'l2'."""
    if mode == "softmax":
        return torch.softmax(logits, dim=-3)
    if mode == "l2":
        # Summed in at least float32 so that the 1e-12 floor cannot underflow in 16 bits.
        wide = logits.to(torch.promote_types(logits.dtype, torch.float32))
        norm = wide.square().sum(dim=-3, keepdim=True).clamp_min(L2_FLOOR).sqrt()
        return (wide / norm).to(logits.dtype)
    if mode == "none":
        return logits
    raise ValueError(f"unknown normalisation {mode!r}; expected 'softmax', 'l2' or 'none'")


def resize_bilinear(a: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Aligned-corner bilinear resize of NCHW `a` to `size`, as R_h a R_w^T with the
    reference's interpolation matrices (a size-1 axis broadcasts)."""
    rows = torch.as_tensor(resize_matrix(a.shape[-2], size[0]), dtype=a.dtype, device=a.device)
    cols = torch.as_tensor(resize_matrix(a.shape[-1], size[1]), dtype=a.dtype, device=a.device)
    return torch.einsum("oh,bkhw,pw->bkop", rows, a, cols)


def _pointwise(a: torch.Tensor, params, name: str) -> torch.Tensor:
    """A 1x1 convolution with a neutral (C_in, C_out) kernel, on NCHW data."""
    kernel, bias = params[f"{name}.kernel"], params[f"{name}.bias"]
    return torch.einsum("bchw,cd->bdhw", a, kernel) + bias[:, None, None]


def g_forward(x: torch.Tensor, params, config: LRLCConfig) -> torch.Tensor:
    """Logits w~[b, k, i, j] predicted from the input by the network g (eq. 6; spec section 8)."""
    low = _pointwise(x, params, "g.reduce")
    branches = [low, low.mean(dim=(2, 3), keepdim=True)]
    for r in config.g_dilations:
        kernel = params[f"g.dilated{r}.kernel"]  # neutral (3, 3, K) -> depthwise (K, 1, 3, 3)
        depthwise = kernel.permute(2, 0, 1).unsqueeze(1)
        bias = params[f"g.dilated{r}.bias"]
        branches.append(F.conv2d(low, depthwise, bias, dilation=r, groups=config.rank))
    cat = torch.cat([resize_bilinear(b, config.output_size) for b in branches], dim=1)
    squeeze = torch.relu(_pointwise(cat, params, "g.squeeze"))
    excite = torch.sigmoid(_pointwise(squeeze, params, "g.excite"))
    return _pointwise(excite, params, "g.project")


def combining_weights(params, config: LRLCConfig, x: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised weights w (eq. 4): (K, H_out, W_out), or (B, K, H_out, W_out) predicted
    from `x` for an input-dependent layer (eq. 6)."""
    check_torch_params(params, config)
    if x is not None:  # a fixed layer does not read x, but a wrong one is still an error
        check_input(x, config)
    if config.input_dependent:
        if x is None:
            raise ValueError("combining_weights: an input-dependent layer needs the input x")
        logits = g_forward(x, params, config)
    else:
        logits = fixed_logits(params, config)
    return normalize_weights(logits, config.normalize)


# ---------------------------------------------------------------------------------------------
# Biases (eq. 5; spec section 7)


def spatial_bias_map(params, config: LRLCConfig) -> torch.Tensor | None:
    """The spatial part of eq. 5 on the output grid (H_out, W_out), or None."""
    if not config.spatial_bias:
        return None
    out_size = config.output_size
    if config.combining == "rowcol":
        return params["row_bias"][:, None] + params["col_bias"][None, :]
    if config.combining == "row":
        return params["row_bias"][:, None].expand(out_size)
    if config.combining == "col":
        return params["col_bias"][None, :].expand(out_size)
    return params["spatial_bias"]


def layer_bias(params, config: LRLCConfig) -> torch.Tensor | None:
    """B[o, i, j] of eq. 5, broadcastable to (C_out, H_out, W_out); None when both are off."""
    spatial = spatial_bias_map(params, config)
    channel = params["channel_bias"][:, None, None] if config.channel_bias else None
    if spatial is None:
        return channel
    return spatial if channel is None else spatial + channel


# ---------------------------------------------------------------------------------------------
# The layer (Algorithm 1; eqs. 2-6; spec section 4)


def forward(x: torch.Tensor, params, config: LRLCConfig) -> torch.Tensor:
    """y[b, o, i, j] = sum_k w[i, j, k] (I * F^(k))[b, o, i, j] + B[o, i, j] (Alg. 1, eqs. 2-5).

    `x` is NCHW of size `config.input_size`; returns (B, C_out, H_out, W_out).
    """
    weights = combining_weights(params, config, x)  # checks x first
    y = combine(basis_conv2d(x, params["basis"], config), weights)
    bias = layer_bias(params, config)
    return y if bias is None else y + bias


# ---------------------------------------------------------------------------------------------
# Locally connected form (spec section 11)


def to_locally_connected(params, config: LRLCConfig, x: torch.Tensor | None = None):
    """The equivalent locally connected (weight, bias) in `locally_connected`'s layout.

    weight[(b,) i, j, o, c, u, v] = sum_k w[(b,) k, i, j] basis[k, o, c, u, v]: one
    (C_out, C_in, kh, kw) filter bank per output position, per example when the layer is
    input-dependent (then `x` is required). bias is (C_out, H_out, W_out), zeros when the
    layer has no bias.
    """
    weights = combining_weights(params, config, x)
    weight = torch.einsum("...kij,kocuv->...ijocuv", weights, params["basis"])
    bias = layer_bias(params, config)
    out_shape = (config.out_channels, *config.output_size)
    if bias is None:
        bias = weight.new_zeros(out_shape)
    return weight, bias.expand(out_shape)


def locally_connected(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, config: LRLCConfig
) -> torch.Tensor:
    """A locally connected layer (spec section 11) with `config`'s padding, stride, dilation:
    y[b, o, i, j] = sum_{c,u,v} xpad[b, c, i s_h + u d_h, j s_w + v d_w] weight[i, j, o, c, u, v]
    + bias[o, i, j].

    `weight` is (H_out, W_out, C_out, C_in, kh, kw), or (B, H_out, W_out, ...) with one
    kernel per example. Patches come from one `F.unfold`; the per-position products are a
    single batched matrix multiplication.
    """
    check_input(x, config)
    for name, value in (("weight", weight), ("bias", bias)):
        if value is not None and not value.is_floating_point():
            raise TypeError(f"locally connected {name} must be floating point, got {value.dtype}")
    out_h, out_w = config.output_size
    shared = (out_h, out_w, config.out_channels, config.in_channels, *config.kernel_size)
    if tuple(weight.shape) not in (shared, (x.shape[0], *shared)):
        raise ValueError(
            f"locally connected weight has shape {tuple(weight.shape)}; expected {shared} "
            f"or {(x.shape[0], *shared)} (one per example)"
        )
    bias_shape = (config.out_channels, out_h, out_w)
    if bias is not None and tuple(bias.shape) != bias_shape:
        raise ValueError(
            f"locally connected bias has shape {tuple(bias.shape)}; expected {bias_shape}"
        )
    patches = F.unfold(
        pad_input(x, config), config.kernel_size, dilation=config.dilation, stride=config.stride
    )  # (B, C_in kh kw, H_out W_out), flattened in the order (c, u, v) like the weight
    flat = weight.flatten(-3).flatten(-4, -3)  # (..., H_out W_out, C_out, C_in kh kw)
    if weight.dim() == len(shared):
        y = torch.einsum("bcl,loc->bol", patches, flat)
    else:
        y = torch.einsum("bcl,bloc->bol", patches, flat)
    y = y.unflatten(-1, (out_h, out_w))
    return y if bias is None else y + bias
