"""Neutral parameter dicts and checkpoints for JAX parameters (spec section 13).

The file format and its validation are `lrlc_numpy`'s; this module converts arrays, so a
checkpoint written here is the same .safetensors file every other lrlc package reads.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

import lrlc_numpy
from lrlc_numpy import LRLCConfig, check_params

from .functional import _as_floating, _check_config


def neutral_params(params: Mapping) -> dict[str, np.ndarray]:
    """`params` (neutral names, canonical layouts) as NumPy arrays."""
    if not isinstance(params, Mapping):
        raise TypeError(f"neutral_params: params must be a mapping, got {type(params).__name__}")
    return {name: np.asarray(value) for name, value in params.items()}


def load_neutral_params(params: Mapping, config: LRLCConfig, dtype=None) -> dict[str, jax.Array]:
    """`params` as JAX arrays after checking names, shapes and float dtypes against `config`;
    cast to `dtype` when given, else each keeps its own (float64 needs `jax_enable_x64`)."""
    _check_config(config)
    check_params(params, config)
    if dtype is not None and not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"load_neutral_params: dtype must be a floating type, got {dtype!r}")
    arrays = {name: _as_floating(value, f"params[{name!r}]") for name, value in params.items()}
    return arrays if dtype is None else {name: a.astype(dtype) for name, a in arrays.items()}


def save_checkpoint(path, params: Mapping, config: LRLCConfig) -> None:
    """Write `params` (neutral names, canonical layouts) and `config` to `path`."""
    if isinstance(params, Mapping):
        params = neutral_params(params)
    lrlc_numpy.save_params(path, params, config)


def load_checkpoint(path) -> tuple[dict[str, jax.Array], LRLCConfig]:
    """Read a neutral checkpoint as (params, config); raises ValueError on a missing config or
    on missing, extra or mis-shaped tensors. Arrays keep the file's dtype."""
    params, config = lrlc_numpy.load_params(path)
    return load_neutral_params(params, config), config


def _deprecated_alias(replacement, old_name: str):
    """`replacement` under its old name, warning on every call (kept for one release)."""
    message = f"lrlc_jax.{old_name} is deprecated; use lrlc_jax.{replacement.__name__}"

    @functools.wraps(replacement)
    def alias(*args, **kwargs):
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        return replacement(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old_name
    alias.__doc__ = f"Deprecated: {message}."
    return alias


save_params = _deprecated_alias(save_checkpoint, "save_params")
load_params = _deprecated_alias(load_checkpoint, "load_params")
