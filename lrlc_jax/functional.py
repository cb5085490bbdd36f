"""Low-rank locally connected layers as pure JAX functions over a dict of neutral parameters.

Each function cites the spec section (spec/SPEC.md) and equation it implements; `lrlc_numpy`
is the normative version of every formula. Data is NHWC, kernels HWIO, `basis[k, u, v, c_in,
c_out]` (a mixed basis: `basis.k[u, v, c_in, c_out]` per basis, spec section 16). The config
is an `lrlc_numpy.LRLCConfig`: hashable, so static under `jax.jit`.

Matrix products use JAX's default precision, which GPUs and TPUs may reduce for float32;
wrap calls in `jax.default_matmul_precision("highest")` for full float32 accuracy.
"""

from __future__ import annotations

import functools
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
from lrlc_numpy.config import _pair
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
    "spatial_bias_map",
    "stack_responses",
    "to_locally_connected",
]

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")

# ---------------------------------------------------------------------------------------------
# Checks (spec section 14). They read shapes and dtypes only, so they work on tracers; the
# array checks are positionwise.py's, shared by every module.

_LOGIT_NAMES = ("row_logits", "col_logits", "logits")


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
    """Unnormalised weights w~[i, j, k] of a fixed layer (eq. 3 and its variants)."""
    check_config(config, "fixed_logits")
    if config.input_dependent:
        raise ValueError("fixed_logits: an input-dependent layer's logits come from g_forward")
    names = [name for name in param_shapes(config) if name in _LOGIT_NAMES]
    params = _named_params(params, names, config, "fixed_logits")
    out_h, out_w = config.output_size
    shape = (out_h, out_w, config.rank)
    if config.combining == "rowcol":  # eq. 3: w~ = alpha_i + beta_j
        return params["row_logits"][:, None, :] + params["col_logits"][None, :, :]
    if config.combining == "row":
        return jnp.broadcast_to(params["row_logits"][:, None, :], shape)
    if config.combining == "col":
        return jnp.broadcast_to(params["col_logits"][None, :, :], shape)
    return params["logits"]


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
    """Normalised weights from checked, widened arguments: (H_out, W_out, K), or
    (B, H_out, W_out, K) predicted from x."""
    if config.input_dependent:
        logits = g_forward(x, params, config)
    else:
        logits = fixed_logits(params, config)
    return normalize_weights(logits, config.normalize)


def combining_weights(params, config: LRLCConfig, x=None) -> jax.Array:
    """Normalised combining weights w (eq. 4): (H_out, W_out, K), or (B, H_out, W_out, K)
    for an input-dependent layer, whose weights are predicted from `x` (eq. 6)."""
    params, x = _prepare_without_layer(params, config, x, "combining_weights")
    wide, wide_x = _widened((params, x))
    return _weights(wide, config, wide_x).astype(_basis_dtype(params, config))


# ---------------------------------------------------------------------------------------------
# The input-dependent network g (eq. 6; spec section 8)


def resize_bilinear(a, size) -> jax.Array:
    """Bilinear resize of NHWC `a` to `size` with aligned corners, as R_h a R_w^T. The matrices
    are `lrlc_numpy.resize_matrix`, built at trace time, so the weights are the reference's."""
    a = as_floating(a, "resize_bilinear: a")
    if a.ndim != 4:
        raise ValueError(f"resize_bilinear: a must have rank 4 (NHWC), got shape {a.shape}")
    size = _pair("size", size, "resize_bilinear")
    rows = jnp.asarray(lrlc_numpy.resize_matrix(a.shape[1], size[0]), a.dtype)
    cols = jnp.asarray(lrlc_numpy.resize_matrix(a.shape[2], size[1]), a.dtype)
    return jnp.einsum("oh,bhwc,pw->bopc", rows, a, cols)


