"""Low-rank locally connected layers as pure JAX functions over a dict of neutral parameters.

Each function cites the spec section (spec/SPEC.md) and equation it implements; `lrlc_numpy`
is the normative version of every formula. Data is channels last, kernels spatial-major:
NHWC and HWIO with `basis[k, u, v, c_in, c_out]` in 2-D (a mixed basis: `basis.k[u, v, c_in,
c_out]` per basis, spec section 16); NLC / NDHWC and the same axes per spatial axis in 1-D and
3-D (spec section 17), where every function takes the spatial rank n from the config or the
arrays' ranks. The config is an `lrlc_numpy.LRLCConfig`: hashable, so static under `jax.jit`.

Matrix products use JAX's default precision, which GPUs and TPUs may reduce for float32;
wrap calls in `jax.default_matmul_precision("highest")` for full float32 accuracy.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import lrlc_numpy
from lrlc_numpy import (
    NORMALIZATIONS,
    BasisGroup,
    LRLCConfig,
    check_config,
    check_lc_shapes,
    check_params,
    param_shapes,
    working_dtype_name,
)
from lrlc_numpy.config import SPATIAL_DIMS, _pair
from lrlc_numpy.reference import BIAS_NAMES, L2_FLOOR
from lrlc_numpy.strategy import STRATEGIES, weights_are_ones

from .costs import choose_strategy
from .positionwise import (
    apply_banks,
    as_floating,
    check_input,
    check_shape,
    floating_dtype,
    pad_input,
)

__all__ = [
    "STRATEGIES",
    "basis_members",
    "basis_responses",
    "bias_map",
    "check_input",
    "combine",
    "combining_weights",
    "depthwise_conv3x3",
    "embedded_basis",
    "fixed_logits",
    "forward",
    "g_forward",
    "group_basis",
    "locally_connected",
    "normalize_weights",
    "position_banks",
    "resize_bilinear",
    "resize_linear",
    "spatial_bias_map",
    "stack_responses",
    "to_locally_connected",
]

# Letters of the spatial axes, last n of them in n-D: (W,), (H, W), (D, H, W) for lax's
# dimension numbers; the grid (i, j, l), the window taps (u, v, t) in einsum subscripts.
_SPATIAL = "DHW"
_GRID = "ijl"
_TAPS = "uvt"


def _dimension_numbers(n: int) -> tuple[str, str, str]:
    """Channels-last lax dimension numbers for n spatial axes: ("NHWC", "HWIO", "NHWC") in 2-D."""
    spatial = _SPATIAL[-n:]
    return f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"


def _spatial_rank(array, extra: int, where: str, layout: str) -> int:
    """n for an array of rank n + `extra` (n in 1, 2, 3); ValueError naming `layout` otherwise."""
    n = array.ndim - extra
    if n not in SPATIAL_DIMS:
        raise ValueError(
            f"{where} has shape {tuple(array.shape)}; expected {layout} with 1, 2 or 3 "
            f"spatial axes (rank {extra + 1} to {extra + 3})"
        )
    return n


def _on_axis(vector, config: LRLCConfig, axis: str) -> jax.Array:
    """A per-axis table (out_a, ...) of `config`'s grid axis `axis` shaped to broadcast over
    the output grid: (out_a, 1, ..., trailing) with the axis at its place in the grid."""
    n, index = config.spatial_dims, config.axis_index(axis)
    return vector.reshape(
        (1,) * index + vector.shape[:1] + (1,) * (n - 1 - index) + vector.shape[1:]
    )


# ---------------------------------------------------------------------------------------------
# Checks (spec section 14). They read shapes and dtypes only, so they work on tracers; the
# array checks are positionwise.py's, shared by every module.

_LOGIT_NAMES = ("depth_logits", "row_logits", "col_logits", "logits")


def _named_params(params, names, config: LRLCConfig, where: str) -> dict[str, jax.Array]:
    """The tensors `names` of `params` (a building block reads only its own) as floating
    arrays of the shapes `config` gives them; errors name `where` and the tensor."""
    check_config(config, where)
    if not isinstance(params, Mapping):
        raise TypeError(f"{where}: params must be a mapping of name -> array, got {type(params)}")
    shapes = param_shapes(config)
    out = {}
    for name in names:
        if name not in params:
            raise ValueError(f"{where}: params has no {name!r}; it needs {sorted(names)}")
        out[name] = as_floating(params[name], f"{where}: params[{name!r}]")
        check_shape(out[name], shapes[name], f"{where}: params[{name!r}]")
    return out


def _prepare(params, config: LRLCConfig, x=None, where: str = "forward"):
    """Checked (params, x): params as JAX arrays in x's dtype (or their common dtype)."""
    check_config(config, where)
    check_params(params, config)
    arrays = {name: as_floating(value, f"params[{name!r}]") for name, value in params.items()}
    if x is not None:
        x = check_input(x, config)
    dtype = x.dtype if x is not None else jnp.result_type(*arrays.values())
    return {name: value.astype(dtype) for name, value in arrays.items()}, x


