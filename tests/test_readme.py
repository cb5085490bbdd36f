"""The README's examples run and do what their comments say (one test per example)."""

import numpy as np
import pytest

import conformance
import lrlc_numpy as L
from tests.readme import example


def _run(section, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write their files here
    scope = {}
    exec(example(section), scope)
    return scope


def test_numpy_example(tmp_path, monkeypatch):
    scope = _run("numpy-example", tmp_path, monkeypatch)
    y, config, x, params = scope["y"], scope["config"], scope["x"], scope["params"]
    assert y.shape == (2, 16, 16, 8)
    # At initialisation (constant logits, zero biases) the layer is the mean-filter convolution.
    want = L.conv2d(x, params["basis"].mean(axis=0), padding="same")
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-12)
    assert scope["kernel"].shape == (16, 16, 3, 3, 3, 8)
    assert scope["dx"].shape == x.shape and set(scope["grads"]) == set(L.param_shapes(config))


def test_torch_example(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from lrlc_torch import LRLC2d

    scope = _run("torch-example", tmp_path, monkeypatch)
    layer, x, y, lc = scope["layer"], scope["x"], scope["y"], scope["lc"]
    tol = conformance.tolerance("float32", layer.config, x.shape[0])
    assert y.shape == (2, 8, 16, 16)
    assert conformance.relative_error(lc(x).detach().numpy(), y.detach().numpy()) <= tol
    params, config = L.load_params(tmp_path / "layer.safetensors")
    assert config == layer.config
    for name, value in layer.neutral_params().items():
        assert (params[name] == value).all(), name
    # The training steps moved the logits from their constant start.
    start = L.initial_value("row_logits", config).value
    assert np.abs(params["row_logits"] - start).max() > 0
    assert (scope["copy"](x) == layer(x)).all()  # from_checkpoint rebuilds the same layer
    model = scope["model"]
    assert isinstance(model[0], LRLC2d) and isinstance(model[2], LRLC2d)
    assert model[2].config.input_size == (16, 16)
    got, want = model(x).detach().numpy(), scope["before"].detach().numpy()
    # Judged by the rule of the layer with the longer sums (8 input channels).
    assert conformance.relative_error(got, want) <= conformance.tolerance(
        "float32", model[2].config, x.shape[0]
    )


def test_tf_example(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow")
    scope = _run("tf-example", tmp_path, monkeypatch)
    model, restored, lrlc, lc, x = (scope[k] for k in ("model", "restored", "lrlc", "lc", "x"))
    assert tuple(model(x).shape) == (8, 10)
    np.testing.assert_array_equal(restored(x), model(x))
    config = lrlc.config
    tol = conformance.tolerance("float32", config, len(x))
    y = np.asarray(lrlc(x))
    assert conformance.relative_error(np.asarray(lc(x)), y) <= tol
    params, read_config = L.load_params(tmp_path / "layer.safetensors")
    assert read_config == config
    # fit moved the weights away from their start (constant logits, zero biases).
    start = L.initial_value("row_logits", config).value
    assert np.abs(params["row_logits"] - start).max() > 0
    # The layer computes what the reference computes with the saved parameters.
    want = L.forward(x.astype(np.float64), params, config)
    assert conformance.relative_error(y, want) <= tol


def test_jax_example(tmp_path, monkeypatch):
    pytest.importorskip("jax")
    scope = _run("jax-example", tmp_path, monkeypatch)
    config, params, x, y = scope["config"], scope["params"], scope["x"], scope["y"]
    tol = conformance.tolerance("float32", config, x.shape[0])
    assert y.shape == (2, 16, 16, 8) and y.dtype == np.float32
    wide = {name: np.asarray(value, np.float64) for name, value in params.items()}
    want = L.forward(x.astype(np.float64), wide, config)
    assert conformance.relative_error(y, want) <= tol
    assert conformance.relative_error(scope["lc_y"], y) <= tol
    # d mean(y^2) / dparams from the reference's backward pass.
    _, want_grads = L.vjp(x.astype(np.float64), wide, config, 2 * want / want.size)
    assert set(scope["grads"]) == set(want_grads)
    for name, grad in scope["grads"].items():
        assert conformance.relative_error(grad, want_grads[name]) <= tol, name
    # The gradient steps moved the logits from their constant start.
    start = L.initial_value("row_logits", config).value
    assert np.abs(wide["row_logits"] - start).max() > 0
    saved, saved_config = L.load_params(tmp_path / "layer.safetensors")
    assert saved_config == config
    for name, value in params.items():
        np.testing.assert_array_equal(saved[name], value)


def test_variants_example(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import torch

    scope = _run("variants-example", tmp_path, monkeypatch)
    x, idep, mixed = scope["x"], scope["idep"], scope["mixed"]
    weights = scope["weights"]
    assert weights.shape == (2, 4, 16, 16)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2, 16, 16))
    assert (weights[0] - weights[1]).abs().max() > 0  # the weights depend on the example
    want = L.forward(x.permute(0, 2, 3, 1).double().numpy(), idep.neutral_params(), idep.config)
    got = scope["y_idep"].permute(0, 2, 3, 1).detach().numpy()
    assert conformance.relative_error(got, want) <= conformance.tolerance("float32", idep.config, 2)
    assert mixed.config.mixed and mixed.config.kernel_sizes == ((3, 3), (5, 5))
    lc = scope["lc_mixed"]
    assert lc.config.kernel_size == (9, 9)
    tol = conformance.tolerance("float32", mixed.config, 2)
    y_mixed = scope["y_mixed"].detach().numpy()
    assert conformance.relative_error(lc(x).detach().numpy(), y_mixed) <= tol


def test_nd_example(tmp_path, monkeypatch):
    """The sequence and volume layers compute the reference's 1-D and 3-D layers."""
    for module in ("torch", "tensorflow", "jax"):
        pytest.importorskip(module)
    scope = _run("nd-example", tmp_path, monkeypatch)
    seq, vol, lc_vol = scope["seq"], scope["vol"], scope["lc_vol"]
    assert seq.config.spatial_dims == 1 and vol.config.spatial_dims == 3
    y_seq = scope["y_seq"].detach().numpy()
    assert y_seq.shape == (2, 8, 100)
    assert "depth_logits" in vol.neutral_params() and "depth_bias" in vol.neutral_params()
    scans, y_vol = scope["scans"], np.asarray(scope["y_vol"])
    assert y_vol.shape == (2, 8, 16, 16, 8)
    want = L.forward(scans.astype(np.float64), vol.neutral_params(), vol.config)
    tol = conformance.tolerance("float32", vol.config, 2)
    assert conformance.relative_error(y_vol, want) <= tol
    assert conformance.relative_error(np.asarray(lc_vol(scans)), y_vol) <= tol
    config, y_jax = scope["config"], np.asarray(scope["y_jax"])
    assert y_jax.shape == (2, 100, 8) and config.spatial_dims == 1
