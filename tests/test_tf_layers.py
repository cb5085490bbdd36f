"""lrlc_tf's Keras layers beyond the conformance catalogue: parameters and initialisation,
data formats, Keras config and `.keras` saving, the locally connected form, neutral
checkpoints, Algorithm 1's single convolution, XLA, mixed precision, model.fit and errors.
Reference values come from lrlc_numpy; tolerances from `conformance.tolerance`."""

import dataclasses
import json
import math
import warnings

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import keras  # noqa: E402

import conformance  # noqa: E402
import lrlc_numpy as L  # noqa: E402
import lrlc_tf  # noqa: E402
from lrlc_tf import LRLC2D, LocallyConnected2D  # noqa: E402

FIXED = L.LRLCConfig(2, 3, 3, rank=3, input_size=(7, 6), stride=2, padding="same")
IDEP = L.LRLCConfig(
    2, 3, 3, rank=2, input_size=(7, 6), padding="same", combining="full", input_dependent=True
)
# Stride with dilation and TensorFlow's asymmetric 'same' padding, on a 'row' layer.
STRIDED_DILATED = L.LRLCConfig(
    2, 3, (3, 2), rank=2, input_size=(9, 8), stride=2, dilation=2, padding="same", combining="row"
)
CONFIGS = {"fixed": FIXED, "idep": IDEP, "strided-dilated": STRIDED_DILATED}
# Each config under each strategy it has (input-dependent layers: Algorithm 1 only).
STRATEGY_CASES = {
    f"{name}-{strategy}": (config, strategy)
    for name, config in CONFIGS.items()
    for strategy in (("conv",) if config.input_dependent else ("conv", "lc"))
}
BATCH = 2
HAS_GPU = bool(tf.config.list_physical_devices("GPU"))


def loaded(config, dtype="float64", seed=0, **kwargs):
    """A built layer holding the conformance data for `config` (logits and biases moved away
    from their constant initial values), with that data's NHWC input and neutral params."""
    x, params, _ = conformance.case_data(conformance.Case("t", config, BATCH), seed)
    layer = LRLC2D.from_lrlc_config(config, dtype=dtype, **kwargs)
    layer.build(input_shape(config, layer.data_format))
    layer.load_neutral_params(params)
    return layer, x, params


def input_shape(config, data_format="channels_last"):
    h, w = config.input_size
    if data_format == "channels_last":
        return (None, h, w, config.in_channels)
    return (None, config.in_channels, h, w)


def tol(config, dtype="float64"):
    return conformance.tolerance(dtype, config, BATCH)


def err(got, want):
    return conformance.relative_error(tf.cast(got, tf.float64).numpy(), want)


def nchw(x):
    return np.transpose(x, (0, 3, 1, 2))


# ---------------------------------------------------------------------------------------------
# Parameters and initialisation


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS)
def test_weights_carry_neutral_names_and_shapes(config):
    layer = LRLC2D.from_lrlc_config(config)
    layer.build((None, *config.input_size, config.in_channels))
    assert {v.name: tuple(v.shape) for v in layer.weights} == L.param_shapes(config)
    assert layer.config == config
    assert all(v.trainable for v in layer.weights)


def test_in_channels_is_taken_from_the_first_input():
    layer = LRLC2D(3, 3, 2, input_size=(7, 6))
    with pytest.raises(ValueError, match="in_channels is not known"):
        layer.config  # noqa: B018
    layer(np.zeros((1, 7, 6, 5), "float32"))
    assert layer.config == L.LRLCConfig(5, 3, 3, rank=2, input_size=(7, 6))


def _spec_limit(name, shape):
    """Spec section 10's uniform bound, written out from the table (independently of
    lrlc_tf): He for the basis, Glorot with Keras's fans for g's kernels (the depthwise
    (3, 3, K) kernels as (3, 3, K, 1): fans 9K and 9), else None."""
    if name == "basis":
        _, kh, kw, c_in, _ = shape
        return math.sqrt(6.0 / (kh * kw * c_in))
    if name.startswith("g.dilated") and name.endswith(".kernel"):
        return math.sqrt(6.0 / (9 * shape[2] + 9))
    if name.startswith("g.") and name.endswith(".kernel"):
        return math.sqrt(6.0 / (shape[0] + shape[1]))
    return None


