"""lrlc_torch's modules and functions beyond the conformance catalogue: parameters and
initialisation, checkpoints, errors, the locally connected form, Algorithm 1's single
convolution, gradcheck, torch.func and autocast. Reference values come from lrlc_numpy."""

import dataclasses
import io

import numpy as np
import pytest
import torch

import conformance
import lrlc_numpy as L
import lrlc_torch
from lrlc_torch import LocallyConnected2d, LRLC2d
from lrlc_torch import functional as LF

FIXED = L.LRLCConfig(2, 3, 3, rank=3, input_size=(7, 6), stride=2, padding="same")
IDEP = L.LRLCConfig(
    2, 3, 3, rank=2, input_size=(7, 6), padding="same", combining="full", input_dependent=True
)
BATCH = 2


def nchw(x_nhwc, dtype=torch.float64):
    return torch.from_numpy(x_nhwc).to(dtype).permute(0, 3, 1, 2)


def nhwc(y):
    return y.detach().permute(0, 2, 3, 1).double().numpy()


def loaded(config, seed=0, dtype=torch.float64):
    """A layer holding the conformance data for `config` (logits and biases away from their
    constant initial values), with that data's input and neutral params."""
    x, params, _ = conformance.case_data(conformance.Case("t", config, BATCH), seed)
    layer = LRLC2d.from_lrlc_config(config, dtype=dtype)
    layer.load_neutral_params(params)
    return layer, nchw(x, dtype), params


def tol(config, dtype="float64"):
    return conformance.tolerance(dtype, config, BATCH)


# ---------------------------------------------------------------------------------------------
# Parameters, initialisation, repr


@pytest.mark.parametrize("config", [FIXED, IDEP], ids=["fixed", "idep"])
def test_parameter_names_and_shapes_are_neutral(config):
    layer = LRLC2d.from_lrlc_config(config)
    shapes = L.param_shapes(config)
    assert set(layer.state_dict()) == set(shapes)
    assert {n: v.shape for n, v in layer.neutral_params().items()} == shapes
    # Only the basis changes layout: the members' (C_out, C_in, kh, kw) conv weights stacked
    # along the output channels, one 4-D (K C_out, C_in, kh, kw) weight like nn.Conv2d's.
    assert tuple(layer.basis.shape) == (config.rank * 3, 2, 3, 3)


