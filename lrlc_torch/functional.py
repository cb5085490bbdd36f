"""The computations of lrlc_torch as functions (the modules call these; spec sections 3-11,
16 and 17).

Every function serves n = 1, 2 and 3 spatial axes (`config.spatial_dims`; spec section 17),
with the layouts of `nn.Conv1d`, `nn.Conv2d` and `nn.Conv3d`: data is NCL, NCHW or NCDHW
(written (B, C, *grid) below), and a (C_in, *grid) input is one unbatched example. `params`
maps the neutral names (spec section 9) to tensors in their neutral layouts, except the
basis, kept as convolution weights: `basis` is (K C_out, C_in, *kernel), the members stacked
along the output channels (spec section 4.3's stacked kernel; member k is rows k C_out to
(k + 1) C_out - 1), and a mixed basis's `basis.k` is (C_out, C_in, *kernel_k).
`dict(layer.named_parameters())` of an `LRLC1d`, `LRLC2d` or `LRLC3d` is such a mapping.
Combining weights are channel-first, w[k, *i] or w[b, k, *i], so they broadcast against
channels-first outputs; their K axis is dim -(n + 1).
"""

from __future__ import annotations

import math
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
from lrlc_numpy.reference import L2_FLOOR
from lrlc_numpy.strategy import combining_parameter_names, weights_are_ones

from . import positionwise
from .checkpoint import FLOAT_DTYPES, _check_config, check_torch_params, torch_lc_shapes
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
    "embedded_basis",
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


# Names of the grid axes in shapes that messages and docstrings show, per spatial rank.
_GRID_AXES = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}


def check_input(x, config: LRLCConfig, *, name: str = "x", unbatched: bool = False) -> None:
    """Raise unless `x` is a floating channels-first tensor (NCL, NCHW or NCDHW) with the
    layer's channels and input grid; with `unbatched`, a (C_in, *grid) tensor (one example)
    is accepted too."""
    _check_config(config, "check_input")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    shape = tuple(x.shape)
    n, layout = config.spatial_dims, config.layouts[1]
    if unbatched and len(shape) not in (n + 1, n + 2):
        grid = ", ".join(_GRID_AXES[n])
        raise ValueError(
            f"{name} must have rank {n + 2} (B, C_in, {grid}; {layout}) or {n + 1} (C_in, "
            f"{grid}; one unbatched example) for a {n}-D layer, got shape {shape}"
        )
    if len(shape) == n + 1 and unbatched:
        check_input_shape((1, *shape), config, name=f"{name} (unbatched, as a batch of 1)",
                          layout=layout)  # fmt: skip
    else:
        check_input_shape(shape, config, name=name, layout=layout)
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")


def check_params(params: Mapping[str, torch.Tensor], config: LRLCConfig) -> None:
    """Raise unless `params` holds exactly `config`'s tensors, in lrlc_torch's layouts and of
    floating dtype (the reference's `check_params`, with the basis as convolution weights)."""
    check_torch_params(params, config)


def _check_dtypes(x: torch.Tensor, tensors: Mapping, label: str = "params[{!r}]") -> None:
    """Raise unless every tensor has x's dtype: a layer computes in one dtype, as
    `nn.Conv2d` does (under autocast, which casts per operation, anything goes)."""
    if torch.is_autocast_enabled(x.device.type):
        return
    for name, value in tensors.items():
        if value is not None and value.dtype != x.dtype:
            raise TypeError(
                f"x has dtype {x.dtype} but {label.format(name)} has dtype {value.dtype}; a "
                "layer computes "
                f"in one dtype: convert the input (x.to({value.dtype})) or the layer "
                f"(layer.to({x.dtype})), or run under torch.autocast"
            )


def _known_batch(x: torch.Tensor) -> int | None:
    """x's batch size, or None when it is symbolic (torch.export, dynamic shapes): the
    strategy rule then takes its documented unknown-batch branch instead of guarding."""
    batch = x.shape[0]
    return batch if isinstance(batch, int) else None


def _pad_spec(padding_pairs) -> tuple[int, ...]:
    """(before, after) pairs per axis, first axis first, as F.pad reads them: last axis first."""
    return tuple(amount for pair in reversed(padding_pairs) for amount in pair)


def _pad(x: torch.Tensor, padding_pairs) -> torch.Tensor:
    if not any(_pad_spec(padding_pairs)):
        return x
    return F.pad(x, _pad_spec(padding_pairs))


