"""lrlc_torch on sequences and volumes (spec section 17): LRLC1d/LRLC3d and
LocallyConnected1d/LocallyConnected3d against lrlc_numpy in float64, both strategies,
through the conformance adapter, against hand-written torch ops where the reference is not
involved (unfold for the locally connected layer, F.interpolate for g's resize, a plain
convolution at rank 1), checkpoints, convert_convs and the errors of the n-D surface.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import conformance
import lrlc_numpy as L
from conformance import backends
from lrlc_torch import (
    LocallyConnected1d,
    LocallyConnected2d,
    LocallyConnected3d,
    LowRankLocallyConnected1d,
    LowRankLocallyConnected3d,
    LRLC1d,
    LRLC2d,
    LRLC3d,
    compiled,
    convert_convs,
    positionwise,
    to_neutral,
    torch_lc_shapes,
)
from lrlc_torch import functional as LF

BATCH = 2
LRLC = {1: LRLC1d, 2: LRLC2d, 3: LRLC3d}
LOCALLY_CONNECTED = {1: LocallyConnected1d, 2: LocallyConnected2d, 3: LocallyConnected3d}

# Every combining mode a rank allows ('full' in 1-D; 'rowcol' and 'full' in 3-D), every
# normalisation, stride, dilation, each padding form (valid, same, int, per-axis ints,
# (before, after) pairs), no biases, the input-dependent network (with dilated branches)
# and mixed bases, on grids small enough for two shared CPU cores.
CONFIGS = {
    "1d-valid": L.LRLCConfig(2, 3, 3, rank=3, input_size=(9,), combining="full"),
    "1d-same-stride-l2": L.LRLCConfig(
        2, 2, 4, rank=2, input_size=(10,), stride=3, padding="same", combining="full",
        normalize="l2",
    ),
    "1d-dilated-pairs-none": L.LRLCConfig(
        1, 2, 3, rank=2, input_size=(9,), dilation=2, padding=((2, 1),), combining="full",
        normalize="none", channel_bias=False,
    ),
    "1d-int-padding-no-spatial-bias": L.LRLCConfig(
        2, 2, 2, rank=2, input_size=(7,), padding=1, stride=2, combining="full",
        spatial_bias=False,
    ),
    "1d-input-dependent": L.LRLCConfig(
        2, 2, 3, rank=2, input_size=(11,), padding="same", combining="full",
        input_dependent=True,
    ),
    "1d-mixed": L.LRLCConfig(
        2, 2, [1, 3, 5], rank=3, input_size=(8,), dilation=[1, 2, 1], padding="same",
        combining="full",
    ),
    "1d-rank1": L.LRLCConfig(2, 3, 3, rank=1, input_size=(8,), padding="same", combining="full"),
    "3d-rowcol": L.LRLCConfig(2, 2, 2, rank=2, input_size=(3, 4, 3)),
    "3d-rowcol-same-stride-dilation": L.LRLCConfig(
        1, 2, (2, 3, 2), rank=3, input_size=(4, 5, 5), stride=(1, 2, 1), dilation=(1, 1, 2),
        padding="same", normalize="l2",
    ),
    "3d-full-pairs": L.LRLCConfig(
        1, 2, (1, 2, 3), rank=2, input_size=(3, 5, 4), padding=((0, 1), (1, 0), (2, 1)),
        combining="full", normalize="none",
    ),
    "3d-per-axis-padding-no-bias": L.LRLCConfig(
        2, 1, 2, rank=3, input_size=(2, 3, 3), padding=(1, 0, 1), spatial_bias=False,
        channel_bias=False,
    ),
    "3d-input-dependent": L.LRLCConfig(
        1, 2, 3, rank=2, input_size=(5, 5, 6), padding="same", combining="full",
        input_dependent=True,
    ),
    "3d-mixed": L.LRLCConfig(
        1, 2, [(1, 3, 3), 3], rank=2, input_size=(3, 4, 4), dilation=[1, (1, 2, 1)],
        padding="same", stride=(1, 2, 1),
    ),
    "3d-rank1": L.LRLCConfig(2, 2, (1, 3, 2), rank=1, input_size=(2, 4, 3), padding="same"),
}  # fmt: skip
FIXED = [name for name, config in CONFIGS.items() if not config.input_dependent]
# 'lc' takes fixed layers only; input-dependent ones run Algorithm 1.
STRATEGY_CASES = [(name, "conv") for name in CONFIGS] + [(name, "lc") for name in FIXED]


def channels_first(a, dtype=torch.float64):
    """Canonical NLC / NDHWC data as torch's NCL / NCDHW."""
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype).movedim(-1, 1)


