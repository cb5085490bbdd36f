"""The strategy rule's cost constants for XLA (the rule is `lrlc_numpy.strategy`), relative to
a multiply-add of XLA's convolution and fitted to the measurements in docs/performance.md,
sections 'JAX' (CPU) and 'GPU (NVIDIA H100)'."""

from __future__ import annotations

import jax

from lrlc_numpy import LRLCConfig
from lrlc_numpy.strategy import CostModel

PRODUCT_COST = 1.1
PATCH_COST = 235.0
BANK_COST = 2.0

# Banks are formed twice (forward, again in the backward) and their gradient contracted twice.
COSTS = CostModel(product=PRODUCT_COST, patch=PATCH_COST, bank=BANK_COST, bank_passes=4)

# GPUs keep the CPU's product cost; the patch cost puts the crossover at the measured tie.
GPU_COSTS = CostModel(product=PRODUCT_COST, patch=560.0, bank=BANK_COST, bank_passes=4)
PLATFORM_COSTS = {"cpu": COSTS, "gpu": GPU_COSTS}


def _costs(platform: str | None) -> CostModel:
    """The cost model for a JAX platform name (None: the default backend, where a jitted
    call runs unless its inputs are committed elsewhere); others use the CPU's."""
    return PLATFORM_COSTS.get(platform or jax.default_backend(), COSTS)


def lc_crossover(config: LRLCConfig, batch: int | None, platform: str | None = None) -> float:
    """The shared rule's crossover rank with this backend's costs on `platform`."""
    return _costs(platform).lc_crossover(config, batch)


def choose_strategy(
    config: LRLCConfig, batch: int | None, strategy: str = "auto", platform: str | None = None
) -> str:
    """'conv' or 'lc' by the shared rule with this backend's costs on `platform` (default:
    JAX's default backend)."""
    return _costs(platform).choose_strategy(config, batch, strategy)
