"""lrlc_torch on bad and edge inputs (issue 14): every public constructor and function checks
its arguments before any work and raises TypeError/ValueError (or OSError for paths) naming
the argument, the value and what was expected; edge inputs give the exact result (an empty
batch, extreme l2 logits, each checkpoint tensor's dtype, all-or-nothing model surgery)."""

import os

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

import lrlc_numpy as L
import lrlc_torch
from lrlc_torch import LocallyConnected2d, LRLC2d, convert_convs
from lrlc_torch import functional as LF

FIXED = L.LRLCConfig(2, 3, 3, rank=3, input_size=(7, 6), stride=2, padding="same")
IDEP = L.LRLCConfig(
    2, 3, 3, rank=2, input_size=(7, 6), padding="same", combining="full", input_dependent=True
)
RANK_ONE = L.LRLCConfig(2, 3, 3, rank=1, input_size=(7, 6), padding="same")
MIXED = L.LRLCConfig(2, 3, [3, 5, 3], rank=3, input_size=(7, 6), dilation=[1, 2, 1], padding="same")
CONFIGS = {"fixed": FIXED, "idep": IDEP, "rank1": RANK_ONE, "mixed": MIXED}


# ---------------------------------------------------------------------------------------------
# Constructors


@pytest.mark.parametrize(
    "build",
    [
        lambda dtype: LRLC2d(2, 3, 3, rank=2, input_size=(7, 6), dtype=dtype),
        lambda dtype: LRLC2d.from_lrlc_config(FIXED, dtype=dtype),
        lambda dtype: LocallyConnected2d(2, 3, 3, (7, 6), dtype=dtype),
        lambda dtype: LocallyConnected2d.from_lrlc_config(MIXED, dtype=dtype),
    ],
    ids=["LRLC2d", "LRLC2d.from_lrlc_config", "LocallyConnected2d", "LC.from_lrlc_config"],
)
@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.complex64, "float32"])
def test_a_non_floating_dtype_is_refused_before_allocating(build, dtype):
    with pytest.raises(TypeError, match=rf"dtype must be a floating torch dtype .*got {dtype!r}"):
        build(dtype)


@pytest.mark.parametrize(
    "arguments, error, match",
    [
        (dict(rank=0), ValueError, r"rank must be >= 1, got 0"),
        (dict(rank=2.0), TypeError, r"rank must be an int, got 2.0"),
        (dict(kernel_size=[3, 5], rank=3), ValueError, r"kernel_size: .*exactly rank=3 .*got 2"),
        (dict(strategy="fast"), ValueError, r"unknown strategy 'fast'"),
        (dict(strategy="lc", combining="full", input_dependent=True), ValueError, "needs fixed"),
        (dict(spatial_bias=1), TypeError, r"spatial_bias must be a bool, got 1"),
    ],
)
def test_bad_layer_arguments_name_the_argument(arguments, error, match):
    base = dict(in_channels=2, out_channels=3, kernel_size=3, rank=2, input_size=(7, 6))
    with pytest.raises(error, match=match):
        LRLC2d(**{**base, **arguments})


def test_bad_options_of_the_other_constructors():
    with pytest.raises(TypeError, match=r"bias must be a bool, got 'yes'"):
        LocallyConnected2d(2, 3, 3, (7, 6), bias="yes")
    with pytest.raises(TypeError, match=r"expects an LRLCConfig, got dict"):
        LocallyConnected2d.from_lrlc_config({"in_channels": 2})
    layer = LRLC2d.from_lrlc_config(FIXED)
    with pytest.raises(ValueError, match=r"seed must be None or an int >= 0, got -1"):
        layer.reset_parameters(seed=-1)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    with pytest.raises(ValueError, match=r"logit_scale must be a finite number >= 0, got inf"):
        LRLC2d.from_conv(conv, 2, (7, 6), logit_scale=float("inf"))
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator or None, got 3"):
        LRLC2d.from_conv(conv, 2, (7, 6), generator=3)


# ---------------------------------------------------------------------------------------------
# Inputs


