"""The shared strategy rule (lrlc_numpy.strategy) that every backend calibrates."""

import math

import pytest

from lrlc_numpy import LRLCConfig, param_shapes
from lrlc_numpy.strategy import (
    CostModel,
    choose_strategy,
    combining_parameter_names,
    lc_crossover,
    weights_are_ones,
)

COSTS = CostModel(product=2.0, patch=64.0, bank=2.0, bank_passes=4)


def paper(rank, **kw):
    return LRLCConfig(64, 64, 3, rank, (32, 32), padding="same", **kw)


def test_crossover_is_the_documented_inequality():
    # K (3 B - 4 * 2) > B (3 * 2 + 64 / 64)  <=>  K > 7 B / (3 B - 8)
    for batch in (3, 8, 64, 512):
        assert lc_crossover(paper(1), batch, COSTS) == pytest.approx(7 * batch / (3 * batch - 8))
    assert lc_crossover(paper(1), 2, COSTS) == math.inf  # too small a batch to share banks
    assert lc_crossover(paper(1), None, COSTS) == pytest.approx(7 / 3)  # the large-batch limit


def test_auto_follows_the_crossover_and_explicit_choices_stand():
    assert choose_strategy(paper(2), 64, "auto", COSTS) == "conv"  # 2 <= 2.37
    assert choose_strategy(paper(3), 64, "auto", COSTS) == "lc"
    assert choose_strategy(paper(3), 64, "conv", COSTS) == "conv"
    assert choose_strategy(paper(1), 64, "lc", COSTS) == "lc"
    idep = paper(16, combining="full", input_dependent=True)
    assert choose_strategy(idep, 512, "auto", COSTS) == "conv"


def test_bad_strategies():
    with pytest.raises(ValueError, match="unknown strategy 'fast'.*'auto', 'conv', 'lc'"):
        choose_strategy(paper(2), 64, "fast", COSTS)
    idep = paper(4, combining="full", input_dependent=True)
    with pytest.raises(ValueError, match="strategy='lc' needs fixed combining weights"):
        choose_strategy(idep, 64, "lc", COSTS)


# ---------------------------------------------------------------------------------------------
# Rank 1 with softmax (spec section 4.3)


def test_weights_are_ones_only_for_rank_one_softmax():
    for rank, normalize, expected in [(1, "softmax", True), (1, "l2", False), (1, "none", False),
                                      (2, "softmax", False)]:  # fmt: skip
        config = LRLCConfig(2, 3, 3, rank=rank, input_size=(6, 6), normalize=normalize)
        assert weights_are_ones(config) is expected


def test_combining_parameter_names_are_the_logits_or_g():
    """The contract's parameter table: logits per combining mode, or every g.* tensor."""
    expected = {
        "rowcol": ["col_logits", "row_logits"],
        "row": ["row_logits"],
        "col": ["col_logits"],
        "full": ["logits"],
    }
    for combining, names in expected.items():
        config = LRLCConfig(2, 3, 3, rank=1, input_size=(6, 6), combining=combining)
        assert combining_parameter_names(param_shapes(config)) == names
    config = LRLCConfig(2, 3, 3, rank=1, input_size=(9, 9), combining="full", input_dependent=True)
    shapes = param_shapes(config)
    got = combining_parameter_names(shapes)
    assert got == sorted(n for n in shapes if n.split(".")[0] == "g") and len(got) >= 8