@pytest.mark.parametrize("config", [FIXED, IDEP], ids=["fixed", "idep"])
def test_reset_parameters_draws_the_reference_init(config):
    layer = LRLC2d.from_lrlc_config(config, dtype=torch.float64)
    layer.reset_parameters(seed=5)
    want = L.init_params(config, seed=5)
    got = layer.neutral_params()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_default_init_follows_torch_manual_seed():
    torch.manual_seed(1)
    a = LRLC2d.from_lrlc_config(FIXED).neutral_params()["basis"]
    torch.manual_seed(1)
    b = LRLC2d.from_lrlc_config(FIXED).neutral_params()["basis"]
    c = LRLC2d.from_lrlc_config(FIXED).neutral_params()["basis"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_factory_kwargs():
    layer = LRLC2d.from_lrlc_config(IDEP, device="cpu", dtype=torch.float64)
    assert {p.dtype for p in layer.parameters()} == {torch.float64}
    assert {p.device.type for p in layer.parameters()} == {"cpu"}
    lc = LocallyConnected2d(2, 3, 3, (7, 6), dtype=torch.float64)
    assert lc.weight.dtype == lc.bias.dtype == torch.float64


def test_extra_repr_names_the_configuration():
    text = repr(LRLC2d(2, 3, (3, 1), rank=4, input_size=(9, 8), stride=2, padding="same"))
    for part in ("kernel_size=(3, 1)", "rank=4", "input_size=(9, 8)", "stride=(2, 2)"):
        assert part in text
    assert "padding='same'" in text and "combining='rowcol'" in text
    text = repr(LRLC2d.from_lrlc_config(IDEP))
    assert "input_dependent=True" in text and "(reduce): GLayer(kernel=(2, 2)" in text
    assert "input_size=(7, 6)" in repr(LocallyConnected2d(2, 3, 3, (7, 6)))


# ---------------------------------------------------------------------------------------------
# Forward and Algorithm 1


@pytest.mark.parametrize("config", [FIXED, IDEP], ids=["fixed", "idep"])
def test_module_and_functional_match_reference(config):
    layer, x, params = loaded(config)
    want = L.forward(x.permute(0, 2, 3, 1).numpy(), params, config)
    assert conformance.relative_error(nhwc(layer(x)), want) <= tol(config)
    y = LF.forward(x, dict(layer.named_parameters()), config)
    torch.testing.assert_close(y, layer(x), rtol=0, atol=0)


def test_algorithm1_is_one_convolution_then_one_weighted_sum(monkeypatch):
    layer, x, params = loaded(FIXED)
    calls = []
    conv2d = LF.F.conv2d
    monkeypatch.setattr(LF.F, "conv2d", lambda *a, **k: calls.append(1) or conv2d(*a, **k))
    layer(x)
    assert len(calls) == 1  # not K convolutions
    monkeypatch.undo()
    # Independently: K separate convolutions of the padded input, summed with the weights.
    xpad = torch.nn.functional.pad(x, (0, 1, 1, 1))  # 'same', stride 2 on (7, 6): spec rule
    assert FIXED.padding_pairs == ((1, 1), (0, 1))
    members = layer.basis.unflatten(0, (FIXED.rank, 3))
    per_member = torch.stack([torch.nn.functional.conv2d(xpad, f, stride=2) for f in members])
    torch.testing.assert_close(
        LF.basis_responses(x, layer.basis, FIXED), per_member.transpose(0, 1), rtol=0, atol=1e-13
    )
    weights = layer.combining_weights()
    explicit = sum(weights[k] * per_member[k] for k in range(FIXED.rank))
    torch.testing.assert_close(
        LF.combine(LF.basis_responses(x, layer.basis, FIXED), weights), explicit
    )


def test_position_banks_and_depthwise_conv3x3_match_the_reference_steps():
    """The same step under the same name as in lrlc_numpy, in torch's layouts."""
    layer, x, params = loaded(FIXED)
    weights = layer.combining_weights()  # (K, H_out, W_out)
    banks = LF.position_banks(weights, layer.basis)  # (H_out, W_out, C_out, C_in, kh, kw)
    want = L.position_banks(weights.permute(1, 2, 0).detach().numpy(), params["basis"])
    got = banks.permute(0, 1, 4, 5, 3, 2).detach().numpy()
    assert conformance.relative_error(got, want) <= tol(FIXED)
    a = torch.randn(BATCH, 3, 9, 8, dtype=torch.float64)
    kernel, bias = torch.randn(3, 3, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    got = nhwc(LF.depthwise_conv3x3(a, kernel, bias, 2))
    want = L.reference.depthwise_conv3x3(nhwc(a), kernel.numpy(), bias.numpy(), 2)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Checkpoints


@pytest.mark.parametrize("config", [FIXED, IDEP], ids=["fixed", "idep"])
def test_state_dict_round_trip(config):
    layer, x, _ = loaded(config)
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    fresh = LRLC2d.from_lrlc_config(config, dtype=torch.float64)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    for name, value in layer.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name
    assert torch.equal(fresh(x), layer(x))


@pytest.mark.parametrize("config", [FIXED, IDEP], ids=["fixed", "idep"])
def test_neutral_checkpoint_round_trip(tmp_path, config):
    layer, x, params = loaded(config)
    path = tmp_path / "layer.safetensors"
    layer.save_checkpoint(path)
    read, read_config = L.load_params(path)
    assert read_config == config
    for name, value in params.items():
        np.testing.assert_array_equal(read[name], value, err_msg=name)
    back = LRLC2d.from_checkpoint(path)
    assert back.basis.dtype == torch.float64  # the file's dtype is kept
    assert torch.equal(back(x), layer(x))
    assert LRLC2d.from_checkpoint(path, dtype=torch.float32).basis.dtype == torch.float32


def test_bad_neutral_params_are_rejected(tmp_path):
    layer = LRLC2d.from_lrlc_config(FIXED)
    params = L.init_params(FIXED)
    missing = {k: v for k, v in params.items() if k != "col_logits"}
    with pytest.raises(ValueError, match="missing tensors \\['col_logits'\\]"):
        layer.load_neutral_params(missing)
    with pytest.raises(ValueError, match="unexpected tensors \\['logits'\\]"):
        layer.load_neutral_params({**params, "logits": np.zeros((4, 3, 3))})
    with pytest.raises(ValueError, match="'basis'.*has shape"):
        layer.load_neutral_params({**params, "basis": params["basis"][:2]})
    # A file whose tensors do not fit its own config.
    from safetensors.numpy import save_file

    path = tmp_path / "bad.safetensors"
    save_file(missing, str(path), metadata={"lrlc_config": FIXED.to_json()})
    with pytest.raises(ValueError, match="col_logits"):
        LRLC2d.from_checkpoint(path)


# ---------------------------------------------------------------------------------------------
# The layer surface shared with lrlc_tf (spec: one layer surface), and its deprecated aliases


def test_from_lrlc_config_builds_a_fresh_layer():
    layer = LRLC2d.from_lrlc_config(IDEP, strategy="conv", dtype=torch.float64)
    assert layer.config == IDEP and layer.strategy == "conv"
    assert {p.dtype for p in layer.parameters()} == {torch.float64}
    lc = LocallyConnected2d.from_lrlc_config(FIXED, bias=False, dtype=torch.float64)
    assert lc.bias is None and lc.weight.dtype == torch.float64
    assert (lc.config.input_size, lc.config.stride, lc.config.padding_pairs) == (
        FIXED.input_size, FIXED.stride, FIXED.padding_pairs,
    )  # fmt: skip
    with pytest.raises(TypeError, match="from_lrlc_config expects an LRLCConfig, got dict"):
        LRLC2d.from_lrlc_config({"rank": 2})


@pytest.mark.parametrize("config", [FIXED, IDEP], ids=["fixed", "idep"])
def test_neutral_params_round_trip_exactly(config):
    _, _, params = loaded(config)
    layer = LRLC2d.from_lrlc_config(config, dtype=torch.float64)
    assert layer.load_neutral_params(params) is None
    got = layer.neutral_params()
    assert set(got) == set(params)
    for name, value in params.items():
        assert isinstance(got[name], np.ndarray)
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_locally_connected_neutral_params_round_trip_exactly():
    lc = LocallyConnected2d.from_lrlc_config(FIXED, dtype=torch.float64)
    kernel, bias = L.to_locally_connected(L.init_params(FIXED, seed=3), FIXED)
    lc.load_neutral_params({"kernel": kernel, "bias": bias + 1.0})
    got = lc.neutral_params()
    np.testing.assert_array_equal(got["kernel"], kernel)
    np.testing.assert_array_equal(got["bias"], bias + 1.0)
    per_example = np.broadcast_to(kernel, (BATCH, *kernel.shape))
    with pytest.raises(ValueError, match="one kernel per example"):
        lc.load_neutral_params({"kernel": per_example, "bias": bias})


@pytest.mark.parametrize("config", [FIXED, IDEP], ids=["fixed", "idep"])
def test_load_checkpoint_changes_the_layer_in_place(tmp_path, config):
    layer, x, params = loaded(config)
    path = tmp_path / "layer.safetensors"
    layer.save_checkpoint(path)
    target = LRLC2d.from_lrlc_config(config, dtype=torch.float32)
    before = target.neutral_params()
    assert not np.array_equal(before["basis"], params["basis"].astype(np.float32))
    assert target.load_checkpoint(path) is None
    after = target.neutral_params()
    for name, value in params.items():  # the file's float64 values, in the layer's float32
        np.testing.assert_array_equal(after[name], value.astype(np.float32), err_msg=name)
        assert not np.array_equal(after[name], before[name]), name
    assert target.basis.dtype == torch.float32
    want = layer(x)
    assert conformance.relative_error(nhwc(target(x.float())), nhwc(want)) <= tol(config, "float32")


def test_load_checkpoint_refuses_another_config(tmp_path):
    path = tmp_path / "layer.safetensors"
    LRLC2d.from_lrlc_config(FIXED).save_checkpoint(path)
    other = dataclasses.replace(FIXED, stride=1)
    layer = LRLC2d.from_lrlc_config(other)
    before = layer.neutral_params()
    with pytest.raises(ValueError, match=r"holds a layer with config LRLCConfig\(.*stride=\(2, 2\)"
                       r".*this layer has config LRLCConfig\(.*stride=\(1, 1\)"):  # fmt: skip
        layer.load_checkpoint(path)
    for name, value in layer.neutral_params().items():  # untouched
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_checkpoint_functions_take_functional_params(tmp_path):
    layer, x, _ = loaded(FIXED)
    path = tmp_path / "layer.safetensors"
    lrlc_torch.save_checkpoint(path, dict(layer.named_parameters()), FIXED)
    params, config = lrlc_torch.load_checkpoint(path)
    assert config == FIXED and params["basis"].shape == layer.basis.shape
    assert torch.equal(LF.forward(x, params, config), layer(x))
    params, _ = lrlc_torch.load_checkpoint(path, dtype=torch.float32)
    assert {p.dtype for p in params.values()} == {torch.float32}


@pytest.mark.parametrize(
    "cls, old, new",
    [
        (LRLC2d, "from_config", "from_lrlc_config"),
        (LocallyConnected2d, "from_config", "from_lrlc_config"),
    ],
)
def test_deprecated_from_config_warns_and_builds_the_same_layer(cls, old, new):
    torch.manual_seed(0)
    want = getattr(cls, new)(FIXED, dtype=torch.float64)
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning, match=f"{cls.__name__}.{old} is deprecated; use {new}"):
        got = getattr(cls, old)(FIXED, dtype=torch.float64)
    assert type(got) is cls and got.config == want.config
    for (name, a), (_, b) in zip(got.named_parameters(), want.named_parameters()):
        assert torch.equal(a, b), name


def test_deprecated_save_neutral_warns_and_writes_the_checkpoint(tmp_path):
    layer, _, params = loaded(FIXED)
    path = tmp_path / "layer.safetensors"
    with pytest.warns(DeprecationWarning, match="save_neutral is deprecated; use save_checkpoint"):
        layer.save_neutral(path)
    read, config = L.load_params(path)
    assert config == FIXED
    for name, value in params.items():
        np.testing.assert_array_equal(read[name], value, err_msg=name)


def test_deprecated_load_neutral_warns_and_keeps_its_old_behaviour(tmp_path):
    """It returns a new layer (the file's dtype kept, or `dtype`), and leaves the layer it
    is called on unchanged, which the warning says."""
    layer, x, _ = loaded(FIXED)
    path = tmp_path / "layer.safetensors"
    layer.save_checkpoint(path)
    match = "load_neutral is deprecated; use from_checkpoint.*never changed.*load_checkpoint"
    with pytest.warns(DeprecationWarning, match=match):
        back = LRLC2d.load_neutral(path)
    assert back.basis.dtype == torch.float64 and torch.equal(back(x), layer(x))
    other = LRLC2d.from_lrlc_config(FIXED, dtype=torch.float64)
    before = other.neutral_params()
    with pytest.warns(DeprecationWarning, match=match):
        new = other.load_neutral(path, dtype=torch.float32)
    assert new is not other and new.basis.dtype == torch.float32
    for name, value in other.neutral_params().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "x, error, match",
    [
        (torch.zeros(7, 6), ValueError, r"rank 4 .*\(7, 6\)"),
        (torch.zeros(1, 1, 2, 7, 6), ValueError, r"rank 4 .*\(1, 1, 2, 7, 6\)"),
        (torch.zeros(1, 3, 7, 6), ValueError, "3 channels.*in_channels=2"),
        (torch.zeros(1, 2, 6, 7), ValueError, r"spatial size \(6, 7\).*input_size=\(7, 6\)"),
        (np.zeros((1, 2, 7, 6)), TypeError, "torch.Tensor, got ndarray"),
        (torch.zeros(1, 2, 7, 6, dtype=torch.int64), TypeError, "floating dtype, got torch.int64"),
    ],
)
@pytest.mark.parametrize("config", [FIXED, IDEP], ids=["fixed", "idep"])
def test_bad_input_is_a_clear_error(config, x, error, match):
    layer = LRLC2d.from_lrlc_config(config)
    with pytest.raises(error, match=match):
        layer(x)
    with pytest.raises(error, match=match):
        layer.locally_connected_kernel(x)


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(combining="diagonal"), "unknown mode 'diagonal'"),
        (dict(normalize="max"), "unknown normalisation 'max'"),
        (dict(padding="full"), "unknown padding 'full'"),
        (dict(input_dependent=True), "requires combining='full'"),
        (dict(input_size=(2, 2)), "empty output grid"),
    ],
)
def test_bad_options_are_a_clear_error(options, match):
    arguments = dict(input_size=(7, 6)) | options
    with pytest.raises(ValueError, match=match):
        LRLC2d(2, 3, 3, rank=2, **arguments)


