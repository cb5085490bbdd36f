"""The README's JAX example runs and does what its comments say."""

import numpy as np

import conformance
import lrlc_numpy
from tests.readme import example


def test_jax_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example writes layer.safetensors
    scope = {}
    exec(example("jax-example"), scope)
    config, params, x, y = scope["config"], scope["params"], scope["x"], scope["y"]
    tol = conformance.tolerance("float32", config, x.shape[0])
    assert y.shape == (2, 16, 16, 8) and y.dtype == np.float32
    wide = {name: np.asarray(value, np.float64) for name, value in params.items()}
    want = lrlc_numpy.forward(x.astype(np.float64), wide, config)
    assert conformance.relative_error(y, want) <= tol
    assert conformance.relative_error(scope["lc_y"], y) <= tol
    # d mean(y^2) / dparams from the reference's backward pass.
    _, want_grads = lrlc_numpy.vjp(x.astype(np.float64), wide, config, 2 * want / want.size)
    assert set(scope["grads"]) == set(want_grads)
    for name, grad in scope["grads"].items():
        assert conformance.relative_error(grad, want_grads[name]) <= tol, name
    saved, saved_config = lrlc_numpy.load_params(tmp_path / "layer.safetensors")
    assert saved_config == config
    for name, value in params.items():
        np.testing.assert_array_equal(saved[name], value)
