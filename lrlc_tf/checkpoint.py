"""Neutral parameters and checkpoints for lrlc_tf (spec sections 9 and 13): dicts of
tensors or Keras variables to and from NumPy, and the neutral safetensors file, read and
written by `lrlc_numpy` so that every backend shares one format.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

import lrlc_numpy
from lrlc_numpy import LRLCConfig

from .functional import as_floating

__all__ = ["assign", "load_checkpoint", "neutral_params", "save_checkpoint", "stored_dtype"]


def neutral_params(tensors) -> dict[str, np.ndarray]:
    """`tensors` (name -> tensor or variable) as NumPy arrays of their own dtypes."""
    return {name: tf.convert_to_tensor(v).numpy() for name, v in tensors.items()}


def assign(variables, params) -> None:
    """Assign `params[name]` (names and shapes checked already) to each of `variables`, cast
    to the variable's dtype; TypeError for a non-float value."""
    for name, variable in variables.items():
        value = as_floating(params[name], f"params[{name!r}]")
        variable.assign(tf.cast(value, variable.dtype))


def save_checkpoint(path, params, config: LRLCConfig) -> None:
    """Write `params` (name -> tensor, variable or array) and `config` to `path`."""
    arrays = {
        # NumPy has no bfloat16; float32 holds every bfloat16 value exactly.
        name: value if np.issubdtype(value.dtype, np.floating) else value.astype(np.float32)
        for name, value in neutral_params(params).items()
    }
    lrlc_numpy.save_params(path, arrays, config)


def load_checkpoint(path) -> tuple[dict[str, np.ndarray], LRLCConfig]:
    """(params, config) from the checkpoint at `path`, validated on read."""
    return lrlc_numpy.load_params(path)


def stored_dtype(params) -> str:
    """The dtype name that holds every array of `params` (a checkpoint's own dtype)."""
    return np.result_type(*params.values()).name