def _spec_constant(name, config):
    """The amended spec's constant start: 'conv_init' logits, 0.5/sqrt(K) for each of
    rowcol's two tables and 1/sqrt(K) otherwise; zero biases."""
    if name.endswith("logits"):
        return (0.5 if config.combining == "rowcol" else 1.0) / math.sqrt(config.rank)
    return 0.0


def test_initialisation_follows_the_spec():
    keras.utils.set_random_seed(0)
    configs = [
        L.LRLCConfig(16, 32, 3, rank=8, input_size=(20, 20), combining="full"),
        L.LRLCConfig(
            16, 32, 3, rank=8, input_size=(20, 20), combining="full", input_dependent=True
        ),
        L.LRLCConfig(16, 32, 3, rank=8, input_size=(20, 20)),  # rowcol
        L.LRLCConfig(4, 4, 3, rank=2, input_size=(9, 8), combining="row"),
        L.LRLCConfig(4, 4, 3, rank=2, input_size=(9, 8), combining="col"),
    ]
    for config in configs:
        layer = LRLC2D.from_lrlc_config(config, dtype="float64")
        layer.build((None, *config.input_size, config.in_channels))
        for name, value in layer.neutral_params().items():
            limit = _spec_limit(name, value.shape)
            if limit is None:
                want = _spec_constant(name, config)
                assert np.all(value == want), f"{name} should start at {want}"
                continue
            assert np.abs(value).max() <= limit, name
            # Uniform on (-a, a): all of n draws stay below 0.95 a with probability
            # 0.95**n < 1e-6 for n >= 300, so larger tensors must reach that far.
            if value.size >= 300:
                assert np.abs(value).max() >= 0.95 * limit, name
                # Mean of n uniforms: standard deviation a / sqrt(3 n); allow 6 of them.
                assert abs(value.mean()) <= 6 * limit / math.sqrt(3 * value.size), name


def test_initial_values_are_lrlc_numpys():
    """Constants equal `lrlc_numpy.init_params`' exactly, and every uniform draw stays within
    `lrlc_numpy.initial_value`'s limit, for the layer and for LocallyConnected2D's kernel."""
    keras.utils.set_random_seed(1)
    for config in CONFIGS.values():
        layer = LRLC2D.from_lrlc_config(config, dtype="float64")
        layer.build(input_shape(config))
        reference = L.init_params(config)
        for name, value in layer.neutral_params().items():
            initial = L.initial_value(name, config)
            if initial.uniform:
                assert np.abs(value).max() <= initial.limit, name
            else:
                np.testing.assert_array_equal(value, reference[name], err_msg=name)
    lc = LocallyConnected2D.from_lrlc_config(FIXED, dtype="float64")
    lc.build(input_shape(FIXED))
    params = lc.neutral_params()
    assert np.abs(params["kernel"]).max() <= L.initial_value("basis", FIXED).limit
    assert not params["bias"].any()


def test_fresh_softmax_layer_is_the_mean_basis_convolution():
    """Spec section 10: constant logits give w = 1/K everywhere, so y = conv(x, mean basis)."""
    layer = LRLC2D.from_lrlc_config(FIXED, dtype="float64")
    x = np.random.default_rng(1).normal(size=(BATCH, 7, 6, 2))
    y = layer(x)
    basis = layer.neutral_params()["basis"]
    want = L.conv2d(x, basis.mean(axis=0), stride=FIXED.stride, padding=FIXED.padding)
    assert err(y, want) <= tol(FIXED)


# ---------------------------------------------------------------------------------------------
# Algorithm 1: one convolution with K * C_out outputs


@pytest.mark.parametrize("config", [FIXED, STRIDED_DILATED], ids=["fixed", "strided-dilated"])
def test_algorithm_1_is_one_convolution_with_k_times_c_out_outputs(config):
    layer, x, _ = loaded(config)
    graph = tf.function(layer).get_concrete_function(tf.TensorSpec(x.shape, tf.float64)).graph
    convolutions = [op for op in graph.get_operations() if op.type.startswith("Conv2D")]
    assert len(convolutions) == 1
    assert convolutions[0].outputs[0].shape[-1] == config.rank * config.out_channels


# ---------------------------------------------------------------------------------------------
# Data formats and Keras configuration


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS)
def test_channels_first_matches_the_reference(config):
    layer, x, params = loaded(config, data_format="channels_first")
    y = layer(nchw(x))
    assert y.shape == layer.compute_output_shape(nchw(x).shape)
    want = L.forward(x, params, config)
    assert err(y, nchw(want)) <= tol(config)
    if config.input_dependent:
        weights = layer.combining_weights(nchw(x))
        assert err(weights, L.combining_weights(params, config, x)) <= tol(config)