def _prepare_without_layer(params, config: LRLCConfig, x, caller: str):
    """`_prepare` for functions that use x only to predict weights: an input-dependent
    layer needs it; a fixed layer ignores it (after checking it) and keeps the params' dtype."""
    check_config(config, caller)
    if config.input_dependent:
        if x is None:
            raise ValueError(f"{caller}: an input-dependent layer needs the input x")
        return _prepare(params, config, x, caller)
    if x is not None:  # not needed, but a wrong input is still an error
        check_input(x, config)
    return _prepare(params, config, where=caller)


def _basis_dtype(params, config: LRLCConfig) -> jnp.dtype:
    return params[config.basis_names[0]].dtype


def _working_dtype(dtype) -> jnp.dtype:
    return jnp.dtype(working_dtype_name(jnp.dtype(dtype).name))


def _widened(tree):
    """`tree`'s arrays in their working dtype (spec section 15.4): all but the K * C_out
    convolution runs there, so 16-bit layers round only what they return."""
    return jax.tree.map(lambda a: a.astype(_working_dtype(a.dtype)), tree)


# ---------------------------------------------------------------------------------------------
# Combining weights (eqs. 3, 4 and 6; spec sections 5-6)


def fixed_logits(params, config: LRLCConfig) -> jax.Array:
    """Unnormalised weights w~[*i, k] of a fixed layer, (*out, K) (eq. 3 and its variants;
    spec section 17.2 in 1-D and 3-D)."""
    check_config(config, "fixed_logits")
    if config.input_dependent:
        raise ValueError("fixed_logits: an input-dependent layer's logits come from g_forward")
    names = [name for name in param_shapes(config) if name in _LOGIT_NAMES]
    params = _named_params(params, names, config, "fixed_logits")
    if config.combining == "full":
        return params["logits"]
    # eq. 3, w~ = alpha_i + beta_j, and its n-D reading: one table per axis, summed (17.2).
    tables = [_on_axis(params[f"{axis}_logits"], config, axis) for axis in config.axis_tables]
    return jnp.broadcast_to(sum(tables[1:], tables[0]), (*config.output_size, config.rank))


def normalize_weights(logits, mode: str) -> jax.Array:
    """Normalise over the last axis K (eq. 4 for 'softmax'; spec section 6). 'l2' divides
    w~ / max|w~| by its norm, as hypot scales, so that no square overflows."""
    if not (isinstance(mode, str) and mode in NORMALIZATIONS):
        raise ValueError(
            f"normalize_weights: unknown mode {mode!r}; expected one of {NORMALIZATIONS}"
        )
    logits = as_floating(logits, "normalize_weights: logits")
    if mode == "softmax":
        return jax.nn.softmax(logits, axis=-1)
    if mode == "l2":
        return _l2_normalize(logits)
    return logits


