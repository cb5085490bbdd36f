"""lrlc_tf's Keras layers for sequences and volumes (spec section 17): LRLC1D, LRLC3D,
LocallyConnected1D and LocallyConnected3D. Under the tensorflow backend, in this process:
both data formats and strategies against lrlc_numpy (outputs and gradients), Keras config
and `.keras` saving, neutral checkpoints, conversion to the locally connected layer, XLA and
errors. Under jax and torch, each in a subprocess with KERAS_BACKEND set (fixed when Keras is
imported): a few conformance cases, a training step and a save and load.

Reference values come from lrlc_numpy in float64; tolerances from `conformance.tolerance`."""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np
import pytest

import conformance
import lrlc_numpy as L
import lrlc_tf
from lrlc_tf import LRLC1D, LRLC3D, LocallyConnected1D, LocallyConnected3D

ROOT = Path(__file__).resolve().parent.parent
BATCH = 2
_FULL = dict(combining="full")
CONFIGS = {
    "1d-fixed": L.LRLCConfig(
        2, 3, 3, rank=3, input_size=(9,), stride=2, dilation=2, padding="same", **_FULL
    ),
    "1d-idep": L.LRLCConfig(
        2, 3, 3, rank=2, input_size=(10,), padding="same", input_dependent=True, **_FULL
    ),
    "1d-mixed": L.LRLCConfig(
        2, 2, [1, 3, 5], rank=3, input_size=(8,), padding="same", normalize="l2", **_FULL
    ),
    "3d-rowcol": L.LRLCConfig(
        2, 3, (3, 2, 3), rank=2, input_size=(4, 5, 6), stride=(1, 2, 2), padding="same"
    ),
    "3d-explicit": L.LRLCConfig(
        2,
        2,
        2,
        rank=2,
        input_size=(4, 5, 4),
        dilation=(2, 1, 1),
        padding=((1, 0), (1, 1), (0, 0)),
        normalize="none",
        **_FULL,
    ),  # fmt: skip
    "3d-idep": L.LRLCConfig(
        2, 2, 3, rank=2, input_size=(5, 5, 6), padding="same", input_dependent=True, **_FULL
    ),
    "3d-mixed": L.LRLCConfig(2, 2, [(1, 3, 3), 3], rank=2, input_size=(3, 5, 4), padding="same"),
}
LRLC_CLASSES = {1: LRLC1D, 3: LRLC3D}
LC_CLASSES = {1: LocallyConnected1D, 3: LocallyConnected3D}
FORMATS = ("channels_last", "channels_first")
on_tensorflow = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="in-process checks use TensorFlow's GradientTape; other backends run in subprocesses",
)


def tol(config, dtype="float64", batch=BATCH):
    return conformance.tolerance(dtype, config, batch)


def error(got, want):
    return conformance.relative_error(keras.ops.convert_to_numpy(got), want)


def channels_first(a):
    """(B, *grid, C) -> (B, C, *grid)."""
    return np.moveaxis(np.asarray(a), -1, 1)


def channels_last(a):
    return np.moveaxis(np.asarray(a), 1, -1)


def in_format(a, data_format):
    return a if data_format == "channels_last" else channels_first(a)


def input_shape(config, data_format="channels_last"):
    grid, c = config.input_size, config.in_channels
    return (None, *grid, c) if data_format == "channels_last" else (None, c, *grid)


def loaded(config, data_format="channels_last", dtype="float64", **kwargs):
    """A built LRLC layer of `config`'s rank holding the conformance data, with the data."""
    x, params, dy = conformance.case_data(conformance.Case("k", config, BATCH), 0)
    layer = LRLC_CLASSES[config.spatial_dims].from_lrlc_config(
        config, data_format=data_format, dtype=dtype, **kwargs
    )
    layer.build(input_shape(config, data_format))
    layer.load_neutral_params(params)
    return layer, x, params, dy


def tape_gradients(layer, x, dy):
    import tensorflow as tf

    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    variables = layer.neutral_variables()
    grads = tape.gradient(
        y,
        [x, *variables.values()],
        output_gradients=tf.constant(dy),
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )
    return y, grads[0], dict(zip(variables, grads[1:]))