@pytest.mark.parametrize(("config", "strategy"), STRATEGY_CASES.values(), ids=STRATEGY_CASES)
def test_get_config_round_trip(config, strategy):
    layer, x, params = loaded(config, data_format="channels_first", name="lrlc", strategy=strategy)
    keras_config = layer.get_config()
    assert keras_config["strategy"] == strategy
    json.dumps(keras_config)  # serialisable as it stands
    clone = LRLC2D.from_config(keras_config)
    assert clone.get_config() == keras_config
    clone.build(input_shape(config, "channels_first"))
    clone.load_neutral_params(params)
    np.testing.assert_array_equal(clone(nchw(x)), layer(nchw(x)))


def test_config_read_back_from_json_keeps_pairs():
    """JSON turns pairs into lists, which LRLCConfig reads as one entry per basis: at rank 2
    a kernel (3, 2) read that way would be a mixed basis. from_config reads them back as
    pairs, for both layers."""
    config = L.LRLCConfig(
        2, 3, (3, 2), rank=2, input_size=(9, 8), stride=(2, 1), dilation=(1, 2), padding=1
    )
    layer = LRLC2D.from_lrlc_config(config)
    clone = LRLC2D.from_config(json.loads(json.dumps(layer.get_config())))
    assert clone.config == config
    lc = LocallyConnected2D.from_lrlc_config(config)
    lc_clone = LocallyConnected2D.from_config(json.loads(json.dumps(lc.get_config())))
    assert lc_clone.config == lc.config
    unknown = LRLC2D(3, (3, 2), 2, input_size=(9, 8))
    unknown_clone = LRLC2D.from_config(json.loads(json.dumps(unknown.get_config())))
    assert unknown_clone.in_channels is None and unknown_clone.get_config() == unknown.get_config()


def test_compute_output_shape_matches_the_call():
    for config in CONFIGS.values():
        layer, x, _ = loaded(config)
        out_h, out_w = config.output_size
        assert layer.compute_output_shape((None, *x.shape[1:])) == (
            None,
            out_h,
            out_w,
            config.out_channels,
        )
        assert tuple(layer(x).shape) == (BATCH, out_h, out_w, config.out_channels)