def _l2_normalize(logits) -> jax.Array:
    """w = w~ / sqrt(max(sum_k w~^2, 1e-12)) without overflow: where the floor applies (the sum
    as written; an overflow to inf is above it) w~ / 1e-6, elsewhere unit / |unit| with
    unit = w~ / max|w~|. The scale is a constant of that quotient, so it is held out of the
    gradient, which is then exactly w~ / |w~|'s. The branch not taken gets safe operands
    (scale and squared length 1), so its zero cotangent meets no infinity (no NaN)."""
    squares = jnp.sum(jnp.square(logits), axis=-1, keepdims=True)
    floored = squares <= L2_FLOOR
    scale = lax.stop_gradient(jnp.max(jnp.abs(logits), axis=-1, keepdims=True))
    unit = logits / jnp.where(floored, 1, scale)
    length = jnp.sqrt(jnp.where(floored, 1, jnp.sum(jnp.square(unit), axis=-1, keepdims=True)))
    return jnp.where(floored, logits / math.sqrt(L2_FLOOR), unit / length)


def _weights(params, config: LRLCConfig, x) -> jax.Array:
    """Normalised weights from checked, widened arguments: (*out, K), or (B, *out, K)
    predicted from x."""
    if config.input_dependent:
        logits = g_forward(x, params, config)
    else:
        logits = fixed_logits(params, config)
    return normalize_weights(logits, config.normalize)


def combining_weights(params, config: LRLCConfig, x=None) -> jax.Array:
    """Normalised combining weights w (eq. 4): (*out, K), (H_out, W_out, K) in 2-D, or
    (B, *out, K) for an input-dependent layer, whose weights are predicted from `x` (eq. 6)."""
    params, x = _prepare_without_layer(params, config, x, "combining_weights")
    wide, wide_x = _widened((params, x))
    return _weights(wide, config, wide_x).astype(_basis_dtype(params, config))


# ---------------------------------------------------------------------------------------------
# The input-dependent network g (eq. 6; spec section 8)


def resize_linear(a, size) -> jax.Array:
    """Separable linear resize of channels-last `a` (B, *grid, C) to the grid `size` with
    aligned corners, one matrix per axis: linear in 1-D, bilinear (R_h a R_w^T) in 2-D,
    trilinear in 3-D (spec section 17.3). The matrices are `lrlc_numpy.resize_matrix`, built
    at trace time, so the weights are the reference's."""
    a = as_floating(a, "resize_linear: a")
    n = _spatial_rank(a, 2, "resize_linear: a", "(B, *grid, C)")
    size = _pair("size", size, "resize_linear", n=n)
    matrices = [
        jnp.asarray(lrlc_numpy.resize_matrix(n_in, n_out), a.dtype)
        for n_in, n_out in zip(a.shape[1:-1], size)
    ]
    # "oh,bhwc,pw->bopc" in 2-D: the first matrix before `a`, the others after it.
    source, target = "hwz"[:n], "opq"[:n]
    operands = [f"{o}{h}" for o, h in zip(target, source)]
    subscripts = ",".join([operands[0], f"b{source}c", *operands[1:]]) + f"->b{target}c"
    return jnp.einsum(subscripts, matrices[0], a, *matrices[1:])


def resize_bilinear(a, size) -> jax.Array:
    """Bilinear resize of NHWC `a` to `size` with aligned corners, as R_h a R_w^T: the 2-D
    case of `resize_linear`."""
    a = as_floating(a, "resize_bilinear: a")
    if a.ndim != 4:
        raise ValueError(f"resize_bilinear: a must have rank 4 (NHWC), got shape {a.shape}")
    return resize_linear(a, _pair("size", size, "resize_bilinear"))