@pytest.mark.parametrize("config", [FIXED, MIXED], ids=["fixed", "mixed"])
@pytest.mark.parametrize(
    "x, error, match",
    [
        (
            torch.zeros(7, 6),
            ValueError,
            r"rank 4 \(B, C_in, H, W; NCHW\) or 3 .*got shape \(7, 6\)",
        ),
        (torch.zeros(1, 1, 2, 7, 6), ValueError, r"rank 4 .*\(1, 1, 2, 7, 6\)"),
        (torch.zeros(3, 7, 6), ValueError, r"unbatched.* 3 channels .*in_channels=2"),
        (torch.zeros(2, 6, 7), ValueError, r"unbatched.*spatial size \(6, 7\).*\(7, 6\)"),
        (torch.zeros(1, 2, 7, 7), ValueError, r"spatial size \(7, 7\).*input_size=\(7, 6\)"),
        ([[0.0]], TypeError, r"x must be a torch.Tensor, got list"),
        (torch.zeros(1, 2, 7, 6, dtype=torch.int32), TypeError, r"floating dtype, got torch.int32"),
    ],
)
def test_bad_input_to_both_layers(config, x, error, match):
    with pytest.raises(error, match=match):
        LRLC2d.from_lrlc_config(config)(x)
    with pytest.raises(error, match=match):
        LocallyConnected2d.from_lrlc_config(config)(x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("strategy", ["conv", "lc"])
def test_input_of_another_dtype_names_both_dtypes(dtype, strategy):
    """A float32 layer given another float dtype: a clear error, not F.conv2d's."""
    layer = LRLC2d.from_lrlc_config(FIXED, strategy=strategy)
    x = torch.zeros(1, 2, 7, 6, dtype=dtype)
    match = rf"x has dtype {dtype} but params\['\w+'\] has dtype torch.float32.*layer.to"
    with pytest.raises(TypeError, match=match):
        layer(x)
    lc = layer.to_locally_connected()
    match = rf"x has dtype {dtype} but the locally connected weight has dtype torch.float32"
    with pytest.raises(TypeError, match=match):
        lc(x)


def test_autocast_still_takes_other_dtypes():
    layer = LRLC2d.from_lrlc_config(FIXED)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        y = layer(torch.ones(1, 2, 7, 6, dtype=torch.bfloat16))
    assert y.shape == (1, 3, 4, 3) and torch.isfinite(y).all()


def test_functional_arguments_are_checked():
    layer = LRLC2d.from_lrlc_config(FIXED)
    params = dict(layer.named_parameters())
    x = torch.zeros(1, 2, 7, 6)
    with pytest.raises(TypeError, match=r"config must be an lrlc_numpy.LRLCConfig, got dict"):
        LF.forward(x, params, {"in_channels": 2})
    with pytest.raises(TypeError, match=r"params\['row_bias'\] must be a torch.Tensor, got list"):
        LF.forward(x, {**params, "row_bias": [0.0] * 4}, FIXED)
    with pytest.raises(TypeError, match=r"params\['basis'\] must be a floating tensor .*float8"):
        LF.forward(x, {**params, "basis": params["basis"].to(torch.float8_e4m3fn)}, FIXED)
    with pytest.raises(TypeError, match=r"to_neutral: config must be an lrlc_numpy.LRLCConfig"):
        lrlc_torch.to_neutral(params, None)
    weight, bias = layer.locally_connected_kernel()
    with pytest.raises(TypeError, match=r"locally connected bias must be a torch.Tensor"):
        LF.locally_connected(x, weight, np.zeros((3, 4, 3)), FIXED)
    idep = dict(LRLC2d.from_lrlc_config(IDEP).named_parameters())
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor, got ndarray"):
        LF.combining_weights(idep, IDEP, x=np.zeros((1, 2, 7, 6)))


# ---------------------------------------------------------------------------------------------
# Neutral parameters


def neutral(config=FIXED):
    return L.init_params(config, seed=1)


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda p: p.pop("col_logits"), ValueError, r"missing tensors \['col_logits'\]"),
        (lambda p: p.update(logits=np.zeros((4, 3, 3))), ValueError, r"unexpected .*\['logits'\]"),
        (lambda p: p.update(basis=p["basis"][:2]), ValueError,
         r"neutral params\['basis'\] has shape \(2, 3, 3, 2, 3\); expected \(3, 3, 3, 2, 3\)"),
        (lambda p: p.update(channel_bias=[0.0, 0.0, 0.0]), TypeError,
         r"neutral params\['channel_bias'\] must be a NumPy array or a torch.Tensor, got list"),
        (lambda p: p.update(channel_bias=np.zeros(3, int)), TypeError,
         r"neutral params\['channel_bias'\] must have a floating dtype .*got int64"),
        (lambda p: p.update(row_bias=torch.zeros(4, dtype=torch.int8)), TypeError,
         r"neutral params\['row_bias'\] must have a floating dtype .*got torch.int8"),
        (lambda p: p.update(row_bias=np.float64(0.0)), TypeError,
         r"neutral params\['row_bias'\] must be a NumPy array or a torch.Tensor, got float64"),
    ],
    ids=["missing", "extra", "shape", "list", "int-array", "int-tensor", "scalar"],
)  # fmt: skip
def test_bad_neutral_params_name_the_tensor_and_change_nothing(change, error, match):
    layer = LRLC2d.from_lrlc_config(FIXED)
    before = {name: value.copy() for name, value in layer.neutral_params().items()}
    params = neutral()
    change(params)
    with pytest.raises(error, match=match):
        layer.load_neutral_params(params)
    for name, value in layer.neutral_params().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_bad_neutral_params_of_a_locally_connected_layer():
    lc = LocallyConnected2d.from_lrlc_config(FIXED)
    kernel, bias = L.to_locally_connected(neutral(), FIXED)
    with pytest.raises(TypeError, match=r"bias must be a NumPy array or a torch.Tensor, got list"):
        lc.load_neutral_params({"kernel": kernel, "bias": bias.tolist()})
    with pytest.raises(TypeError, match=r"kernel must have a floating dtype .*got int64"):
        lc.load_neutral_params({"kernel": kernel.astype(int), "bias": bias})
    with pytest.raises(TypeError, match=r"must be a mapping, got tuple"):
        lc.load_neutral_params((kernel, bias))