def depthwise_conv3x3(a, kernel, bias, rate: int) -> jax.Array:
    """Depthwise 3x3 convolution with dilation `rate`, 'valid' padding, plus bias, as nine
    shifted multiply-adds: XLA's backward of a grouped convolution is slow (jax-ml/jax#13800;
    docs/performance.md, 'Targets of issue 7, JAX on CPU', target 4)."""
    if not isinstance(rate, int) or isinstance(rate, bool) or rate < 1:
        raise ValueError(f"depthwise_conv3x3: rate must be a positive int, got {rate!r}")
    a = as_floating(a, "depthwise_conv3x3: a")
    if a.ndim != 4:
        raise ValueError(f"depthwise_conv3x3: a must have rank 4 (NHWC), got shape {a.shape}")
    check_shape(as_floating(kernel, "kernel"), (3, 3, a.shape[3]), "depthwise_conv3x3: kernel")
    check_shape(as_floating(bias, "bias"), (a.shape[3],), "depthwise_conv3x3: bias")
    out_h, out_w = a.shape[1] - 2 * rate, a.shape[2] - 2 * rate
    if min(out_h, out_w) < 1:
        raise ValueError(
            f"depthwise_conv3x3: a's grid {a.shape[1:3]} is too small for a 3x3 window of "
            f"rate {rate} ('valid'); it needs at least {2 * rate + 1} per axis"
        )
    out = bias
    for u in range(3):
        for v in range(3):
            window = a[:, u * rate : u * rate + out_h, v * rate : v * rate + out_w, :]
            out = out + window * kernel[u, v]
    return out


def g_forward(x, params, config: LRLCConfig) -> jax.Array:
    """Predict logits w~ (B, H_out, W_out, K) from the input (eq. 6)."""
    check_config(config, "g_forward")
    if not config.input_dependent:
        raise ValueError("g_forward: the config is not input-dependent; it has no network g")
    names = [name for name in param_shapes(config) if name.startswith("g.")]
    params = _named_params(params, names, config, "g_forward")
    x = check_input(x, config, name="g_forward: x")
    low = jnp.einsum("bhwc,ck->bhwk", x, params["g.reduce.kernel"]) + params["g.reduce.bias"]
    branches = [low, jnp.mean(low, axis=(1, 2), keepdims=True)]
    for r in config.g_dilations:
        kernel, bias = params[f"g.dilated{r}.kernel"], params[f"g.dilated{r}.bias"]
        branches.append(depthwise_conv3x3(low, kernel, bias, r))
    cat = jnp.concatenate([resize_bilinear(b, config.output_size) for b in branches], axis=-1)
    squeeze = jax.nn.relu(cat @ params["g.squeeze.kernel"] + params["g.squeeze.bias"])
    excite = jax.nn.sigmoid(squeeze @ params["g.excite.kernel"] + params["g.excite.bias"])
    return excite @ params["g.project.kernel"] + params["g.project.bias"]


# ---------------------------------------------------------------------------------------------
# Biases (eq. 5; spec section 7)


def _bias_params(params, config: LRLCConfig, where: str) -> dict[str, jax.Array]:
    names = [name for name in param_shapes(config) if name in BIAS_NAMES]
    return _named_params(params, names, config, where)


def spatial_bias_map(params, config: LRLCConfig) -> jax.Array | None:
    """The spatial part of eq. 5 on the output grid (H_out, W_out), or None."""
    params = _bias_params(params, config, "spatial_bias_map")
    if not config.spatial_bias:
        return None
    if config.combining == "rowcol":
        return params["row_bias"][:, None] + params["col_bias"][None, :]
    out_h, out_w = config.output_size
    if config.combining == "row":
        return jnp.broadcast_to(params["row_bias"][:, None], (out_h, out_w))
    if config.combining == "col":
        return jnp.broadcast_to(params["col_bias"][None, :], (out_h, out_w))
    return params["spatial_bias"]


def bias_map(params, config: LRLCConfig, dtype) -> jax.Array:
    """B[i, j, c] of eq. 5 as an (H_out, W_out, C_out) array (zeros when both are off)."""
    params = _bias_params(params, config, "bias_map")
    dtype = floating_dtype(dtype, "bias_map")
    out_h, out_w = config.output_size
    bias = jnp.zeros((out_h, out_w, config.out_channels), dtype)
    spatial = spatial_bias_map(params, config)
    if spatial is not None:
        bias = bias + spatial[:, :, None]
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
    """The K filter banks F^(k), indexable by k: the stacked `basis` (K, kh, kw, C_in, C_out),
    or the list of a mixed basis's `basis.k` (kh_k, kw_k, C_in, C_out) (spec section 16)."""
    params = _named_params(params, config.basis_names, config, "basis_members")
    if config.mixed:
        return [params[name] for name in config.basis_names]
    return params["basis"]


def group_basis(members, group: BasisGroup) -> jax.Array:
    """The banks of `group` stacked (|G|, kh, kw, C_in, C_out) in member order; a stacked plain
    basis is its one group already."""
    if isinstance(members, (list, tuple)):
        return jnp.stack([members[k] for k in group.members])
    return members