def depthwise_conv3x3(a, kernel, bias, rate: int) -> jax.Array:
    """Depthwise 3x3 convolution (3^n taps in n-D, spec section 17.3) of channels-last `a`
    with dilation `rate`, 'valid' padding, plus bias, as 3^n shifted multiply-adds: XLA's
    backward of a grouped convolution is slow (jax-ml/jax#13800; docs/performance.md,
    'Targets of issue 7, JAX on CPU', target 4)."""
    if not isinstance(rate, int) or isinstance(rate, bool) or rate < 1:
        raise ValueError(f"depthwise_conv3x3: rate must be a positive int, got {rate!r}")
    a = as_floating(a, "depthwise_conv3x3: a")
    n = _spatial_rank(a, 2, "depthwise_conv3x3: a", "(B, *grid, C)")
    channels = a.shape[-1]
    check_shape(as_floating(kernel, "kernel"), (3,) * n + (channels,), "depthwise_conv3x3: kernel")
    check_shape(as_floating(bias, "bias"), (channels,), "depthwise_conv3x3: bias")
    out_size = [size - 2 * rate for size in a.shape[1:-1]]
    if min(out_size) < 1:
        raise ValueError(
            f"depthwise_conv3x3: a's grid {a.shape[1:-1]} is too small for a 3x3 window of "
            f"rate {rate} ('valid'); it needs at least {2 * rate + 1} per axis"
        )
    out = bias
    for taps in itertools.product(range(3), repeat=n):
        cut = tuple(slice(u * rate, u * rate + size) for u, size in zip(taps, out_size))
        out = out + a[(slice(None), *cut)] * kernel[taps]
    return out


def g_forward(x, params, config: LRLCConfig) -> jax.Array:
    """Predict logits w~ (B, *out, K) from the input (eq. 6; spec section 17.3 in n-D)."""
    check_config(config, "g_forward")
    if not config.input_dependent:
        raise ValueError("g_forward: the config is not input-dependent; it has no network g")
    names = [name for name in param_shapes(config) if name.startswith("g.")]
    params = _named_params(params, names, config, "g_forward")
    x = check_input(x, config, name="g_forward: x")
    low = jnp.einsum("...c,ck->...k", x, params["g.reduce.kernel"]) + params["g.reduce.bias"]
    grid_axes = tuple(range(1, config.spatial_dims + 1))
    branches = [low, jnp.mean(low, axis=grid_axes, keepdims=True)]
    for r in config.g_dilations:
        kernel, bias = params[f"g.dilated{r}.kernel"], params[f"g.dilated{r}.bias"]
        branches.append(depthwise_conv3x3(low, kernel, bias, r))
    cat = jnp.concatenate([resize_linear(b, config.output_size) for b in branches], axis=-1)
    squeeze = jax.nn.relu(cat @ params["g.squeeze.kernel"] + params["g.squeeze.bias"])
    excite = jax.nn.sigmoid(squeeze @ params["g.excite.kernel"] + params["g.excite.bias"])
    return excite @ params["g.project.kernel"] + params["g.project.bias"]


# ---------------------------------------------------------------------------------------------
# Biases (eq. 5; spec section 7)


def _bias_params(params, config: LRLCConfig, where: str) -> dict[str, jax.Array]:
    names = [name for name in param_shapes(config) if name in BIAS_NAMES]
    return _named_params(params, names, config, where)


def spatial_bias_map(params, config: LRLCConfig) -> jax.Array | None:
    """The spatial part of eq. 5 on the output grid, (*out) ((H_out, W_out) in 2-D), or None."""
    params = _bias_params(params, config, "spatial_bias_map")
    if not config.spatial_bias:
        return None
    if config.combining == "full":
        return params["spatial_bias"]
    # One vector per axis table, summed over the axes (spec section 17.2).
    vectors = [_on_axis(params[f"{axis}_bias"], config, axis) for axis in config.axis_tables]
    return jnp.broadcast_to(sum(vectors[1:], vectors[0]), config.output_size)


def bias_map(params, config: LRLCConfig, dtype) -> jax.Array:
    """B[*i, c] of eq. 5 as a (*out, C_out) array (zeros when both are off)."""
    params = _bias_params(params, config, "bias_map")
    dtype = floating_dtype(dtype, "bias_map")
    bias = jnp.zeros((*config.output_size, config.out_channels), dtype)
    spatial = spatial_bias_map(params, config)
    if spatial is not None:
        bias = bias + spatial[..., None]
    if config.channel_bias:
        bias = bias + params["channel_bias"]
    return bias


