"""The locally connected kernel (spec section 11): the input windows as position-major
patches, and every output position's filter bank applied to them in one batched product.
Strategy 'lc' and `locally_connected` both run it. Also the argument checks every lrlc_jax
module shares (spec section 14): they read shapes and dtypes only, so they work on tracers."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jax import lax

from lrlc_numpy import LRLCConfig, check_config, check_input_shape

# The dtypes lrlc_jax computes in; others (integers, float8, complex) are refused by name.
FLOAT_DTYPES = tuple(jnp.dtype(name) for name in ("float16", "bfloat16", "float32", "float64"))
_FLOAT_NAMES = ", ".join(dtype.name for dtype in FLOAT_DTYPES)


def _to_array(value, name: str) -> jax.Array:
    if value is None or isinstance(value, (str, bytes, Mapping)):
        raise TypeError(f"{name} must be an array, got {type(value).__name__}")
    try:
        return jnp.asarray(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be an array, got {type(value).__name__} ({err})") from None


def _check_dtype(array, name: str) -> jax.Array:
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have a floating dtype ({_FLOAT_NAMES}), got {array.dtype}")
    return array


def as_floating(value, name: str) -> jax.Array:
    """`value` (an array or array-like) as a JAX array of one of FLOAT_DTYPES; TypeError
    naming `name` otherwise. Never casts."""
    return _check_dtype(_to_array(value, name), name)


def floating_dtype(dtype, where: str) -> jnp.dtype:
    """`dtype` as one of FLOAT_DTYPES that this JAX can hold: float64 needs jax_enable_x64,
    without which JAX would silently make it float32. TypeError naming `where` otherwise."""
    try:
        resolved = None if dtype is None else jnp.dtype(dtype)
    except TypeError:
        resolved = None
    # `is None` first: NumPy's dtype('float64') == None is True.
    if resolved is None or resolved not in FLOAT_DTYPES:
        raise TypeError(f"{where}: dtype must be one of {_FLOAT_NAMES}, got {dtype!r}")
    if resolved == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            f"{where}: dtype float64 needs jax_enable_x64 (jax.config.update('jax_enable_x64', "
            "True)); without it JAX would hold float32"
        )
    return resolved


def check_input(x, config: LRLCConfig, *, name: str = "x") -> jax.Array:
    """`x` as a JAX array after checking rank, channels and grid against `config`, then its
    dtype (spec section 14). The batch may be 0 or, under jax.export, symbolic."""
    check_config(config, f"check_input ({name})")
    x = _to_array(x, name)
    check_input_shape(x.shape, config, name=name)
    return _check_dtype(x, name)


def check_shape(array, expected, name: str) -> None:
    """Raise ValueError unless `array.shape == expected` (a tuple of ints)."""
    if tuple(array.shape) != tuple(expected):
        raise ValueError(f"{name} has shape {tuple(array.shape)}; expected {tuple(expected)}")


def _check_geometry(config, where: str) -> None:
    """`config` must be an LRLCConfig with one window (a mixed basis has one per group: its
    locally connected layer is `config.locally_connected_config()`)."""
    check_config(config, where)
    if config.mixed:
        raise ValueError(
            f"{where}: config has a mixed basis, which has no single window; pass "
            "config.locally_connected_config() (the window covering every basis)"
        )


def pad_input(x, config: LRLCConfig, pairs=None, *, spatial_first: bool = False) -> jax.Array:
    """Zero-pad `x` by `pairs`, default `config.padding_pairs` (spec section 3; 'same' may be
    asymmetric; a mixed basis pads each group by its own): channels last (B, *grid, C), NHWC
    in 2-D, or (*grid, B, C) when `spatial_first`."""
    check_config(config, "pad_input")
    if pairs is None:
        _check_geometry(config, "pad_input")
        pairs = config.padding_pairs
    x = as_floating(x, "pad_input: x")
    rank = config.spatial_dims + 2
    if x.ndim != rank:
        raise ValueError(
            f"pad_input: x must have rank {rank} for a {config.spatial_dims}-D layer, got "
            f"shape {x.shape}"
        )
    return jnp.pad(x, (*pairs, (0, 0), (0, 0)) if spatial_first else ((0, 0), *pairs, (0, 0)))


def extract_patches(x, config: LRLCConfig) -> jax.Array:
    """The input window of every output position (eq. 1), position-major: (H_out W_out, B,
    kh kw C_in) in (u, v, c) order, cut as kh kw strided slices with the batch behind the
    spatial axes, so that the batched product over positions reads contiguous rows. In n-D,
    (prod(out), B, prod(kernel) C_in) with the taps in row-major order, then the channel."""
    _check_geometry(config, "extract_patches")
    x = check_input(x, config, name="extract_patches: x")
    n = config.spatial_dims
    stride, dilation = config.stride, config.dilation
    out, kernel = config.output_size, config.kernel_size
    # Moved before padding, so XLA's backward folds every window without a transpose each.
    spatial_first = jnp.transpose(x, (*range(1, n + 1), 0, n + 1))
    padded = pad_input(spatial_first, config, spatial_first=True)
    windows = [
        lax.slice(
            padded,
            (*(u * d for u, d in zip(taps, dilation)), 0, 0),
            (
                *(u * d + (size - 1) * s + 1 for u, d, size, s in zip(taps, dilation, out, stride)),
                *padded.shape[n:],
            ),
            (*stride, 1, 1),
        )
        for taps in itertools.product(*map(range, kernel))
    ]
    stacked = jnp.stack(windows, axis=n + 1)  # (*out, B, prod(kernel), C_in)
    # Sizes written out: -1 is ambiguous for an empty batch.
    return stacked.reshape(math.prod(out), x.shape[0], math.prod(kernel) * x.shape[-1])


def apply_banks(x, banks, config: LRLCConfig) -> jax.Array:
    """y[b, p, o] = sum_f patch_p[b, f] bank_p[f, o] for all output positions p at once: the
    arithmetic of one convolution with C_out outputs. `banks` is (H_out W_out, kh kw C_in,
    C_out), or (B, H_out W_out, ...) per example. No bias; returns (B, H_out, W_out, C_out).
    In n-D the positions are prod(out), the depth prod(kernel) C_in, the result (B, *out,
    C_out)."""
    _check_geometry(config, "apply_banks")
    banks = as_floating(banks, "apply_banks: banks")
    out = config.output_size
    depth = math.prod(config.kernel_size) * config.in_channels
    shared = (math.prod(out), depth, config.out_channels)
    if tuple(banks.shape[-3:]) != shared or banks.ndim not in (3, 4):
        raise ValueError(
            f"apply_banks: banks has shape {tuple(banks.shape)}; expected {shared} or "
            f"(B, {', '.join(map(str, shared))})"
        )
    spec = "pbf,pfo->bpo" if banks.ndim == 3 else "pbf,bpfo->bpo"
    y = jnp.einsum(spec, extract_patches(x, config), banks)
    return y.reshape(x.shape[0], *out, config.out_channels)