def test_keras_file_round_trip_keeps_outputs(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((9, 8, 2))
    hidden = LRLC2D(4, 3, 3, input_size=(9, 8), padding="same", combining="row", strategy="lc")(
        inputs
    )
    hidden = keras.layers.ReLU()(hidden)
    hidden = LRLC2D(3, 3, 2, input_size=(9, 8), stride=2, combining="full", input_dependent=True)(
        hidden
    )
    outputs = LocallyConnected2D(2, (2, 3), input_size=(4, 3), padding="same")(hidden)
    model = keras.Model(inputs, outputs)
    # Move every weight away from its constant start so a weight left behind would show.
    for variable in model.weights:
        variable.assign(variable + tf.random.normal(variable.shape, stddev=0.3))
    x = np.random.default_rng(0).normal(size=(3, 9, 8, 2)).astype("float32")
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert [type(layer).__name__ for layer in restored.layers] == [
        type(layer).__name__ for layer in model.layers
    ]
    np.testing.assert_array_equal(restored(x), model(x))
    assert [v.name for v in restored.layers[1].weights] == [v.name for v in model.layers[1].weights]
    assert restored.layers[1].strategy == "lc"


# ---------------------------------------------------------------------------------------------
# The locally connected form


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("config", [FIXED, STRIDED_DILATED], ids=["fixed", "strided-dilated"])
def test_to_locally_connected_has_the_same_outputs(config, data_format):
    layer, x, params = loaded(config, data_format=data_format)
    x = x if data_format == "channels_last" else nchw(x)
    lc = layer.to_locally_connected()
    assert isinstance(lc, LocallyConnected2D) and lc.data_format == data_format
    want_kernel, want_bias = L.to_locally_connected(params, config)
    lc_params = lc.neutral_params()
    assert err(lc_params["kernel"], want_kernel) <= tol(config)
    assert err(lc_params["bias"], want_bias) <= tol(config)
    assert err(lc(x), layer(x).numpy()) <= tol(config)


def test_locally_connected_layer_matches_the_reference():
    config = L.LRLCConfig(3, 4, (3, 2), rank=1, input_size=(8, 7), stride=(2, 1), dilation=2)
    rng = np.random.default_rng(2)
    layer = LocallyConnected2D(4, (3, 2), input_size=(8, 7), stride=(2, 1), dilation=2)
    layer.build((None, 8, 7, 3))
    # Rounded to float32 first, so only the layer's float32 arithmetic differs.
    kernel = conformance.round_to(rng.normal(size=(*config.output_size, 3, 2, 3, 4)), "float32")
    bias = conformance.round_to(rng.normal(size=(*config.output_size, 4)), "float32")
    x = conformance.round_to(rng.normal(size=(BATCH, 8, 7, 3)), "float32")
    layer.load_neutral_params({"kernel": kernel, "bias": bias})
    got = layer(x.astype("float32"))
    assert got.dtype == tf.float32
    assert err(got, L.locally_connected(x, kernel, bias, config)) <= tol(config, "float32")


def test_input_dependent_layer_converts_per_example():
    layer, x, params = loaded(IDEP)
    kernel, bias = layer.locally_connected_kernel(x)
    assert tuple(kernel.shape) == (BATCH, *IDEP.output_size, 3, 3, 2, 3)
    want_kernel, want_bias = L.to_locally_connected(params, IDEP, x)
    assert err(kernel, want_kernel) <= tol(IDEP) and err(bias, want_bias) <= tol(IDEP)
    y = lrlc_tf.locally_connected(x, kernel, bias, IDEP)
    assert err(y, layer(x).numpy()) <= tol(IDEP)
    with pytest.raises(ValueError, match="locally_connected_kernel"):
        layer.to_locally_connected()
    with pytest.raises(ValueError, match="needs the input x"):
        layer.locally_connected_kernel()


# ---------------------------------------------------------------------------------------------
# Neutral checkpoints


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS)
def test_checkpoint_round_trip(tmp_path, config):
    layer, x, params = loaded(config)
    path = tmp_path / "layer.safetensors"
    layer.save_checkpoint(path)
    read, read_config = L.load_params(path)
    assert read_config == config
    for name, value in params.items():
        np.testing.assert_array_equal(read[name], value)
    restored = LRLC2D.from_checkpoint(path, data_format="channels_first")
    assert restored.data_format == "channels_first" and restored.dtype == "float64"
    np.testing.assert_array_equal(restored(nchw(x)), nchw(layer(x).numpy()))


def test_checkpoint_from_a_float32_layer(tmp_path):
    layer, x, params = loaded(FIXED, dtype="float32")
    path = tmp_path / "f32.safetensors"
    layer.save_checkpoint(path)
    read, _ = L.load_params(path)
    assert all(value.dtype == np.float32 for value in read.values())
    restored = LRLC2D.from_checkpoint(path)  # the stored dtype
    assert all(v.dtype == "float32" for v in restored.weights)
    np.testing.assert_array_equal(restored(x), layer(x))
    restored64 = LRLC2D.from_checkpoint(path, dtype="float64")
    assert all(value.dtype == np.float64 for value in restored64.neutral_params().values())


def test_bad_checkpoints_are_rejected(tmp_path):
    _, _, params = loaded(FIXED)
    missing = tmp_path / "missing.safetensors"
    from safetensors.numpy import save_file

    save_file(
        {n: v for n, v in params.items() if n != "basis"},
        str(missing),
        metadata={"lrlc_config": FIXED.to_json()},
    )
    with pytest.raises(ValueError, match="basis"):
        LRLC2D.from_checkpoint(missing)
    misshaped = tmp_path / "misshaped.safetensors"
    save_file(
        {**params, "channel_bias": np.zeros(7)},
        str(misshaped),
        metadata={"lrlc_config": FIXED.to_json()},
    )
    with pytest.raises(ValueError, match="channel_bias"):
        LRLC2D.from_checkpoint(misshaped)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="garbage"):
        LRLC2D.from_checkpoint(garbage)


# ---------------------------------------------------------------------------------------------
# The layer surface shared with lrlc_torch, and its deprecated aliases


def moved(params, scale=0.5, seed=7):
    """`params` with noise added, so that a layer holding them differs from one without."""
    rng = np.random.default_rng(seed)
    return {n: v + scale * rng.standard_normal(v.shape) for n, v in params.items()}