def channels_last(t):
    return t.detach().movedim(1, -1).double().numpy()


def case(name, seed=0):
    config = CONFIGS[name]
    return config, *conformance.case_data(conformance.Case(name, config, BATCH), seed)


def loaded(config, params, strategy="auto"):
    layer = LRLC[config.spatial_dims].from_lrlc_config(
        config, strategy=strategy, dtype=torch.float64
    )
    layer.load_neutral_params(params)
    return layer


def tol(config):
    return conformance.tolerance("float64", config, BATCH)


def assert_close(got, want, tolerance, label):
    error = conformance.relative_error(got, want)
    assert error <= tolerance, f"{label}: relative error {error:.3g} > {tolerance:.3g}"


# ---------------------------------------------------------------------------------------------
# Forward and gradients against the reference


@pytest.mark.parametrize("name, strategy", STRATEGY_CASES)
def test_forward_and_gradients_match_the_reference(name, strategy):
    config, x, params, dy = case(name)
    assert_matches_reference(loaded(config, params, strategy), config, x, params, dy)


def assert_matches_reference(layer, config, x, params, dy):
    """The layer's output, input gradient and every parameter gradient (by neutral name)
    against lrlc_numpy's forward and vjp."""
    x_t = channels_first(x).requires_grad_(True)
    y = layer(x_t)
    assert_close(channels_last(y), L.forward(x, params, config), tol(config), "output")
    names, tensors = zip(*layer.named_parameters())
    grads = torch.autograd.grad(y, (x_t, *tensors), channels_first(dy))
    want_dx, want_dparams = L.vjp(x, params, config, dy)
    assert_close(channels_last(grads[0]), want_dx, tol(config), "dL/dx")
    got_dparams = to_neutral(dict(zip(names, grads[1:])), config)
    assert set(got_dparams) == set(want_dparams)
    for param, want in want_dparams.items():
        assert_close(got_dparams[param], want, tol(config), f"dL/d[{param}]")


@pytest.mark.parametrize(
    "name", ["1d-same-stride-l2", "3d-rowcol-same-stride-dilation", "3d-mixed"]
)
def test_the_locally_connected_form_one_output_row_at_a_time(monkeypatch, name):
    """The blocked kernel (positionwise) with one slice of the first grid axis per block, as
    large layers run it: each block starts its windows and their gradients mid-grid."""
    monkeypatch.setattr(positionwise, "BLOCK_BYTES", 1)
    config, x, params, dy = case(name)
    assert len(positionwise._row_blocks(config.locally_connected_config(), channels_first(x))) > 1
    assert_matches_reference(loaded(config, params, "lc"), config, x, params, dy)


@pytest.mark.parametrize("name", ["1d-valid", "3d-rowcol", "3d-input-dependent"])
def test_the_elementwise_combination_matches_the_reference(monkeypatch, name):
    """The broadcast-and-sum combination and weight gradient (taken on CUDA at small ranks),
    forced on for the CPU."""
    config, x, params, dy = case(name)
    monkeypatch.setitem(LF.ELEMENTWISE_COMBINE_MAX_RANK, "cpu", config.rank)
    monkeypatch.setitem(LF.ELEMENTWISE_WEIGHT_GRAD_MAX_RANK, "cpu", config.rank)
    assert_matches_reference(loaded(config, params, "conv"), config, x, params, dy)


@pytest.mark.parametrize("strategy", ["auto", "conv", "lc"])
def test_the_adapter_passes_conformance_on_these_configs(strategy):
    """The whole check list (forward, vjp, conversion, locally connected forward,
    checkpoints both ways, initial values) through the torch adapter, float64."""
    cases = [conformance.Case(name, config, BATCH) for name, config in CONFIGS.items()]
    adapter = backends.load("torch", strategy=strategy)
    report = conformance.run(adapter, dtypes=["float64"], cases=cases)
    assert not report.failures, [(f.check, f.case, f.message) for f in report.failures]
    assert report.total("skipped") == 0, report.skipped_reasons
    assert report.total("passed") == len(cases) * len(conformance.CHECKS)


