"""Low-rank locally connected layers as pure JAX functions over a dict of neutral parameters.

Each function cites the spec section (spec/SPEC.md) and paper equation it implements; the
NumPy reference `lrlc_numpy` is the normative version of every formula here. Data is NHWC,
kernels HWIO, `basis[k, u, v, c_in, c_out]`. The configuration is an `lrlc_numpy.LRLCConfig`:
frozen and hashable, so it is a static argument under `jax.jit`.

Matrix products use JAX's default precision; on GPUs and TPUs that may be reduced for float32
(TF32, bfloat16 passes). Wrap calls in `jax.default_matmul_precision("highest")` for full
float32 accuracy.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import lrlc_numpy
from lrlc_numpy import (
    LRLCConfig,
    check_input_shape,
    check_lc_shapes,
    check_params,
    initial_value,
    param_shapes,
    working_dtype_name,
)
from lrlc_numpy.reference import L2_FLOOR
from lrlc_numpy.strategy import (
    STRATEGIES,  # noqa: F401 (re-exported)
    CostModel,
    weights_are_ones,
)

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")

# ---------------------------------------------------------------------------------------------
# Input checks (spec section 14). They read shapes and dtypes only, so they work on tracers.


def _check_config(config) -> None:
    if not isinstance(config, LRLCConfig):
        raise TypeError(f"config must be an lrlc_numpy.LRLCConfig, got {type(config).__name__}")


def _as_floating(array, name: str) -> jax.Array:
    """`array` as a JAX array, which must have a floating dtype (never silently cast)."""
    array = jnp.asarray(array)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating dtype, got {array.dtype}")
    return array


def check_input(x, config: LRLCConfig, *, name: str = "x") -> jax.Array:
    """`x` as a JAX array after checking rank, dtype, channels and grid against `config`."""
    x = _as_floating(x, name)
    check_input_shape(x.shape, config, name=name)
    return x


def _prepare(params, config: LRLCConfig, x=None):
    """Checked (params, x): params as JAX arrays in x's dtype (or their common dtype)."""
    _check_config(config)
    check_params(params, config)
    arrays = {name: _as_floating(value, f"params[{name!r}]") for name, value in params.items()}
    if x is not None:
        x = check_input(x, config)
    dtype = x.dtype if x is not None else jnp.result_type(*arrays.values())
    return {name: value.astype(dtype) for name, value in arrays.items()}, x


def _prepare_without_layer(params, config: LRLCConfig, x, caller: str):
    """`_prepare` for functions that use x only to predict weights: an input-dependent
    layer needs it; a fixed layer ignores it (after checking it) and keeps the params' dtype."""
    _check_config(config)
    if config.input_dependent:
        if x is None:
            raise ValueError(f"{caller}: an input-dependent layer needs the input x")
        return _prepare(params, config, x)
    if x is not None:  # not needed, but a wrong input is still an error
        check_input(x, config)
    return _prepare(params, config)


def _working_dtype(dtype) -> jnp.dtype:
    return jnp.dtype(working_dtype_name(jnp.dtype(dtype).name))


def _widened(tree):
    """`tree`'s arrays in their working dtype (spec section 15.4): all but the K * C_out
    convolution runs there, so 16-bit layers round only what they return."""
    return jax.tree.map(lambda a: a.astype(_working_dtype(a.dtype)), tree)


# ---------------------------------------------------------------------------------------------
# Combining weights (eqs. 3, 4 and 6; spec sections 5-6)


def _fixed_logits(params, config: LRLCConfig) -> jax.Array:
    """Unnormalised weights w~[i, j, k] of a fixed layer (eq. 3 and its variants)."""
    out_h, out_w = config.output_size
    shape = (out_h, out_w, config.rank)
    if config.combining == "rowcol":  # eq. 3: w~ = alpha_i + beta_j
        return params["row_logits"][:, None, :] + params["col_logits"][None, :, :]
    if config.combining == "row":
        return jnp.broadcast_to(params["row_logits"][:, None, :], shape)
    if config.combining == "col":
        return jnp.broadcast_to(params["col_logits"][None, :, :], shape)
    return params["logits"]


