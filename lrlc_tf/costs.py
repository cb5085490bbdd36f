"""lrlc_tf's constants for the shared strategy rule (`lrlc_numpy.strategy`), fitted with
TensorFlow and oneDNN on this project's CPU (docs/performance.md, 'TensorFlow')."""

from __future__ import annotations

from lrlc_numpy.strategy import STRATEGIES, CostModel

__all__ = [
    "BANK_COST",
    "COSTS",
    "PATCH_COST",
    "PRODUCT_COST",
    "STRATEGIES",
    "choose_strategy",
    "lc_crossover",
]

# In multiply-adds of oneDNN's convolution: one multiply-add of the batched products over
# positions; one patch element moved (slice, concat and their adjoints); one multiply-add of
# the bank products (forming banks, d(basis), d(w)).
PRODUCT_COST = 2.0
PATCH_COST = 40.0
BANK_COST = 2.0

# The banks are formed once and kept (3 bank products per step), and each patch element is
# moved about three times (made, made again in the backward, folded back).
COSTS = CostModel(product=PRODUCT_COST, patch=3 * PATCH_COST, bank=BANK_COST, bank_passes=3)
lc_crossover = COSTS.lc_crossover
choose_strategy = COSTS.choose_strategy