@pytest.mark.parametrize("name", FIXED)
def test_both_strategies_give_the_same_layer(name):
    config, x, params, _ = case(name, seed=3)
    by_conv = loaded(config, params, "conv")(channels_first(x))
    by_lc = loaded(config, params, "lc")(channels_first(x))
    assert_close(by_lc.detach().numpy(), by_conv.detach().numpy(), tol(config), "lc vs conv")


@pytest.mark.parametrize("strategy", ["conv", "lc"])
@pytest.mark.parametrize("combining", ["rowcol", "full"])
def test_a_volume_one_slice_deep_is_the_image_layer(strategy, combining):
    """A 3-D layer on a depth-1 grid with depth-1 windows computes the 2-D layer: the same
    parameters with a depth axis of size 1 (the depth table's logits and bias add a constant
    per basis member and per position, zero here)."""
    image = L.LRLCConfig(
        2, 3, (3, 2), rank=3, input_size=(7, 5), stride=(2, 1), padding="same",
        combining=combining,
    )  # fmt: skip
    volume = L.LRLCConfig(
        2, 3, (1, 3, 2), rank=3, input_size=(1, 7, 5), stride=(1, 2, 1),
        padding=((0, 0), *image.padding_pairs), combining=combining,
    )  # fmt: skip
    x, params, dy = conformance.case_data(conformance.Case("image", image, BATCH), 1)
    deep = {}
    for name, value in params.items():
        if name in ("logits", "spatial_bias"):
            deep[name] = value[None]
        elif name == "basis":
            deep[name] = value[:, None]
        else:
            deep[name] = value
    if combining == "rowcol":
        deep["depth_logits"] = np.zeros((1, 3))
        deep["depth_bias"] = np.zeros(1)
    flat = loaded(image, params, strategy)
    deep_layer = loaded(volume, deep, strategy)
    x_flat = channels_first(x).requires_grad_(True)
    x_deep = channels_first(x[:, None]).requires_grad_(True)
    y_flat, y_deep = flat(x_flat), deep_layer(x_deep)
    assert_close(y_deep[:, :, 0].detach().numpy(), y_flat.detach().numpy(), tol(image), "y")
    (y_flat * channels_first(dy)).sum().backward()
    (y_deep * channels_first(dy[:, None])).sum().backward()
    assert_close(x_deep.grad[:, :, 0].numpy(), x_flat.grad.numpy(), tol(image), "dx")
    assert_close(
        deep_layer.basis.grad.squeeze(2).numpy(), flat.basis.grad.numpy(), tol(image), "dbasis"
    )


@pytest.mark.parametrize("name", ["1d-rank1", "3d-rank1"])
def test_rank_one_with_softmax_is_a_plain_convolution(name):
    """w = 1 exactly: the layer is conv1d / conv3d with its one member plus the biases."""
    config, x, params, _ = case(name)
    layer = loaded(config, params)
    conv = getattr(F, f"conv{config.spatial_dims}d")
    x_t = channels_first(x)
    padded = F.pad(x_t, [amount for pair in reversed(config.padding_pairs) for amount in pair])
    want = conv(padded, layer.basis.detach(), stride=config.stride, dilation=config.dilation)
    spatial = torch.tensor(L.reference.spatial_bias_map(params, config))
    channel = torch.from_numpy(params["channel_bias"]).reshape(-1, *(1,) * config.spatial_dims)
    want = want + spatial + channel
    assert_close(layer(x_t).detach().numpy(), want.numpy(), tol(config), "rank 1")
    assert layer.combining_weights().eq(1).all()


@pytest.mark.parametrize("name", ["1d-valid", "3d-rowcol"])
def test_one_unbatched_example_is_a_batch_of_one(name):
    config, x, params, _ = case(name)
    layer = loaded(config, params)
    x_t = channels_first(x)
    assert torch.equal(layer(x_t[1]), layer(x_t[1:])[0])
    lc = layer.to_locally_connected()
    assert torch.equal(lc(x_t[1]), lc(x_t[1:])[0])


# ---------------------------------------------------------------------------------------------
# The input-dependent network g