# ---------------------------------------------------------------------------------------------
# The layer (Algorithm 1; eqs. 2-6; spec section 4)


def _check_basis(basis, config: LRLCConfig, where: str) -> None:
    """`basis` must be what `basis_members` gives for `config`."""
    shapes = [param_shapes(config)[name] for name in config.basis_names]
    if config.mixed:
        if not isinstance(basis, (list, tuple)) or len(basis) != config.rank:
            raise TypeError(
                f"{where}: a mixed basis is a list of {config.rank} arrays basis.k, got "
                f"{type(basis).__name__}"
            )
        for k, (member, shape) in enumerate(zip(basis, shapes)):
            check_shape(as_floating(member, f"basis[{k}]"), shape, f"{where}: basis[{k}]")
    else:
        check_shape(as_floating(basis, f"{where}: basis"), shapes[0], f"{where}: basis")


def basis_members(params, config: LRLCConfig):
    """The K filter banks F^(k), indexable by k: the stacked `basis` (K, *kernel, C_in, C_out),
    or the list of a mixed basis's `basis.k` (*kernel_k, C_in, C_out) (spec section 16)."""
    params = _named_params(params, config.basis_names, config, "basis_members")
    if config.mixed:
        return [params[name] for name in config.basis_names]
    return params["basis"]


def group_basis(members, group: BasisGroup) -> jax.Array:
    """The banks of `group` stacked (|G|, *kernel, C_in, C_out) in member order; a stacked
    plain basis is its one group already."""
    if isinstance(members, (list, tuple)):
        return jnp.stack([members[k] for k in group.members])
    return members


def _convolution(x, kernel, config: LRLCConfig, group: BasisGroup) -> jax.Array:
    """`x` convolved with the spatial-major `kernel` (HWIO in 2-D) on `group`'s window,
    dilation and padding, at `config`'s stride (eq. 1)."""
    padding = group.padding_pairs
    reach = [(size - 1) * rate for size, rate in zip(group.kernel_size, group.dilation)]
    if any(side > limit for pair, limit in zip(padding, reach) for side in pair):
        # XLA's CPU float32 input gradient is wrong for padding beyond the kernel's reach
        # (tests/test_jax.py::test_padding_wider_than_the_kernel_in_float32): pad here.
        x, padding = pad_input(x, config, padding), ((0, 0),) * config.spatial_dims
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=config.stride,
        padding=padding,
        rhs_dilation=group.dilation,
        dimension_numbers=_dimension_numbers(config.spatial_dims),
    )


def stack_responses(responses, config: LRLCConfig) -> jax.Array:
    """z (B, *out, K, C_out) from each of `config.basis_groups`' responses, the K axis in
    basis order: a mixed basis's groups need not be contiguous (spec section 16.3)."""
    check_config(config, "stack_responses")
    groups = config.basis_groups
    if not isinstance(responses, (list, tuple)) or len(responses) != len(groups):
        raise ValueError(
            f"stack_responses: expected a list of {len(groups)} responses, one per basis "
            f"group, got {type(responses).__name__} of {len(responses)}"
            if isinstance(responses, (list, tuple))
            else f"stack_responses: responses must be a list, got {type(responses).__name__}"
        )
    for n, (group, response) in enumerate(zip(groups, responses)):
        response = as_floating(response, f"stack_responses: responses[{n}]")
        if response.ndim != config.spatial_dims + 3 or response.shape[-2] != len(group.members):
            raise ValueError(
                f"stack_responses: responses[{n}] has shape {response.shape}; expected "
                f"(B, {', '.join(map(str, config.output_size))}, {len(group.members)}, C_out) "
                f"for bases {group.members}"
            )
    if len(responses) == 1:
        return responses[0]
    order = [k for group in config.basis_groups for k in group.members]
    z = jnp.concatenate(responses, axis=-2)
    if order == sorted(order):
        return z
    return z[..., np.argsort(order), :]