# ---------------------------------------------------------------------------------------------
# Locally connected form


@pytest.mark.parametrize("biases", [(True, True), (False, False)], ids=["bias", "nobias"])
def test_to_locally_connected_gives_identical_outputs(biases):
    config = L.LRLCConfig(
        2, 3, (3, 2), rank=3, input_size=(8, 7), stride=(2, 1), dilation=(1, 2),
        padding=((2, 0), (1, 1)), spatial_bias=biases[0], channel_bias=biases[1],
    )  # fmt: skip
    layer, x, params = loaded(config)
    lc = layer.to_locally_connected()
    assert isinstance(lc, LocallyConnected2d) and (lc.bias is None) == (not any(biases))
    assert conformance.relative_error(nhwc(lc(x)), nhwc(layer(x))) <= tol(config)
    want_kernel, want_bias = L.to_locally_connected(params, config)
    got = lc.neutral_params()
    assert conformance.relative_error(got["kernel"], want_kernel) <= tol(config)
    np.testing.assert_allclose(got["bias"], want_bias, rtol=0, atol=tol(config))


def test_input_dependent_layer_exposes_per_example_kernels():
    layer, x, params = loaded(IDEP)
    weight, bias = layer.locally_connected_kernel(x)
    assert tuple(weight.shape) == (BATCH, 7, 6, 3, 2, 3, 3)
    y = LF.locally_connected(x, weight, bias, IDEP)
    assert conformance.relative_error(nhwc(y), nhwc(layer(x))) <= tol(IDEP)
    with pytest.raises(ValueError, match="locally_connected_kernel"):
        layer.to_locally_connected()
    with pytest.raises(ValueError, match="needs the input x"):
        layer.locally_connected_kernel()