@pytest.mark.parametrize(
    "shape, size, mode",
    [
        ((2, 3, 5), (9,), "linear"),
        ((2, 3, 1), (4,), "linear"),
        ((1, 2, 3, 4, 2), (4, 2, 5), "trilinear"),
        ((2, 2, 1, 1, 1), (3, 2, 4), "trilinear"),
        ((1, 2, 4, 3, 5), (2, 1, 5), "trilinear"),
    ],
)
def test_g_resize_is_align_corners_interpolation(shape, size, mode):
    """The separable resize of spec section 17.3 is torch's own aligned-corner linear and
    trilinear interpolation (a size-1 axis broadcasts, an axis of size 1 out samples 0)."""
    a = torch.from_numpy(np.random.default_rng(0).standard_normal(shape))
    want = F.interpolate(a, size=size, mode=mode, align_corners=True)
    config = L.LRLCConfig(1, 1, 1, rank=1, input_size=size, combining="full")
    assert_close(LF.resize_bilinear(a, size).numpy(), want.numpy(), tol(config), "resize")


@pytest.mark.parametrize("name", ["1d-input-dependent", "3d-input-dependent"])
def test_g_has_a_depthwise_branch_per_rate_on_every_axis(name):
    config, x, params, _ = case(name)
    layer = loaded(config, params)
    for rate in config.g_dilations:
        kernel = getattr(layer.g, f"dilated{rate}").kernel
        assert tuple(kernel.shape) == (3,) * config.spatial_dims + (config.rank,)
    assert config.g_dilations == ((1, 2, 4) if config.spatial_dims == 1 else (1, 2))
    weights = layer.combining_weights(channels_first(x))
    want = L.combining_weights(params, config, x)
    assert_close(channels_last(weights), want, tol(config), "combining weights")


# ---------------------------------------------------------------------------------------------
# Locally connected layers


def lc_by_unfold(x, weight, bias, config):
    """A locally connected layer from torch ops alone: pad, unfold each axis into windows,
    keep every d-th tap, contract each position with its bank."""
    n = config.spatial_dims
    x = F.pad(x, [amount for pair in reversed(config.padding_pairs) for amount in pair])
    for axis, (k, s, d) in enumerate(zip(config.kernel_size, config.stride, config.dilation)):
        x = x.unfold(2 + axis, (k - 1) * d + 1, s)[..., ::d]  # taps appended last
    grid, window = "ijl"[:n], "uvt"[:n]
    y = torch.einsum(f"bc{grid}{window},{grid}oc{window}->bo{grid}", x, weight)
    return y + bias


@pytest.mark.parametrize("name", ["1d-dilated-pairs-none", "1d-same-stride-l2", "3d-full-pairs",
                                  "3d-rowcol-same-stride-dilation", "3d-mixed"])  # fmt: skip
def test_locally_connected_layers_match_the_reference_and_unfold(name):
    config, x, params, dy = case(name)
    kernel, bias = L.to_locally_connected(params, config)
    lc = LOCALLY_CONNECTED[config.spatial_dims].from_lrlc_config(config, dtype=torch.float64)
    lc.load_neutral_params({"kernel": kernel, "bias": bias})
    x_t = channels_first(x).requires_grad_(True)
    y = lc(x_t)
    assert_close(channels_last(y), L.locally_connected(x, kernel, bias, config), tol(config), "y")
    # Gradients against the same layer written with unfold, autograd through torch ops.
    window = config.locally_connected_config()
    weight = lc.weight.detach().clone().requires_grad_(True)
    x_u = channels_first(x).requires_grad_(True)
    y_u = lc_by_unfold(x_u, weight, lc.bias.detach(), window)
    assert_close(y.detach().numpy(), y_u.detach().numpy(), tol(config), "unfold")
    torch.autograd.backward((y, y_u), (channels_first(dy), channels_first(dy)))
    assert_close(x_t.grad.numpy(), x_u.grad.numpy(), tol(config), "dx")
    assert_close(lc.weight.grad.numpy(), weight.grad.numpy(), tol(config), "dweight")
    # The LRLC layer's own conversion gives the same layer.
    converted = loaded(config, params).to_locally_connected()
    assert type(converted) is type(lc)
    assert_close(converted.neutral_params()["kernel"], kernel, tol(config), "conversion")


@pytest.mark.parametrize("name", ["1d-input-dependent", "3d-input-dependent"])
def test_per_example_kernels_reproduce_an_input_dependent_layer(name):
    config, x, params, _ = case(name)
    layer = loaded(config, params)
    x_t = channels_first(x)
    weight, bias = layer.locally_connected_kernel(x_t)
    assert tuple(weight.shape) == (BATCH, *torch_lc_shapes(config)[0])
    y = LF.locally_connected(x_t, weight, bias, config)
    assert_close(y.detach().numpy(), layer(x_t).detach().numpy(), tol(config), "per example")