def _normalize(logits, mode: str) -> jax.Array:
    """Normalise over the last axis K (eq. 4 for 'softmax'; spec section 6)."""
    if mode == "softmax":
        return jax.nn.softmax(logits, axis=-1)
    if mode == "l2":
        squares = jnp.sum(logits**2, axis=-1, keepdims=True)
        return logits / jnp.sqrt(jnp.maximum(squares, L2_FLOOR))
    return logits


def _weights(params, config: LRLCConfig, x) -> jax.Array:
    """Normalised weights: (H_out, W_out, K), or (B, H_out, W_out, K) predicted from x.
    Takes and returns working precision (`_widened`)."""
    logits = (
        _g_logits(x, params, config) if config.input_dependent else _fixed_logits(params, config)
    )
    return _normalize(logits, config.normalize)


def combining_weights(params, config: LRLCConfig, x=None) -> jax.Array:
    """Normalised combining weights w (eq. 4): (H_out, W_out, K), or (B, H_out, W_out, K)
    for an input-dependent layer, whose weights are predicted from `x` (eq. 6)."""
    params, x = _prepare_without_layer(params, config, x, "combining_weights")
    wide, wide_x = _widened((params, x))
    return _weights(wide, config, wide_x).astype(params["basis"].dtype)


# ---------------------------------------------------------------------------------------------
# The input-dependent network g (eq. 6; spec section 8)


def resize_bilinear(a, size) -> jax.Array:
    """Bilinear resize of NHWC `a` to `size` with aligned corners, as R_h a R_w^T.

    The interpolation matrices are `lrlc_numpy.resize_matrix`, built with NumPy at trace time
    (shapes are static), so the weights are the reference's to the last bit.
    """
    rows = jnp.asarray(lrlc_numpy.resize_matrix(a.shape[1], size[0]), a.dtype)
    cols = jnp.asarray(lrlc_numpy.resize_matrix(a.shape[2], size[1]), a.dtype)
    return jnp.einsum("oh,bhwc,pw->bopc", rows, a, cols)


def _depthwise_conv3x3(a, kernel, bias, rate: int) -> jax.Array:
    """Depthwise 3x3 convolution with dilation `rate`, 'valid' padding, plus bias.

    Written as nine shifted multiply-adds, which XLA fuses into one elementwise loop and
    differentiates into slices and pads. A depthwise `conv_general_dilated`
    (feature_group_count = channels) computes the same, but its backward is slow in XLA
    (jax-ml/jax#13800 on CUDA; on this project's CPU the four branches' forward+backward took
    25 ms at K = 1 and 540 ms at K = 16, batch 64, 32x32, against 8.5 and 154 ms this way).
    """
    out_h, out_w = a.shape[1] - 2 * rate, a.shape[2] - 2 * rate
    out = bias
    for u in range(3):
        for v in range(3):
            window = a[:, u * rate : u * rate + out_h, v * rate : v * rate + out_w, :]
            out = out + window * kernel[u, v]
    return out


def _g_logits(x, params, config: LRLCConfig) -> jax.Array:
    """Predict logits w~ (B, H_out, W_out, K) from the input (eq. 6)."""
    low = jnp.einsum("bhwc,ck->bhwk", x, params["g.reduce.kernel"]) + params["g.reduce.bias"]
    branches = [low, jnp.mean(low, axis=(1, 2), keepdims=True)]
    for r in config.g_dilations:
        branches.append(
            _depthwise_conv3x3(low, params[f"g.dilated{r}.kernel"], params[f"g.dilated{r}.bias"], r)
        )
    cat = jnp.concatenate([resize_bilinear(b, config.output_size) for b in branches], axis=-1)
    squeeze = jax.nn.relu(cat @ params["g.squeeze.kernel"] + params["g.squeeze.bias"])
    excite = jax.nn.sigmoid(squeeze @ params["g.excite.kernel"] + params["g.excite.bias"])
    return excite @ params["g.project.kernel"] + params["g.project.bias"]


# ---------------------------------------------------------------------------------------------
# Biases (eq. 5; spec section 7)