def test_locally_connected_layer_matches_reference_and_checks_shapes():
    lc = LocallyConnected2d(2, 3, 3, (7, 6), stride=2, padding="same", dtype=torch.float64)
    with torch.no_grad():
        lc.bias.normal_()
    x = torch.randn(BATCH, 2, 7, 6, dtype=torch.float64)
    neutral = lc.neutral_params()
    want = L.locally_connected(nhwc(x), neutral["kernel"], neutral["bias"], FIXED)
    assert conformance.relative_error(nhwc(lc(x)), want) <= tol(FIXED)
    # The shared check (lrlc_numpy.check_lc_shapes) calls the weight the kernel.
    with pytest.raises(ValueError, match="kernel has shape"):
        LF.locally_connected(x, lc.weight[:1], lc.bias, FIXED)
    with pytest.raises(ValueError, match="bias has shape"):
        LF.locally_connected(x, lc.weight, lc.bias[:1], FIXED)
    with pytest.raises(ValueError, match="expected \\['bias', 'kernel'\\]"):
        lc.load_neutral_params({"kernel": neutral["kernel"]})
    with pytest.raises(ValueError, match="kernel has shape"):
        lc.load_neutral_params({"kernel": neutral["kernel"][:1], "bias": neutral["bias"]})


# ---------------------------------------------------------------------------------------------
# Autodiff, torch.func, autocast