def test_locally_connected_shapes_follow_conv1d_and_conv3d():
    lc1 = LocallyConnected1d(2, 3, 3, input_size=9, stride=2, padding="same")
    assert tuple(lc1.weight.shape) == (5, 3, 2, 3) and tuple(lc1.bias.shape) == (3, 5)
    lc3 = LocallyConnected3d(2, 3, (1, 2, 3), input_size=4, bias=False)
    assert tuple(lc3.weight.shape) == (4, 3, 2, 3, 2, 1, 2, 3) and lc3.bias is None
    assert lc3(torch.zeros(1, 2, 4, 4, 4)).shape == (1, 3, 4, 3, 2)


# ---------------------------------------------------------------------------------------------
# Parameters and checkpoints


def test_parameters_have_the_neutral_names_and_conv_layouts():
    layer = LRLC3d(2, 3, (1, 2, 3), rank=2, input_size=(4, 5, 6), padding="same")
    shapes = {name: tuple(p.shape) for name, p in layer.named_parameters()}
    assert shapes == {
        "basis": (6, 2, 1, 2, 3),  # (K C_out, C_in, kd, kh, kw), as nn.Conv3d's weight
        "depth_logits": (4, 2),
        "row_logits": (5, 2),
        "col_logits": (6, 2),
        "depth_bias": (4,),
        "row_bias": (5,),
        "col_bias": (6,),
        "channel_bias": (3,),
    }
    neutral = layer.neutral_params()
    assert {name: value.shape for name, value in neutral.items()} == L.param_shapes(layer.config)
    # Member k is rows k C_out ... of the conv weight, in the neutral (K, *kernel, C_in, C_out).
    member = layer.basis.detach()[3:6].permute(2, 3, 4, 1, 0).numpy()
    assert np.array_equal(neutral["basis"][1], member)
    # 'conv_init' (spec section 17.4): the three tables sum to 1/sqrt(K) at every position.
    logits = LF.fixed_logits(dict(layer.named_parameters()), layer.config).detach()
    float32 = conformance.tolerance("float32", layer.config, 1)  # the layer's default dtype
    assert_close(logits.numpy(), np.full((2, 4, 5, 6), 2**-0.5), float32, "logits")
    assert np.ptp(neutral["depth_logits"]) == np.ptp(neutral["col_logits"]) == 0


@pytest.mark.parametrize("name", ["1d-mixed", "3d-rowcol", "3d-input-dependent"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_checkpoints_round_trip_bit_exactly(tmp_path, name, dtype):
    config, _, params, _ = case(name)
    layer = LRLC[config.spatial_dims].from_lrlc_config(config, dtype=dtype)
    layer.load_neutral_params(params)
    path = tmp_path / f"{name}.safetensors"
    layer.save_checkpoint(path)
    stored = L.read_checkpoint(path)
    assert stored.config == config
    assert set(stored.stored_dtypes.values()) == {str(dtype).removeprefix("torch.")}
    for param, value in layer.neutral_params().items():
        assert np.array_equal(stored.params[param], value), param
    back = LRLC[config.spatial_dims].from_checkpoint(path)
    assert back.config == config
    for (a_name, a), (b_name, b) in zip(layer.named_parameters(), back.named_parameters()):
        assert a_name == b_name and a.dtype == b.dtype and torch.equal(a, b)
    fresh = LRLC[config.spatial_dims].from_lrlc_config(config, dtype=dtype)
    fresh.load_checkpoint(path)
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), layer.parameters()))


def test_a_checkpoint_of_another_rank_is_refused(tmp_path):
    path = tmp_path / "volume.safetensors"
    LRLC3d(1, 2, 2, rank=2, input_size=3).save_checkpoint(path)
    with pytest.raises(ValueError, match="spatial rank 3.*1-D layer"):
        LRLC1d.from_checkpoint(path)
    sequence = LRLC1d(1, 2, 2, rank=2, input_size=3, combining="full")
    with pytest.raises(ValueError, match="load_checkpoint: .* holds a layer with config"):
        sequence.load_checkpoint(path)


# ---------------------------------------------------------------------------------------------
# Upgrading convolutions


