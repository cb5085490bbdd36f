"""The README's PyTorch example runs and does what its comments say."""

import conformance
import lrlc_numpy as L
from lrlc_torch import LRLC2d
from tests.readme import example


def test_torch_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example writes layer.safetensors
    scope = {}
    exec(example("torch-example"), scope)
    layer, x, y, lc = scope["layer"], scope["x"], scope["y"], scope["lc"]
    tol = conformance.tolerance("float32", layer.config, x.shape[0])
    assert y.shape == (2, 8, 16, 16)
    assert conformance.relative_error(lc(x).detach().numpy(), y.detach().numpy()) <= tol
    params, config = L.load_params(tmp_path / "layer.safetensors")
    assert config == layer.config
    for name, value in layer.neutral_params().items():
        assert (params[name] == value).all(), name

    model = scope["model"]
    assert isinstance(model[0], LRLC2d) and isinstance(model[2], LRLC2d)
    assert model[2].config.input_size == (16, 16)
    got, want = model(x).detach().numpy(), scope["before"].detach().numpy()
    # Judged by the rule of the layer with the longer sums (8 input channels).
    assert conformance.relative_error(got, want) <= conformance.tolerance(
        "float32", model[2].config, x.shape[0]
    )