# ---------------------------------------------------------------------------------------------
# Outputs and gradients against lrlc_numpy

CALLS = {
    f"{name}-{data_format}-{strategy}": (config, data_format, strategy)
    for name, config in CONFIGS.items()
    for data_format in FORMATS
    for strategy in (("conv",) if config.input_dependent else ("conv", "lc"))
}


@on_tensorflow
@pytest.mark.parametrize("case", CALLS.values(), ids=CALLS)
def test_layer_output_and_gradients_match_reference(case):
    config, data_format, strategy = case
    layer, x, params, dy = loaded(config, data_format, strategy=strategy)
    want_y = L.forward(x, params, config)
    want_dx, want_dp = L.vjp(x, params, config, dy)
    x_in = in_format(x, data_format)
    y, dx, dparams = tape_gradients(layer, x_in, in_format(dy, data_format))
    limit = tol(config) * conformance.gradient_conditioning(config, x, params)
    assert tuple(y.shape) == layer.compute_output_shape(x_in.shape)
    assert tuple(y.shape) == in_format(want_y, data_format).shape
    assert error(y, in_format(want_y, data_format)) <= tol(config)
    assert error(dx, in_format(want_dx, data_format)) <= limit
    assert set(dparams) == set(want_dp)
    for name, grad in dparams.items():
        assert error(grad, want_dp[name]) <= limit, name


@on_tensorflow
@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("n", [1, 3])
def test_locally_connected_layer_matches_reference(n, data_format):
    config = CONFIGS[f"{n}d-fixed" if n == 1 else "3d-explicit"]
    rng = np.random.default_rng(n)
    kernel_shape, bias_shape = L.lc_shapes(config)
    kernel, bias = rng.normal(size=kernel_shape), rng.normal(size=bias_shape)
    x = rng.normal(size=(BATCH, *config.input_size, config.in_channels))
    layer = LC_CLASSES[n].from_lrlc_config(config, data_format=data_format, dtype="float64")
    layer.build(input_shape(config, data_format))
    assert tuple(layer.kernel.shape) == kernel_shape and tuple(layer.bias.shape) == bias_shape
    layer.load_neutral_params({"kernel": kernel, "bias": bias})
    want = in_format(L.locally_connected(x, kernel, bias, config), data_format)
    assert error(layer(in_format(x, data_format)), want) <= tol(config)


@on_tensorflow
@pytest.mark.parametrize("name", ["1d-fixed", "1d-mixed", "3d-rowcol", "3d-mixed"])
def test_to_locally_connected_gives_the_same_outputs(name):
    config = CONFIGS[name]
    layer, x, params, _ = loaded(config, "channels_first")
    local = layer.to_locally_connected()
    assert type(local) is LC_CLASSES[config.spatial_dims]
    assert local.data_format == "channels_first"
    want = channels_first(L.forward(x, params, config))
    assert error(local(channels_first(x)), want) <= tol(config)
    kernel, bias = layer.locally_connected_kernel()
    want_kernel, want_bias = L.to_locally_connected(params, config)
    assert error(kernel, want_kernel) <= tol(config) and error(bias, want_bias) <= tol(config)


@on_tensorflow
@pytest.mark.parametrize("name", ["1d-idep", "3d-idep"])
def test_input_dependent_kernel_and_weights_per_example(name):
    config = CONFIGS[name]
    layer, x, params, _ = loaded(config, "channels_first")
    weights = layer.combining_weights(channels_first(x))
    assert error(weights, L.combining_weights(params, config, x)) <= tol(config)
    kernel, _ = layer.locally_connected_kernel(channels_first(x))
    assert error(kernel, L.to_locally_connected(params, config, x)[0]) <= tol(config)
    with pytest.raises(ValueError, match="input-dependent"):
        layer.to_locally_connected()


@on_tensorflow
@pytest.mark.parametrize("name", ["1d-idep", "3d-rowcol"])
def test_layer_under_xla_matches_reference(name):
    import tensorflow as tf

    config = CONFIGS[name]
    layer, x, params, _ = loaded(config, "channels_last")
    compiled = tf.function(layer, jit_compile=True)
    assert error(compiled(tf.constant(x)), L.forward(x, params, config)) <= tol(config)