@pytest.mark.parametrize("dims", [1, 3])
def test_from_conv_reproduces_the_convolution(dims):
    torch.manual_seed(0)
    conv_type = {1: nn.Conv1d, 3: nn.Conv3d}[dims]
    conv = conv_type(2, 3, 3, stride=2, padding=1, dilation=1, dtype=torch.float64)
    size = (9,) if dims == 1 else (5, 6, 4)
    options = {"combining": "full"} if dims == 1 else {}
    layer = LRLC[dims].from_conv(conv, 3, size, **options)
    x = torch.randn(BATCH, 2, *size, dtype=torch.float64)
    assert_close(layer(x).detach().numpy(), conv(x).detach().numpy(), tol(layer.config), "conv")


def test_convert_convs_upgrades_1d_2d_and_3d_convolutions():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.sequence = nn.Conv1d(2, 3, 3, padding="same", dtype=torch.float64)
            self.image = nn.Conv2d(2, 3, (3, 1), padding=(1, 0), dtype=torch.float64)
            self.volume = nn.Conv3d(2, 3, (3, 1, 1), padding=(1, 0, 0), dtype=torch.float64)

        def forward(self, x):  # x (B, 2, L): the same signal seen as 1-D, 2-D and 3-D
            return (
                self.sequence(x)
                + self.image(x.unsqueeze(-1)).squeeze(-1)
                + self.volume(x[..., None, None]).flatten(2)
            )

    torch.manual_seed(1)
    model = Mixed()
    x = torch.randn(BATCH, 2, 8, dtype=torch.float64)
    before = model(x)
    names = convert_convs(model, x, rank=2, combining="full")
    assert names == ["sequence", "image", "volume"]
    assert type(model.sequence) is LowRankLocallyConnected1d
    assert type(model.image) is LRLC2d
    assert type(model.volume) is LowRankLocallyConnected3d
    assert model.sequence.config.input_size == (8,)
    assert model.volume.config.input_size == (8, 1, 1)
    # Three layers' errors add up in the sum.
    total = sum(tol(layer.config) for layer in (model.sequence, model.image, model.volume))
    assert_close(model(x).detach().numpy(), before.detach().numpy(), total, "converted")


def test_convert_convs_needs_full_combining_for_sequences_and_changes_nothing_then():
    model = nn.Sequential(nn.Conv2d(2, 2, 1), nn.Flatten(2), nn.Conv1d(2, 3, 3))
    with pytest.raises(ValueError, match="'2': .*1-D layer.*only combining mode is 'full'"):
        convert_convs(model, torch.randn(1, 2, 3, 2), rank=2)
    assert type(model[0]) is nn.Conv2d and type(model[2]) is nn.Conv1d


def test_the_compiled_path_runs_1d_and_3d_layers_eagerly():
    config, x, params, _ = case("3d-rowcol")
    layer = loaded(config, params, "lc")
    programs = compiled.compiled_programs()
    with compiled.use_compiled(True):
        y = layer(channels_first(x))
        # One unbatched volume is 4-D, like a batch of images: the rank decides, not the shape.
        single = layer(channels_first(x)[0])
    assert compiled.compiled_programs() == programs
    assert_close(channels_last(y), L.forward(x, params, config), tol(config), "output")
    assert torch.equal(single, y[0])


@pytest.mark.parametrize(
    "name, strategy", [("1d-same-stride-l2", "lc"), ("3d-input-dependent", "conv")]
)
def test_export_with_a_dynamic_batch(name, strategy):
    """torch.export keeps the n-D paths as ordinary ops, the batch symbolic."""
    config, x, params, _ = case(name)
    layer = loaded(config, params, strategy)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(layer, (channels_first(x),), dynamic_shapes=({0: batch},))
    three = channels_first(np.concatenate([x, x[:1]]))
    got = program.module()(three)
    assert_close(got.detach().numpy(), layer(three).detach().numpy(), tol(config), "exported")


# ---------------------------------------------------------------------------------------------
# Errors


def test_a_config_of_another_rank_is_refused_by_name():
    volume = CONFIGS["3d-rowcol"]
    match = r"LowRankLocallyConnected1d.*spatial rank 3.*1-D layer: use LowRankLocallyConnected3d"
    with pytest.raises(ValueError, match=match):
        LRLC1d.from_lrlc_config(volume)
    with pytest.raises(ValueError, match=r"spatial rank 1 .*LowRankLocallyConnected3d is a 3-D"):
        LRLC3d.from_lrlc_config(CONFIGS["1d-valid"])
    with pytest.raises(ValueError, match=r"LocallyConnected2d.*spatial rank 3"):
        LocallyConnected2d.from_lrlc_config(volume)
    with pytest.raises(ValueError, match=r"LocallyConnected1d.*spatial rank 2"):
        LocallyConnected1d.from_lrlc_config(L.LRLCConfig(1, 1, 1, rank=1, input_size=(3, 3)))