def _bias(params, config: LRLCConfig, dtype) -> jax.Array:
    """B[i, j, c] of eq. 5 as an (H_out, W_out, C_out) array (zeros when both are off)."""
    out_h, out_w = config.output_size
    bias = jnp.zeros((out_h, out_w, config.out_channels), dtype)
    if config.spatial_bias:
        if config.combining in ("rowcol", "row"):
            bias = bias + params["row_bias"][:, None, None]
        if config.combining in ("rowcol", "col"):
            bias = bias + params["col_bias"][None, :, None]
        if config.combining == "full":
            bias = bias + params["spatial_bias"][:, :, None]
    if config.channel_bias:
        bias = bias + params["channel_bias"]
    return bias


# ---------------------------------------------------------------------------------------------
# The layer (Algorithm 1; eqs. 2-6; spec section 4)


def basis_outputs(x, basis, config: LRLCConfig) -> jax.Array:
    """Algorithm 1, step 1: z[b, i, j, k, o] = (x * F^(k))[b, i, j, o] for every basis member,
    as one convolution with K * C_out output channels."""
    rank, kh, kw, c_in, c_out = basis.shape
    kernel = jnp.transpose(basis, (1, 2, 3, 0, 4)).reshape(kh, kw, c_in, rank * c_out)
    padding = config.padding_pairs
    reach = [(size - 1) * rate for size, rate in zip(config.kernel_size, config.dilation)]
    if any(side > limit for pair, limit in zip(padding, reach) for side in pair):
        # Padding wider than the kernel's reach: XLA's CPU float32 input gradient of such a
        # convolution is wrong (jax 0.10.2: kernel width 2, padding (2, 0) gives a wrong last
        # column; float64 is right), so the zeros are added here and the conv pads nothing.
        x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
        padding = ((0, 0), (0, 0))
    z = lax.conv_general_dilated(
        x,
        kernel,
        window_strides=config.stride,
        padding=padding,
        rhs_dilation=config.dilation,
        dimension_numbers=_DIMENSION_NUMBERS,
    )
    return z.reshape(*z.shape[:3], rank, c_out)


def combine(per_member, weights, bias) -> jax.Array:
    """Algorithm 1, step 2: y = sum_k w_k z_k + B (eqs. 2 and 5) in one contraction.

    `weights` is (H_out, W_out, K) for a fixed layer or (B, H_out, W_out, K) per example.
    Fixed weights are broadcast over the batch first: with (b, i, j) leading on both sides
    the contraction is a plain batched product, several times faster on CPU than one that
    must transpose to bring the shared (i, j) axes first.
    """
    weights = jnp.broadcast_to(weights, (per_member.shape[0], *weights.shape[-3:]))
    return jnp.einsum("bijko,bijk->bijo", per_member, weights) + bias


# ---------------------------------------------------------------------------------------------
# Choosing an evaluation strategy


# Costs relative to one multiply-add of XLA's CPU convolution, fitted to this repository's
# measurements (docs/performance.md, section JAX): a multiply-add in the batched product over
# positions, one element of patches moved (built, then folded back in the backward), and a
# multiply-add forming or contracting the banks.
PRODUCT_COST = 1.1
PATCH_COST = 235.0
BANK_COST = 2.0


# This backend forms banks twice (forward, again in the backward) and contracts their
# gradient twice.
COSTS = CostModel(product=PRODUCT_COST, patch=PATCH_COST, bank=BANK_COST, bank_passes=4)

# GPUs: fitted to one H100 run (docs/performance.md, section GPU; batch 512, TF32): the
# training step in the LC form took 3.4 ms at K = 1 and 4 and 3.3 ms at K = 16, Algorithm 1
# 1.7, 3.4 and 11.7 ms, so they cross at K ~ 4. With the product's cost kept at the CPU's,
# PATCH_COST = 560 puts the rule's crossover there (the CPU's constants put it at 2.3).
GPU_COSTS = CostModel(product=PRODUCT_COST, patch=560.0, bank=BANK_COST, bank_passes=4)
PLATFORM_COSTS = {"cpu": COSTS, "gpu": GPU_COSTS}


