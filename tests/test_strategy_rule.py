"""The shared strategy rule (lrlc_numpy.strategy) that every backend calibrates."""

import math

import pytest

from lrlc_numpy import LRLCConfig
from lrlc_numpy.strategy import CostModel, choose_strategy, lc_crossover

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