# ---------------------------------------------------------------------------------------------
# Serialisation: Keras config, .keras files, neutral checkpoints


@on_tensorflow
def test_keras_config_round_trip_keeps_every_field():
    for config in CONFIGS.values():
        layer = LRLC_CLASSES[config.spatial_dims].from_lrlc_config(
            config, data_format="channels_first"
        )
        restored = type(layer).from_config(json.loads(json.dumps(layer.get_config())))
        assert restored.config == config
        assert restored.data_format == "channels_first"
        local = LC_CLASSES[config.spatial_dims].from_lrlc_config(config.locally_connected_config())
        restored = type(local).from_config(json.loads(json.dumps(local.get_config())))
        assert restored.config.input_size == config.input_size
        assert restored.config.kernel_size == config.locally_connected_config().kernel_size
        assert restored.config.padding == config.locally_connected_config().padding


@on_tensorflow
@pytest.mark.parametrize("n", [1, 3])
def test_keras_model_save_and_load_round_trip(n, tmp_path):
    rng = np.random.default_rng(0)
    fixed = CONFIGS[f"{n}d-mixed"]
    dependent = CONFIGS[f"{n}d-idep"]
    grid = fixed.input_size
    layers = [
        LRLC_CLASSES[n].from_lrlc_config(fixed, data_format="channels_first", strategy="lc"),
        LC_CLASSES[n](2, 3, input_size=grid, padding="same", data_format="channels_first"),
    ]
    model = keras.Sequential([keras.Input((2, *grid)), *layers])
    x = rng.normal(size=(3, 2, *grid)).astype("float32")
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert [type(layer) for layer in restored.layers] == [type(layer) for layer in model.layers]
    assert [layer.get_config() for layer in restored.layers] == [
        layer.get_config() for layer in model.layers
    ]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored(x)), keras.ops.convert_to_numpy(model(x))
    )
    idep = LRLC_CLASSES[n].from_lrlc_config(dependent)
    model = keras.Sequential([keras.Input((*dependent.input_size, 2)), idep])
    model.save(path)
    restored = keras.models.load_model(path)
    x = rng.normal(size=(2, *dependent.input_size, 2)).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored(x)), keras.ops.convert_to_numpy(model(x))
    )


@on_tensorflow
@pytest.mark.parametrize("name", ["1d-mixed", "3d-rowcol", "3d-idep"])
def test_neutral_checkpoint_round_trip(name, tmp_path):
    config = CONFIGS[name]
    layer, x, params, _ = loaded(config)
    path = tmp_path / "layer.safetensors"
    layer.save_checkpoint(path)
    stored, stored_config = L.load_params(path)
    assert stored_config == config
    for tensor, value in params.items():
        np.testing.assert_array_equal(stored[tensor], value)
    restored = type(layer).from_checkpoint(path)
    assert restored.config == config and restored.dtype == "float64"
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored(x)), keras.ops.convert_to_numpy(layer(x))
    )
    fresh = type(layer).from_lrlc_config(config, dtype="float64")
    fresh.load_checkpoint(path)  # builds it first
    for tensor, value in fresh.neutral_params().items():
        np.testing.assert_array_equal(value, params[tensor])
    with pytest.raises(ValueError, match="input_size"):
        LRLC_CLASSES[4 - config.spatial_dims].from_checkpoint(path)


@on_tensorflow
def test_int_arguments_mean_the_same_size_on_every_axis():
    sequence = LRLC1D(3, 5, 2, input_size=12, stride=2, combining="full", in_channels=2)
    assert sequence.config.input_size == (12,) and sequence.config.kernel_size == (5,)
    assert sequence.config.output_size == (4,)
    volume = LocallyConnected3D(2, 3, input_size=6, stride=2)
    volume.build((None, 6, 6, 6, 3))
    assert volume.config.input_size == (6, 6, 6) and volume.in_channels == 3
    assert tuple(volume.kernel.shape) == (2, 2, 2, 3, 3, 3, 3, 2)