def _costs(platform: str | None) -> CostModel:
    """The cost model for a JAX platform name ('cpu', 'gpu', ...; None: the default
    backend, where a jitted call runs unless its inputs are committed elsewhere). Platforms
    without their own constants use the CPU's."""
    return PLATFORM_COSTS.get(platform or jax.default_backend(), COSTS)


def lc_crossover(config: LRLCConfig, batch: int | None, platform: str | None = None) -> float:
    """The shared rule's crossover rank (lrlc_numpy.strategy) with this backend's costs on
    `platform`."""
    return _costs(platform).lc_crossover(config, batch)


def choose_strategy(
    config: LRLCConfig, batch: int | None, strategy: str = "auto", platform: str | None = None
) -> str:
    """The shared rule (lrlc_numpy.strategy.choose_strategy) with this backend's costs on
    `platform` (default: JAX's default backend): 'conv' or 'lc'."""
    return _costs(platform).choose_strategy(config, batch, strategy)


def apply(params, x, config: LRLCConfig, *, strategy: str = "auto") -> jax.Array:
    """y[b, i, j, o] = sum_k w[i, j, k] (x * F^(k))[b, i, j, o] + B[i, j, o] (eqs. 2-6).

    `params` maps the neutral names to arrays; `x` is NHWC of size `config.input_size`;
    returns (B, H_out, W_out, C_out) in x's dtype (16-bit inputs: see `_widened`). `strategy`
    picks the evaluation: 'conv' (Algorithm 1), 'lc' (the locally connected form, fixed
    layers only) or 'auto' (`choose_strategy`'s cost rule for JAX's default backend); all give
    the same function. Algorithm 1 at K = 1 with softmax, fixed or input-dependent, is one
    convolution with C_out outputs plus the bias map (w is identically 1; `weights_are_ones`).
    Pure, so it composes with `jax.jit` (`config` and `strategy` static), `jax.grad` and
    `jax.vmap`.
    """
    params, x = _prepare(params, config, x)
    chosen = choose_strategy(config, x.shape[0], strategy)
    wide, wide_x = _widened((params, x))
    if chosen == "conv" and weights_are_ones(config):
        # One convolution plus the bias map, without evaluating the weights (XLA does not
        # fold a softmax over one member to 1, so g would still run); the logits' or g's
        # gradients come out as exact zeros.
        per_member = basis_outputs(x, params["basis"], config)
        y = _widened(per_member[..., 0, :]) + _bias(wide, config, wide_x.dtype)
    else:
        weights = _weights(wide, config, wide_x)
        bias = _bias(wide, config, weights.dtype)
        if chosen == "lc":
            banks = _banks(weights, wide["basis"]).astype(x.dtype)
            y = _widened(positionwise(x, banks, config)) + bias
        else:
            per_member = basis_outputs(x, params["basis"], config)
            y = combine(_widened(per_member), weights, bias)
    return y.astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# Locally connected form (spec section 11)


def to_locally_connected(params, config: LRLCConfig, x=None):
    """Equivalent locally connected (kernel, bias): kernel[..., i, j] = sum_k w[..., i, j, k] F^(k).

    kernel is (H_out, W_out, kh, kw, C_in, C_out), or (B, H_out, W_out, ...) per example for
    an input-dependent layer (then `x` is required); bias is (H_out, W_out, C_out).
    """
    params, x = _prepare_without_layer(params, config, x, "to_locally_connected")
    wide, wide_x = _widened((params, x))
    weights = _weights(wide, config, wide_x)
    kernel = jnp.einsum("...ijk,kuvco->...ijuvco", weights, wide["basis"])
    dtype = params["basis"].dtype
    return kernel.astype(dtype), _bias(wide, config, weights.dtype).astype(dtype)