# ---------------------------------------------------------------------------------------------
# Empty batches: an empty output, like nn.Conv2d, forward and backward


def empty_batch_run(module, config):
    x = torch.zeros(0, config.in_channels, *config.input_size, requires_grad=True)
    y = module(x)
    y.sum().backward()
    return x, y


@pytest.mark.parametrize("strategy", ["auto", "conv", "lc"])
@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS)
def test_an_empty_batch_gives_an_empty_output(config, strategy):
    if strategy == "lc" and config.input_dependent:
        pytest.skip("input-dependent layers run Algorithm 1 only")
    layer = LRLC2d.from_lrlc_config(config, strategy=strategy)
    x, y = empty_batch_run(layer, config)
    assert y.shape == (0, config.out_channels, *config.output_size)
    assert x.grad.shape == x.shape
    for name, param in layer.named_parameters():
        assert param.grad is not None and not param.grad.any(), name


@pytest.mark.parametrize("config", [FIXED, MIXED], ids=["fixed", "mixed"])
def test_an_empty_batch_through_locally_connected_layers(config):
    layer = LRLC2d.from_lrlc_config(config)
    for module in (layer.to_locally_connected(), LocallyConnected2d.from_lrlc_config(config)):
        x, y = empty_batch_run(module, config)
        assert y.shape == (0, config.out_channels, *config.output_size)
        assert x.grad.shape == x.shape and not module.weight.grad.any()
    conv = nn.Conv2d(2, 3, 3, padding=1)
    assert conv(torch.zeros(0, 2, 7, 6)).shape == (0, 3, 7, 6)  # what nn.Conv2d does


def test_an_empty_batch_of_per_example_kernels():
    layer = LRLC2d.from_lrlc_config(IDEP)
    x = torch.zeros(0, 2, 7, 6)
    weight, bias = layer.locally_connected_kernel(x)
    assert weight.shape == (0, 7, 6, 3, 2, 3, 3)
    assert LF.locally_connected(x, weight, bias, IDEP).shape == (0, 3, 7, 6)


# ---------------------------------------------------------------------------------------------
# l2 normalisation without overflow (spec section 6)

L2 = L.LRLCConfig(1, 1, 1, rank=2, input_size=(1, 2), combining="full", normalize="l2",
                  spatial_bias=False, channel_bias=False)  # fmt: skip