def basis_responses(x, basis, config: LRLCConfig) -> jax.Array:
    """Algorithm 1, step 1: z[b, *i, k, o] = (x * F^(k))[b, *i, o] for every basis member,
    as one convolution with K * C_out output channels, K outer (spec section 4.3); a mixed
    basis (`basis` the list of `basis_members`) has one per group of equal kernel size and
    dilation (spec section 16.3)."""
    check_config(config, "basis_responses")
    x = check_input(x, config, name="basis_responses: x")
    _check_basis(basis, config, "basis_responses")
    responses = []
    for group in config.basis_groups:
        stacked = group_basis(basis, group)
        members, *window, c_in, c_out = stacked.shape
        # (|G|, *kernel, C_in, C_out) -> (*kernel, C_in, |G| C_out): members outer in channels.
        n = len(window)
        axes = (*range(1, n + 2), 0, n + 2)
        kernel = jnp.transpose(stacked, axes).reshape(*window, c_in, members * c_out)
        z = _convolution(x, kernel, config, group)
        responses.append(z.reshape(*z.shape[:-1], members, c_out))
    return stack_responses(responses, config)


def combine(per_member, weights, bias) -> jax.Array:
    """Algorithm 1, step 2: y = sum_k w_k z_k + B (eqs. 2 and 5). `per_member` is z (B, *out,
    K, C_out), `weights` (*out, K) or (B, *out, K); fixed ones are broadcast over the batch, so
    the contraction is a plain batched product over (b, *i), the faster form on CPU
    (docs/performance.md, 'JAX')."""
    per_member = as_floating(per_member, "combine: per_member")
    weights = as_floating(weights, "combine: weights")
    bias = as_floating(bias, "combine: bias")
    # The bias (*out, C_out), the one operand without an optional batch, fixes n.
    n = _spatial_rank(bias, 1, "combine: bias", "(*out, C_out)")
    if per_member.ndim != n + 3:
        raise ValueError(
            f"combine: per_member has shape {per_member.shape}; expected (B, *out, K, C_out) "
            f"of rank {n + 3} for bias {bias.shape}"
        )
    batch, *out, rank, c_out = per_member.shape
    shared = (*out, rank)
    if weights.shape not in (shared, (batch, *shared)):
        raise ValueError(
            f"combine: weights has shape {weights.shape}; expected {shared} or "
            f"(B, {', '.join(map(str, shared))}) for per_member {per_member.shape}"
        )
    check_shape(bias, (*out, c_out), "combine: bias")
    weights = jnp.broadcast_to(weights, (batch, *shared))
    grid = _GRID[:n]
    return jnp.einsum(f"b{grid}ko,b{grid}k->b{grid}o", per_member, weights) + bias


def _after(value, *deps) -> jax.Array:
    """`value`, unchanged, but computed only once every array in `deps` is: the predicate (a
    float32's bit count above 32) is never true, but XLA cannot know it, so it is a data
    dependency. XLA's CPU pipeline drops lax.optimization_barrier before it schedules."""
    # A whole sum, not one element: a slice of a batch-sharded array is not implemented.
    counts = [
        lax.population_count(lax.bitcast_convert_type(jnp.sum(d, dtype=jnp.float32), jnp.int32))
        for d in deps
    ]
    return jnp.where(sum(counts) > 32 * len(deps), jnp.zeros_like(value), value)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _algorithm1(x, basis, weights, bias, config: LRLCConfig) -> jax.Array:
    """Algorithm 1 on checked arguments: `basis_responses`, then `combine` (weights and bias
    in the working dtype). Its backward is XLA's own but ordered: dz = w dy is written only
    after y and dw, z's last readers, so z is dead by then; left to itself XLA computes y last
    and holds z beside dz's two copies (docs/performance.md, 'JAX', target 5). Reverse mode
    only, as for every custom_vjp: jax.jvp here raises."""
    return combine(_widened(basis_responses(x, basis, config)), weights, bias)


def _algorithm1_forward(x, basis, weights, bias, config: LRLCConfig):
    z = basis_responses(x, basis, config)
    y = combine(_widened(z), weights, bias)
    return y, (x, basis, weights, z, y)