TINY_FIXED = L.LRLCConfig(2, 2, 3, rank=2, input_size=(5, 4), stride=2, padding="same")
TINY_IDEP = L.LRLCConfig(
    2, 2, 3, rank=2, input_size=(5, 4), padding=1, combining="full", input_dependent=True
)


RANK_ONE = {  # one convolution: lrlc_numpy.strategy.weights_are_ones
    "fixed-rank1": dataclasses.replace(TINY_FIXED, rank=1),
    "idep-rank1": dataclasses.replace(TINY_IDEP, rank=1),
}


@pytest.mark.parametrize(
    "config", [TINY_FIXED, TINY_IDEP, *RANK_ONE.values()], ids=["fixed", "idep", *RANK_ONE]
)
def test_gradcheck_float64(config):
    layer, x, _ = loaded(config)
    names, tensors = zip(*layer.named_parameters())

    def f(x, *values):
        return torch.func.functional_call(layer, dict(zip(names, values)), (x,))

    inputs = (x.requires_grad_(True), *(t.detach().requires_grad_(True) for t in tensors))
    # The full Jacobian of the input-dependent layer takes ~1000 evaluations; fast mode
    # compares it along random directions instead (torch's documented cheaper check).
    assert torch.autograd.gradcheck(f, inputs, fast_mode=config.input_dependent)


