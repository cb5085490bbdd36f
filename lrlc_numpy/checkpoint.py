"""The neutral checkpoint: a .safetensors file of neutral tensors plus the config as JSON
(spec section 13). Loading parses tensors and JSON only; nothing is ever unpickled."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from .config import LRLCConfig, check_params

CONFIG_KEY = "lrlc_config"


def save_params(path, params: Mapping, config: LRLCConfig) -> None:
    """Write `params` (neutral names, canonical layouts) and `config` to `path`."""
    from safetensors.numpy import save_file

    if not isinstance(config, LRLCConfig):
        raise TypeError(f"save_params: config must be an LRLCConfig, got {type(config).__name__}")
    check_params(params, config)
    tensors = {}
    for name, value in params.items():
        value = np.asarray(value)
        if not np.issubdtype(value.dtype, np.floating):
            raise TypeError(
                f"save_params: params[{name!r}] has dtype {value.dtype}; expected float"
            )
        tensors[name] = np.ascontiguousarray(value)
    save_file(tensors, os.fspath(path), metadata={CONFIG_KEY: config.to_json()})


def load_params(path) -> tuple[dict[str, np.ndarray], LRLCConfig]:
    """Read a neutral checkpoint; raise ValueError on a missing config or on missing,
    extra or mis-shaped tensors."""
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    try:
        with safe_open(path, framework="numpy") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except SafetensorError as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    if CONFIG_KEY not in metadata:
        raise ValueError(
            f"{path}: metadata has no {CONFIG_KEY!r} entry (keys {sorted(metadata)}); "
            "expected the layer config as JSON"
        )
    try:
        config = LRLCConfig.from_json(metadata[CONFIG_KEY])
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint {path}: invalid {CONFIG_KEY!r} metadata: {err}") from None
    check_params(tensors, config, what=f"checkpoint {path}")
    for name, value in tensors.items():
        if not np.issubdtype(value.dtype, np.floating):
            raise ValueError(
                f"checkpoint {path}: tensor {name!r} has dtype {value.dtype}; expected float"
            )
    return tensors, config


# The layer packages' name for the same two functions (one verb across the four packages).
save_checkpoint = save_params
load_checkpoint = load_params
