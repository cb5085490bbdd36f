"""lrlc_jax: low-rank locally connected layers as pure JAX functions.

    params = lrlc_jax.init(jax.random.key(0), config)
    y = jax.jit(lrlc_jax.apply, static_argnames="config")(params, x, config=config)

Parameters are a flat dict under the neutral names of the spec, so a parameter pytree is
also a checkpoint. Configurations are `lrlc_numpy.LRLCConfig`. Imports no Flax.
"""

from lrlc_numpy import LRLCConfig

from .checkpoint import load_params, save_params
from .layer import (
    STRATEGIES,
    apply,
    basis_outputs,
    check_input,
    choose_strategy,
    combine,
    combining_weights,
    init,
    lc_crossover,
    locally_connected,
    resize_bilinear,
    to_locally_connected,
)

__all__ = [
    "STRATEGIES",
    "LRLCConfig",
    "apply",
    "basis_outputs",
    "check_input",
    "choose_strategy",
    "combine",
    "combining_weights",
    "init",
    "lc_crossover",
    "load_params",
    "locally_connected",
    "resize_bilinear",
    "save_params",
    "to_locally_connected",
]
