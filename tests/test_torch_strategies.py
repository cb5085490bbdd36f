"""lrlc_torch's evaluation strategies: Algorithm 1 ('conv') and the locally connected form
('lc'), the 'auto' cost rule between them, and the hand-written backward passes behind them
(`_Algorithm1`, `_LowRankLocallyConnected`, `_LocallyConnected`).

Values are checked against lrlc_numpy (the reference) or, for strategy against strategy,
against each other; tolerances come from `conformance.tolerance`.
"""

import dataclasses
import math

import pytest
import torch

import conformance
import lrlc_numpy as L
from lrlc_numpy.strategy import weights_are_ones
from lrlc_torch import LocallyConnected2d, LRLC2d, costs, positionwise, to_neutral
from lrlc_torch import functional as LF

BATCH = 2
FIXED_CONFIGS = {
    "same-stride2": L.LRLCConfig(2, 3, 3, rank=3, input_size=(7, 6), stride=2, padding="same"),
    "explicit-dilated": L.LRLCConfig(
        3, 2, (3, 2), rank=4, input_size=(9, 8), stride=(2, 1), dilation=(1, 2),
        padding=((2, 0), (1, 1)), combining="full", normalize="l2",
    ),
    "valid-row-nobias": L.LRLCConfig(
        2, 4, 2, rank=2, input_size=(5, 6), combining="row", normalize="none",
        spatial_bias=False, channel_bias=False,
    ),
}  # fmt: skip
IDEP = L.LRLCConfig(
    2, 3, 3, rank=2, input_size=(7, 6), padding="same", combining="full", input_dependent=True
)


def nchw(a):
    return torch.from_numpy(a).permute(0, 3, 1, 2)


def case(config, seed=0, dtype=torch.float64):
    """Conformance data for `config` (logits and biases away from their initial constants)
    as NCHW tensors, with the neutral params."""
    x, params, dy = conformance.case_data(conformance.Case("t", config, BATCH), seed)
    return nchw(x).to(dtype), params, nchw(dy).to(dtype)


def layer_for(config, params, strategy, dtype=torch.float64):
    layer = LRLC2d.from_lrlc_config(config, strategy=strategy, dtype=dtype)
    layer.load_neutral_params(params)
    return layer


def value_and_grads(layer, x, dy):
    x = x.detach().requires_grad_(True)
    y = layer(x)
    return (y.detach(), *torch.autograd.grad(y, (x, *layer.parameters()), dy))


