"""lrlc_torch's constants for the shared strategy rule (`lrlc_numpy.strategy`), per device.

Costs are in multiply-adds of the convolution: PRODUCT_COST per multiply-add of the
locally connected products, PATCH_COST per patch element over its moves in a training step,
BANK_COST per multiply-add of forming banks or contracting their gradient. How they were
fitted, and on which machines: docs/performance.md, 'PyTorch' ('auto') and 'GPU'.
"""

from __future__ import annotations

import torch

from lrlc_numpy import LRLCConfig
from lrlc_numpy.strategy import STRATEGIES, CostModel

__all__ = [
    "BANK_COST",
    "COSTS",
    "CUDA_COSTS",
    "DEVICE_COSTS",
    "PATCH_COST",
    "PRODUCT_COST",
    "STRATEGIES",
    "choose_strategy",
    "lc_crossover",
]

# Fitted on this project's CPU, single-threaded.
PRODUCT_COST = 3.4
PATCH_COST = 100.0
BANK_COST = 2.0

# Banks are formed twice (forward, again in the backward) and their gradient contracted twice.
COSTS = CostModel(product=PRODUCT_COST, patch=PATCH_COST, bank=BANK_COST, bank_passes=4)

# On CUDA the convolutions run on tensor cores while the locally connected form is bound
# by moving patches through memory, so the patch cost dominates.
CUDA_COSTS = CostModel(product=2.2, patch=880.0, bank=2.0, bank_passes=4)
DEVICE_COSTS = {"cpu": COSTS, "cuda": CUDA_COSTS}


def _costs(device) -> CostModel:
    """The cost model for a device (a torch.device or its name); other devices get the CPU's."""
    return DEVICE_COSTS.get(torch.device(device).type, COSTS)


def lc_crossover(config: LRLCConfig, batch: int | None, device="cpu") -> float:
    """The shared rule's crossover rank with this backend's costs on `device`."""
    return _costs(device).lc_crossover(config, batch)


def choose_strategy(config: LRLCConfig, batch: int | None, strategy="auto", device="cpu") -> str:
    """The shared rule with this backend's costs on `device`: 'conv' or 'lc'."""
    return _costs(device).choose_strategy(config, batch, strategy)
