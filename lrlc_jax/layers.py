"""The init/apply surface: `init` builds a parameter dict under the neutral names, `apply`
evaluates the layer on it. Flax modules would live here too."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from lrlc_numpy import LRLCConfig, initial_value, param_shapes

from .functional import _check_config, forward


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


def apply(params, x, config: LRLCConfig, *, strategy: str = "auto") -> jax.Array:
    """The layer on NHWC `x` in the init/apply argument order: `forward(x, params, config,
    strategy=strategy)`."""
    return forward(x, params, config, strategy=strategy)