@pytest.mark.parametrize(
    "dtype, big", [(torch.float32, 1e20), (torch.float64, 1e200), (torch.bfloat16, 1e30)]
)
def test_extreme_l2_logits_give_unit_weights_and_finite_gradients(dtype, big):
    layer = LRLC2d.from_lrlc_config(L2, dtype=dtype)
    logits = torch.tensor([[[big, -big], [-big, -big]]], dtype=dtype)
    with torch.no_grad():
        layer.logits.copy_(logits)
    weights = layer.combining_weights()  # (K, 1, 2)
    half = 0.5**0.5
    want = torch.tensor([[[half, -half]], [[-half, -half]]], dtype=dtype)
    torch.testing.assert_close(weights, want, rtol=0, atol=0 if dtype == torch.float64 else 1e-2)
    (weights * torch.tensor([1.0, 2.0], dtype=dtype)[:, None, None]).sum().backward()
    grad = layer.logits.grad
    assert torch.isfinite(grad).all()
    # (c - w (w . c)) / |w~| per position, for c = (1, 2) over K: w = (a, -a) gives
    # (1.5, 1.5) / |w~| and w = (-a, -a) gives (-0.5, 0.5) / |w~|, a = 1 / sqrt(2).
    want_grad = torch.tensor([[[1.5, 1.5], [-0.5, 0.5]]], dtype=torch.float64) / (2**0.5 * big)
    rel = (grad.double() - want_grad).abs().max() / want_grad.abs().max()
    assert rel < (1e-6 if dtype != torch.bfloat16 else 1e-1)


