"""The README's NumPy example runs and means what it says."""

import numpy as np

import lrlc_numpy as L
from tests.readme import example


def test_numpy_example():
    scope = {}
    exec(example("numpy-example"), scope)
    y, config, x, params = scope["y"], scope["config"], scope["x"], scope["params"]
    assert y.shape == (2, 16, 16, 8)
    # At initialisation (constant logits, zero biases) the layer is the mean-filter convolution.
    want = L.conv2d(x, params["basis"].mean(axis=0), padding="same")
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-12)
    assert scope["kernel"].shape == (16, 16, 3, 3, 3, 8)
    assert scope["dx"].shape == x.shape and set(scope["grads"]) == set(L.param_shapes(config))