def _convolution(x, kernel, config: LRLCConfig, group: BasisGroup) -> jax.Array:
    """`x` convolved with the HWIO `kernel` on `group`'s window, dilation and padding, at
    `config`'s stride (eq. 1)."""
    padding = group.padding_pairs
    reach = [(size - 1) * rate for size, rate in zip(group.kernel_size, group.dilation)]
    if any(side > limit for pair, limit in zip(padding, reach) for side in pair):
        # XLA's CPU float32 input gradient is wrong for padding beyond the kernel's reach
        # (tests/test_jax.py::test_padding_wider_than_the_kernel_in_float32): pad here.
        x, padding = pad_input(x, config, padding), ((0, 0), (0, 0))
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=config.stride,
        padding=padding,
        rhs_dilation=group.dilation,
        dimension_numbers=_DIMENSION_NUMBERS,
    )


def stack_responses(responses, config: LRLCConfig) -> jax.Array:
    """z (B, H_out, W_out, K, C_out) from each of `config.basis_groups`' responses, the K axis
    in basis order: a mixed basis's groups need not be contiguous (spec section 16.3)."""
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
        if response.ndim != 5 or response.shape[3] != len(group.members):
            raise ValueError(
                f"stack_responses: responses[{n}] has shape {response.shape}; expected "
                f"(B, H_out, W_out, {len(group.members)}, C_out) for bases {group.members}"
            )
    if len(responses) == 1:
        return responses[0]
    order = [k for group in config.basis_groups for k in group.members]
    z = jnp.concatenate(responses, axis=3)
    if order == sorted(order):
        return z
    return z[:, :, :, np.argsort(order)]


def basis_responses(x, basis, config: LRLCConfig) -> jax.Array:
    """Algorithm 1, step 1: z[b, i, j, k, o] = (x * F^(k))[b, i, j, o] for every basis member,
    as one convolution with K * C_out output channels, K outer (spec section 4.3); a mixed
    basis (`basis` the list of `basis_members`) has one per group of equal kernel size and
    dilation (spec section 16.3)."""
    check_config(config, "basis_responses")
    x = check_input(x, config, name="basis_responses: x")
    _check_basis(basis, config, "basis_responses")
    responses = []
    for group in config.basis_groups:
        stacked = group_basis(basis, group)
        members, kh, kw, c_in, c_out = stacked.shape
        kernel = jnp.transpose(stacked, (1, 2, 3, 0, 4)).reshape(kh, kw, c_in, members * c_out)
        z = _convolution(x, kernel, config, group)
        responses.append(z.reshape(*z.shape[:3], members, c_out))
    return stack_responses(responses, config)


def combine(per_member, weights, bias) -> jax.Array:
    """Algorithm 1, step 2: y = sum_k w_k z_k + B (eqs. 2 and 5). `weights` is (H_out, W_out, K)
    or (B, H_out, W_out, K); fixed ones are broadcast over the batch, so the contraction is a
    plain batched product over (b, i, j), the faster form on CPU (docs/performance.md, 'JAX')."""
    per_member = as_floating(per_member, "combine: per_member")
    weights = as_floating(weights, "combine: weights")
    bias = as_floating(bias, "combine: bias")
    if per_member.ndim != 5:
        raise ValueError(
            f"combine: per_member has shape {per_member.shape}; expected (B, H_out, W_out, K, "
            "C_out)"
        )
    batch, out_h, out_w, rank, c_out = per_member.shape
    if weights.shape not in ((out_h, out_w, rank), (batch, out_h, out_w, rank)):
        raise ValueError(
            f"combine: weights has shape {weights.shape}; expected {(out_h, out_w, rank)} or "
            f"(B, {out_h}, {out_w}, {rank}) for per_member {per_member.shape}"
        )
    check_shape(bias, (out_h, out_w, c_out), "combine: bias")
    weights = jnp.broadcast_to(weights, (per_member.shape[0], *weights.shape[-3:]))
    return jnp.einsum("bijko,bijk->bijo", per_member, weights) + bias


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
    dweights = jnp.einsum("bijko,bijo->bijk", _widened(z), dy)
    if weights.ndim == 3:  # fixed weights, shared by the batch
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
    """Filter banks bank_p = sum_k w[p, k] F^(k) (eq. 2) as (..., H_out W_out, kh kw C_in,
    C_out) from weights (..., H_out, W_out, K) and the basis (K, kh, kw, C_in, C_out)."""
    weights = as_floating(weights, "position_banks: weights")
    basis = as_floating(basis, "position_banks: basis")
    if basis.ndim != 5 or weights.ndim < 3 or weights.shape[-1] != basis.shape[0]:
        raise ValueError(
            f"position_banks: weights {weights.shape} and basis {basis.shape}; expected "
            "(..., H_out, W_out, K) and (K, kh, kw, C_in, C_out) with one K"
        )
    rank, kh, kw, c_in, c_out = basis.shape
    flat = weights.reshape(*weights.shape[:-3], weights.shape[-3] * weights.shape[-2], rank)
    return (flat @ basis.reshape(rank, -1)).reshape(*flat.shape[:-1], kh * kw * c_in, c_out)


