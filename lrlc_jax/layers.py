"""The init/apply surface: `init` builds a parameter dict under the neutral names, `apply`
evaluates the layer on it. Flax modules are `lrlc_jax.flax` (the optional extra)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from lrlc_numpy import LRLCConfig, check_config, initial_value, param_shapes

from .functional import forward
from .positionwise import floating_dtype


def init(key, config: LRLCConfig, dtype=jnp.float32) -> dict[str, jax.Array]:
    """Initial parameters under the neutral names, drawn from `key` with the distributions of
    `lrlc_numpy.initial_value` (spec sections 10 and 17.4), in the config's 1, 2 or 3 spatial
    dimensions: every fixed layer starts as a convolution."""
    check_config(config, "init")
    _check_key(key)
    return _init(key, config, floating_dtype(dtype, "init"))


def _check_key(key) -> None:
    """`key` must be one PRNG key: a typed key (jax.random.key) or a raw uint32 pair
    (jax.random.PRNGKey)."""
    typed = isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    raw = isinstance(key, jax.Array) and key.dtype == jnp.uint32 and key.shape == (2,)
    if not ((typed and key.shape == ()) or raw):
        shown = f"{key.dtype} array of shape {key.shape}" if hasattr(key, "shape") else repr(key)
        raise TypeError(f"init: key must be one PRNG key (jax.random.key(seed)), got {shown}")


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
    """The layer on channels-last `x` (NHWC; NLC or NDHWC for a 1-D or 3-D config) in the
    init/apply argument order: `forward(x, params, config, strategy=strategy)`."""
    return forward(x, params, config, strategy=strategy)
