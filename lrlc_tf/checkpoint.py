"""Neutral parameters and checkpoints for lrlc_tf (spec sections 9 and 13): dicts of
tensors or Keras variables to and from NumPy, and the neutral safetensors file, read and
written by `lrlc_numpy` so that every backend shares one format.

Every tensor keeps its dtype, bfloat16 included: TensorFlow's NumPy arrays of bfloat16 are
ml_dtypes arrays, which `lrlc_numpy.save_params` stores as bfloat16 and `load_checkpoint`
returns again (`lrlc_numpy.read_checkpoint` hands them over as exact float32).
"""

from __future__ import annotations

from collections.abc import Mapping

import ml_dtypes
import numpy as np
import tensorflow as tf

import lrlc_numpy
from lrlc_numpy import LRLCConfig
from lrlc_numpy.config import check_config

from .positionwise import as_floating

__all__ = ["assign", "load_checkpoint", "neutral_params", "save_checkpoint", "stored_dtype"]


def neutral_params(tensors) -> dict[str, np.ndarray]:
    """`tensors` (name -> tensor or variable) as NumPy arrays of their own dtypes (bfloat16 as
    ml_dtypes.bfloat16); each must be floating (TypeError naming it)."""
    if not isinstance(tensors, Mapping):
        raise TypeError(
            f"neutral_params: expected a mapping of name -> tensor, got {type(tensors).__name__}"
        )
    return {name: as_floating(v, f"params[{name!r}]").numpy() for name, v in tensors.items()}


def assign(variables, params) -> None:
    """Assign `params[name]` (names and shapes checked already) to each of `variables`, cast
    to the variable's dtype; TypeError for a non-float value."""
    for name, variable in variables.items():
        value = as_floating(params[name], f"params[{name!r}]")
        variable.assign(tf.cast(value, variable.dtype))


def save_checkpoint(path, params, config: LRLCConfig) -> None:
    """Write `params` (name -> tensor, variable or array) and `config` to `path` atomically,
    each tensor in its own dtype; names, shapes and dtypes are checked first (spec 14)."""
    check_config(config, "save_checkpoint")
    lrlc_numpy.check_params(params, config, what="save_checkpoint: params")
    lrlc_numpy.save_params(path, neutral_params(params), config)


def load_checkpoint(path) -> tuple[dict[str, np.ndarray], LRLCConfig]:
    """(params, config) from the checkpoint at `path`, validated on read; every array in its
    stored dtype (bfloat16 as ml_dtypes.bfloat16, which tf.convert_to_tensor keeps)."""
    params, config, stored = lrlc_numpy.read_checkpoint(path)
    return {
        name: value.astype(ml_dtypes.bfloat16) if stored[name] == "bfloat16" else value
        for name, value in params.items()
    }, config


def stored_dtype(params) -> str:
    """The one dtype name of every array of `params` (a checkpoint's), for a layer that holds
    one dtype. ValueError when they differ: choosing one would round or widen some tensors,
    so the caller must choose (for example a layer's `dtype=` argument)."""
    dtypes = {name: np.dtype(value.dtype).name for name, value in params.items()}
    if len(set(dtypes.values())) != 1:
        raise ValueError(
            f"the checkpoint's tensors have different dtypes {dtypes}; a layer holds one "
            "dtype, so pass the one to load them in (dtype=...)"
        )
    return next(iter(dtypes.values()))
