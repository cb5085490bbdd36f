"""Neutral checkpoints for JAX parameters (spec section 13).

The file handling and validation are `lrlc_numpy`'s; this module only converts arrays, so a
checkpoint written here is the same .safetensors file every other lrlc package reads.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

import lrlc_numpy
from lrlc_numpy import LRLCConfig


def save_params(path, params: Mapping, config: LRLCConfig) -> None:
    """Write `params` (neutral names, canonical layouts) and `config` to `path`."""
    if isinstance(params, Mapping):
        params = {name: np.asarray(value) for name, value in params.items()}
    lrlc_numpy.save_params(path, params, config)


def load_params(path) -> tuple[dict[str, jax.Array], LRLCConfig]:
    """Read a neutral checkpoint as (params, config); raises ValueError on a missing config or
    on missing, extra or mis-shaped tensors. Arrays keep the file's dtype (float64 needs
    `jax_enable_x64`; without it JAX stores them as float32)."""
    params, config = lrlc_numpy.load_params(path)
    return {name: jnp.asarray(value) for name, value in params.items()}, config