REFUSED = {
    "3d-given-an-image-size": (
        lambda: LRLC3d(1, 2, 3, rank=2, input_size=(5, 5)),
        ValueError,
        r"LowRankLocallyConnected3d: input_size \(5, 5\) has 2 spatial axes; this is a 3-D",
    ),
    "2d-given-a-volume-size": (
        lambda: LRLC2d(1, 2, 3, rank=2, input_size=(5, 5, 5)),
        ValueError,
        r"has 3 spatial axes; this is a 2-D layer",
    ),
    "lc-1d-given-an-image-size": (
        lambda: LocallyConnected1d(1, 2, 3, input_size=(5, 5)),
        ValueError,
        r"LocallyConnected1d: input_size",
    ),
    "1d-rowcol": (
        lambda: LRLC1d(1, 2, 3, rank=2, input_size=5),
        ValueError,
        r"1-D layer .*only combining mode is 'full'",
    ),
    "3d-row": (
        lambda: LRLC3d(1, 2, 3, rank=2, input_size=5, combining="row"),
        ValueError,
        r"'row' is defined for 2-D",
    ),
    "3d-given-a-pair": (
        lambda: LRLC3d(1, 2, (3, 3), rank=2, input_size=5),
        TypeError,
        r"kernel_size must be an int, a triple of ints",
    ),
}


@pytest.mark.parametrize("build, error, match", REFUSED.values(), ids=REFUSED)
def test_constructors_refuse_shapes_of_another_rank(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_from_conv_refuses_a_convolution_of_another_rank():
    with pytest.raises(
        TypeError, match=r"LowRankLocallyConnected3d.from_conv expects an nn.Conv3d"
    ):
        LRLC3d.from_conv(nn.Conv2d(1, 1, 3), 2, 5)


@pytest.mark.parametrize(
    "dims, shape, match",
    [
        (1, (2, 3, 2, 9), r"rank 3 \(B, C_in, L; NCL\) or 2 \(C_in, L"),
        (3, (5, 5, 6), r"rank 5 \(B, C_in, D, H, W; NCDHW\) or 4"),
        (1, (2, 3, 9), r"3 channels .*NCL.*expected in_channels=2"),
        (3, (2, 1, 5, 4, 7), r"spatial size \(5, 4, 7\) .*input_size=\(5, 5, 6\)"),
        (3, (1, 5, 4, 7), r"unbatched.*spatial size \(5, 4, 7\)"),
    ],
)  # fmt: skip
def test_bad_inputs_are_named_with_the_expected_layout(dims, shape, match):
    name = {1: "1d-valid", 3: "3d-input-dependent"}[dims]
    config, _, params, _ = case(name)
    layer = loaded(config, params)
    with pytest.raises(ValueError, match=match):
        layer(torch.zeros(shape, dtype=torch.float64))
    if not config.input_dependent:
        with pytest.raises(ValueError, match=match):
            layer.to_locally_connected()(torch.zeros(shape, dtype=torch.float64))


def test_neutral_params_of_another_rank_are_refused():
    layer = LRLC1d(2, 3, 3, rank=2, input_size=9, combining="full")
    params = layer.neutral_params()
    params["basis"] = params["basis"][:, :, None]  # a (K, 3, 1, C_in, C_out) image basis
    with pytest.raises(
        ValueError, match=r"\['basis'\] has shape \(2, 3, 1, 2, 3\); expected \(2, 3, 2, 3\)"
    ):
        layer.load_neutral_params(params)
    lc = LocallyConnected3d(1, 1, 2, input_size=3)
    kernel = np.zeros((2, 2, 2, 2, 2, 1, 1))  # the window of a 2-D layer
    with pytest.raises(ValueError, match="locally connected kernel has shape"):
        lc.load_neutral_params({"kernel": kernel, "bias": np.zeros((2, 2, 2, 1))})


def test_lc_strategy_refuses_input_dependent_volumes():
    with pytest.raises(ValueError, match="strategy='lc' needs fixed combining weights"):
        LRLC3d.from_lrlc_config(CONFIGS["3d-input-dependent"], strategy="lc")
