"""lrlc_tf's Keras layers under each Keras backend (tensorflow, jax, torch): build, train,
agree with lrlc_numpy, save and load. KERAS_BACKEND is fixed when Keras is imported, so each
backend runs `check_backend` in a subprocess of its own; a backend whose framework is not
installed is skipped."""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import conformance
import lrlc_numpy as L

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
SAMPLES, BATCH = 6, 4  # two steps, the second short (2 examples)


def check_backend() -> dict:
    """Run in a process whose KERAS_BACKEND is set: every check asserts; returns a summary."""
    import keras

    import lrlc_tf

    backend = keras.backend.backend()
    if backend != "tensorflow":  # the layers need Keras only
        assert "tensorflow" not in sys.modules, "import lrlc_tf imported TensorFlow"
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(SAMPLES, 8, 8, 2)).astype("float32")
    target = rng.normal(size=(SAMPLES, 8, 8, 2)).astype("float32")
    fixed = lrlc_tf.LRLC2D(4, 3, 3, input_size=(8, 8), padding="same", strategy="lc")
    dependent = lrlc_tf.LRLC2D(
        3, 3, 2, input_size=(8, 8), padding="same", combining="full", input_dependent=True
    )
    local = lrlc_tf.LocallyConnected2D(2, 3, input_size=(8, 8), padding="same")
    model = keras.Sequential([keras.Input((8, 8, 2)), fixed, keras.layers.ReLU(), dependent, local])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")

    before = [keras.ops.convert_to_numpy(v).copy() for v in model.weights]
    history = model.fit(x, target, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 2
    after = [keras.ops.convert_to_numpy(v) for v in model.weights]
    unchanged = [v.path for v, b, a in zip(model.weights, before, after) if np.array_equal(a, b)]
    assert not unchanged, f"fit left these weights unchanged: {unchanged}"

    # Each layer against the reference on the float32 input it sees.
    def agree(got, want, config):
        error = conformance.relative_error(keras.ops.convert_to_numpy(got), want)
        assert error <= conformance.tolerance("float32", config, SAMPLES), (config, error)

    def reference(layer, inputs):
        params = {n: v.astype(np.float64) for n, v in layer.neutral_params().items()}
        if isinstance(layer, lrlc_tf.LocallyConnected2D):
            return L.locally_connected(inputs, params["kernel"], params["bias"], layer.config)
        return L.forward(inputs, params, layer.config)

    hidden = x
    for layer in (fixed, dependent, local):
        got = layer(hidden)
        agree(got, reference(layer, hidden.astype(np.float64)), layer.config)
        hidden = keras.ops.convert_to_numpy(got)
        if layer is fixed:
            hidden = np.maximum(hidden, 0)

    # channels_first computes the same function.
    first = lrlc_tf.LRLC2D.from_lrlc_config(fixed.config, data_format="channels_first")
    first.build((None, 2, 8, 8))
    first.load_neutral_params(fixed.neutral_params())
    agree(
        first(np.transpose(x, (0, 3, 1, 2))),
        np.transpose(reference(fixed, x.astype(np.float64)), (0, 3, 1, 2)),
        fixed.config,
    )

    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / "model.keras")
        restored = keras.models.load_model(Path(tmp) / "model.keras")
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(restored(x)), keras.ops.convert_to_numpy(model(x))
        )
        assert [layer.get_config() for layer in restored.layers] == [
            layer.get_config() for layer in model.layers
        ]
        for layer in (fixed, dependent):
            path = Path(tmp) / f"{layer.name}.safetensors"
            layer.save_checkpoint(path)
            stored, config = L.load_params(path)
            assert config == layer.config
            for name, value in layer.neutral_params().items():
                np.testing.assert_array_equal(stored[name], value)
            loaded = lrlc_tf.LRLC2D.from_checkpoint(path, strategy=layer.strategy)
            inputs = rng.normal(size=(2, 8, 8, layer.config.in_channels)).astype("float32")
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(loaded(inputs)),
                keras.ops.convert_to_numpy(layer(inputs)),
            )
    if backend == "jax":  # float64 without jax_enable_x64 would hold float32: refused
        wide = lrlc_tf.LRLC2D.from_lrlc_config(fixed.config, dtype="float64")
        try:
            wide.build((None, 8, 8, 2))
        except ValueError as err:
            assert "jax_enable_x64" in str(err)
        else:
            raise AssertionError("a float64 layer was built without jax_enable_x64")
    return {"backend": backend, "weights": [v.name for v in dependent.weights]}


@pytest.mark.parametrize("backend", FRAMEWORKS)
def test_keras_layers_train_and_save_under_each_backend(backend):
    if importlib.util.find_spec(FRAMEWORKS[backend]) is None:
        pytest.skip(f"{FRAMEWORKS[backend]} is not installed")
    code = "import json, tests.test_keras_backends as t; print(json.dumps(t.check_backend()))"
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["backend"] == backend
    # The neutral names, except under torch, whose parameter names cannot hold '.'.
    assert ("g_reduce_kernel" in summary["weights"]) == (backend == "torch")