def _algorithm1_backward(config: LRLCConfig, residuals, dy):
    x, basis, weights, z, y = residuals
    grid = _GRID[: config.spatial_dims]
    dweights = jnp.einsum(f"b{grid}ko,b{grid}o->b{grid}k", _widened(z), dy)
    if weights.ndim == z.ndim - 2:  # fixed weights (*out, K), shared by the batch
        dweights = dweights.sum(axis=0)
    ordered = _after(weights, y, dweights)
    dz = (ordered[..., :, None] * dy[..., None, :]).astype(z.dtype)
    (dx,) = jax.linear_transpose(lambda x: basis_responses(x, basis, config), x)(dz)
    (dbasis,) = jax.linear_transpose(lambda b: basis_responses(x, b, config), basis)(dz)
    return dx, dbasis, dweights.astype(weights.dtype), dy.sum(axis=0).astype(y.dtype)


_algorithm1.defvjp(_algorithm1_forward, _algorithm1_backward)


def _single_convolution(x, params, config: LRLCConfig) -> jax.Array:
    """Algorithm 1 when w = 1 (`weights_are_ones`): one C_out convolution plus the bias map
    (a mixed basis of one: `basis.0` on its own geometry). The weights are never formed (XLA
    does not fold a one-member softmax to 1, so g would still run), and the logits' or g's
    gradients come out as exact zeros."""
    wide = _widened(params)
    (group,) = config.basis_groups
    kernel = group_basis(basis_members(params, config), group)[0]
    y = _convolution(x, kernel, config, group)
    return _widened(y) + bias_map(wide, config, _working_dtype(x.dtype))


def position_banks(weights, basis) -> jax.Array:
    """Filter banks bank_p = sum_k w[p, k] F^(k) (eq. 2) as (..., prod(out), prod(kernel) C_in,
    C_out) from weights (..., *out, K) and the basis (K, *kernel, C_in, C_out); in 2-D
    (..., H_out W_out, kh kw C_in, C_out) from (..., H_out, W_out, K)."""
    weights = as_floating(weights, "position_banks: weights")
    basis = as_floating(basis, "position_banks: basis")
    n = basis.ndim - 3
    if n not in SPATIAL_DIMS or weights.ndim < n + 1 or weights.shape[-1] != basis.shape[0]:
        raise ValueError(
            f"position_banks: weights {weights.shape} and basis {basis.shape}; expected "
            "(..., *out, K) and (K, *kernel, C_in, C_out) with one K and 1, 2 or 3 spatial axes"
        )
    rank, c_out = basis.shape[0], basis.shape[-1]
    lead, out = weights.shape[: -n - 1], weights.shape[-n - 1 : -1]
    flat = weights.reshape(*lead, math.prod(out), rank)
    depth = math.prod(basis.shape[1:-1])
    return (flat @ basis.reshape(rank, -1)).reshape(*flat.shape[:-1], depth, c_out)


def forward(x, params, config: LRLCConfig, *, strategy: str = "auto") -> jax.Array:
    """y[b, i, j, o] = sum_k w[i, j, k] (x * F^(k))[b, i, j, o] + B[i, j, o] (eqs. 2-6).

    `x` is channels last: NHWC, or NLC / NDHWC for a 1-D / 3-D config (spec section 17);
    returns (B, *out, C_out) in x's dtype. `strategy`: 'conv' (Algorithm 1), 'lc' (the
    locally connected form, fixed layers only) or 'auto' (`choose_strategy`); all compute
    the same function. Pure: `config` and `strategy` are static under `jax.jit`.
    Differentiable in reverse mode (jax.grad, jax.vjp); Algorithm 1's custom backward has no
    forward mode (jax.jvp), which 'lc' and the rank-1 path keep.
    """
    check_config(config, "forward")
    x = check_input(x, config)
    params, x = _prepare(params, config, x)
    # A symbolic batch (jax.export) counts as unknown: the rule's default, never a branch on it.
    chosen = choose_strategy(config, x.shape[0], strategy)
    if chosen == "conv" and weights_are_ones(config):
        return _single_convolution(x, params, config).astype(x.dtype)
    wide, wide_x = _widened((params, x))
    weights = _weights(wide, config, wide_x)
    bias = bias_map(wide, config, weights.dtype)
    if chosen == "lc":
        banks = position_banks(weights, embedded_basis(wide, config)).astype(x.dtype)
        y = _widened(apply_banks(x, banks, config.locally_connected_config())) + bias
    else:
        y = _algorithm1(x, basis_members(params, config), weights, bias, config)
    return y.astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# Locally connected form (spec section 11)