def test_l2_floor_is_kept():
    """Below the floor (sum of squares < 1e-12) the norm is the constant 1e-6."""
    layer = LRLC2d.from_lrlc_config(L2, dtype=torch.float64)
    with torch.no_grad():
        layer.logits.copy_(torch.tensor([[[0.0, 0.0], [3e-7, -4e-7]]], dtype=torch.float64))
    weights = layer.combining_weights()
    torch.testing.assert_close(weights[:, 0, 0], torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(weights[:, 0, 1], torch.tensor([0.3, -0.4], dtype=torch.float64))
    weights.sum().backward()
    torch.testing.assert_close(layer.logits.grad, torch.full((1, 2, 2), 1e6, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
# Checkpoints: stored dtypes kept, explicit conversion into layers, paths named


def stored_dtypes(path):
    with safe_open(str(path), framework="pt") as handle:
        return {name: handle.get_slice(name).get_dtype() for name in handle.keys()}


def test_each_tensor_keeps_its_stored_dtype(tmp_path):
    path = tmp_path / "mixed-dtypes.safetensors"
    params = neutral()
    params["basis"] = params["basis"].astype(np.float16)
    L.save_params(path, params, FIXED)
    loaded, config = lrlc_torch.load_checkpoint(path)
    assert loaded["basis"].dtype == torch.float16
    assert {v.dtype for n, v in loaded.items() if n != "basis"} == {torch.float64}
    # A layer has one dtype: loading into it converts each tensor, explicitly and exactly
    # where the layer's dtype holds the value.
    layer = LRLC2d.from_lrlc_config(FIXED, dtype=torch.float64)
    layer.load_checkpoint(path)
    assert {p.dtype for p in layer.parameters()} == {torch.float64}
    np.testing.assert_array_equal(layer.neutral_params()["basis"], params["basis"])
    with pytest.raises(ValueError, match=r"dtypes \['torch.float16', 'torch.float64'\].*dtype="):
        LRLC2d.from_checkpoint(path)
    layer = LRLC2d.from_checkpoint(path, dtype=torch.float32)
    assert {p.dtype for p in layer.parameters()} == {torch.float32}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("config", [FIXED, MIXED], ids=["fixed", "mixed"])
def test_16bit_layers_round_trip_exactly(tmp_path, dtype, config):
    layer = LRLC2d.from_lrlc_config(config, dtype=dtype)
    with torch.no_grad():
        for param in layer.parameters():
            param.normal_()
    path = tmp_path / "layer.safetensors"
    layer.save_checkpoint(path)
    name = {torch.bfloat16: "BF16", torch.float16: "F16"}[dtype]  # safetensors' names
    assert set(stored_dtypes(path).values()) == {name}
    back = LRLC2d.from_checkpoint(path)
    for (n, a), b in zip(layer.named_parameters(), back.parameters()):
        assert b.dtype == dtype and torch.equal(a, b), n
    params, _ = lrlc_torch.load_checkpoint(path)
    assert {v.dtype for v in params.values()} == {dtype}


def test_checkpoint_paths_are_named(tmp_path):
    layer = LRLC2d.from_lrlc_config(FIXED)
    with pytest.raises(IsADirectoryError, match=rf"{tmp_path} is a directory"):
        layer.save_checkpoint(tmp_path)
    with pytest.raises(IsADirectoryError, match=rf"checkpoint {tmp_path} is a directory"):
        LRLC2d.from_checkpoint(tmp_path)
    missing = tmp_path / "no-such-dir" / "layer.safetensors"
    with pytest.raises(FileNotFoundError, match=r"cannot write .*layer.safetensors: directory"):
        layer.save_checkpoint(missing)
    with pytest.raises(FileNotFoundError, match=r"checkpoint .*layer.safetensors does not exist"):
        LRLC2d.from_checkpoint(missing)
    text = tmp_path / "notes.safetensors"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"notes.safetensors: not a readable safetensors file"):
        lrlc_torch.load_checkpoint(text)
    with pytest.raises(TypeError, match=r"path must be a str or os.PathLike, got 3"):
        layer.save_checkpoint(3)
    assert sorted(os.listdir(tmp_path)) == ["notes.safetensors"]  # no temporary files left


def test_checkpoint_contents_are_checked(tmp_path):
    from safetensors.torch import save_file

    tensors = lrlc_torch.neutral_tensors(neutral())
    path = tmp_path / "float8.safetensors"
    bad = {**tensors, "row_bias": tensors["row_bias"].to(torch.float8_e4m3fn)}
    save_file(bad, str(path), metadata={"lrlc_config": FIXED.to_json()})
    with pytest.raises(ValueError, match=r"tensor 'row_bias' has dtype torch.float8_e4m3fn"):
        lrlc_torch.load_checkpoint(path)
    save_file(tensors, str(path), metadata={"other": "1"})
    with pytest.raises(ValueError, match=r"no 'lrlc_config' entry \(keys \['other'\]\)"):
        lrlc_torch.load_checkpoint(path)
    save_file(tensors, str(path), metadata={"lrlc_config": "{"})
    with pytest.raises(ValueError, match=r"checkpoint .*: invalid 'lrlc_config' metadata"):
        lrlc_torch.load_checkpoint(path)
    del tensors["col_bias"]
    save_file(tensors, str(path), metadata={"lrlc_config": FIXED.to_json()})
    with pytest.raises(ValueError, match=r"checkpoint .*missing tensors \['col_bias'\]"):
        LRLC2d.from_checkpoint(path)
    with pytest.raises(TypeError, match=r"from_checkpoint: dtype must be a floating"):
        LRLC2d.from_checkpoint(path, dtype=torch.int64)


def test_an_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    import safetensors.torch

    path = tmp_path / "layer.safetensors"
    layer = LRLC2d.from_lrlc_config(FIXED)
    layer.save_checkpoint(path)
    before = path.read_bytes()

    def fail(tensors, filename, metadata=None):
        open(filename, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        LRLC2d.from_lrlc_config(FIXED).save_checkpoint(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["layer.safetensors"]


# ---------------------------------------------------------------------------------------------
# convert_convs: all or nothing


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Conv2d(2, 4, 3, padding=1)
        self.grouped = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.last = nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")

    def forward(self, x):
        return self.last(self.grouped(self.first(x)))


def test_convert_convs_changes_nothing_unless_every_candidate_converts():
    model = Mixed()
    modules = dict(model.named_modules())
    match = (
        r"cannot convert 2 of the 3 chosen convolutions, so the model was left unchanged; "
        r"'grouped': .*groups=2.*; 'last': .*padding_mode='reflect'"
    )
    with pytest.raises(ValueError, match=match):
        convert_convs(model, torch.zeros(1, 2, 6, 6), rank=2)
    assert dict(model.named_modules()) == modules  # the same modules, none replaced
    assert convert_convs(model, torch.zeros(1, 2, 6, 6), rank=2,
                         predicate=lambda name, conv: name == "first") == ["first"]  # fmt: skip
    assert isinstance(model.first, LRLC2d)


@pytest.mark.parametrize(
    "arguments, error, match",
    [
        (dict(model=3), TypeError, r"model must be an nn.Module, got int"),
        (dict(example_input=[0.0]), TypeError, r"example_input must be a torch.Tensor, got list"),
        (dict(rank=0), ValueError, r"rank must be an int >= 1, got 0"),
        (dict(predicate="3x3"), TypeError, r"predicate must be callable, got '3x3'"),
        (dict(normalize="l2"), ValueError, r"the model was left unchanged.*normalize='l2'"),
    ],
)
def test_convert_convs_checks_its_arguments(arguments, error, match):
    call = dict(model=Mixed(), example_input=torch.zeros(1, 2, 6, 6), rank=2,
                predicate=lambda name, conv: name == "first")  # fmt: skip
    with pytest.raises(error, match=match):
        convert_convs(**{**call, **arguments})
