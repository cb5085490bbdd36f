"""lrlc_tf's Keras layers keep their configuration through get_config/from_config, JSON and
`.keras` files, a mixed basis (one kernel size and dilation per basis) included; the package
reports its version. Runs under whichever Keras backend this process has: nothing here
calls a layer, so it needs no backend's mixed-basis arithmetic."""

import importlib.metadata
import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import lrlc_numpy as L  # noqa: E402
import lrlc_tf  # noqa: E402
from lrlc_tf import LRLC2D  # noqa: E402

# A list is one entry per basis: [3, 5] at rank 2 is a 3x3 and a 5x5 basis, not one 3x5.
MIXED = L.LRLCConfig(2, 4, [3, 5], rank=2, input_size=(8, 8), dilation=[1, 2], padding="same")


def test_version_is_the_distributions():
    assert lrlc_tf.__version__ == importlib.metadata.version("lrlc")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kernel_size": [3, 5], "dilation": [1, 2]},
        {"kernel_size": [(3, 1), (5, 3)], "dilation": 2},
        {"kernel_size": 3, "dilation": [1, 2]},
    ],
    ids=["lists-of-ints", "list-of-pairs", "per-basis-dilation"],
)
def test_mixed_basis_config_round_trips_through_json(kwargs):
    layer = LRLC2D(4, rank=2, input_size=(8, 8), padding="same", in_channels=2, **kwargs)
    assert layer.config.mixed
    keras_config = json.loads(json.dumps(layer.get_config()))
    clone = LRLC2D.from_config(keras_config)
    assert clone.config == layer.config
    assert clone.get_config() == layer.get_config()


def test_mixed_basis_layer_round_trips_through_a_keras_file(tmp_path):
    keras.utils.set_random_seed(0)
    layer = LRLC2D.from_lrlc_config(MIXED, name="mixed")
    model = keras.Sequential([keras.Input((8, 8, 2)), layer])
    assert [v.shape for v in layer.weights][:2] == [(3, 3, 2, 4), (5, 5, 2, 4)]
    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras").get_layer("mixed")
    assert restored.config == MIXED
    want = layer.neutral_params()
    got = restored.neutral_params()
    assert set(got) == set(want) == set(L.param_shapes(MIXED))
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_mixed_basis_checkpoint_round_trip(tmp_path):
    layer = LRLC2D.from_lrlc_config(MIXED, dtype="float64")
    layer.build((None, 8, 8, 2))
    layer.save_checkpoint(tmp_path / "mixed.safetensors")
    params, config = L.load_params(tmp_path / "mixed.safetensors")
    assert config == MIXED
    restored = LRLC2D.from_checkpoint(tmp_path / "mixed.safetensors")
    for name, value in layer.neutral_params().items():
        np.testing.assert_array_equal(params[name], value, err_msg=name)
        np.testing.assert_array_equal(restored.neutral_params()[name], value, err_msg=name)


def test_a_pair_stays_one_window_for_every_basis():
    layer = LRLC2D(4, (3, 5), 2, input_size=(8, 8), in_channels=2)
    clone = LRLC2D.from_config(json.loads(json.dumps(layer.get_config())))
    assert not clone.config.mixed and clone.config.kernel_size == (3, 5)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float64"])
def test_checkpoint_keeps_the_stored_dtype(tmp_path, dtype):
    if dtype == "float64" and keras.backend.backend() == "jax":
        pytest.skip("float64 under jax needs jax_enable_x64, which this process leaves off")
    config = L.LRLCConfig(2, 3, 3, rank=2, input_size=(7, 6))
    layer = LRLC2D.from_lrlc_config(config, dtype=dtype)
    layer.build((None, 7, 6, 2))
    path = tmp_path / "layer.safetensors"
    layer.save_checkpoint(path)
    assert set(L.read_checkpoint(path).stored_dtypes.values()) == {dtype}
    restored = LRLC2D.from_checkpoint(path)
    assert restored.dtype == dtype
    for name, value in layer.neutral_params().items():
        got = restored.neutral_params()[name]
        assert got.dtype == value.dtype, name
        np.testing.assert_array_equal(got.astype(np.float32), value.astype(np.float32))