def pad_input(x: torch.Tensor, config: LRLCConfig) -> torch.Tensor:
    """Zero-pad channels-first `x` by `config.padding_pairs` (spec section 3; 'same' may be
    asymmetric). A mixed basis pads per group of bases (`config.basis_groups`, spec section
    16.2)."""
    return _pad(x, config.padding_pairs)


def _conv_padding(padding_pairs):
    """(whether the convolution pads by itself, its padding): symmetric padding is left to
    the convolution (no padded copy); asymmetric padding ('same' at some strides) is applied
    to x first."""
    if all(before == after for before, after in padding_pairs):
        return True, tuple(before for before, _ in padding_pairs)
    return False, (0,) * len(padding_pairs)


def _convolution(x: torch.Tensor, weight: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """F.conv1d, F.conv2d or F.conv3d, by the spatial rank of the batched input `x`."""
    return getattr(F, f"conv{x.dim() - 2}d")(x, weight, *args, **kwargs)


# ---------------------------------------------------------------------------------------------
# Algorithm 1: one convolution per group of bases with equal kernel size and dilation (one
# for a plain basis), then the weighted sum over K.
#
# The convolutions run channels-last: oneDNN's native layout on CPUs, and it puts the
# K * C_out values of a position next to each other, so the combination is one batched
# product that reads z once (docs/performance.md, 'PyTorch', 'conv').


def _channels_last(a: torch.Tensor) -> torch.Tensor:
    """`a` (N, C, *grid) stored channels-last; by permutes, so that vmap can batch it."""
    return a.movedim(1, -1).contiguous().movedim(-1, 1)


def _basis(params, config: LRLCConfig):
    """The basis as `algorithm1` takes it: the stacked `basis`, or a mixed basis's members."""
    if config.mixed:
        return [params[name] for name in config.basis_names]
    return params["basis"]


def _group_kernels(basis, config: LRLCConfig) -> tuple[torch.Tensor, ...]:
    """One convolution weight per group of `config.basis_groups`, its members stacked along
    the output channels in the group's order (spec section 16.3)."""
    if not config.mixed:
        if not isinstance(basis, torch.Tensor):
            raise TypeError(f"basis must be the stacked basis tensor, got {type(basis).__name__}")
        return (basis,)
    if isinstance(basis, torch.Tensor) or len(basis) != config.rank:
        raise TypeError(
            f"a mixed basis is given as its {config.rank} members [basis.0, ...], got "
            f"{type(basis).__name__}"
        )
    return tuple(
        basis[group.members[0]]
        if len(group.members) == 1
        else torch.cat([basis[k] for k in group.members])
        for group in config.basis_groups
    )


def _plan(x: torch.Tensor, config: LRLCConfig):
    """Algorithm 1's convolutions: the inputs they read (x, or x padded where a group's
    padding is asymmetric, one per distinct padding) and the plan (K, C_out, number of
    inputs, per group (its input, members, stride, padding, dilation))."""
    inputs, index, groups = [], {}, []
    for group in config.basis_groups:
        by_conv, padding = _conv_padding(group.padding_pairs)
        key = None if by_conv else group.padding_pairs
        if key not in index:
            index[key] = len(inputs)
            inputs.append(x if by_conv else _pad(x, group.padding_pairs))
        groups.append((index[key], group.members, config.stride, padding, group.dilation))
    return inputs, (config.rank, config.out_channels, len(inputs), tuple(groups))


def _responses(inputs, kernels, plan) -> torch.Tensor:
    """z (B, K, C_out, *out), K in basis order, from each group's convolution."""
    rank, out_channels, _, groups = plan
    responses = [
        _convolution(inputs[source], _channels_last(kernel), stride=stride, padding=padding,
                     dilation=dilation)
        for (source, _, stride, padding, dilation), kernel in zip(groups, kernels)
    ]  # fmt: skip
    if len(responses) == 1:
        return responses[0].unflatten(1, (rank, out_channels))
    # Groups need not be contiguous (kernel_size [3, 5, 3]): concatenated in group order,
    # then put back in basis order (spec section 16.3).
    order = [k for _, members, *_ in groups for k in members]
    z = torch.cat([_positions_first(r.unflatten(1, (-1, out_channels))) for r in responses], -2)
    if order != sorted(order):
        z = z[..., [order.index(k) for k in range(rank)], :]
    return z.movedim(-2, 1).movedim(-1, 2)


def _members(a: torch.Tensor, members: tuple[int, ...]) -> torch.Tensor:
    """a[..., members, :] over the K axis (dim -2): a view when the members are consecutive."""
    first = members[0]
    if members == tuple(range(first, first + len(members))):
        return a[..., first : first + len(members), :]
    return a[..., list(members), :]


def basis_responses(x: torch.Tensor, basis, config: LRLCConfig) -> torch.Tensor:
    """z[b, k, o, *i] = (I * F^(k))[b, o, *i] (Algorithm 1, line 4): one convolution with
    K * C_out outputs, channels-last in memory; for a mixed basis one per group of equal
    kernel size and dilation, K in basis order (spec section 16.3). `basis` is the stacked
    basis, or a mixed basis's members [basis.0, ...]."""
    inputs, plan = _plan(x, config)
    return _responses(inputs, _group_kernels(basis, config), plan)


def _positions_first(per_member: torch.Tensor) -> torch.Tensor:
    """z[b, k, o, *i] as z[b, *i, k, o]: a view when z is channels-last."""
    return per_member.movedim(1, -1).movedim(1, -1)


# Largest rank at which the combination and its weight gradient take a broadcast multiply
# and sum instead of batched products, per device type (absent: never). cuBLAS runs the
# small products as slow gemv kernels (docs/performance.md, 'GPU', first GPU run).
ELEMENTWISE_COMBINE_MAX_RANK = {"cuda": 4}
ELEMENTWISE_WEIGHT_GRAD_MAX_RANK = {"cuda": 2}


def _elementwise(a: torch.Tensor, rank: int, max_rank: dict) -> bool:
    return rank <= max_rank.get(a.device.type, 0)


def combine(per_member: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """y[b, o, *i] = sum_k w[(b,) k, *i] z[b, k, o, *i] (Algorithm 1, line 6; eq. 2).

    Fixed weights (K, *out) are shared by the batch, input-dependent ones carry it.
    """
    rank, k_axis = per_member.shape[1], 2 - per_member.dim()  # K is dim -(n + 1) of w
    if rank == 1:  # a scale: one multiply beats B * positions 1x1 products
        return per_member[:, 0] * weights
    z = _positions_first(per_member)  # (B, *out, K, C_out)
    if _elementwise(per_member, rank, ELEMENTWISE_COMBINE_MAX_RANK):
        y = (z * weights.movedim(k_axis, -1).unsqueeze(-1)).sum(-2)
    else:
        rows = weights.movedim(k_axis, -1).unsqueeze(-2)  # (..., *out, 1, K)
        y = torch.matmul(rows, z).squeeze(-2)  # (B, *out, C_out)
    return y.movedim(-1, 1)


def _saved_tensors_expire() -> bool:
    """Whether the running backward pass is the last use of this node's saved tensors: not
    when it keeps the graph (retain_graph), records itself (create_graph, torch.func), or
    is traced for torch.compile (AOTAutograd plans buffer reuse itself)."""
    if torch.compiler.is_compiling() or torch.is_grad_enabled():
        return False
    return not torch._C._autograd._get_current_graph_task_keep_graph()


class _Algorithm1(torch.autograd.Function):
    """Algorithm 1 as one autograd node: y = combine(basis_responses(x), w), for the inputs
    and group kernels of a `_plan` (one each for a plain basis).

    The backward (spec sections 12.2-12.3, 16.3) needs z for dw, then dz = w dy, as large
    as z, for the convolutions' backward: dz is written into z's buffer unless the graph is
    kept, so a step holds one K * C_out tensor, like the K * C_out convolution's own step.
    A recorded backward (create_graph, torch.func) recomputes z and the channels-last
    inputs, so that the recorded graph reaches them.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(weights, plan, *tensors):
        sources = plan[2]
        inputs = tuple(_channels_last(x) for x in tensors[:sources])  # kept for the backward
        per_member = _responses(inputs, tensors[sources:], plan)
        return combine(per_member, weights), per_member, *inputs

    @staticmethod
    def setup_context(ctx, inputs, output):
        weights, plan, *tensors = inputs
        _, per_member, *channels_last = output
        ctx.mark_non_differentiable(per_member, *channels_last)
        ctx.set_materialize_grads(False)  # else autograd zero-fills gradients for z and x
        ctx.save_for_backward(weights, per_member, *tensors, *channels_last)
        ctx.plan = plan

    @staticmethod
    def backward(ctx, dy, *_):
        rank, _, sources, groups = plan = ctx.plan
        weights, per_member, *saved = ctx.saved_tensors
        xs, kernels = saved[:sources], saved[sources : sources + len(groups)]
        inputs = saved[sources + len(groups) :]
        if dy is None:
            return (None,) * (2 + sources + len(groups))
        if torch.is_grad_enabled():  # this backward is being recorded: start from the inputs
            inputs = tuple(_channels_last(x) for x in xs)
            per_member = _responses(inputs, kernels, plan)
        need_weights = ctx.needs_input_grad[0]
        need_x = ctx.needs_input_grad[2 : 2 + sources]
        need_kernels = ctx.needs_input_grad[2 + sources :]
        # Compute in the forward's dtype (lower than the inputs' under autocast).
        dtype = per_member.dtype
        spatial_dims = dy.dim() - 2
        k_axis = -(spatial_dims + 1)  # the K axis of the weights
        z = _positions_first(per_member)  # (B, *out, K, C_out)
        dy = dy.to(dtype).movedim(1, -1)  # (B, *out, C_out)
        dweights = None
        if need_weights:  # dw[b, *i, k] = sum_o z[b, *i, k, o] dy[b, *i, o]
            if _elementwise(z, rank, ELEMENTWISE_WEIGHT_GRAD_MAX_RANK):
                dw = (z * dy.unsqueeze(-2)).sum(-1)
            else:
                dw = torch.matmul(z, dy.unsqueeze(-1)).squeeze(-1)
            if weights.dim() == spatial_dims + 1:  # fixed weights: summed over the batch
                dw = dw.sum(0)
            dweights = dw.movedim(-1, k_axis)
        dxs, dkernels = [None] * sources, [None] * len(groups)
        if any(need_x) or any(need_kernels):
            rows = weights.to(dtype).movedim(k_axis, -1).unsqueeze(-1)  # (..., *out, K, 1)
            reuse = z.is_contiguous() and _saved_tensors_expire()
            dz = torch.mul(rows, dy.unsqueeze(-2), out=z if reuse else None)
            for g, ((source, members, stride, padding, dilation), kernel) in enumerate(
                zip(groups, kernels)
            ):
                mask = (need_x[source], need_kernels[g], False)
                if not any(mask):
                    continue
                dz_group = dz if len(groups) == 1 else _members(dz, members)
                dx, dkernels[g], _ = torch.ops.aten.convolution_backward(
                    dz_group.flatten(-2).movedim(-1, 1), inputs[source].to(dtype),
                    _channels_last(kernel.to(dtype)), None, stride, padding, dilation, False,
                    (0,) * spatial_dims, 1, mask,
                )  # fmt: skip
                if dx is not None:
                    dxs[source] = dx if dxs[source] is None else dxs[source] + dx
        return dweights, None, *dxs, *dkernels


def algorithm1(x: torch.Tensor, weights: torch.Tensor, basis, config: LRLCConfig):
    """sum_k w[(b,) k, *i] (I * F^(k))[b, o, *i] without biases: `combine(basis_responses(x,
    basis, config), weights)` as one node with a lean backward. `basis` is the stacked basis,
    or a mixed basis's members [basis.0, ...]."""
    inputs, plan = _plan(x, config)
    y, *_ = _Algorithm1.apply(weights, plan, *inputs, *_group_kernels(basis, config))
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
    """`algorithm1`'s values for fixed weights (K, *out), in the locally connected form: the
    position banks (eq. 2) applied to the patches block by block, at a cost that grows with
    K only in forming the banks (see `positionwise`). A mixed basis is embedded in its union
    window first (`embedded_basis`, spec section 16.5)."""
    if weights.dim() != config.spatial_dims + 1:
        raise ValueError(
            f"the locally connected strategy takes fixed weights (K, *out) of rank "
            f"{config.spatial_dims + 1}, got shape {tuple(weights.shape)}; input-dependent "
            "layers use Algorithm 1 (strategy='conv')"
        )
    stacked = embedded_basis(basis, config)
    x, weights, stacked = _autocast_inputs(x, weights, stacked)
    return _LowRankLocallyConnected.apply(x, weights, stacked, config.locally_connected_config())


# ---------------------------------------------------------------------------------------------
# Combining weights (eqs. 3, 4 and 6; spec sections 5-6, 8)


def _along_axis(table: torch.Tensor, config: LRLCConfig, axis: str) -> torch.Tensor:
    """A table (..., size) over the named grid axis ('depth', 'row' or 'col') as a view that
    broadcasts over the output grid: (..., 1, size, 1) for the middle axis of three."""
    n, position = config.spatial_dims, config.axis_index(axis)
    return table.reshape(*table.shape[:-1], *(1,) * position, -1, *(1,) * (n - 1 - position))


def fixed_logits(params: Mapping[str, torch.Tensor], config: LRLCConfig) -> torch.Tensor:
    """Unnormalised weights w~[k, *i] of a fixed layer (eq. 3 and its variants): in 'rowcol'
    the sum of one logit table per axis (spec section 17.2), else the full table."""
    if config.combining == "full":
        return params["logits"].movedim(-1, 0)
    tables = [
        _along_axis(params[f"{axis}_logits"].t(), config, axis) for axis in config.axis_tables
    ]
    logits = tables[0]
    for table in tables[1:]:  # eq. 3: w~ = alpha_i + beta_j (+ a depth table in 3-D)
        logits = logits + table
    return logits.expand(config.rank, *config.output_size)


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    """lrlc_numpy.working_dtype_name for a torch dtype (float32 for the 16-bit floats)."""
    return getattr(torch, working_dtype_name(str(dtype).removeprefix("torch.")))


def _l2_normalize(logits: torch.Tensor, dim: int) -> torch.Tensor:
    """w~ / sqrt(max(sum_k w~^2, 1e-12)) without overflow (spec section 6): in the working
    dtype (the floor underflows in 16 bits), with w~ scaled by its largest |w~_k| first, as
    hypot does, so that neither the squares nor autograd's squared norm overflow. The scale
    is a constant for autograd: the quotient does not depend on it."""
    wide = logits.to(_working_dtype(logits.dtype))
    scale = wide.detach().abs().amax(dim=dim, keepdim=True)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    unit = wide / scale  # |unit| <= 1, and its largest entry is +-1 unless all are zero
    sum_sq = unit.square().sum(dim=dim, keepdim=True)
    floor = math.sqrt(L2_FLOOR)
    above = scale * sum_sq.sqrt() >= floor  # an overflow to inf here still reads as above
    # clamp_min(1) only guards the branch not taken (an all-zero position: no 0/0 gradient).
    weights = torch.where(above, unit / sum_sq.clamp_min(1).sqrt(), wide / floor)
    return weights.to(logits.dtype)


def normalize_weights(logits: torch.Tensor, mode: str, *, dim: int = -3) -> torch.Tensor:
    """Normalise over the K axis, `dim` (-3 in 2-D; -(n + 1) in n-D): eq. 4 for 'softmax',
    spec section 6 for 'l2'."""
    if mode == "softmax":
        return torch.softmax(logits, dim=dim)
    if mode == "l2":
        return _l2_normalize(logits, dim)
    if mode == "none":
        return logits
    raise ValueError(f"unknown normalisation {mode!r}; expected 'softmax', 'l2' or 'none'")


def resize_bilinear(a: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Aligned-corner resize of channels-first `a` (B, K, *grid) to `size`, separable: one of
    the reference's interpolation matrices per axis (linear in 1-D, bilinear in 2-D,
    trilinear in 3-D; spec sections 8 and 17.3). A size-1 axis broadcasts; an axis already
    of its size is left alone (with aligned corners its matrix is the identity)."""
    n = len(size)
    for axis in reversed(range(n)):  # last axis first, then each one before it
        n_in, n_out = a.shape[2 + axis], size[axis]
        if n_in == n_out:
            continue
        matrix = torch.as_tensor(resize_matrix(n_in, n_out), dtype=a.dtype, device=a.device)
        if axis == n - 1:  # (..., n_in) x (n_in, n_out)
            a = a @ matrix.t()
        else:  # per map of the leading axes: (n_out, n_in) x (n_in, the axes after), no permutes
            after = a.shape[3 + axis :]
            maps = a.reshape(-1, n_in, math.prod(after))
            resized = torch.bmm(matrix.expand(maps.shape[0], *matrix.shape), maps)
            a = resized.reshape(*a.shape[: 2 + axis], n_out, *after)
    return a


def _pointwise(a: torch.Tensor, params, name: str) -> torch.Tensor:
    """A 1x1 convolution with a neutral (C_in, C_out) kernel on channels-first data: per
    example a (C_out, C_in) x (C_in, positions) product plus the bias, one batched op that
    permutes nothing."""
    kernel, bias = params[f"{name}.kernel"], params[f"{name}.bias"]
    maps = a.flatten(2)
    per_example = kernel.t().expand(a.shape[0], *kernel.t().shape)  # views: no copies
    bias = bias[:, None].expand(a.shape[0], bias.shape[0], maps.shape[2])
    return torch.baddbmm(bias, per_example, maps).unflatten(-1, a.shape[2:])


def depthwise_conv3x3(a: torch.Tensor, kernel: torch.Tensor, bias, rate: int) -> torch.Tensor:
    """g's dilated depthwise 3x3 convolution, 'valid', of NCHW `a` with a neutral (3, 3, K)
    kernel (spec section 8); in n-D the 3^n one of channels-first `a` with a (3,)*n + (K,)
    kernel (spec section 17.3)."""
    depthwise = kernel.movedim(-1, 0).unsqueeze(1)  # (K, 1, 3, ...)
    return _convolution(a, depthwise, bias, dilation=rate, groups=kernel.shape[-1])


def g_forward(x: torch.Tensor, params, config: LRLCConfig) -> torch.Tensor:
    """Logits w~[b, k, *i] predicted from the input by the network g (eq. 6; spec sections 8
    and 17.3)."""
    low = _pointwise(x, params, "g.reduce")
    branches = [low, low.mean(dim=tuple(range(2, low.dim())), keepdim=True)]
    for r in config.g_dilations:
        kernel, bias = params[f"g.dilated{r}.kernel"], params[f"g.dilated{r}.bias"]
        branches.append(depthwise_conv3x3(low, kernel, bias, r))
    cat = torch.cat([resize_bilinear(b, config.output_size) for b in branches], dim=1)
    squeeze = torch.relu(_pointwise(cat, params, "g.squeeze"))
    excite = torch.sigmoid(_pointwise(squeeze, params, "g.excite"))
    return _pointwise(excite, params, "g.project")


def combining_weights(params, config: LRLCConfig, x: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised weights w (eq. 4): (K, *out), or (B, K, *out) predicted from `x` for an
    input-dependent layer (eq. 6)."""
    check_params(params, config)
    if x is not None:  # a fixed layer does not read x, but a wrong one is still an error
        check_input(x, config)
        if config.input_dependent:
            _check_dtypes(x, params)
    return _weights(params, config, x)


def _weights(params, config: LRLCConfig, x: torch.Tensor | None) -> torch.Tensor:
    """`combining_weights` on arguments already checked."""
    if config.input_dependent:
        if x is None:
            raise ValueError("combining_weights: an input-dependent layer needs the input x")
        logits = g_forward(x, params, config)
    else:
        logits = fixed_logits(params, config)
    return normalize_weights(logits, config.normalize, dim=-(config.spatial_dims + 1))


# ---------------------------------------------------------------------------------------------
# Biases (eq. 5; spec section 7)


def spatial_bias_map(params, config: LRLCConfig) -> torch.Tensor | None:
    """The spatial part of eq. 5 on the output grid `config.output_size`, or None: in
    'rowcol' the sum of one bias vector per axis (spec section 17.2)."""
    if not config.spatial_bias:
        return None
    if config.combining == "full":
        return params["spatial_bias"]
    vectors = [_along_axis(params[f"{axis}_bias"], config, axis) for axis in config.axis_tables]
    bias = vectors[0]
    for vector in vectors[1:]:  # eq. 5: b_row[i] + b_col[j] (+ b_depth in 3-D)
        bias = bias + vector
    return bias.expand(config.output_size)


def bias_map(params, config: LRLCConfig) -> torch.Tensor | None:
    """B[o, *i] of eq. 5, broadcastable to (C_out, *out); None when both are off (never
    materialised: the add broadcasts)."""
    spatial = spatial_bias_map(params, config)
    channel = None
    if config.channel_bias:
        channel = params["channel_bias"].reshape(-1, *(1,) * config.spatial_dims)
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
    """sum_k w (I * F^(k)) when w = 1 (`weights_are_ones`): the one member's convolution on
    its own geometry, in x's own layout (channels-first, like a plain `nn.Conv2d`), g not
    evaluated."""
    (name,) = config.basis_names
    (group,) = config.basis_groups
    basis = _TieZeroGradients.apply(
        params[name], *(params[n] for n in combining_parameter_names(params))
    )
    by_conv, padding = _conv_padding(group.padding_pairs)
    x = x if by_conv else _pad(x, group.padding_pairs)
    return _convolution(x, basis, stride=config.stride, padding=padding, dilation=group.dilation)


def forward(x: torch.Tensor, params, config: LRLCConfig, *, strategy: str = "auto"):
    """y[b, o, *i] = sum_k w[*i, k] (I * F^(k))[b, o, *i] + B[o, *i] (eqs. 2-5).

    `x` is channels-first (NCL, NCHW or NCDHW) of size `config.input_size` (or one unbatched
    (C_in, *grid) example); returns (B, C_out, *out). `strategy`: 'conv' (Algorithm 1), 'lc'
    (the locally connected form, fixed layers only) or 'auto' (`costs.choose_strategy`; a
    symbolic batch counts as unknown). Algorithm 1 at rank 1 with softmax is one convolution.
    """
    check_params(params, config)
    check_input(x, config, unbatched=True)
    _check_dtypes(x, params)
    if x.dim() == config.spatial_dims + 1:  # one example, as nn.Conv2d takes it
        return _forward(x.unsqueeze(0), params, config, strategy).squeeze(0)
    return _forward(x, params, config, strategy)


def _forward(x: torch.Tensor, params, config: LRLCConfig, strategy: str) -> torch.Tensor:
    """`forward` on arguments already checked, x batched."""
    chosen = choose_strategy(config, _known_batch(x), strategy, x.device)
    # An exported program keeps no custom backward, so the single convolution would leave the
    # logits without gradients there; the general path gives the same values (w = 1 exactly)
    # and their exact zero gradients.
    if chosen == "conv" and weights_are_ones(config) and not torch.compiler.is_exporting():
        y = _single_convolution(x, params, config)
    else:
        weights = _weights(params, config, x)
        if chosen == "lc":
            y = lowrank_locally_connected(x, weights, _basis(params, config), config)
        else:
            y = algorithm1(x, weights, _basis(params, config), config)
    bias = bias_map(params, config)
    # The combination leaves y channels-last; with the bias first, the sum takes the bias's
    # (channels-first) layout: one pass instead of a copy and an add.
    return y.contiguous() if bias is None else bias + y


# ---------------------------------------------------------------------------------------------
# Locally connected form (spec sections 11 and 16.5)


def _dilate(kernel: torch.Tensor, dilation: tuple[int, ...]) -> torch.Tensor:
    """`kernel` (..., *window) with d - 1 zero taps between its taps along each window axis."""
    for axis, rate in zip(range(-len(dilation), 0), dilation):
        if rate > 1:
            taps = kernel.shape[axis]
            spread = F.pad(kernel.movedim(axis, -1).unsqueeze(-1), (0, rate - 1)).flatten(-2)
            kernel = spread[..., : (taps - 1) * rate + 1].movedim(-1, axis)
    return kernel


def embedded_basis(basis, config: LRLCConfig) -> torch.Tensor:
    """The basis on the window of `config.locally_connected_config()`, stacked (K C_out,
    C_in, *window): a plain basis as it is; each member of a mixed basis (`basis` its members
    [basis.0, ...]) placed at its own taps, which start at (window padding before - the
    member's padding before) with step d_k on each axis, zeros elsewhere (the reference's
    `embedded_basis`, spec section 16.5). Built without in-place writes, so autograd, vmap
    and export see ordinary ops."""
    window = config.locally_connected_config()
    if window is config:
        _group_kernels(basis, config)  # checks that `basis` is the stacked tensor
        return basis
    _group_kernels(basis, config)  # checks that `basis` holds the K members
    placed = []
    for member, dilation, pads in zip(basis, config.dilations, config.basis_padding_pairs):
        taps = _dilate(member, dilation)
        spans = []
        for (window_before, _), (before, _), size, extent in zip(
            window.padding_pairs, pads, window.kernel_size, taps.shape[2:]
        ):
            start = window_before - before
            spans.append((start, size - start - extent))
        placed.append(F.pad(taps, _pad_spec(spans)))
    return torch.cat(placed)


def position_banks(weights: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Per-position filter banks (eq. 2): bank[(b,) *i] = sum_k w[(b,) k, *i] basis[k],
    (..., *out, C_out, C_in, *window), `locally_connected`'s weight layout; `basis` is
    stacked (K C_out, C_in, *window)."""
    n = basis.dim() - 2
    members = basis.unflatten(0, (weights.shape[-(n + 1)], -1))
    grid, window = "ijl"[:n], "uvt"[:n]
    return torch.einsum(f"...k{grid},koc{window}->...{grid}oc{window}", weights, members)


def to_locally_connected(params, config: LRLCConfig, x: torch.Tensor | None = None):
    """The equivalent locally connected (weight, bias) in `locally_connected`'s layout: the
    position banks, per example when the layer is input-dependent (then `x` is required),
    and the bias (C_out, *out), zeros when the layer has none. A mixed basis converts
    on its union window (`config.locally_connected_config()`, spec section 16.5)."""
    weights = combining_weights(params, config, x)
    weight = position_banks(weights, embedded_basis(_basis(params, config), config))
    bias = bias_map(params, config)
    out_shape = (config.out_channels, *config.output_size)
    if bias is None:
        bias = weight.new_zeros(out_shape)
    return weight, bias.expand(out_shape)


def locally_connected(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, config: LRLCConfig
) -> torch.Tensor:
    """A locally connected layer (spec sections 11 and 17.5) on the geometry of
    `config.locally_connected_config()` (`config` itself unless the basis is mixed):
    y[b, o, i, j] = sum_{c,u,v} xpad[b, c, i s_h + u d_h, j s_w + v d_w] weight[i, j, o, c, u, v]
    + bias[o, i, j] in 2-D, the same sum over the n-D window otherwise; `weight` (*out, C_out,
    C_in, *window) may carry a leading batch axis (one kernel per example). `x` may be one
    unbatched (C_in, *grid) example.
    """
    check_input(x, config, unbatched=True)
    for name, value in (("weight", weight), ("bias", bias)):
        if value is None and name == "bias":
            continue
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"locally connected {name} must be a torch.Tensor, got "
                            f"{type(value).__name__}")  # fmt: skip
        if value.dtype not in FLOAT_DTYPES:
            raise TypeError(f"locally connected {name} must be floating point, got {value.dtype}")
    _check_dtypes(x, {"weight": weight, "bias": bias}, "the locally connected {}")
    if x.dim() == config.spatial_dims + 1:  # one example, as nn.Conv2d takes it
        return locally_connected(x.unsqueeze(0), weight, bias, config).squeeze(0)
    per_example = check_lc_shapes(
        weight.shape,
        None if bias is None else bias.shape,
        config,
        batch=_known_batch(x),
        expected=torch_lc_shapes(config),
    )
    window = config.locally_connected_config()
    if not per_example:
        x, weight = _autocast_inputs(x, weight)
        y = _LocallyConnected.apply(x, weight, window)
    else:  # one bank per example and position: a batched vector product per (b, p)
        n, out = config.spatial_dims, config.output_size
        padded = positionwise.batch_last(x, window)
        patches = positionwise.extract_patches(padded, window, 0, out[0])  # (P, C_in *win, B)
        banks = weight.flatten(-(n + 1)).flatten(1, n)  # (B, P, C_out, C_in *window)
        y = torch.einsum("pcb,bpoc->bop", patches, banks).unflatten(-1, out)
    # Channels-first out; with the bias first, the sum takes the bias's layout (see `forward`).
    return y.contiguous() if bias is None else bias + y


class _LocallyConnected(torch.autograd.Function):
    """A locally connected layer with one weight for the batch, by `positionwise`."""

    @staticmethod
    def forward(x, weight, config):
        return positionwise.apply_banks(x, positionwise.WeightKernels(weight, config), config)

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
        kernels = positionwise.WeightKernels(weight, ctx.config)
        dx = positionwise.apply_banks_vjp(
            x, dy, kernels, ctx.config, need_x=need_x, need_kernels=need_weight
        )
        return dx, kernels.weight_grad() if need_weight else None, None