@on_tensorflow
def test_channel_count_is_read_from_a_channels_first_input():
    layer = LRLC3D(2, 3, 2, input_size=(4, 5, 6), padding="same", data_format="channels_first")
    y = layer(np.zeros((1, 3, 4, 5, 6), "float32"))
    assert layer.in_channels == 3 and tuple(y.shape) == (1, 2, 4, 5, 6)
    assert layer.compute_output_shape((None, 3, 4, 5, 6)) == (None, 2, 4, 5, 6)


# ---------------------------------------------------------------------------------------------
# Errors

VOLUME = CONFIGS["3d-rowcol"]
SEQUENCE = CONFIGS["1d-fixed"]

BAD_CONSTRUCTIONS = {
    "3-D config to LRLC1D": (
        lambda: LRLC1D.from_lrlc_config(VOLUME),
        ValueError,
        "Invalid value for argument `input_size` of LowRankLocallyConnected1D: a 1-D layer "
        "takes an int or a 1-tuple of ints (its grid), not 3; LowRankLocallyConnected3D takes "
        "a 3-D grid. Received: input_size=(4, 5, 6)",
    ),
    "1-D config to LocallyConnected3D": (
        lambda: LocallyConnected3D.from_lrlc_config(SEQUENCE),
        ValueError,
        "of LocallyConnected3D: a 3-D layer takes an int or a triple of ints (its grid), not 1; "
        "LocallyConnected1D takes a 1-D grid. Received: input_size=(9,)",
    ),
    "2-D grid to LRLC3D": (
        lambda: LRLC3D(2, 3, 2, input_size=(8, 8)),
        ValueError,
        "LowRankLocallyConnected2D takes a 2-D grid",
    ),
    "rowcol in 1-D": (
        lambda: LRLC1D(2, 3, 2, input_size=(9,)),
        ValueError,
        "Invalid value for argument `combining` of LowRankLocallyConnected1D",
    ),
    "row in 3-D": (
        lambda: LRLC3D(2, 3, 2, input_size=(4, 4, 4), combining="row"),
        ValueError,
        "'row' is defined for 2-D layers only",
    ),
    "kernel_size pair in 3-D": (
        lambda: LRLC3D(2, (3, 3), 2, input_size=(4, 4, 4)),
        TypeError,
        "Invalid value for argument `kernel_size` of LowRankLocallyConnected3D",
    ),
    "use_bias not a bool": (
        lambda: LocallyConnected1D(2, 3, input_size=9, use_bias="yes"),
        TypeError,
        "Invalid value for argument `use_bias` of LocallyConnected1D: expected a bool. "
        "Received: use_bias='yes'",
    ),
    "data_format": (
        lambda: LocallyConnected3D(2, 3, input_size=5, data_format="NCDHW"),
        ValueError,
        "Invalid value for argument `data_format` of LocallyConnected3D",
    ),
}


@on_tensorflow
@pytest.mark.parametrize("case", BAD_CONSTRUCTIONS.values(), ids=BAD_CONSTRUCTIONS)
def test_bad_construction_is_a_clear_error(case):
    build, exception, fragment = case
    with pytest.raises(exception) as caught:
        build()
    assert fragment in str(caught.value)


BAD_INPUTS = {
    "2-D input to LRLC3D": (
        VOLUME,
        "channels_last",
        (2, 4, 5, 2),
        "input must have rank 5 (NDHWC), got shape (2, 4, 5, 2)",
    ),
    "wrong grid to LRLC3D": (
        VOLUME,
        "channels_first",
        (2, 2, 4, 5, 7),
        "input has spatial size (4, 5, 7) (shape (2, 2, 4, 5, 7), NCDHW); the layer was built "
        "for input_size=(4, 5, 6)",
    ),
    "wrong channels to LRLC1D": (
        SEQUENCE,
        "channels_first",
        (2, 3, 9),
        "input has 3 channels (shape (2, 3, 9), NCL); expected in_channels=2",
    ),
}


