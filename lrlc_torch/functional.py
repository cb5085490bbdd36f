"""The computations of lrlc_torch as functions (the modules call these; spec sections 3-11).

Data is NCHW. `params` maps the neutral names (spec section 9) to tensors in their neutral
layouts, except `basis`: one torch convolution weight per member, (K, C_out, C_in, kh, kw).
`dict(layer.named_parameters())` of an `LRLC2d` is such a mapping. Combining weights are
channel-first, w[k, i, j] or w[b, k, i, j], so they broadcast against NCHW outputs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from lrlc_numpy import (
    LRLCConfig,
    check_input_shape,
    check_lc_shapes,
    resize_matrix,
    working_dtype_name,
)
from lrlc_numpy import check_params as check_neutral_params
from lrlc_numpy.reference import L2_FLOOR
from lrlc_numpy.strategy import combining_parameter_names, weights_are_ones

from . import positionwise
from .checkpoint import _BASIS_TO_NEUTRAL, torch_lc_shapes, torch_param_shapes
from .costs import choose_strategy

__all__ = [
    "algorithm1",
    "basis_responses",
    "bias_map",
    "check_input",
    "check_params",
    "combine",
    "combining_weights",
    "depthwise_conv3x3",
    "fixed_logits",
    "forward",
    "g_forward",
    "locally_connected",
    "lowrank_locally_connected",
    "normalize_weights",
    "pad_input",
    "position_banks",
    "resize_bilinear",
    "spatial_bias_map",
    "to_locally_connected",
]


# ---------------------------------------------------------------------------------------------
# Checks (spec section 14)


def check_input(x, config: LRLCConfig, *, name: str = "x") -> None:
    """Raise unless `x` is a floating NCHW tensor with the layer's channels and input grid."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    check_input_shape(x.shape, config, name=name, layout="NCHW")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")


def check_params(params: Mapping[str, torch.Tensor], config: LRLCConfig) -> None:
    """Raise unless `params` holds exactly `config`'s tensors, in lrlc_torch's layouts and
    of floating dtype (the reference's `check_params`, seen through the basis layout)."""
    if isinstance(params, Mapping) and isinstance(params.get("basis"), torch.Tensor):
        basis, want = params["basis"], torch_param_shapes(config)["basis"]
        if tuple(basis.shape) != want:
            raise ValueError(
                f"params['basis'] has shape {tuple(basis.shape)}; expected {want} "
                "(K, C_out, C_in, kh, kw)"
            )
        params = {**params, "basis": basis.permute(_BASIS_TO_NEUTRAL)}
    check_neutral_params(params, config)
    for name, value in params.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            got = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
            raise TypeError(f"params[{name!r}] must be a floating tensor, got {got}")


def pad_input(x: torch.Tensor, config: LRLCConfig) -> torch.Tensor:
    """Zero-pad NCHW `x` by `config.padding_pairs` (spec section 3; 'same' may be asymmetric)."""
    (top, bottom), (left, right) = config.padding_pairs
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom))


# ---------------------------------------------------------------------------------------------
# Algorithm 1: one convolution for the whole basis, then the weighted sum over K.
#
# The convolution runs channels-last: oneDNN's native layout on CPUs, and it puts the
# K * C_out values of a position next to each other, so the combination is one batched
# product that reads z once (docs/performance.md, 'PyTorch', 'conv').


def _conv_geometry(x: torch.Tensor, config: LRLCConfig):
    """(x, padding) for F.conv2d: symmetric padding is left to the convolution (no padded
    copy); asymmetric padding ('same' at some strides) is applied to x first."""
    (top, bottom), (left, right) = config.padding_pairs
    if top == bottom and left == right:
        return x, (top, left)
    return pad_input(x, config), (0, 0)


def _channels_last(a: torch.Tensor) -> torch.Tensor:
    """`a` (N, C, H, W) stored channels-last; by permutes, so that vmap can batch it."""
    return a.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)


