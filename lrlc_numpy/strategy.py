"""Choosing how a fixed LRLC layer is evaluated: the rule every backend shares.

'conv' is Algorithm 1 (one convolution with K*C_out outputs, then the combination); 'lc'
is the locally connected form (each position's filter bank built from the basis, then one
batched product over positions), whose cost does not grow with K. 'auto' picks by a cost
model; each backend calibrates the model's constants on its own kernels
(docs/performance.md). Both strategies compute the same function (spec section 4).
"""

from __future__ import annotations

import dataclasses
import math

from .config import LRLCConfig

STRATEGIES = ("auto", "conv", "lc")


@dataclasses.dataclass(frozen=True)
class CostModel:
    """Costs of the locally connected form, in multiply-adds of the backend's convolution.

    product: one multiply-add of the batched products over positions.
    patch: one input-patch element moved, over all its moves in a training step.
    bank: one multiply-add of forming banks or contracting their gradient.
    bank_passes: bank products per step (form, maybe form again, d(basis), d(w)).
    """

    product: float
    patch: float
    bank: float
    bank_passes: int

    def lc_crossover(self, config: LRLCConfig, batch: int | None) -> float:
        """`lc_crossover` with these costs."""
        return lc_crossover(config, batch, self)

    def choose_strategy(self, config: LRLCConfig, batch: int | None, strategy="auto") -> str:
        """`choose_strategy` with these costs."""
        return choose_strategy(config, batch, strategy, self)


def lc_crossover(config: LRLCConfig, batch: int | None, costs: CostModel) -> float:
    """The rank above which a training step costs less in the locally connected form.

    Per output position, with M = C_in kh kw C_out multiply-adds per example, Algorithm 1
    runs a K C_out convolution forward and backward (input and kernel gradients): 3 K B M.
    The locally connected form runs three batched products the size of a C_out convolution
    (forward, patch gradient, bank gradient), moves B C_in kh kw patch elements and runs
    `bank_passes` bank products of K M each. 'lc' is cheaper when
        K (3 B - bank_passes bank) > B (3 product + patch / C_out).
    An unknown batch (None) counts as large: the limit of the crossover as B grows.
    """
    per_example = 3 * costs.product + costs.patch / config.out_channels
    if batch is None:
        return per_example / 3
    slope = 3 * batch - costs.bank_passes * costs.bank
    return math.inf if slope <= 0 else batch * per_example / slope


def algorithm1_windows(config: LRLCConfig) -> float:
    """Algorithm 1's work in units of one convolution over the locally connected window:
    sum_k (kh_k kw_k) / (window area), window volumes in n-D. K for one kernel size; less
    for a mixed basis, whose union window is larger than its banks (spec section 16)."""
    window = math.prod(config.locally_connected_config().kernel_size)
    return sum(math.prod(kernel) for kernel in config.kernel_sizes) / window


# 'auto' never picks 'lc' when the per-position filter banks (one per output position:
# out positions x window x C_in x C_out) would hold more elements than this, 1 GiB in
# float32: they grow with the grid, which in 3-D is a volume (spec section 17.6).
LC_MAX_BANK_ELEMENTS = 2**28


def lc_bank_elements(config: LRLCConfig) -> int:
    """Elements of the locally connected kernel of `config` (spec section 11)."""
    window = config.locally_connected_config().kernel_size
    return (
        math.prod(config.output_size) * math.prod(window) * config.in_channels * config.out_channels
    )


def lc_is_cheaper(config: LRLCConfig, batch: int | None, costs: CostModel) -> bool:
    """Whether a training step costs less in the locally connected form. With
    R = algorithm1_windows(config) (R = K for one kernel size), 'lc' is cheaper when
        3 B R - bank_passes bank K > B (3 product + patch / C_out),
    which for one kernel size is `rank > lc_crossover`. An unknown batch counts as large."""
    per_example = 3 * costs.product + costs.patch / config.out_channels
    windows = algorithm1_windows(config)
    if batch is None:
        return 3 * windows > per_example
    bank_cost = costs.bank_passes * costs.bank * config.rank
    return 3 * batch * windows - bank_cost > batch * per_example


def choose_strategy(config: LRLCConfig, batch: int | None, strategy: str, costs: CostModel) -> str:
    """'conv' or 'lc' for a batch of `batch` examples (None: unknown, as when exporting with
    a symbolic batch): `strategy` itself, or for 'auto' 'lc' when the layer is fixed,
    `lc_is_cheaper` and its banks fit in LC_MAX_BANK_ELEMENTS, else 'conv'.

    Input-dependent layers run Algorithm 1 only: their banks differ per example, so the
    locally connected form would share nothing; asking for 'lc' there is an error.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 0):
        raise ValueError(
            f"choose_strategy: batch must be a non-negative int or None (unknown), got {batch!r}"
        )
    if strategy == "lc" and config.input_dependent:
        raise ValueError(
            "strategy='lc' needs fixed combining weights; an input-dependent layer has one "
            "filter bank per example and position, so it runs Algorithm 1 (strategy='conv' "
            "or 'auto')"
        )
    if strategy != "auto":
        return strategy
    if config.input_dependent or lc_bank_elements(config) > LC_MAX_BANK_ELEMENTS:
        return "conv"
    return "lc" if lc_is_cheaper(config, batch, costs) else "conv"


def weights_are_ones(config: LRLCConfig) -> bool:
    """Whether every combining weight is exactly 1, whatever the parameters and input:
    softmax over a single member (rank 1; spec section 4.3). Algorithm 1 is then one C_out
    convolution plus the bias, and every backend evaluates it so. 'l2' and 'none' at rank 1
    give w~ / |w~| and w~, which are not 1."""
    return config.rank == 1 and config.normalize == "softmax"


def combining_parameter_names(names) -> list[str]:
    """Those of the neutral parameter `names` that enter the layer only through its combining
    weights: a fixed layer's logits (eq. 3) or an input-dependent layer's network g (eq. 6),
    sorted. When `weights_are_ones`, their gradients are exactly zero (spec section 4.3)."""
    logits = ("depth_logits", "row_logits", "col_logits", "logits")
    return sorted(name for name in names if name in logits or name.startswith("g."))
