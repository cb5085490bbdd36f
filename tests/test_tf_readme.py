"""The README's TensorFlow / Keras example runs and means what it says."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import conformance  # noqa: E402
import lrlc_numpy as L  # noqa: E402
from tests.readme import example  # noqa: E402


def test_tf_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(example("tf-example"), scope)
    model, restored, lrlc, lc, x = (scope[k] for k in ("model", "restored", "lrlc", "lc", "x"))
    assert tuple(model(x).shape) == (8, 10)
    np.testing.assert_array_equal(restored(x), model(x))
    config = lrlc.config
    tol = conformance.tolerance("float32", config, len(x))
    y = lrlc(x).numpy()
    assert conformance.relative_error(lc(x).numpy(), y) <= tol
    params, read_config = L.load_params(tmp_path / "layer.safetensors")
    assert read_config == config
    # fit moved the weights away from their start (constant logits, zero biases).
    start = L.initial_value("row_logits", config).value
    assert np.abs(params["row_logits"] - start).max() > 0
    # The layer computes what the reference computes with the saved parameters.
    want = L.forward(x.astype(np.float64), params, config)
    assert conformance.relative_error(y, want) <= tol