def _stacked_kernel(basis: torch.Tensor) -> torch.Tensor:
    """The basis as one conv weight with K * C_out outputs (K outer; spec section 4.3)."""
    return _channels_last(basis.flatten(0, 1))


def _basis_responses(x, basis, stride, padding, dilation) -> torch.Tensor:
    """`basis_responses` on x already padded for the convolution."""
    z = F.conv2d(x, _stacked_kernel(basis), stride=stride, padding=padding, dilation=dilation)
    return z.unflatten(1, basis.shape[:2])


def basis_responses(x: torch.Tensor, basis: torch.Tensor, config: LRLCConfig) -> torch.Tensor:
    """z[b, k, o, i, j] = (I * F^(k))[b, o, i, j] (Algorithm 1, line 4): one convolution
    with K * C_out outputs, channels-last in memory."""
    x, padding = _conv_geometry(x, config)
    return _basis_responses(x, basis, config.stride, padding, config.dilation)


def _positions_first(per_member: torch.Tensor) -> torch.Tensor:
    """z[b, k, o, i, j] as z[b, i, j, k, o]: a view when z is channels-last."""
    return per_member.permute(0, 3, 4, 1, 2)


# Largest rank at which the combination and its weight gradient take a broadcast multiply
# and sum instead of batched products, per device type (absent: never). cuBLAS runs the
# small products as slow gemv kernels (docs/performance.md, 'GPU', first GPU run).
ELEMENTWISE_COMBINE_MAX_RANK = {"cuda": 4}
ELEMENTWISE_WEIGHT_GRAD_MAX_RANK = {"cuda": 2}


def _elementwise(a: torch.Tensor, rank: int, max_rank: dict) -> bool:
    return rank <= max_rank.get(a.device.type, 0)


