"""lrlc_torch's mixed basis (spec section 16): one kernel size and dilation per basis.

Parameters `basis.0` ... per basis; Algorithm 1 with one convolution per group of equal
(kernel size, dilation), responses back in basis order; the rank-1 path; the 'lc' strategy
and the conversion on the union window; checkpoints. Values come from lrlc_numpy.
"""

import numpy as np
import pytest
import torch

import conformance
import lrlc_numpy as L
from lrlc_torch import LocallyConnected2d, LRLC2d, to_neutral
from lrlc_torch import functional as LF

BATCH = 2
# The authors' verified pair; non-contiguous groups (bases 0 and 2 share a convolution)
# with stride 2 and non-square pairs; a mixed basis of one.
PAIR = L.LRLCConfig(2, 3, [3, 5], rank=2, input_size=(9, 8), dilation=[1, 2], padding="same")
GROUPS = L.LRLCConfig(
    2, 3, [(3, 2), 4, (3, 2)], rank=3, input_size=(9, 8), dilation=[1, (2, 1), 1], stride=2,
    padding="same", combining="full", normalize="l2",
)  # fmt: skip
IDEP = L.LRLCConfig(
    2, 3, [1, 2, 3], rank=3, input_size=(8, 7), dilation=[1, 1, 2], padding="same",
    combining="full", input_dependent=True,
)  # fmt: skip
RANK_ONE = L.LRLCConfig(2, 3, [2], rank=1, input_size=(7, 6), padding="same")
CONFIGS = {"pair": PAIR, "groups-stride2": GROUPS, "idep": IDEP, "rank1": RANK_ONE}


def nchw(a, dtype=torch.float64):
    return torch.from_numpy(a).to(dtype).permute(0, 3, 1, 2)


def nhwc(y):
    return y.detach().permute(0, 2, 3, 1).double().numpy()


def loaded(config, strategy="auto", seed=0):
    x, params, dy = conformance.case_data(conformance.Case("t", config, BATCH), seed)
    layer = LRLC2d.from_lrlc_config(config, strategy=strategy, dtype=torch.float64)
    layer.load_neutral_params(params)
    return layer, nchw(x), params, nchw(dy)


def tol(config):
    return conformance.tolerance("float64", config, BATCH)


def test_parameters_are_one_conv_weight_per_basis():
    layer = LRLC2d.from_lrlc_config(GROUPS, dtype=torch.float64)
    assert [n for n, _ in layer.named_parameters() if n.startswith("basis")] == [
        "basis.0", "basis.1", "basis.2",
    ]  # fmt: skip
    assert [tuple(p.shape) for p in layer.basis] == [(3, 2, 3, 2), (3, 2, 4, 4), (3, 2, 3, 2)]
    assert set(layer.state_dict()) == set(L.param_shapes(GROUPS))
    assert {n: v.shape for n, v in layer.neutral_params().items()} == L.param_shapes(GROUPS)
    layer.reset_parameters(seed=4)
    for name, value in L.init_params(GROUPS, seed=4).items():
        np.testing.assert_array_equal(layer.neutral_params()[name], value, err_msg=name)
    text = repr(layer)
    assert "kernel_size=[(3, 2), (4, 4), (3, 2)]" in text
    assert "dilation=[(1, 1), (2, 1), (1, 1)]" in text


def test_algorithm1_runs_one_convolution_per_group_in_basis_order(monkeypatch):
    layer, x, params, _ = loaded(GROUPS, "conv")
    calls = []
    conv2d = LF.F.conv2d
    monkeypatch.setattr(LF.F, "conv2d", lambda *a, **k: calls.append(a[1].shape) or conv2d(*a, **k))
    layer(x)
    # Bases 0 and 2 (3x2, dilation 1) are one convolution with 2 C_out outputs.
    assert sorted(calls) == [(3, 2, 4, 4), (6, 2, 3, 2)]
    monkeypatch.undo()
    # Independently: each basis convolved on its own, padded as TF SAME pads it.
    per_member = []
    for member, pairs, dilation in zip(layer.basis, GROUPS.basis_padding_pairs, GROUPS.dilations):
        (top, bottom), (left, right) = pairs
        xpad = torch.nn.functional.pad(x, (left, right, top, bottom))
        per_member.append(conv2d(xpad, member, stride=2, dilation=dilation))
    z = LF.basis_responses(x, list(layer.basis), GROUPS)
    torch.testing.assert_close(z, torch.stack(per_member, 1), rtol=0, atol=1e-13)


@pytest.mark.parametrize("strategy", ["conv", "lc"])
@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS)
def test_values_and_gradients_match_the_reference(config, strategy):
    if strategy == "lc" and config.input_dependent:
        pytest.skip("input-dependent layers run Algorithm 1 only")
    layer, x, params, dy = loaded(config, strategy)
    x.requires_grad_(True)
    y = layer(x)
    names, tensors = zip(*layer.named_parameters())
    dx, *dparams = torch.autograd.grad(y, (x, *tensors), dy)
    x_nhwc, dy_nhwc = nhwc(x), nhwc(dy)
    assert conformance.relative_error(nhwc(y), L.forward(x_nhwc, params, config)) <= tol(config)
    want_dx, want = L.vjp(x_nhwc, params, config, dy_nhwc)
    assert conformance.relative_error(nhwc(dx), want_dx) <= tol(config)
    got = to_neutral(dict(zip(names, dparams)), config)
    assert set(got) == set(want)
    for name in want:
        assert conformance.relative_error(got[name], want[name]) <= tol(config), name