def forward(x, params, config: LRLCConfig, *, strategy: str = "auto") -> jax.Array:
    """y[b, i, j, o] = sum_k w[i, j, k] (x * F^(k))[b, i, j, o] + B[i, j, o] (eqs. 2-6).

    `x` is NHWC; returns (B, H_out, W_out, C_out) in x's dtype. `strategy`: 'conv' (Algorithm
    1), 'lc' (the locally connected form, fixed layers only) or 'auto' (`choose_strategy`);
    all compute the same function. Pure: `config` and `strategy` are static under `jax.jit`.
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
    """The basis on the window of `config.locally_connected_config()`, (K, kh, kw, C_in,
    C_out): a plain basis as it is; each basis.k of a mixed one at its own taps, from (window
    padding before - its padding before) in steps of its dilation, zeros elsewhere (spec
    section 16.5), placed by `lax.pad` with interior padding."""
    members = basis_members(params, config)
    window = config.locally_connected_config()
    if window is config:
        return members
    (kh, kw), ((top, _), (left, _)) = window.kernel_size, window.padding_pairs
    embedded = []
    for member, (dh, dw), ((pad_top, _), (pad_left, _)) in zip(
        members, config.dilations, config.basis_padding_pairs
    ):
        row, col = top - pad_top, left - pad_left
        rows, cols = row + (member.shape[0] - 1) * dh + 1, col + (member.shape[1] - 1) * dw + 1
        pads = ((row, kh - rows, dh - 1), (col, kw - cols, dw - 1), (0, 0, 0), (0, 0, 0))
        embedded.append(lax.pad(member, jnp.zeros((), member.dtype), pads))
    return jnp.stack(embedded)


def to_locally_connected(params, config: LRLCConfig, x=None):
    """Equivalent locally connected (kernel, bias): kernel[..., i, j] = sum_k w[..., i, j, k] F^(k).

    kernel is (H_out, W_out, kh, kw, C_in, C_out), or (B, H_out, W_out, ...) per example for
    an input-dependent layer (then `x` is required); bias is (H_out, W_out, C_out). The window
    is `config.locally_connected_config()`'s: a mixed basis's covers every basis's taps.
    """
    params, x = _prepare_without_layer(params, config, x, "to_locally_connected")
    wide, wide_x = _widened((params, x))
    weights = _weights(wide, config, wide_x)
    kernel = jnp.einsum("...ijk,kuvco->...ijuvco", weights, embedded_basis(wide, config))
    dtype = _basis_dtype(params, config)
    return kernel.astype(dtype), bias_map(wide, config, weights.dtype).astype(dtype)


def locally_connected(x, kernel, bias, config: LRLCConfig) -> jax.Array:
    """y[b, i, j, o] = sum_{u, v, c} xpad[b, i s_h + u d_h, j s_w + v d_w, c] K[i, j, u, v, c, o]
    + bias[i, j, o] on the window of `config.locally_connected_config()`. `kernel` may carry
    a leading batch axis (one kernel per example)."""
    check_config(config, "locally_connected")
    x = check_input(x, config)
    kernel = as_floating(kernel, "locally connected kernel")
    bias = as_floating(bias, "locally connected bias")
    check_lc_shapes(kernel.shape, bias.shape, config, batch=x.shape[0])
    positions, depth = math.prod(kernel.shape[-6:-4]), math.prod(kernel.shape[-4:-1])
    banks = kernel.astype(x.dtype).reshape(*kernel.shape[:-6], positions, depth, kernel.shape[-1])
    return apply_banks(x, banks, config.locally_connected_config()) + bias.astype(x.dtype)
