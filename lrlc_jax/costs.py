"""The strategy rule's cost constants for XLA (the rule is `lrlc_numpy.strategy`), relative to
a multiply-add of XLA's convolution and fitted to the measurements in docs/performance.md,
sections 'JAX' (CPU) and 'GPU (NVIDIA H100)'."""

from __future__ import annotations

import jax
import numpy as np

from lrlc_numpy import LRLCConfig, check_config
from lrlc_numpy.strategy import CostModel

PRODUCT_COST = 1.1
PATCH_COST = 235.0
BANK_COST = 2.0

# Banks are formed twice (forward, again in the backward) and their gradient contracted twice.
COSTS = CostModel(product=PRODUCT_COST, patch=PATCH_COST, bank=BANK_COST, bank_passes=4)

# GPUs keep the CPU's product cost; the patch cost puts the crossover at the measured tie.
GPU_COSTS = CostModel(product=PRODUCT_COST, patch=560.0, bank=BANK_COST, bank_passes=4)
PLATFORM_COSTS = {"cpu": COSTS, "gpu": GPU_COSTS}
# JAX's platform names; those without their own constants use the CPU's.
PLATFORMS = ("cpu", "gpu", "cuda", "rocm", "tpu")


def _costs(platform: str | None) -> CostModel:
    """The cost model for a JAX platform name (None: the default backend, where a jitted
    call runs unless its inputs are committed elsewhere); others use the CPU's."""
    if platform is None:
        platform = jax.default_backend()
    elif not (isinstance(platform, str) and platform in PLATFORMS):
        raise ValueError(f"platform: got {platform!r}; expected None or one of {PLATFORMS}")
    return PLATFORM_COSTS.get("gpu" if platform in ("cuda", "rocm") else platform, COSTS)


def known_batch(batch) -> int | None:
    """`batch` for the rule: a non-negative int, or None when unknown: None itself, or a
    symbolic dimension (jax.export), on which the rule must not branch. An unknown batch
    counts as large (`lrlc_numpy.strategy.lc_crossover`)."""
    if batch is None or jax.export.is_symbolic_dim(batch):
        return None
    if not isinstance(batch, (int, np.integer)) or isinstance(batch, (bool, np.bool_)):
        raise TypeError(f"batch must be a non-negative int or None, got {batch!r}")
    if batch < 0:
        raise ValueError(f"batch must be a non-negative int or None, got {batch!r}")
    return int(batch)


def lc_crossover(config: LRLCConfig, batch: int | None, platform: str | None = None) -> float:
    """The shared rule's crossover rank with this backend's costs on `platform`."""
    check_config(config, "lc_crossover")
    return _costs(platform).lc_crossover(config, known_batch(batch))


def choose_strategy(
    config: LRLCConfig, batch: int | None, strategy: str = "auto", platform: str | None = None
) -> str:
    """'conv' or 'lc' by the shared rule with this backend's costs on `platform` (default:
    JAX's default backend). `batch` may be None or symbolic: the rule then takes its
    documented default for an unknown batch, so a program exported with a symbolic batch
    has one strategy for every batch size."""
    check_config(config, "choose_strategy")
    return _costs(platform).choose_strategy(config, known_batch(batch), strategy)