def test_rank_one_is_one_convolution_of_its_own_geometry(monkeypatch):
    calls = []
    original = LF._weights
    monkeypatch.setattr(LF, "_weights", lambda *a: calls.append(1) or original(*a))
    layer, x, params, _ = loaded(RANK_ONE, "auto")
    y = layer(x)
    assert calls == []
    assert RANK_ONE.basis_padding_pairs == (((0, 1), (0, 1)),)  # even kernel: SAME pads after
    want = L.forward(nhwc(x), params, RANK_ONE)
    assert conformance.relative_error(nhwc(y), want) <= tol(RANK_ONE)


@pytest.mark.parametrize("config", [PAIR, GROUPS], ids=["pair", "groups-stride2"])
def test_conversion_uses_the_union_window(config):
    layer, x, params, _ = loaded(config)
    lc = layer.to_locally_connected()
    window = config.locally_connected_config()
    assert isinstance(lc, LocallyConnected2d)
    assert lc.config.kernel_size == window.kernel_size
    assert lc.config.padding_pairs == window.padding_pairs
    assert conformance.relative_error(nhwc(lc(x)), nhwc(layer(x))) <= tol(config)
    want_kernel, want_bias = L.to_locally_connected(params, config)
    got = lc.neutral_params()
    np.testing.assert_allclose(got["kernel"], want_kernel, rtol=0, atol=tol(config))
    np.testing.assert_allclose(got["bias"], want_bias, rtol=0, atol=tol(config))
    # Taps no basis reaches hold exact zeros (spec 16.5's embedding).
    embedded = L.reference.embedded_basis(params, config)
    unreached = ~np.any(embedded != 0, axis=(0, 3, 4))
    assert unreached.any() and not got["kernel"][:, :, unreached].any()


def test_input_dependent_conversion_is_per_example():
    layer, x, params, _ = loaded(IDEP)
    weight, bias = layer.locally_connected_kernel(x)
    assert tuple(weight.shape) == (BATCH, 8, 7, 3, 2, 5, 5)  # window of [1, 2, 3d2]: 5 x 5
    y = LF.locally_connected(x, weight, bias, IDEP)
    assert conformance.relative_error(nhwc(y), nhwc(layer(x))) <= tol(IDEP)


def test_embedded_basis_matches_the_reference():
    layer, _, params, _ = loaded(GROUPS)
    got = LF.embedded_basis(list(layer.basis), GROUPS)  # (K C_out, C_in, kh, kw)
    want = L.reference.embedded_basis(params, GROUPS)  # (K, kh, kw, C_in, C_out)
    got = got.detach().unflatten(0, (3, 3)).permute(0, 3, 4, 2, 1).numpy()
    np.testing.assert_array_equal(got, want)
    with pytest.raises(TypeError, match=r"mixed basis is given as its 3 members"):
        LF.embedded_basis(layer.basis[0], GROUPS)


@pytest.mark.parametrize("strategy", ["conv", "lc"])
def test_gradcheck(strategy):
    config = L.LRLCConfig(2, 2, [3, 2], rank=2, input_size=(4, 5), dilation=[2, 1], stride=2,
                          padding="same")  # fmt: skip
    layer, x, _, _ = loaded(config, strategy)
    names, tensors = zip(*layer.named_parameters())

    def f(x, *values):
        return torch.func.functional_call(layer, dict(zip(names, values)), (x,))

    inputs = (x.requires_grad_(True), *(t.detach().requires_grad_(True) for t in tensors))
    assert torch.autograd.gradcheck(f, inputs)


def test_checkpoint_round_trip(tmp_path):
    layer, x, params, _ = loaded(GROUPS)
    path = tmp_path / "mixed.safetensors"
    layer.save_checkpoint(path)
    read, config = L.load_params(path)
    assert config == GROUPS and set(read) == set(params)
    for name, value in params.items():
        np.testing.assert_array_equal(read[name], value, err_msg=name)
    back = LRLC2d.from_checkpoint(path)
    assert back.config == GROUPS and torch.equal(back(x), layer(x))
    other = LRLC2d.from_lrlc_config(GROUPS, dtype=torch.float32)
    other.load_checkpoint(path)
    assert torch.equal(other.basis[1], layer.basis[1].float())


def test_params_of_the_other_form_are_refused():
    layer = LRLC2d.from_lrlc_config(PAIR)
    plain = L.init_params(L.LRLCConfig(2, 3, 3, rank=2, input_size=(9, 8), padding="same"))
    with pytest.raises(ValueError, match=r"missing tensors \['basis.0', 'basis.1'\]"):
        layer.load_neutral_params({**plain, "row_logits": plain["row_logits"]})
    params = L.init_params(PAIR)
    with pytest.raises(ValueError, match=r"'basis.1'\] has shape \(3, 3, 2, 3\); expected"):
        layer.load_neutral_params({**params, "basis.1": params["basis.0"]})
    with pytest.raises(TypeError, match=r"mixed basis is given as its 2 members"):
        LF.algorithm1(torch.zeros(1, 2, 9, 8), layer.combining_weights(), layer.basis[0], PAIR)
