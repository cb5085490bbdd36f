"""lrlc_jax: low-rank locally connected layers as pure JAX functions.

    params = lrlc_jax.init(jax.random.key(0), config)
    y = jax.jit(lrlc_jax.apply, static_argnames="config")(params, x, config=config)

Parameters are a flat dict under the neutral names of the spec, so a parameter pytree is
also a checkpoint. Configurations are `lrlc_numpy.LRLCConfig`; one of 1, 2 or 3 spatial
axes (spec section 17) takes sequences, images or volumes, channels last (NLC, NHWC,
NDHWC), and every function reads n from it. Imports no Flax: the flax modules are
`lrlc_jax.flax` (the optional extra `lrlc[flax]`), imported on their own.
"""

from lrlc_numpy import LRLCConfig, __version__  # one version for every lrlc package

from .checkpoint import (
    load_checkpoint,
    load_neutral_params,
    load_params,
    neutral_params,
    save_checkpoint,
    save_params,
)
from .costs import choose_strategy, lc_crossover
from .functional import (
    STRATEGIES,
    basis_members,
    basis_responses,
    bias_map,
    check_input,
    combine,
    combining_weights,
    depthwise_conv3x3,
    embedded_basis,
    fixed_logits,
    forward,
    g_forward,
    group_basis,
    locally_connected,
    normalize_weights,
    position_banks,
    resize_bilinear,
    resize_linear,
    spatial_bias_map,
    stack_responses,
    to_locally_connected,
)
from .layers import apply, init
from .positionwise import apply_banks, extract_patches, pad_input

__all__ = [
    "__version__",
    "STRATEGIES",
    "LRLCConfig",
    "apply",
    "apply_banks",
    "basis_members",
    "basis_responses",
    "bias_map",
    "check_input",
    "choose_strategy",
    "combine",
    "combining_weights",
    "depthwise_conv3x3",
    "embedded_basis",
    "extract_patches",
    "fixed_logits",
    "forward",
    "g_forward",
    "group_basis",
    "init",
    "lc_crossover",
    "load_checkpoint",
    "load_neutral_params",
    "load_params",
    "locally_connected",
    "neutral_params",
    "normalize_weights",
    "pad_input",
    "position_banks",
    "resize_bilinear",
    "resize_linear",
    "save_checkpoint",
    "save_params",
    "spatial_bias_map",
    "stack_responses",
    "to_locally_connected",
]