def assert_params_equal(got, want):
    assert set(got) == set(want)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_neutral_params_and_load_neutral_params():
    layer, x, params = loaded(FIXED)
    got = layer.neutral_params()
    assert all(isinstance(value, np.ndarray) for value in got.values())
    assert_params_equal(got, params)
    before = layer(x).numpy()
    other = moved(params)
    assert layer.load_neutral_params(other) is None  # in place
    assert_params_equal(layer.neutral_params(), other)
    assert np.any(layer(x).numpy() != before)


def test_locally_connected_surface():
    lc = LocallyConnected2D.from_lrlc_config(STRIDED_DILATED, dtype="float64")
    assert lc.config == dataclasses.replace(STRIDED_DILATED, rank=1, combining="rowcol")
    direct = LocallyConnected2D(
        3, (3, 2), input_size=(9, 8), in_channels=2, stride=2, dilation=2, padding="same"
    )
    assert {**lc.get_config(), "name": None, "dtype": None} == {
        **direct.get_config(),
        "name": None,
        "dtype": None,
    }
    lc.build(input_shape(STRIDED_DILATED))
    kernel, bias = L.to_locally_connected(L.init_params(STRIDED_DILATED, 3), STRIDED_DILATED)
    lc.load_neutral_params({"kernel": kernel, "bias": bias})
    assert_params_equal(lc.neutral_params(), {"kernel": kernel, "bias": bias})
    no_bias = LocallyConnected2D.from_lrlc_config(FIXED, use_bias=False)
    assert not no_bias.use_bias and no_bias.config.in_channels == FIXED.in_channels
    with pytest.raises(TypeError, match="LRLCConfig"):
        LocallyConnected2D.from_lrlc_config(FIXED.to_dict())


def test_load_checkpoint_changes_the_layer_in_place(tmp_path):
    source, x, params = loaded(FIXED)
    path = tmp_path / "source.safetensors"
    source.save_checkpoint(path)
    target, _, _ = loaded(FIXED, seed=1)
    assert np.any(target(x).numpy() != source(x).numpy())
    assert target.load_checkpoint(path) is None
    assert_params_equal(target.neutral_params(), params)
    np.testing.assert_array_equal(target(x), source(x))


@pytest.mark.parametrize("in_channels", [FIXED.in_channels, None], ids=["known", "unknown"])
def test_load_checkpoint_builds_an_unbuilt_layer(tmp_path, in_channels):
    source, x, params = loaded(FIXED, dtype="float32")
    path = tmp_path / "source.safetensors"
    source.save_checkpoint(path)
    options = {f.name: getattr(FIXED, f.name) for f in dataclasses.fields(FIXED)}
    del options["in_channels"]
    target = LRLC2D(**options, in_channels=in_channels, dtype="float64")
    target.load_checkpoint(path)
    assert target.built and target.config == FIXED
    assert all(v.dtype == "float64" for v in target.weights)  # the layer's dtype is kept
    read = {n: v.astype(np.float64) for n, v in L.load_params(path)[0].items()}
    assert_params_equal(target.neutral_params(), read)


def test_load_checkpoint_refuses_a_different_config(tmp_path):
    source, _, _ = loaded(FIXED)
    path = tmp_path / "source.safetensors"
    source.save_checkpoint(path)
    other = L.LRLCConfig(**{**FIXED.to_dict(), "rank": 2})
    target = LRLC2D.from_lrlc_config(other)
    target.build(input_shape(other))
    before = target.neutral_params()
    with pytest.raises(ValueError, match=r"rank=3.*rank=2") as raised:
        target.load_checkpoint(path)
    assert "source.safetensors" in str(raised.value)
    assert_params_equal(target.neutral_params(), before)


def test_from_checkpoint_builds_a_new_layer(tmp_path):
    source, x, _ = loaded(FIXED)
    path = tmp_path / "source.safetensors"
    source.save_checkpoint(path)
    restored = LRLC2D.from_checkpoint(path, name="restored")
    assert restored is not source and restored.name == "restored" and restored.built
    np.testing.assert_array_equal(restored(x), source(x))


def test_from_lrlc_config_and_config():
    layer = LRLC2D.from_lrlc_config(IDEP, strategy="conv")
    assert layer.config == IDEP and layer.strategy == "conv"
    with pytest.raises(TypeError, match="LRLCConfig"):
        LRLC2D.from_lrlc_config(IDEP.to_dict())


def warns_naming(replacement):
    return pytest.warns(DeprecationWarning, match=rf"deprecated; use {replacement}")


