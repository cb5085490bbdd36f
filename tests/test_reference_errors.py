"""Bad configs, inputs, parameters and checkpoints raise clear errors in the reference."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from safetensors.numpy import save_file

import lrlc_numpy as L

BASE = dict(in_channels=3, out_channels=4, kernel_size=3, rank=2, input_size=(7, 6))


def config(**overrides):
    return L.LRLCConfig(**{**BASE, **overrides})


@pytest.mark.parametrize(
    "overrides, error, words",
    [
        (dict(in_channels=0), ValueError, ["in_channels", "0", ">= 1"]),
        (dict(rank=2.0), TypeError, ["rank", "2.0", "int"]),
        (dict(out_channels=True), TypeError, ["out_channels", "True"]),
        (dict(kernel_size=(3, 3, 3)), TypeError, ["kernel_size", "(3, 3, 3)", "pair"]),
        (dict(kernel_size=0), ValueError, ["kernel_size", "positive"]),
        (dict(stride=(1, 0)), ValueError, ["stride", "(1, 0)"]),
        (dict(input_size=7), None, []),  # an int is a square grid: valid
        (dict(input_size="7x6"), TypeError, ["input_size", "'7x6'"]),
        (dict(padding="full"), ValueError, ["padding", "'full'", "'same'"]),
        (dict(padding=-1), ValueError, ["padding", "-1"]),
        (dict(padding=((1, 2), (3,))), ValueError, ["padding"]),
        (dict(combining="diag"), ValueError, ["combining", "'diag'", "rowcol"]),
        (dict(normalize="softplus"), ValueError, ["normalize", "'softplus'", "softmax"]),
        (dict(spatial_bias=1), TypeError, ["spatial_bias", "bool"]),
        (dict(input_dependent=True), ValueError, ["input_dependent", "full", "'rowcol'"]),
        (dict(kernel_size=9), ValueError, ["empty output grid", "(7, 6)"]),
    ],
)
def test_bad_config(overrides, error, words):
    if error is None:
        assert config(**overrides).input_size == (7, 7)
        return
    with pytest.raises(error) as info:
        config(**overrides)
    for word in words:
        assert word in str(info.value)


SAME = dict(padding="same")


@pytest.mark.parametrize(
    "overrides, error, words",
    [
        # A list is one entry per basis: exactly `rank` of them.
        (dict(kernel_size=[3, 5, 7], **SAME), ValueError, ["kernel_size", "[3, 5, 7]", "rank=2"]),
        (dict(dilation=[1], **SAME), ValueError, ["dilation", "[1]", "rank=2", "got 1"]),
        (dict(kernel_size=[], **SAME), ValueError, ["kernel_size", "[]", "rank=2"]),
        (dict(kernel_size=[3, 5], rank=3, **SAME), ValueError, ["rank=3", "pass a tuple"]),
        # Both lists, of different lengths: both named.
        (
            dict(kernel_size=[3, 5], dilation=[1, 2, 1], **SAME),
            ValueError,
            ["kernel_size [3, 5]", "2 per-basis", "dilation [1, 2, 1]", "3", "rank=2"],
        ),
        # Padding must be 'same': each basis padded for its own kernel and dilation.
        (dict(kernel_size=[3, 5]), ValueError, ["padding", "'valid'", "padding='same'"]),
        (dict(dilation=[1, 2], padding=1), ValueError, ["padding", "got 1", "'same'"]),
        (
            dict(kernel_size=[3, 5], padding=((1, 1), (2, 2))),
            ValueError,
            ["padding", "((1, 1), (2, 2))", "'same'"],
        ),
        # Entries: a positive int or a pair of positive ints.
        (dict(kernel_size=[3, 0], **SAME), ValueError, ["kernel_size[1]", "0", "positive"]),
        (dict(kernel_size=[3, (2, -1)], **SAME), ValueError, ["kernel_size[1]", "(2, -1)"]),
        (dict(kernel_size=[3, 2.5], **SAME), TypeError, ["kernel_size[1]", "2.5", "int"]),
        (dict(dilation=[1, True], **SAME), TypeError, ["dilation[1]", "True"]),
        (dict(kernel_size=[(3, 3, 3), 5], **SAME), TypeError, ["kernel_size[0]", "(3, 3, 3)"]),
        (dict(kernel_size=["3", 5], **SAME), TypeError, ["kernel_size[0]", "'3'"]),
        (dict(kernel_size=((3, 3), (5, 5)), **SAME), None, []),  # a tuple of pairs: valid
    ],
)
def test_bad_mixed_basis(overrides, error, words):
    if error is None:
        assert config(**overrides).mixed
        return
    with pytest.raises(error) as info:
        config(**overrides)
    for word in words:
        assert word in str(info.value)


def test_mixed_checkpoint_with_a_stacked_basis_is_rejected(tmp_path):
    plain = config(padding="same")
    mixed = config(kernel_size=[3, 5], padding="same")
    path = tmp_path / "c.safetensors"
    _write(path, L.init_params(plain), {"lrlc_config": mixed.to_json()})
    with pytest.raises(ValueError, match="missing tensors \\['basis.0', 'basis.1'\\]") as info:
        L.load_params(path)
    assert "unexpected tensors ['basis']" in str(info.value)
    bad = {**mixed.to_dict(), "padding": "valid"}
    _write(path, L.init_params(mixed), {"lrlc_config": json.dumps(bad)})
    with pytest.raises(ValueError, match="c.safetensors.*padding='same'"):
        L.load_params(path)


def test_mixed_params_and_lc_kernel_shapes_are_checked():
    mixed = config(kernel_size=[3, 5], dilation=[1, 2], padding="same")
    params = L.init_params(mixed)
    x = np.zeros((1, 7, 6, 3))
    with pytest.raises(ValueError, match="'basis.1'.*\\(3, 3, 3, 4\\).*expected \\(5, 5, 3, 4\\)"):
        L.forward(x, {**params, "basis.1": np.zeros((3, 3, 3, 4))}, mixed)
    kernel, bias = L.to_locally_connected(params, mixed)
    assert kernel.shape == (7, 6, 9, 9, 3, 4)  # the union window
    with pytest.raises(ValueError, match="expected \\(7, 6, 9, 9, 3, 4\\)"):
        L.locally_connected(x, kernel[:, :, 2:-2, 2:-2], bias, mixed)


def test_config_from_dict_rejects_unknown_and_missing_fields():
    data = config().to_dict()
    with pytest.raises(ValueError, match="unknown fields \\['ranks'\\]"):
        L.LRLCConfig.from_dict({**data, "ranks": 3})
    del data["rank"]
    with pytest.raises(ValueError, match="rank"):
        L.LRLCConfig.from_dict(data)


def test_config_json_round_trip():
    c = config(padding=((2, 0), (1, 3)), stride=(2, 1), combining="col", normalize="l2")
    assert L.LRLCConfig.from_json(c.to_json()) == c


@pytest.mark.parametrize(
    "shape, words",
    [
        ((7, 6, 3), ["rank 4", "(7, 6, 3)"]),
        ((1, 7, 6, 2), ["2 channels", "in_channels=3"]),
        ((1, 6, 7, 3), ["(6, 7)", "input_size=(7, 6)"]),
    ],
)
def test_bad_input_shape(shape, words):
    c = config()
    params = L.init_params(c)
    with pytest.raises(ValueError) as info:
        L.forward(np.zeros(shape), params, c)
    for word in words:
        assert word in str(info.value)


def test_integer_input_is_rejected():
    c = config()
    with pytest.raises(TypeError, match="floating dtype"):
        L.forward(np.zeros((1, 7, 6, 3), dtype=np.int64), L.init_params(c), c)


def test_bad_params():
    c = config()
    params = L.init_params(c)
    x = np.zeros((1, 7, 6, 3))
    with pytest.raises(ValueError, match="missing tensors \\['row_bias'\\]"):
        L.forward(x, {k: v for k, v in params.items() if k != "row_bias"}, c)
    with pytest.raises(ValueError, match="unexpected tensors \\['logits'\\]"):
        L.forward(x, {**params, "logits": np.zeros((5, 4, 2))}, c)
    with pytest.raises(ValueError, match="'row_logits'.*\\(5, 3\\).*expected \\(5, 2\\)"):
        L.forward(x, {**params, "row_logits": np.zeros((5, 3))}, c)
    # A broadcastable but wrong shape is an error, never broadcast.
    with pytest.raises(ValueError, match="channel_bias"):
        L.forward(x, {**params, "channel_bias": np.zeros((1,))}, c)


def test_bad_dy_and_lc_arrays():
    c = config()
    params = L.init_params(c)
    x = np.zeros((2, 7, 6, 3))
    with pytest.raises(
        ValueError, match="dy has shape \\(2, 5, 4, 5\\); expected .*\\(2, 5, 4, 4\\)"
    ):
        L.vjp(x, params, c, np.zeros((2, 5, 4, 5)))
    kernel, bias = L.to_locally_connected(params, c)
    with pytest.raises(ValueError, match="kernel has shape"):
        L.locally_connected(x, kernel[:, :, :2], bias, c)
    with pytest.raises(ValueError, match="bias has shape"):
        L.locally_connected(x, kernel, bias[..., :1], c)


def test_input_dependent_conversion_needs_x():
    c = config(combining="full", input_dependent=True)
    with pytest.raises(ValueError, match="needs the input x"):
        L.to_locally_connected(L.init_params(c), c)


def _write(path, tensors, metadata):
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata)


def test_bad_checkpoints(tmp_path):
    c = config()
    params = L.init_params(c)
    meta = {"lrlc_config": c.to_json()}
    path = tmp_path / "c.safetensors"

    _write(path, params, {})
    with pytest.raises(ValueError, match="no 'lrlc_config'"):
        L.load_params(path)
    _write(path, {k: v for k, v in params.items() if k != "basis"}, meta)
    with pytest.raises(ValueError, match="missing tensors \\['basis'\\]"):
        L.load_params(path)
    _write(path, {**params, "extra": np.zeros(3)}, meta)
    with pytest.raises(ValueError, match="unexpected tensors \\['extra'\\]"):
        L.load_params(path)
    _write(path, {**params, "col_bias": np.zeros(5)}, meta)
    with pytest.raises(ValueError, match="'col_bias'.*\\(5,\\).*expected \\(4,\\)"):
        L.load_params(path)
    _write(path, params, {"lrlc_config": "{not json"})
    with pytest.raises(ValueError, match="not valid JSON"):
        L.load_params(path)
    _write(path, params, {"lrlc_config": json.dumps({**c.to_dict(), "combining": "zigzag"})})
    with pytest.raises(ValueError, match="'zigzag'"):
        L.load_params(path)
    _write(path, {**params, "basis": params["basis"].astype(np.int32)}, meta)
    with pytest.raises(ValueError, match="'basis' has dtype int32"):
        L.load_params(path)


def test_a_pickle_is_never_unpickled(tmp_path):
    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("unpickled!",))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        L.load_params(path)


def test_conv2d_rejects_an_empty_output_grid():
    with pytest.raises(ValueError, match="empty output grid"):
        L.conv2d(np.zeros((1, 6, 5, 1)), np.zeros((7, 5, 1, 1)))


def test_wrong_x_is_an_error_even_where_it_is_not_needed():
    c = config()
    with pytest.raises(ValueError, match="spatial size"):
        L.to_locally_connected(L.init_params(c), c, np.zeros((1, 5, 5, 3)))


def test_integer_dy_kernel_and_bias_are_rejected():
    c = config()
    params = L.init_params(c)
    x = np.zeros((1, 7, 6, 3))
    with pytest.raises(TypeError, match="dy must have a floating dtype, got int64"):
        L.vjp(x, params, c, np.zeros((1, 5, 4, 4), dtype=np.int64))
    kernel, bias = L.to_locally_connected(params, c)
    with pytest.raises(TypeError, match="kernel must have a floating dtype"):
        L.locally_connected(x, kernel.astype(np.int32), bias, c)


def test_l2_floor_survives_float16():
    logits = np.zeros((2, 3), dtype=np.float16)
    weights = L.reference.normalize_weights(logits, "l2")
    assert weights.dtype == np.float16 and np.all(np.isfinite(weights))


def test_checkpoint_config_errors_name_the_file(tmp_path):
    c = config()
    path = tmp_path / "c.safetensors"
    _write(path, L.init_params(c), {"lrlc_config": "[1, 2]"})
    with pytest.raises(ValueError, match="c.safetensors.*lrlc_config"):
        L.load_params(path)