def assert_matches_reference(layer, config, params, x, dy):
    """The layer's output and gradients (input and every parameter, neutral names) are the
    reference's within `conformance.tolerance`; returns the neutral parameter gradients."""
    y, dx, *dparams = value_and_grads(layer, x, dy)
    x_nhwc, dy_nhwc = (a.permute(0, 2, 3, 1).numpy() for a in (x, dy))
    want_dx, want_dparams = L.vjp(x_nhwc, params, config, dy_nhwc)
    tol = conformance.tolerance(str(x.dtype).removeprefix("torch."), config, BATCH)
    want_y = L.forward(x_nhwc, params, config)
    assert conformance.relative_error(y.permute(0, 2, 3, 1).numpy(), want_y) <= tol
    assert conformance.relative_error(dx.permute(0, 2, 3, 1).numpy(), want_dx) <= tol
    got = to_neutral(dict(zip([n for n, _ in layer.named_parameters()], dparams)), config)
    assert set(got) == set(want_dparams)
    for name, want in want_dparams.items():
        assert conformance.relative_error(got[name], want) <= tol, name
    return got


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of one output row, so every blocked loop runs several (uneven) blocks."""
    monkeypatch.setattr(positionwise, "BLOCK_BYTES", 1)


# ---------------------------------------------------------------------------------------------
# The 'auto' rule


def documented_crossover(c_out, batch):
    """docs/performance.md: 'lc' when
    K (3 B - 4 BANK_COST) > B (3 PRODUCT_COST + PATCH_COST / C_out)."""
    slope = 3 * batch - 4 * costs.BANK_COST
    if slope <= 0:
        return math.inf
    return batch * (3 * costs.PRODUCT_COST + costs.PATCH_COST / c_out) / slope


@pytest.mark.parametrize("c_out", [4, 16, 64, 256])
@pytest.mark.parametrize("batch", [1, 2, 3, 8, 64, 512])
def test_auto_follows_the_documented_cost_rule(c_out, batch):
    for rank in range(1, 9):
        config = L.LRLCConfig(8, c_out, 3, rank=rank, input_size=(6, 6))
        want = "lc" if rank > documented_crossover(c_out, batch) else "conv"
        assert costs.choose_strategy(config, batch) == want, (rank, c_out, batch)
        assert costs.lc_crossover(config, batch) == documented_crossover(c_out, batch)


def test_auto_crossover_for_the_papers_layer():
    # The benchmark layer (64 -> 64 channels, batch 64) switches between rank 4 and 5,
    # where the measurements in docs/performance.md put the crossover.
    paper = L.LRLCConfig(64, 64, 3, rank=5, input_size=(32, 32), padding="same")
    assert 4 < costs.lc_crossover(paper, 64) < 5
    assert costs.choose_strategy(paper, 64) == "lc"


def test_auto_never_picks_lc_for_input_dependent_layers():
    config = L.LRLCConfig(64, 64, 3, rank=32, input_size=(8, 8), combining="full",
                          input_dependent=True)  # fmt: skip
    assert costs.choose_strategy(config, 512) == "conv"


@pytest.mark.parametrize("strategy, batch, convolutions", [("auto", 1, 1), ("auto", 64, 0)])
def test_the_layer_runs_the_strategy_auto_chose(monkeypatch, strategy, batch, convolutions):
    layer = LRLC2d(2, 64, 3, rank=8, input_size=(5, 5), padding="same", strategy=strategy)
    calls = []
    conv2d = LF.F.conv2d
    monkeypatch.setattr(LF.F, "conv2d", lambda *a, **k: calls.append(1) or conv2d(*a, **k))
    layer(torch.randn(batch, 2, 5, 5))
    assert len(calls) == convolutions  # the locally connected form runs no convolution


@pytest.mark.parametrize(
    "arguments, match",
    [
        (dict(strategy="fast"), r"unknown strategy 'fast'; expected one of \('auto', 'conv'"),
        (dict(strategy="lc", combining="full", input_dependent=True), "input-dependent"),
    ],
)
def test_bad_strategies_are_a_clear_error(arguments, match):
    with pytest.raises(ValueError, match=match):
        LRLC2d(2, 3, 3, rank=2, input_size=(5, 5), **arguments)
    config = L.LRLCConfig(2, 3, 3, rank=2, input_size=(5, 5), **{
        k: v for k, v in arguments.items() if k != "strategy"})  # fmt: skip
    with pytest.raises(ValueError, match=match):
        LF.forward(torch.zeros(1, 2, 5, 5), LRLC2d.from_lrlc_config(config)._params(), config,
                   strategy=arguments["strategy"])  # fmt: skip


def test_strategy_is_kept_by_constructors_and_shown():
    layer = LRLC2d(2, 3, 3, rank=2, input_size=(5, 5), strategy="lc")
    assert "strategy='lc'" in repr(layer)
    assert "strategy" not in repr(LRLC2d(2, 3, 3, rank=2, input_size=(5, 5)))
    assert LRLC2d.from_lrlc_config(layer.config, strategy="conv").strategy == "conv"
    conv = torch.nn.Conv2d(2, 3, 3)
    assert LRLC2d.from_conv(conv, 2, (5, 5), strategy="lc").strategy == "lc"


# ---------------------------------------------------------------------------------------------
# Both strategies compute the same layer


@pytest.mark.parametrize("name", FIXED_CONFIGS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_strategies_agree_on_values_and_gradients(name, dtype, small_blocks):
    config = FIXED_CONFIGS[name]
    x, params, dy = case(config, dtype=getattr(torch, dtype))
    results = [
        value_and_grads(layer_for(config, params, s, getattr(torch, dtype)), x, dy)
        for s in ("conv", "lc")
    ]
    tol = conformance.tolerance(dtype, config, BATCH)
    for got, want in zip(*results):
        assert conformance.relative_error(got.numpy(), want.numpy()) <= tol


@pytest.mark.parametrize("block_bytes", [1, 2**30], ids=["row-blocks", "one-block"])
def test_lc_strategy_matches_reference_for_any_block_size(monkeypatch, block_bytes):
    monkeypatch.setattr(positionwise, "BLOCK_BYTES", block_bytes)
    config = FIXED_CONFIGS["explicit-dilated"]
    x, params, dy = case(config)
    assert_matches_reference(layer_for(config, params, "lc"), config, params, x, dy)


# ---------------------------------------------------------------------------------------------
# The custom autograd nodes: gradcheck in float64, graph retention, double backward


TINY = L.LRLCConfig(2, 2, 3, rank=2, input_size=(4, 5), stride=(1, 2), padding="same")


def tiny_inputs(weights_shape):
    generator = torch.Generator().manual_seed(0)

    def leaf(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_(True)

    out_h, out_w = TINY.output_size
    return (
        leaf(BATCH, 2, 4, 5),
        leaf(*weights_shape, out_h, out_w),
        leaf(TINY.rank * 2, 2, 3, 3),
    )


@pytest.mark.parametrize("weights_shape", [(2,), (BATCH, 2)], ids=["fixed", "per-example"])
def test_gradcheck_algorithm1(weights_shape):
    inputs = tiny_inputs(weights_shape)
    assert torch.autograd.gradcheck(lambda *a: LF.algorithm1(*a, TINY), inputs)
    # Second derivatives (the backward recomputes z when it is recorded); fast mode checks
    # the Jacobian along random directions, torch's documented cheaper check.
    assert torch.autograd.gradgradcheck(lambda *a: LF.algorithm1(*a, TINY), inputs, fast_mode=True)


def test_gradcheck_lowrank_locally_connected(small_blocks):
    inputs = tiny_inputs((2,))
    assert torch.autograd.gradcheck(lambda *a: LF.lowrank_locally_connected(*a, TINY), inputs)


def test_gradcheck_locally_connected_layer(small_blocks):
    lc = LocallyConnected2d(2, 2, 3, (4, 5), stride=(1, 2), padding="same", dtype=torch.float64)
    x = tiny_inputs((2,))[0]
    weight = lc.weight.detach().requires_grad_(True)
    bias = torch.randn_like(lc.bias).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda *a: LF.locally_connected(*a, lc.config), (x, weight, bias)
    )


@pytest.mark.parametrize("strategy", ["conv", "lc"])
def test_retained_graph_gives_the_same_gradients_twice(strategy):
    # Algorithm 1 reuses z's buffer for dz only when the graph is not kept.
    config = FIXED_CONFIGS["same-stride2"]
    x, params, dy = case(config)
    layer = layer_for(config, params, strategy)
    x.requires_grad_(True)
    y = layer(x)
    first = torch.autograd.grad(y, (x, *layer.parameters()), dy, retain_graph=True)
    second = torch.autograd.grad(y, (x, *layer.parameters()), dy)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_lc_strategy_refuses_double_backward():
    inputs = tiny_inputs((2,))
    y = LF.lowrank_locally_connected(*inputs, TINY)
    (dx,) = torch.autograd.grad(y.square().sum(), inputs[0], create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice.*once_differentiable"):
        dx.sum().backward()


# ---------------------------------------------------------------------------------------------
# The locally connected layer trains through the same kernel


def test_locally_connected_gradients_match_an_unfold_computation(small_blocks):
    config = FIXED_CONFIGS["explicit-dilated"]
    lc = LocallyConnected2d(3, 2, (3, 2), config.input_size, stride=(2, 1), dilation=(1, 2),
                            padding=((2, 0), (1, 1)), dtype=torch.float64)  # fmt: skip
    x, _, _ = case(config)
    x.requires_grad_(True)
    dy = torch.randn(BATCH, 2, *config.output_size, dtype=torch.float64)
    got = torch.autograd.grad(lc(x), (x, lc.weight, lc.bias), dy)

    # Independently: F.unfold patches ((c, u, v) order, like torch's weight) and an einsum.
    xpad = torch.nn.functional.pad(x, (1, 1, 2, 0))
    patches = torch.nn.functional.unfold(xpad, (3, 2), dilation=(1, 2), stride=(2, 1))
    flat = lc.weight.flatten(3).flatten(0, 1)  # (P, C_out, C_in kh kw)
    y = torch.einsum("bcp,poc->bop", patches, flat).unflatten(-1, config.output_size) + lc.bias
    want = torch.autograd.grad(y, (x, lc.weight, lc.bias), dy)
    tol = conformance.tolerance("float64", config, BATCH)
    for a, b in zip(got, want):
        assert conformance.relative_error(a.detach().numpy(), b.numpy()) <= tol


# ---------------------------------------------------------------------------------------------
# Frameworks features per strategy


@pytest.mark.parametrize("strategy", ["conv", "lc"])
def test_compiled_equals_eager(strategy):
    config = FIXED_CONFIGS["same-stride2"]
    x, params, dy = case(config, dtype=torch.float32)
    layer = layer_for(config, params, strategy, torch.float32)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    want = value_and_grads(layer, x, dy)
    got = value_and_grads(compiled, x, dy)
    tol = conformance.tolerance("float32", config, BATCH)
    for a, b in zip(got, want):
        assert conformance.relative_error(a.numpy(), b.numpy()) <= tol


@pytest.mark.parametrize("strategy", ["conv", "lc"])
def test_autocast_bfloat16_runs_in_bfloat16(strategy):
    config = FIXED_CONFIGS["same-stride2"]
    x, params, _ = case(config, dtype=torch.float32)
    layer = layer_for(config, params, strategy, torch.float32)
    with torch.no_grad():
        want = layer(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = layer(x)
    error = conformance.relative_error(got.float().numpy(), want.numpy())
    assert 0 < error <= conformance.tolerance("bfloat16", config, BATCH)


def test_lc_strategy_under_vmap_is_a_clear_error():
    layer = LRLC2d(2, 3, 3, rank=2, input_size=(5, 5), strategy="lc")
    with pytest.raises(RuntimeError, match="vmap"):
        torch.func.vmap(lambda x1: layer(x1[None])[0])(torch.randn(BATCH, 2, 5, 5))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("strategy", ["conv", "lc"])
def test_cuda_matches_cpu(strategy):
    config = FIXED_CONFIGS["explicit-dilated"]
    x, params, dy = case(config)
    layer = layer_for(config, params, strategy)
    want = value_and_grads(layer, x, dy)
    got = value_and_grads(layer.to("cuda"), x.cuda(), dy.cuda())
    tol = conformance.tolerance("float64", config, BATCH)
    for a, b in zip(got, want):
        assert conformance.relative_error(a.cpu().numpy(), b.numpy()) <= tol


def test_block_size_follows_the_device_type(monkeypatch):
    """Blocks of output rows are sized per device type (GPUs take far larger ones)."""
    config = FIXED_CONFIGS["explicit-dilated"]
    x = torch.empty(BATCH, config.in_channels, *config.input_size, device="meta")
    monkeypatch.setattr(positionwise, "BLOCK_BYTES", 1)
    rows = config.output_size[0]
    assert positionwise._row_blocks(config, x) == [(r, r + 1) for r in range(rows)]
    monkeypatch.setitem(positionwise.DEVICE_BLOCK_BYTES, "meta", 2**40)
    assert positionwise._row_blocks(config, x) == [(0, rows)]


@pytest.mark.parametrize("config", [*FIXED_CONFIGS.values(), IDEP], ids=[*FIXED_CONFIGS, "idep"])
def test_elementwise_combination_matches_reference(monkeypatch, config):
    """The broadcast-and-sum forms of the combination and its weight gradient (used on CUDA
    at small ranks) give the reference's values and gradients; forced on here for the CPU."""
    monkeypatch.setitem(LF.ELEMENTWISE_COMBINE_MAX_RANK, "cpu", config.rank)
    monkeypatch.setitem(LF.ELEMENTWISE_WEIGHT_GRAD_MAX_RANK, "cpu", config.rank)
    x, params, dy = case(config)
    assert_matches_reference(layer_for(config, params, "conv"), config, params, x, dy)