def patches(x, config: LRLCConfig) -> jax.Array:
    """The input window of every output position, position-major: (H_out W_out, B, kh kw C_in)
    with features in (u, v, c) order, the order of a flattened HWIO filter.

    Built from kh kw strided slices of the padded input with its batch axis moved behind
    the spatial ones, so the batched product over positions reads contiguous rows.
    """
    (top, bottom), (left, right) = config.padding_pairs
    (sh, sw), (dh, dw) = config.stride, config.dilation
    (out_h, out_w), (kh, kw) = config.output_size, config.kernel_size
    padded = jnp.pad(jnp.transpose(x, (1, 2, 0, 3)), ((top, bottom), (left, right), (0, 0), (0, 0)))
    windows = [
        lax.slice(
            padded,
            (u * dh, v * dw, 0, 0),
            (u * dh + (out_h - 1) * sh + 1, v * dw + (out_w - 1) * sw + 1, *padded.shape[2:]),
            (sh, sw, 1, 1),
        )
        for u in range(kh)
        for v in range(kw)
    ]
    stacked = jnp.stack(windows, axis=3)  # (H_out, W_out, B, kh kw, C_in)
    return stacked.reshape(out_h * out_w, x.shape[0], -1)


def positionwise(x, banks, config: LRLCConfig) -> jax.Array:
    """y[b, p, o] = sum_f patch_p[b, f] bank_p[f, o]: all output positions p as one batched
    matrix product, the arithmetic of one convolution with C_out outputs. `banks` is
    (H_out W_out, kh kw C_in, C_out), or (B, H_out W_out, ...) per example. No bias;
    returns (B, H_out, W_out, C_out)."""
    out_h, out_w = config.output_size
    spec = "pbf,pfo->bpo" if banks.ndim == 3 else "pbf,bpfo->bpo"
    y = jnp.einsum(spec, patches(x, config), banks)
    return y.reshape(x.shape[0], out_h, out_w, -1)


def _banks(weights, basis) -> jax.Array:
    """Filter banks bank_p = sum_k w[p, k] F^(k) (eq. 2) as (..., H_out W_out, kh kw C_in,
    C_out) from weights (..., H_out, W_out, K) and the basis (K, kh, kw, C_in, C_out)."""
    rank, kh, kw, c_in, c_out = basis.shape
    flat = weights.reshape(*weights.shape[:-3], -1, rank)
    return (flat @ basis.reshape(rank, -1)).reshape(*flat.shape[:-1], kh * kw * c_in, c_out)


def locally_connected(x, kernel, bias, config: LRLCConfig) -> jax.Array:
    """y[b, i, j, o] = sum_{u, v, c} xpad[b, i s_h + u d_h, j s_w + v d_w, c] K[i, j, u, v, c, o]
    + bias[i, j, o]. `kernel` may carry a leading batch axis (one kernel per example)."""
    _check_config(config)
    x = check_input(x, config)
    kernel = _as_floating(kernel, "locally connected kernel")
    bias = _as_floating(bias, "locally connected bias")
    check_lc_shapes(kernel.shape, bias.shape, config, batch=x.shape[0])
    positions = math.prod(config.output_size)
    banks = kernel.astype(x.dtype).reshape(*kernel.shape[:-6], positions, -1, config.out_channels)
    return positionwise(x, banks, config) + bias.astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# Initialisation (spec section 10)


def init(key, config: LRLCConfig, dtype=jnp.float32) -> dict[str, jax.Array]:
    """Initial parameters under the neutral names, drawn from `key` with the distributions of
    `lrlc_numpy.initial_value` (spec section 10): every fixed layer starts as a convolution."""
    _check_config(config)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"init: dtype must be a floating type, got {dtype!r}")
    return _init(key, config, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnames=("config", "dtype"))
def _init(key, config: LRLCConfig, dtype) -> dict[str, jax.Array]:
    # One uniform draw for all random tensors, scaled per tensor: each separate draw would add
    # its own copy of the random-bit generator to the program and slow its compilation.
    shapes = param_shapes(config)
    rules = {name: initial_value(name, config) for name in shapes}
    drawn = [name for name, rule in rules.items() if rule.uniform]
    sizes = [math.prod(shapes[name]) for name in drawn]
    unit = jax.random.uniform(key, (sum(sizes),), dtype, -1.0, 1.0)
    parts = dict(zip(drawn, jnp.split(unit, np.cumsum(sizes)[:-1])))
    return {
        name: (rule.limit * parts[name]).reshape(shapes[name])
        if rule.uniform
        else jnp.full(shapes[name], rule.value, dtype)
        for name, rule in rules.items()
    }
