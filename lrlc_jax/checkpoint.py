"""Neutral parameter dicts and checkpoints for JAX parameters (spec section 13).

The file format and its validation are `lrlc_numpy`'s; this module converts arrays, so a
checkpoint written here is the same .safetensors file every other lrlc package reads. Every
tensor keeps its stored dtype, bfloat16 and float16 included. JAX holds float64 only with
`jax_enable_x64`; without it a float64 tensor is refused with a message, or, on the explicit
opt-in `float64_as_float32=True`, rounded to float32 with a warning: never silently.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

import lrlc_numpy
from lrlc_numpy import LRLCConfig, check_config, check_params

from .positionwise import as_floating, floating_dtype

_X64_HINT = "jax.config.update('jax_enable_x64', True)"


def neutral_params(params: Mapping) -> dict[str, np.ndarray]:
    """`params` (neutral names, canonical layouts) as NumPy arrays of their own dtypes
    (bfloat16 as ml_dtypes.bfloat16, which `save_checkpoint` stores as bfloat16)."""
    if not isinstance(params, Mapping):
        raise TypeError(f"neutral_params: params must be a mapping, got {type(params).__name__}")
    return {name: np.asarray(as_floating(v, f"params[{name!r}]")) for name, v in params.items()}


def _holdable(arrays: Mapping, where: str, float64_as_float32: bool) -> dict:
    """`arrays` (name -> NumPy array) with float64 ones refused, or on the opt-in rounded to
    float32 with a warning, when JAX cannot hold float64 (x64 off)."""
    wide = [name for name, a in arrays.items() if np.dtype(a.dtype) == np.float64]
    if not wide or jax.config.jax_enable_x64:
        return dict(arrays)
    if not float64_as_float32:
        raise ValueError(
            f"{where}: tensors {wide} are float64, which JAX holds only with jax_enable_x64 "
            f"({_X64_HINT}); enable it, or pass float64_as_float32=True to round them to "
            "float32 (a warning says so)"
        )
    warnings.warn(
        f"{where}: tensors {wide} are float64 and jax_enable_x64 is off: rounded to float32 "
        "(float64_as_float32=True)",
        UserWarning,
        stacklevel=3,
    )
    return {name: a.astype(np.float32) if name in wide else a for name, a in arrays.items()}


def load_neutral_params(
    params: Mapping, config: LRLCConfig, dtype=None, *, float64_as_float32: bool = False
) -> dict[str, jax.Array]:
    """`params` as JAX arrays after checking names, shapes and float dtypes against `config`;
    cast to `dtype` when given, else each keeps its own. float64 needs `jax_enable_x64`
    (otherwise ValueError, or float32 with a warning under `float64_as_float32`)."""
    check_config(config, "load_neutral_params")
    check_params(params, config)
    if dtype is not None:
        dtype = floating_dtype(dtype, "load_neutral_params")
    # NumPy arrays stay on the host until checked: jnp.asarray would make float64 float32.
    arrays = {
        name: value if isinstance(value, jax.Array) else np.asarray(value)
        for name, value in params.items()
    }
    if dtype is None:
        arrays = _holdable(arrays, "load_neutral_params", float64_as_float32)
    arrays = {name: as_floating(a, f"params[{name!r}]") for name, a in arrays.items()}
    return arrays if dtype is None else {name: a.astype(dtype) for name, a in arrays.items()}


def save_checkpoint(path, params: Mapping, config: LRLCConfig) -> None:
    """Write `params` (neutral names, canonical layouts) and `config` to `path` atomically,
    each tensor in its own dtype."""
    check_config(config, "save_checkpoint")
    check_params(params, config, what="save_checkpoint: params")
    lrlc_numpy.save_params(path, neutral_params(params), config)


def load_checkpoint(
    path, *, float64_as_float32: bool = False
) -> tuple[dict[str, jax.Array], LRLCConfig]:
    """Read a neutral checkpoint as (params, config), each array in its stored dtype (float16,
    bfloat16, float32, float64). Raises on a missing config or on missing, extra or mis-shaped
    tensors; float64 without jax_enable_x64 as in `load_neutral_params`."""
    params, config, stored = lrlc_numpy.read_checkpoint(path)
    # read_checkpoint hands bfloat16 over as float32 holding the same values: exact to cast.
    arrays = {
        name: value.astype(jnp.bfloat16) if stored[name] == "bfloat16" else value
        for name, value in params.items()
    }
    where = f"checkpoint {os.fspath(path)}"
    arrays = _holdable(arrays, where, float64_as_float32)
    return {name: jnp.asarray(value) for name, value in arrays.items()}, config


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