# ---------------------------------------------------------------------------------------------
# Rank 1 with softmax: w = 1 exactly, so the layer is one convolution (spec section 4.3)

RANK_ONE = {
    "rowcol-same-stride2": L.LRLCConfig(
        2, 3, 3, rank=1, input_size=(7, 6), stride=2, padding="same"
    ),
    "row-dilated-valid": L.LRLCConfig(
        2, 3, (3, 2), rank=1, input_size=(6, 7), dilation=(1, 2), combining="row"
    ),
    "col-explicit-nobias": L.LRLCConfig(
        3, 2, 3, rank=1, input_size=(6, 5), padding=((2, 0), (1, 1)), combining="col",
        channel_bias=False,
    ),
    "full": L.LRLCConfig(2, 3, 3, rank=1, input_size=(5, 6), padding=1, combining="full"),
    "idep": L.LRLCConfig(
        2, 3, 3, rank=1, input_size=(9, 8), padding="same", combining="full",
        input_dependent=True,
    ),
}  # fmt: skip


def count_calls(monkeypatch, name):
    """Count the calls of `lrlc_torch.functional.<name>` (still running it)."""
    calls = []
    original = getattr(LF, name)

    def counted(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(LF, name, counted)
    return calls


@pytest.mark.parametrize("strategy", ["auto", "conv"])
@pytest.mark.parametrize("config", RANK_ONE.values(), ids=RANK_ONE)
def test_rank_one_softmax_runs_one_convolution(monkeypatch, config, strategy):
    """Neither the weights nor g are computed; every logit and g parameter still receives a
    gradient (not None: autograd.grad would raise), and it is exactly zero."""
    assert weights_are_ones(config)
    calls = count_calls(monkeypatch, "_weights") + count_calls(monkeypatch, "g_forward")
    x, params, dy = case(config)
    grads = assert_matches_reference(layer_for(config, params, strategy), config, params, x, dy)
    assert calls == []
    combining = [n for n in grads if n.endswith("logits") or n.startswith("g.")]
    assert combining, "the configs have logits or g"
    for name in combining:
        assert not grads[name].any(), name


def test_rank_one_with_other_normalisations_forms_its_weights(monkeypatch):
    """'l2' and 'none' do not give w = 1 at rank 1: the general path runs."""
    for normalize in ("l2", "none"):
        config = dataclasses.replace(RANK_ONE["full"], normalize=normalize)
        assert not weights_are_ones(config)
        calls = count_calls(monkeypatch, "_weights")
        x, params, dy = case(config)
        assert_matches_reference(layer_for(config, params, "auto"), config, params, x, dy)
        assert calls


def test_rank_one_keeps_an_explicit_lc_strategy(monkeypatch):
    config = RANK_ONE["rowcol-same-stride2"]
    calls = count_calls(monkeypatch, "lowrank_locally_connected")
    x, params, dy = case(config)
    assert_matches_reference(layer_for(config, params, "lc"), config, params, x, dy)
    assert calls