def test_deprecated_lrlc_config_is_config():
    layer = LRLC2D.from_lrlc_config(FIXED)
    with warns_naming("config") as caught:
        assert layer.lrlc_config == FIXED
    assert __file__ in {w.filename for w in caught}  # attributed to the caller
    unknown = LRLC2D(3, 3, 2, input_size=(7, 6))
    with warns_naming("config"), pytest.raises(ValueError, match="in_channels is not known"):
        unknown.lrlc_config  # noqa: B018


def test_keras_saving_does_not_touch_the_deprecated_aliases(tmp_path):
    layer = LRLC2D(3, 3, 2, input_size=(7, 6))
    model = keras.Sequential(
        [keras.Input((7, 6, 2)), layer, LocallyConnected2D(2, 3, input_size=(5, 4))]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.save(tmp_path / "model.keras")
        keras.models.load_model(tmp_path / "model.keras")
    assert not [w for w in caught if "is deprecated; use" in str(w.message)]
    assert "lrlc_config" not in dir(layer) and hasattr(layer, "lrlc_config")


@pytest.mark.parametrize("cls", [LRLC2D, LocallyConnected2D])
def test_deprecated_get_and_set_params(cls):
    if cls is LRLC2D:
        layer, _, params = loaded(FIXED)
    else:
        layer = LocallyConnected2D.from_lrlc_config(FIXED, dtype="float64")
        layer.build(input_shape(FIXED))
        params = layer.neutral_params()
    with warns_naming("neutral_params") as caught:
        assert_params_equal(layer.get_params(), params)
    assert __file__ in {w.filename for w in caught}  # attributed to the caller
    other = moved(params)
    with warns_naming("load_neutral_params"):
        assert layer.set_params(other) is None
    assert_params_equal(layer.neutral_params(), other)
    with warns_naming("load_neutral_params"), pytest.raises(ValueError):
        layer.set_params({})


def test_deprecated_save_params_writes_the_checkpoint(tmp_path):
    layer, _, params = loaded(FIXED)
    with warns_naming("save_checkpoint"):
        layer.save_params(tmp_path / "old.safetensors")
    layer.save_checkpoint(tmp_path / "new.safetensors")
    old, new = (
        L.load_params(tmp_path / "old.safetensors"),
        L.load_params(tmp_path / "new.safetensors"),
    )
    assert old[1] == new[1] == FIXED
    assert_params_equal(old[0], new[0])
    assert_params_equal(old[0], params)


def test_deprecated_load_params_returns_a_new_layer(tmp_path):
    source, x, params = loaded(FIXED)
    path = tmp_path / "source.safetensors"
    source.save_checkpoint(path)
    with warns_naming("from_checkpoint"):
        restored = LRLC2D.load_params(path, data_format="channels_first")
    assert restored.data_format == "channels_first"
    np.testing.assert_array_equal(restored(nchw(x)), nchw(source(x).numpy()))
    # Called on an instance it still builds a new layer, and the warning says so.
    target, _, target_params = loaded(FIXED, seed=1)
    with warns_naming("from_checkpoint") as caught:
        new = target.load_params(path)
    messages = [str(w.message) for w in caught if "load_params is deprecated" in str(w.message)]
    assert messages and "load_checkpoint" in messages[0]
    assert new is not target
    assert_params_equal(new.neutral_params(), params)
    assert_params_equal(target.neutral_params(), target_params)


# ---------------------------------------------------------------------------------------------
# XLA and mixed precision


@pytest.mark.parametrize(("config", "strategy"), STRATEGY_CASES.values(), ids=STRATEGY_CASES)
def test_xla_compiled_equals_eager(config, strategy):
    layer, x, _ = loaded(config, strategy=strategy)
    x = tf.constant(x)
    dy = tf.constant(np.random.default_rng(3).normal(size=(BATCH, *config.output_size, 3)))

    def forward_and_grads(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        return (y, *tape.gradient(y, [x, *layer.trainable_weights], output_gradients=dy))

    eager = forward_and_grads(x)
    compiled = tf.function(forward_and_grads, jit_compile=True)(x)
    for got, want in zip(compiled, eager):
        assert err(got, want.numpy()) <= tol(config)


@pytest.mark.parametrize(
    ("policy", "dtype"), [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")]
)
@pytest.mark.parametrize(("config", "strategy"), STRATEGY_CASES.values(), ids=STRATEGY_CASES)
def test_mixed_precision(config, strategy, policy, dtype):
    """Variables stay float32, the layer computes in the 16-bit type; against the reference on
    the same 16-bit-rounded inputs and parameters, the 16-bit tolerance rule applies."""
    layer, x, params = loaded(config, dtype=policy, strategy=strategy)
    assert all(v.dtype == "float32" for v in layer.weights)
    x16 = conformance.round_to(x, dtype)
    params16 = {name: conformance.round_to(value, dtype) for name, value in params.items()}
    y = layer(x16)
    assert y.dtype == dtype
    assert err(y, L.forward(x16, params16, config)) <= tol(config, dtype)
    if not config.input_dependent:
        lc = layer.to_locally_connected()
        assert lc.compute_dtype == dtype and lc.kernel.dtype == "float32"
        assert err(lc(x16), L.forward(x16, params16, config)) <= tol(config, dtype)


# ---------------------------------------------------------------------------------------------
# Training


@pytest.mark.parametrize(
    ("policy", "jit_compile"),
    [("float32", False), ("mixed_float16", True)],
    ids=["plain", "mixed-xla"],
)
def test_model_fit_reduces_the_loss(policy, jit_compile):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8, 8, 2)).astype("float32")
    # A target a locally connected layer can express: a different linear map per position.
    teacher = LocallyConnected2D(3, 3, input_size=(8, 8), padding="same")
    y = teacher(x).numpy()
    model = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            LRLC2D(8, 3, 4, input_size=(8, 8), padding="same", dtype=policy),
            keras.layers.ReLU(dtype=policy),
            LRLC2D(
                3,
                3,
                2,
                input_size=(8, 8),
                padding="same",
                combining="full",
                input_dependent=True,
                dtype=policy,
            ),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", jit_compile=jit_compile)
    history = model.fit(x, y, batch_size=8, epochs=6, verbose=0).history["loss"]
    assert all(np.isfinite(history))
    assert history[-1] < history[0]
    assert all(v.dtype == "float32" for v in model.weights)


# ---------------------------------------------------------------------------------------------
# Errors on bad input (spec section 14)


def test_bad_inputs_raise_clear_errors():
    layer, x, _ = loaded(FIXED)
    with pytest.raises(ValueError, match=r"rank 4 \(NHWC\)"):
        layer(x[0])
    with pytest.raises(ValueError, match="3 channels.*expected in_channels=2"):
        layer(np.zeros((1, 7, 6, 3)))
    with pytest.raises(ValueError, match=r"spatial size \(6, 7\).*input_size=\(7, 6\)"):
        layer(np.zeros((1, 6, 7, 2)))
    with pytest.raises(TypeError, match="floating"):
        layer(np.zeros((1, 7, 6, 2), dtype=np.int32))
    first = LRLC2D.from_lrlc_config(FIXED, data_format="channels_first")
    with pytest.raises(ValueError, match=r"NCHW"):
        first.build((None, 7, 6, 2))


@pytest.mark.parametrize(
    ("kwargs", "exception", "match"),
    [
        ({"combining": "diag"}, ValueError, "diag"),
        ({"normalize": "max"}, ValueError, "max"),
        ({"padding": "full"}, ValueError, "full"),
        ({"padding": -1}, ValueError, "-1"),
        ({"data_format": "NHWC"}, ValueError, "NHWC"),
        ({"input_dependent": True}, ValueError, "requires combining='full'"),
        ({"spatial_bias": 1}, TypeError, "spatial_bias"),
        ({"input_size": (2, 2)}, ValueError, "empty output grid"),
    ],
)
def test_bad_options_raise_at_construction(kwargs, exception, match):
    args = {"input_size": (7, 6), **kwargs}
    with pytest.raises(exception, match=match):
        LRLC2D(3, 3, 2, **args)


def test_bad_strategies_raise_at_construction():
    with pytest.raises(ValueError, match="unknown strategy 'fastest'"):
        LRLC2D(3, 3, 2, input_size=(7, 6), strategy="fastest")
    with pytest.raises(ValueError, match="strategy='lc' needs fixed combining weights"):
        LRLC2D.from_lrlc_config(IDEP, strategy="lc")
    with pytest.raises(ValueError, match="strategy='lc' needs fixed combining weights"):
        lrlc_tf.forward(np.zeros((1, 7, 6, 2)), L.init_params(IDEP), IDEP, strategy="lc")


def test_bad_params_raise_clear_errors():
    layer, _, params = loaded(FIXED)
    with pytest.raises(ValueError, match="missing tensors \\['basis'\\]"):
        layer.load_neutral_params({n: v for n, v in params.items() if n != "basis"})
    with pytest.raises(ValueError, match="unexpected tensors \\['logits'\\]"):
        layer.load_neutral_params({**params, "logits": np.zeros((4, 3, 3))})
    with pytest.raises(ValueError, match="row_bias.*expected \\(4,\\)"):
        layer.load_neutral_params({**params, "row_bias": np.zeros(5)})
    with pytest.raises(TypeError, match="channel_bias.*floating"):
        layer.load_neutral_params({**params, "channel_bias": np.zeros(3, dtype=np.int64)})
    with pytest.raises(TypeError, match="mapping"):
        layer.load_neutral_params([("basis", params["basis"])])
    unbuilt = LRLC2D.from_lrlc_config(FIXED)
    with pytest.raises(ValueError, match="no weights yet"):
        unbuilt.neutral_params()


def test_bad_locally_connected_arguments():
    layer, x, params = loaded(IDEP)
    kernel, bias = L.to_locally_connected(params, IDEP, x)
    with pytest.raises(ValueError, match="one per example"):
        lrlc_tf.locally_connected(x[:1], kernel, bias, IDEP)  # batch 1, kernels for 2
    with pytest.raises(ValueError, match="kernel has shape"):
        lrlc_tf.locally_connected(x, kernel[..., :2], bias, IDEP)
    with pytest.raises(ValueError, match="bias has shape"):
        lrlc_tf.locally_connected(x, kernel, bias[..., :2], IDEP)
    with pytest.raises(TypeError, match="kernel must have a floating dtype"):
        lrlc_tf.locally_connected(x, kernel.astype(np.int32), bias, IDEP)
    lc = LocallyConnected2D(3, 3, input_size=(7, 6), padding="same", use_bias=False)
    lc.build((None, 7, 6, 2))
    with pytest.raises(ValueError, match="expected exactly \\['kernel'\\]"):
        lc.load_neutral_params({"kernel": kernel[0], "bias": bias})
    with pytest.raises(ValueError, match="kernel.*expected"):
        lc.load_neutral_params({"kernel": kernel})


# ---------------------------------------------------------------------------------------------
# GPU (skipped cleanly without one)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="no GPU visible to TensorFlow")
@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS)
def test_gpu_matches_the_reference(config):
    tf.config.experimental.enable_tensor_float_32_execution(False)  # spec section 15.4
    x, params, _ = conformance.case_data(conformance.Case("t", config, BATCH), 0)
    x = conformance.round_to(x, "float32")
    params = {name: conformance.round_to(value, "float32") for name, value in params.items()}
    with tf.device("/GPU:0"):
        layer = LRLC2D.from_lrlc_config(config)
        layer.build(input_shape(config))
        layer.load_neutral_params(params)
        y = layer(x)
        assert "GPU" in y.device
    want = L.forward(x, params, config)
    assert err(y, want) <= tol(config, "float32")


