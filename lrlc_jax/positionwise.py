"""The locally connected kernel (spec section 11): the input windows as position-major
patches, and every output position's filter bank applied to them in one batched product.
Strategy 'lc' and `locally_connected` both run it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from lrlc_numpy import LRLCConfig


def pad_input(x, config: LRLCConfig, pairs=None, *, spatial_first: bool = False) -> jax.Array:
    """Zero-pad `x` by `pairs`, default `config.padding_pairs` (spec section 3; 'same' may be
    asymmetric; a mixed basis pads each group by its own): NHWC, or (H, W, B, C) when
    `spatial_first`."""
    pairs = config.padding_pairs if pairs is None else pairs
    return jnp.pad(x, (*pairs, (0, 0), (0, 0)) if spatial_first else ((0, 0), *pairs, (0, 0)))


def extract_patches(x, config: LRLCConfig) -> jax.Array:
    """The input window of every output position (eq. 1), position-major: (H_out W_out, B,
    kh kw C_in) in (u, v, c) order, cut as kh kw strided slices with the batch behind the
    spatial axes, so that the batched product over positions reads contiguous rows."""
    (sh, sw), (dh, dw) = config.stride, config.dilation
    (out_h, out_w), (kh, kw) = config.output_size, config.kernel_size
    # Moved before padding, so XLA's backward folds every window without a transpose each.
    padded = pad_input(jnp.transpose(x, (1, 2, 0, 3)), config, spatial_first=True)
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


def apply_banks(x, banks, config: LRLCConfig) -> jax.Array:
    """y[b, p, o] = sum_f patch_p[b, f] bank_p[f, o] for all output positions p at once: the
    arithmetic of one convolution with C_out outputs. `banks` is (H_out W_out, kh kw C_in,
    C_out), or (B, H_out W_out, ...) per example. No bias; returns (B, H_out, W_out, C_out)."""
    out_h, out_w = config.output_size
    spec = "pbf,pfo->bpo" if banks.ndim == 3 else "pbf,bpfo->bpo"
    y = jnp.einsum(spec, extract_patches(x, config), banks)
    return y.reshape(x.shape[0], out_h, out_w, -1)