def combine(per_member: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """y[b, o, i, j] = sum_k w[(b,) k, i, j] z[b, k, o, i, j] (Algorithm 1, line 6; eq. 2).

    Fixed weights (K, H_out, W_out) are shared by the batch, input-dependent ones carry it.
    """
    rank = per_member.shape[1]
    if rank == 1:  # a scale: one multiply beats B H_out W_out 1x1 products
        return per_member[:, 0] * weights
    z = _positions_first(per_member)  # (B, H_out, W_out, K, C_out)
    if _elementwise(per_member, rank, ELEMENTWISE_COMBINE_MAX_RANK):
        y = (z * weights.movedim(-3, -1).unsqueeze(-1)).sum(-2)
    else:
        rows = weights.movedim(-3, -1).unsqueeze(-2)  # (..., H_out, W_out, 1, K)
        y = torch.matmul(rows, z).squeeze(-2)  # (B, H_out, W_out, C_out)
    return y.permute(0, 3, 1, 2)


def _saved_tensors_expire() -> bool:
    """Whether the running backward pass is the last use of this node's saved tensors: not
    when it keeps the graph (retain_graph), records itself (create_graph, torch.func), or
    is traced for torch.compile (AOTAutograd plans buffer reuse itself)."""
    if torch.compiler.is_compiling() or torch.is_grad_enabled():
        return False
    return not torch._C._autograd._get_current_graph_task_keep_graph()


class _Algorithm1(torch.autograd.Function):
    """Algorithm 1 as one autograd node: y = combine(basis_responses(x), w).

    The backward (spec sections 12.2-12.3) needs z for dw, then dz = w dy, as large as z,
    for the convolution's backward: dz is written into z's buffer unless the graph is kept,
    so a step holds one K * C_out tensor, like the K * C_out convolution's own step. A
    recorded backward (create_graph, torch.func) recomputes z and the channels-last x from
    the inputs, so that the recorded graph reaches them.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weights, basis, stride, padding, dilation):
        x = _channels_last(x)  # converted once, kept for the backward
        per_member = _basis_responses(x, basis, stride, padding, dilation)
        return combine(per_member, weights), per_member, x

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weights, basis, *geometry = inputs
        _, per_member, x_channels_last = output
        ctx.mark_non_differentiable(per_member, x_channels_last)
        ctx.set_materialize_grads(False)  # else autograd zero-fills gradients for z and x
        ctx.save_for_backward(x, weights, basis, per_member, x_channels_last)
        ctx.geometry = geometry

    @staticmethod
    def backward(ctx, dy, *_):
        x, weights, basis, per_member, x_channels_last = ctx.saved_tensors
        if dy is None:
            return None, None, None, None, None, None
        if torch.is_grad_enabled():  # this backward is being recorded: start from the inputs
            x_channels_last = _channels_last(x)
            per_member = _basis_responses(x_channels_last, basis, *ctx.geometry)
        need_x, need_weights, need_basis = ctx.needs_input_grad[:3]
        # Compute in the forward's dtype (lower than the inputs' under autocast).
        dtype = per_member.dtype
        z = _positions_first(per_member)  # (B, H_out, W_out, K, C_out)
        dy = dy.to(dtype).permute(0, 2, 3, 1)  # (B, H_out, W_out, C_out)
        dweights = None
        if need_weights:  # dw[b, i, j, k] = sum_o z[b, i, j, k, o] dy[b, i, j, o]
            if _elementwise(z, z.shape[-2], ELEMENTWISE_WEIGHT_GRAD_MAX_RANK):
                dw = (z * dy.unsqueeze(-2)).sum(-1)
            else:
                dw = torch.matmul(z, dy.unsqueeze(-1)).squeeze(-1)
            if weights.dim() == 3:  # fixed weights: summed over the batch
                dw = dw.sum(0)
            dweights = dw.movedim(-1, -3)
        dx = dbasis = None
        if need_x or need_basis:
            rows = weights.to(dtype).movedim(-3, -1).unsqueeze(-1)  # (..., H_out, W_out, K, 1)
            reuse = z.is_contiguous() and _saved_tensors_expire()
            dz = torch.mul(rows, dy.unsqueeze(-2), out=z if reuse else None)
            dz = dz.flatten(-2).permute(0, 3, 1, 2)  # (B, K * C_out, H_out, W_out)
            stride, padding, dilation = ctx.geometry
            dx, dkernel, _ = torch.ops.aten.convolution_backward(
                dz, x_channels_last.to(dtype), _stacked_kernel(basis.to(dtype)), None, stride,
                padding, dilation, False, (0, 0), 1, (need_x, need_basis, False),
            )  # fmt: skip
            dbasis = None if dkernel is None else dkernel.unflatten(0, basis.shape[:2])
        return dx, dweights, dbasis, None, None, None


def algorithm1(x: torch.Tensor, weights: torch.Tensor, basis: torch.Tensor, config: LRLCConfig):
    """sum_k w[(b,) k, i, j] (I * F^(k))[b, o, i, j] without biases: `combine(basis_responses(x,
    basis, config), weights)` as one node with a lean backward."""
    x, padding = _conv_geometry(x, config)
    y, *_ = _Algorithm1.apply(x, weights, basis, config.stride, padding, config.dilation)
    return y


# ---------------------------------------------------------------------------------------------
# The locally connected form as a training-time strategy (see `positionwise`)


def _autocast_inputs(*tensors):
    """The tensors in autocast's dtype when autocast is on for their device: the batched
    products run with explicit outputs, which autocast does not cast by itself."""
    device = tensors[0].device.type
    if not torch.is_autocast_enabled(device):
        return tensors
    dtype = torch.get_autocast_dtype(device)
    return tuple(t.to(dtype) for t in tensors)


class _LowRankLocallyConnected(torch.autograd.Function):
    """Each position's bank sum_k w[k, p] basis[k] (eq. 2) applied to its patches."""

    @staticmethod
    def forward(x, weights, basis, config):
        return positionwise.apply_banks(x, positionwise.BasisKernels(weights, basis), config)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weights, basis, config = inputs
        ctx.save_for_backward(x, weights, basis)
        ctx.config = config

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, weights, basis = ctx.saved_tensors
        need_x, need_weights, need_basis = ctx.needs_input_grad[:3]
        kernels = positionwise.BasisKernels(
            weights, basis, need_weights=need_weights, need_basis=need_basis
        )
        dx = positionwise.apply_banks_vjp(
            x, dy, kernels, ctx.config, need_x=need_x, need_kernels=need_weights or need_basis
        )
        return dx, kernels.weights_grad(weights.shape), kernels.basis_grad(), None


def lowrank_locally_connected(x, weights, basis, config: LRLCConfig) -> torch.Tensor:
    """`algorithm1`'s values for fixed weights (K, H_out, W_out), in the locally connected
    form: the position banks (eq. 2) applied to the patches block by block, at a cost that
    grows with K only in forming the banks (see `positionwise`)."""
    if weights.dim() != 3:
        raise ValueError(
            f"the locally connected strategy takes fixed weights (K, H_out, W_out), got shape "
            f"{tuple(weights.shape)}; input-dependent layers use Algorithm 1 (strategy='conv')"
        )
    x, weights, basis = _autocast_inputs(x, weights, basis)
    return _LowRankLocallyConnected.apply(x, weights, basis, config)


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


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    """lrlc_numpy.working_dtype_name for a torch dtype (float32 for the 16-bit floats)."""
    return getattr(torch, working_dtype_name(str(dtype).removeprefix("torch.")))


def normalize_weights(logits: torch.Tensor, mode: str) -> torch.Tensor:
    """Normalise over the K axis (dim -3): eq. 4 for 'softmax', spec section 6 for 'l2'."""
    if mode == "softmax":
        return torch.softmax(logits, dim=-3)
    if mode == "l2":  # summed in the working dtype, where the 1e-12 floor cannot underflow
        wide = logits.to(_working_dtype(logits.dtype))
        norm = wide.square().sum(dim=-3, keepdim=True).clamp_min(L2_FLOOR).sqrt()
        return (wide / norm).to(logits.dtype)
    if mode == "none":
        return logits
    raise ValueError(f"unknown normalisation {mode!r}; expected 'softmax', 'l2' or 'none'")


def resize_bilinear(a: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Aligned-corner bilinear resize of NCHW `a` to `size`, as R_h a R_w^T with the
    reference's interpolation matrices (a size-1 axis broadcasts)."""
    if tuple(a.shape[-2:]) == tuple(size):  # aligned corners: the matrices are the identity
        return a
    rows = torch.as_tensor(resize_matrix(a.shape[-2], size[0]), dtype=a.dtype, device=a.device)
    cols = torch.as_tensor(resize_matrix(a.shape[-1], size[1]), dtype=a.dtype, device=a.device)
    maps = a.flatten(0, 1)  # (B K, h, w)
    # Two products and no permutes: (B K h, w) x (w, W_out), then R_h per map.
    resized = torch.bmm(rows.expand(maps.shape[0], *rows.shape), maps @ cols.t())
    return resized.unflatten(0, a.shape[:2])


def _pointwise(a: torch.Tensor, params, name: str) -> torch.Tensor:
    """A 1x1 convolution with a neutral (C_in, C_out) kernel on NCHW data: per example a
    (C_out, C_in) x (C_in, H W) product plus the bias, one batched op that permutes nothing."""
    kernel, bias = params[f"{name}.kernel"], params[f"{name}.bias"]
    maps = a.flatten(2)
    per_example = kernel.t().expand(a.shape[0], *kernel.t().shape)  # views: no copies
    bias = bias[:, None].expand(a.shape[0], bias.shape[0], maps.shape[2])
    return torch.baddbmm(bias, per_example, maps).unflatten(-1, a.shape[2:])


def depthwise_conv3x3(a: torch.Tensor, kernel: torch.Tensor, bias, rate: int) -> torch.Tensor:
    """g's dilated depthwise 3x3 convolution, 'valid', of NCHW `a` with a neutral (3, 3, K)
    kernel (spec section 8)."""
    depthwise = kernel.permute(2, 0, 1).unsqueeze(1)  # (K, 1, 3, 3)
    return F.conv2d(a, depthwise, bias, dilation=rate, groups=kernel.shape[-1])


def g_forward(x: torch.Tensor, params, config: LRLCConfig) -> torch.Tensor:
    """Logits w~[b, k, i, j] predicted from the input by the network g (eq. 6; spec section 8)."""
    low = _pointwise(x, params, "g.reduce")
    branches = [low, low.mean(dim=(2, 3), keepdim=True)]
    for r in config.g_dilations:
        kernel, bias = params[f"g.dilated{r}.kernel"], params[f"g.dilated{r}.bias"]
        branches.append(depthwise_conv3x3(low, kernel, bias, r))
    cat = torch.cat([resize_bilinear(b, config.output_size) for b in branches], dim=1)
    squeeze = torch.relu(_pointwise(cat, params, "g.squeeze"))
    excite = torch.sigmoid(_pointwise(squeeze, params, "g.excite"))
    return _pointwise(excite, params, "g.project")


def combining_weights(params, config: LRLCConfig, x: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised weights w (eq. 4): (K, H_out, W_out), or (B, K, H_out, W_out) predicted
    from `x` for an input-dependent layer (eq. 6)."""
    check_params(params, config)
    if x is not None:  # a fixed layer does not read x, but a wrong one is still an error
        check_input(x, config)
    return _weights(params, config, x)


def _weights(params, config: LRLCConfig, x: torch.Tensor | None) -> torch.Tensor:
    """`combining_weights` on arguments already checked."""
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


def bias_map(params, config: LRLCConfig) -> torch.Tensor | None:
    """B[o, i, j] of eq. 5, broadcastable to (C_out, H_out, W_out); None when both are off
    (never materialised: the add broadcasts)."""
    spatial = spatial_bias_map(params, config)
    channel = params["channel_bias"][:, None, None] if config.channel_bias else None
    if spatial is None:
        return channel
    return spatial if channel is None else spatial + channel


# ---------------------------------------------------------------------------------------------
# The layer (Algorithm 1; eqs. 2-6; spec section 4)


class _TieZeroGradients(torch.autograd.Function):
    """A copy of `a` that also takes `unused`, tensors the output does not depend on, and
    gives them exact zero gradients: they stay in the graph, as they are in the general
    path (DistributedDataParallel and optimisers see a gradient, not None)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(a, *unused):
        return a.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.unused = [(t.shape, t.dtype, t.device) for t in inputs[1:]]

    @staticmethod
    def backward(ctx, da):
        zeros = [
            torch.zeros(shape, dtype=dtype, device=device) if needed else None
            for (shape, dtype, device), needed in zip(ctx.unused, ctx.needs_input_grad[1:])
        ]
        return da, *zeros


def _single_convolution(x: torch.Tensor, params, config: LRLCConfig) -> torch.Tensor:
    """sum_k w (I * F^(k)) when w = 1 (`weights_are_ones`): the one member's convolution,
    in x's own layout (NCHW, like a plain `nn.Conv2d`), with g not evaluated."""
    basis = _TieZeroGradients.apply(
        params["basis"], *(params[n] for n in combining_parameter_names(params))
    )
    x, padding = _conv_geometry(x, config)
    return F.conv2d(x, basis[0], stride=config.stride, padding=padding, dilation=config.dilation)


def forward(x: torch.Tensor, params, config: LRLCConfig, *, strategy: str = "auto"):
    """y[b, o, i, j] = sum_k w[i, j, k] (I * F^(k))[b, o, i, j] + B[o, i, j] (eqs. 2-5).

    `x` is NCHW of size `config.input_size`; returns (B, C_out, H_out, W_out). `strategy`:
    'conv' (Algorithm 1), 'lc' (the locally connected form, fixed layers only) or 'auto'
    (`costs.choose_strategy`). Algorithm 1 at rank 1 with softmax is one convolution.
    """
    check_params(params, config)
    check_input(x, config)
    chosen = choose_strategy(config, x.shape[0], strategy, x.device)
    if chosen == "conv" and weights_are_ones(config):
        y = _single_convolution(x, params, config)
    else:
        weights = _weights(params, config, x)
        if chosen == "lc":
            y = lowrank_locally_connected(x, weights, params["basis"], config)
        else:
            y = algorithm1(x, weights, params["basis"], config)
    bias = bias_map(params, config)
    # The combination leaves y channels-last; with the bias first, the sum takes the bias's
    # (NCHW) layout: one pass instead of a copy and an add.
    return y.contiguous() if bias is None else bias + y


# ---------------------------------------------------------------------------------------------
# Locally connected form (spec section 11)


def position_banks(weights: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Per-position filter banks (eq. 2): bank[(b,) i, j] = sum_k w[(b,) k, i, j] basis[k],
    (..., H_out, W_out, C_out, C_in, kh, kw), `locally_connected`'s weight layout."""
    return torch.einsum("...kij,kocuv->...ijocuv", weights, basis)


def to_locally_connected(params, config: LRLCConfig, x: torch.Tensor | None = None):
    """The equivalent locally connected (weight, bias) in `locally_connected`'s layout: the
    position banks, per example when the layer is input-dependent (then `x` is required),
    and the bias (C_out, H_out, W_out), zeros when the layer has none."""
    weights = combining_weights(params, config, x)
    weight = position_banks(weights, params["basis"])
    bias = bias_map(params, config)
    out_shape = (config.out_channels, *config.output_size)
    if bias is None:
        bias = weight.new_zeros(out_shape)
    return weight, bias.expand(out_shape)


def locally_connected(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, config: LRLCConfig
) -> torch.Tensor:
    """A locally connected layer (spec section 11) with `config`'s padding, stride, dilation:
    y[b, o, i, j] = sum_{c,u,v} xpad[b, c, i s_h + u d_h, j s_w + v d_w] weight[i, j, o, c, u, v]
    + bias[o, i, j]; `weight` may carry a leading batch axis (one kernel per example).
    """
    check_input(x, config)
    for name, value in (("weight", weight), ("bias", bias)):
        if value is not None and not value.is_floating_point():
            raise TypeError(f"locally connected {name} must be floating point, got {value.dtype}")
    per_example = check_lc_shapes(
        weight.shape,
        None if bias is None else bias.shape,
        config,
        batch=x.shape[0],
        expected=torch_lc_shapes(config),
    )
    if not per_example:
        x, weight = _autocast_inputs(x, weight)
        y = _LocallyConnected.apply(x, weight, config)
    else:  # one bank per example and position: a batched vector product per (b, p)
        out_h, out_w = config.output_size
        padded = positionwise.batch_last(x, config)
        patches = positionwise.extract_patches(padded, config, 0, out_h)  # (P, C_in kh kw, B)
        y = torch.einsum("pcb,bpoc->bop", patches, weight.flatten(-3).flatten(1, 2))
        y = y.unflatten(-1, (out_h, out_w))
    # NCHW out; with the bias first, the sum takes the bias's layout (see `forward`).
    return y.contiguous() if bias is None else bias + y


class _LocallyConnected(torch.autograd.Function):
    """A locally connected layer with one weight for the batch, by `positionwise`."""

    @staticmethod
    def forward(x, weight, config):
        return positionwise.apply_banks(x, positionwise.WeightKernels(weight), config)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, config = inputs
        ctx.save_for_backward(x, weight)
        ctx.config = config

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        need_x, need_weight = ctx.needs_input_grad[:2]
        kernels = positionwise.WeightKernels(weight)
        dx = positionwise.apply_banks_vjp(
            x, dy, kernels, ctx.config, need_x=need_x, need_kernels=need_weight
        )
        return dx, kernels.weight_grad() if need_weight else None, None