# ---------------------------------------------------------------------------------------------
# Memory of Algorithm 1's training step


def test_algorithm1_step_frees_the_responses_before_their_cotangent():
    """Algorithm 1's backward reads the K member responses z for dw before it forms their
    cotangent dz, so the step never holds both. Holding both would take at least 2 K
    input-sized tensors (C_in = C_out here); the step needs K for z plus y, dz's running
    slice, dx and the convolution's scratch space, so its peak on TensorFlow's CPU allocator
    must stay below 2 K tensors. Read from the allocator's own counters (oneDNN's default
    pool), which count every buffer exactly."""
    config = L.LRLCConfig(16, 16, 3, rank=8, input_size=(16, 16), padding="same")
    batch = 16
    rng = np.random.default_rng(0)
    x, dy = (
        tf.constant(rng.standard_normal((batch, 16, 16, 16), dtype=np.float32)) for _ in range(2)
    )
    layer = LRLC2D.from_lrlc_config(config, strategy="conv")
    layer.build(x.shape)

    @tf.function
    def step(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        return y, tape.gradient(y, [x, *layer.trainable_variables], output_gradients=dy)

    step(x, dy)  # traces; the measured call allocates only what a step needs
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    step(x, dy)
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"] - before
    if peak <= 0:
        pytest.skip("this TensorFlow's CPU allocator keeps no counters (system allocator)")
    tensor = x.dtype.size * math.prod(x.shape)  # one input-sized (= output-sized) tensor
    assert peak < 2 * config.rank * tensor, (peak, tensor)
