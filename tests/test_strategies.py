"""How a layer is evaluated, across backends: the shared strategy rule (lrlc_numpy.strategy)
that every backend calibrates, each backend's 'auto' choice, the two strategies agreeing,
and the exact rank-1 paths (spec section 4.3)."""

import math

import pytest

import conformance
from conformance import backends
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


# ---------------------------------------------------------------------------------------------
# Each backend's 'auto' choice and the catalogue's coverage of both strategies


def test_catalogue_exercises_the_locally_connected_form():
    """At the catalogue's batch of 2 'auto' picks Algorithm 1 everywhere, so the conformance
    rows run 'lc' explicitly; torch's rule is the reference point."""
    pytest.importorskip("torch")
    from lrlc_torch import costs as torch_costs

    cases = conformance.catalogue()
    fixed = [c for c in cases if not c.config.input_dependent]
    assert len(fixed) > len(cases) // 2
    assert all(torch_costs.choose_strategy(c.config, c.batch, "lc") == "lc" for c in fixed)
    assert all(torch_costs.choose_strategy(c.config, c.batch, "auto") == "conv" for c in cases)


def _small(rank, **kwargs):
    return LRLCConfig(3, 4, 3, rank, (6, 5), padding="same", **kwargs)


@pytest.mark.parametrize("batch", [1, 2, 8, 64, 512, None])
@pytest.mark.parametrize("rank", [1, 2, 3, 4, 8, 16, 32])
def test_tf_auto_follows_the_documented_cost_rule(batch, rank):
    """'lc' exactly when K (3 B - 3 BANK_COST) > B (3 PRODUCT_COST + 3 PATCH_COST / C_out),
    an unknown batch counting as large; input-dependent layers: 'conv'."""
    pytest.importorskip("tensorflow")
    from lrlc_tf import costs as f

    per_example = 3 * f.PRODUCT_COST + 3 * f.PATCH_COST / _small(rank).out_channels
    if batch is None:
        want = "lc" if 3 * rank > per_example else "conv"
    else:
        cheaper = rank * (3 * batch - 3 * f.BANK_COST) > batch * per_example
        want = "lc" if cheaper else "conv"
    assert f.choose_strategy(_small(rank), batch) == want
    for explicit in ("conv", "lc"):
        assert f.choose_strategy(_small(rank), batch, explicit) == explicit
    dependent = _small(rank, combining="full", input_dependent=True)
    assert f.choose_strategy(dependent, batch) == "conv"


@pytest.mark.parametrize(("batch", "rank"), [(2, 16), (64, 16)])
def test_tf_auto_layer_runs_the_chosen_strategy(batch, rank):
    """The traced graph holds a convolution for Algorithm 1 and none for the LC form."""
    tf = pytest.importorskip("tensorflow")
    import lrlc_tf
    from lrlc_tf import costs

    config = _small(rank)
    layer = lrlc_tf.LRLC2D.from_lrlc_config(config)
    x = tf.zeros((batch, *config.input_size, config.in_channels))
    graph = tf.function(layer).get_concrete_function(x).graph
    has_conv = any(op.type == "Conv2D" for op in graph.get_operations())
    assert has_conv == (costs.choose_strategy(config, batch) == "conv")


# Every fifth fixed case of the catalogue (input-dependent layers have Algorithm 1 only).
FIXED_CASES = [c for c in conformance.catalogue() if not c.config.input_dependent][::5]


@pytest.mark.parametrize("case", FIXED_CASES, ids=[c.name for c in FIXED_CASES])
def test_tf_strategies_agree(case):
    """'conv' and 'lc' give the same outputs and gradients (each within the tolerance of the
    reference, so within twice it of each other)."""
    pytest.importorskip("tensorflow")
    adapter = backends.load("tf", strategy="conv")
    if case.config.mixed and not getattr(adapter, "supports_mixed_basis", False):
        pytest.skip("lrlc_tf has no mixed basis yet (spec section 16)")
    x, params, dy = conformance.case_data(case, 0)
    results = {}
    for strategy in ("conv", "lc"):
        adapter = backends.load("tf", strategy=strategy)
        y = adapter.forward(case.config, params, x, dtype="float32")
        dx, dparams = adapter.vjp(case.config, params, x, dy, dtype="float32")
        results[strategy] = [y, dx, *(dparams[name] for name in sorted(dparams))]
    tol = 2 * conformance.tolerance("float32", case.config, case.batch)
    for conv, lc in zip(results["conv"], results["lc"]):
        assert conformance.relative_error(lc, conv) <= tol


def test_mixed_basis_counts_algorithm1_work_per_bank():
    """A 3x3 bank and a 5x5 bank of dilation 2 cover a 9x9 window: Algorithm 1 does
    (9 + 25) / 81 window-convolutions of work, not K = 2, so 'auto' waits longer for 'lc'."""
    from lrlc_numpy.strategy import algorithm1_windows, lc_is_cheaper

    mixed = LRLCConfig(64, 64, [3, 5], 2, (32, 32), dilation=[1, 2], padding="same")
    assert algorithm1_windows(mixed) == pytest.approx(34 / 81)
    assert algorithm1_windows(paper(4)) == 4
    for batch in (1, 8, 64, None):
        assert lc_is_cheaper(paper(16), batch, COSTS) == (
            16 > lc_crossover(paper(16), batch, COSTS)
        )
    assert choose_strategy(mixed, 64, "auto", COSTS) == "conv"


@pytest.mark.parametrize("batch", [-1, 2.0, True, "8"])
def test_batch_must_be_a_count_or_unknown(batch):
    with pytest.raises(ValueError, match="batch must be a non-negative int or None"):
        choose_strategy(paper(4), batch, "auto", COSTS)