def embedded_basis(params, config: LRLCConfig) -> jax.Array:
    """The basis on the window of `config.locally_connected_config()`, (K, *window, C_in,
    C_out): a plain basis as it is; each basis.k of a mixed one at its own taps, from (window
    padding before - its padding before) in steps of its dilation, zeros elsewhere (spec
    section 16.5, on every axis), placed by `lax.pad` with interior padding."""
    members = basis_members(params, config)
    window = config.locally_connected_config()
    if window is config:
        return members
    embedded = []
    for member, dilation, pairs in zip(members, config.dilations, config.basis_padding_pairs):
        pads = []
        for size, taps, rate, (before, _), (own_before, _) in zip(
            window.kernel_size, member.shape, dilation, window.padding_pairs, pairs
        ):
            first = before - own_before
            pads.append((first, size - first - (taps - 1) * rate - 1, rate - 1))
        pads += [(0, 0, 0), (0, 0, 0)]
        embedded.append(lax.pad(member, jnp.zeros((), member.dtype), pads))
    return jnp.stack(embedded)


def to_locally_connected(params, config: LRLCConfig, x=None):
    """Equivalent locally connected (kernel, bias): kernel[..., i, j] = sum_k w[..., i, j, k] F^(k).

    kernel is (H_out, W_out, kh, kw, C_in, C_out), or (B, H_out, W_out, ...) per example for
    an input-dependent layer (then `x` is required); bias is (H_out, W_out, C_out). In n-D,
    (*out, *window, C_in, C_out) and (*out, C_out) (spec section 17.5). The window is
    `config.locally_connected_config()`'s: a mixed basis's covers every basis's taps.
    """
    params, x = _prepare_without_layer(params, config, x, "to_locally_connected")
    wide, wide_x = _widened((params, x))
    weights = _weights(wide, config, wide_x)
    grid, taps = _GRID[: config.spatial_dims], _TAPS[: config.spatial_dims]
    subscripts = f"...{grid}k,k{taps}co->...{grid}{taps}co"
    kernel = jnp.einsum(subscripts, weights, embedded_basis(wide, config))
    dtype = _basis_dtype(params, config)
    return kernel.astype(dtype), bias_map(wide, config, weights.dtype).astype(dtype)


def locally_connected(x, kernel, bias, config: LRLCConfig) -> jax.Array:
    """y[b, i, j, o] = sum_{u, v, c} xpad[b, i s_h + u d_h, j s_w + v d_w, c] K[i, j, u, v, c, o]
    + bias[i, j, o] on the window of `config.locally_connected_config()`; the same sum over
    the n-D window in 1-D and 3-D, with K (*out, *window, C_in, C_out) and bias (*out, C_out).
    `kernel` may carry a leading batch axis (one kernel per example)."""
    check_config(config, "locally_connected")
    x = check_input(x, config)
    kernel = as_floating(kernel, "locally connected kernel")
    bias = as_floating(bias, "locally connected bias")
    check_lc_shapes(kernel.shape, bias.shape, config, batch=x.shape[0])
    n = config.spatial_dims
    shared = kernel.shape[-2 * n - 2 :]  # (*out, *window, C_in, C_out)
    positions, depth = math.prod(shared[:n]), math.prod(shared[n:-1])
    lead = kernel.shape[: kernel.ndim - len(shared)]
    banks = kernel.astype(x.dtype).reshape(*lead, positions, depth, shared[-1])
    return apply_banks(x, banks, config.locally_connected_config()) + bias.astype(x.dtype)