@pytest.mark.parametrize("config", RANK_ONE.values(), ids=RANK_ONE)
def test_rank_one_second_derivatives(config):
    """Double backward (gradient penalties) works through the rank-1 path. The logits' (or
    g's) gradients are constant zeros there, which gradgradcheck cannot pair with its
    numerical Jacobian, so they are held fixed for it; a second-order gradient through
    them is checked to be zero instead."""
    layer, x, _ = loaded(config)
    params = dict(layer.named_parameters())
    fixed = {n: p.detach() for n, p in params.items() if n.endswith("logits") or n.startswith("g.")}
    names = [n for n in params if n not in fixed]
    assert fixed and names

    def f(x, *values):
        return torch.func.functional_call(layer, {**fixed, **dict(zip(names, values))}, (x,))

    inputs = (x.requires_grad_(True), *(params[n].detach().requires_grad_(True) for n in names))
    assert torch.autograd.gradgradcheck(f, inputs, fast_mode=True)
    combining = [params[n] for n in fixed]
    (dx, *dcombining) = torch.autograd.grad(layer(x).square().sum(), [x, *combining],
                                            create_graph=True)  # fmt: skip
    second = torch.autograd.grad(dx.square().sum(), combining, allow_unused=True)
    assert all(g is None or not g.any() for g in second)
    assert all(not g.any() for g in dcombining)


@pytest.mark.parametrize(
    "config",
    [FIXED, IDEP, dataclasses.replace(IDEP, rank=1)],
    ids=["fixed", "idep", "idep-rank1"],
)
def test_torch_func_grad_and_vmap(config):
    layer, x, params = loaded(config)
    weights = {n: p.detach() for n, p in layer.named_parameters()}

    def loss(weights, x):
        return torch.func.functional_call(layer, weights, (x,)).square().sum()

    grads = torch.func.grad(loss)(weights, x)
    y = layer(x)
    y.backward(2 * y.detach())
    for name, param in layer.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, rtol=0, atol=tol(config))

    def one(x1):  # one example, given to the layer as a batch of one
        return torch.func.functional_call(layer, weights, (x1[None],))[0]

    torch.testing.assert_close(torch.func.vmap(one)(x), layer(x), rtol=0, atol=tol(config))
    per_example = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(weights, x[:, None])
    for name in weights:
        torch.testing.assert_close(per_example[name].sum(0), grads[name], rtol=0, atol=1e-12)


@pytest.mark.parametrize("config", [FIXED, IDEP], ids=["fixed", "idep"])
def test_autocast_bfloat16_on_cpu(config):
    layer, x, _ = loaded(config, dtype=torch.float32)
    with torch.no_grad():
        want = layer(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = layer(x)
    assert got.shape == want.shape and torch.isfinite(got).all()
    # bfloat16 rule of spec section 15: 8 eps sqrt(stages), relative to max(1, max|want|).
    error = conformance.relative_error(got.float(), want)
    assert 0 < error <= tol(config, "bfloat16")  # > 0: autocast really ran in bfloat16


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("config", [FIXED, IDEP], ids=["fixed", "idep"])
def test_cuda_matches_cpu(config):
    layer, x, _ = loaded(config)
    want = layer(x)
    got = layer.to("cuda")(x.cuda())
    assert conformance.relative_error(nhwc(got.cpu()), nhwc(want)) <= tol(config)


def test_functional_checks_params_and_lc_dtypes():
    layer, x, _ = loaded(FIXED)
    params = dict(layer.named_parameters())
    with pytest.raises(ValueError, match=r"missing tensors \['row_bias'\]"):
        LF.forward(x, {k: v for k, v in params.items() if k != "row_bias"}, FIXED)
    with pytest.raises(ValueError, match=r"'basis'\] has shape \(1, 2, 3, 3\); expected \(9,"):
        LF.forward(x, {**params, "basis": params["basis"][:1]}, FIXED)
    with pytest.raises(TypeError, match="'channel_bias'.*torch.int64"):
        LF.forward(x, {**params, "channel_bias": torch.zeros(3, dtype=torch.int64)}, FIXED)
    with pytest.raises(TypeError, match="mapping"):
        LF.forward(x, list(params.values()), FIXED)
    weight, bias = layer.locally_connected_kernel()
    with pytest.raises(TypeError, match="weight must be floating point, got torch.int32"):
        LF.locally_connected(x, weight.int(), bias, FIXED)
    with pytest.raises(TypeError, match="floating dtype"):
        layer.load_neutral_params({**L.init_params(FIXED), "channel_bias": np.zeros(3, int)})