@on_tensorflow
@pytest.mark.parametrize("case", BAD_INPUTS.values(), ids=BAD_INPUTS)
def test_bad_input_is_a_clear_error(case):
    config, data_format, shape, fragment = case
    layer = LRLC_CLASSES[config.spatial_dims].from_lrlc_config(config, data_format=data_format)
    layer.build(input_shape(config, data_format))
    with pytest.raises(ValueError) as caught:
        layer(np.zeros(shape, "float32"))
    assert fragment in str(caught.value)


def test_package_exports_every_rank():
    for n in (1, 2, 3):
        low_rank = getattr(lrlc_tf, f"LowRankLocallyConnected{n}D")
        assert getattr(lrlc_tf, f"LRLC{n}D") is low_rank and low_rank.spatial_dims == n
        assert getattr(lrlc_tf, f"LocallyConnected{n}D").spatial_dims == n
        for name in (f"LRLC{n}D", f"LocallyConnected{n}D", f"LowRankLocallyConnected{n}D"):
            assert name in lrlc_tf.__all__


# ---------------------------------------------------------------------------------------------
# Other Keras backends, each in a process of its own

# A few catalogue cases (fixed and input-dependent, mixed, both ranks), through the keras
# adapter: forward, gradients, conversion, locally connected form, checkpoint, init.
BACKEND_CASES = ("1d-stride2-same/idep", "1d-mixed/fixed", "3d/rowcol-softmax", "3d-mixed/idep")


def check_backend() -> dict:
    """Run in a process whose KERAS_BACKEND is set: every check asserts; returns a summary."""
    from conformance.backends import keras as keras_adapter

    backend = keras.backend.backend()
    cases = [case for case in conformance.catalogue() if case.name in BACKEND_CASES]
    assert len(cases) == len(BACKEND_CASES)
    report = conformance.run(keras_adapter.Backend(strategy="lc"), cases=cases, dtypes=("float64",))
    assert report.ok, "\n".join(map(str, report.failures))
    assert report.total("passed") == len(conformance.CHECKS) * len(cases), report.matrix()

    # Two training steps of a channels-first model of both ranks' layers change every weight.
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    first = dict(data_format="channels_first", padding="same")
    models = {
        (9,): [
            LRLC1D(3, 3, 2, input_size=9, combining="full", strategy="lc", **first),
            LocallyConnected1D(2, 3, input_size=9, **first),
        ],
        (4, 5, 4): [
            LRLC3D(2, 3, 2, input_size=(4, 5, 4), combining="full", input_dependent=True, **first),
            LocallyConnected3D(2, 2, input_size=(4, 5, 4), **first),
        ],
    }
    for grid, layers in models.items():
        model = keras.Sequential([keras.Input((2, *grid)), *layers])
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
        x = rng.normal(size=(4, 2, *grid)).astype("float32")
        target = rng.normal(size=(4, 2, *grid)).astype("float32")
        before = [keras.ops.convert_to_numpy(v).copy() for v in model.weights]
        history = model.fit(x, target, batch_size=2, epochs=1, shuffle=False, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
        after = [keras.ops.convert_to_numpy(v) for v in model.weights]
        unchanged = [
            v.path for v, b, a in zip(model.weights, before, after) if np.array_equal(a, b)
        ]
        assert not unchanged, f"fit left these weights unchanged: {unchanged}"
        with tempfile.TemporaryDirectory() as tmp:
            model.save(Path(tmp) / "model.keras")
            restored = keras.models.load_model(Path(tmp) / "model.keras")
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(restored(x)), keras.ops.convert_to_numpy(model(x))
        )
        # The channels-first layer against the reference on the float32 input it sees.
        first = layers[0]
        params = {k: v.astype(np.float64) for k, v in first.neutral_params().items()}
        want = L.forward(channels_last(x).astype(np.float64), params, first.config)
        got = channels_last(keras.ops.convert_to_numpy(first(x)))
        assert conformance.relative_error(got, want) <= tol(first.config, "float32", len(x))
    return {"backend": backend, "passed": report.total("passed")}


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_layers_under_other_keras_backends(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    code = "import json, tests.test_keras_nd as t; print(json.dumps(t.check_backend()))"
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary == {"backend": backend, "passed": len(conformance.CHECKS) * len(BACKEND_CASES)}
