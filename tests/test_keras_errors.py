"""Bad arguments and inputs to lrlc_tf's Keras layers give one clear error (issue 14): the
constructor names the argument and the value received, in Keras's words; inputs of the wrong
rank, channels, grid or dtype, unknown options and bad checkpoints are refused before any
work. Runs under whichever Keras backend this process has."""

import re

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import lrlc_numpy as L  # noqa: E402
from lrlc_tf import LRLC2D, LocallyConnected2D  # noqa: E402

ARGS = {"out_channels": 3, "kernel_size": 3, "rank": 2, "input_size": (7, 6)}


def invalid(name, value):
    """The pattern of the message for argument `name` given `value`."""
    return rf"Invalid value for argument `{name}` of \w+: .*" + re.escape(
        f"Received: {name}={value!r}"
    )


@pytest.mark.parametrize(
    ("name", "value", "exception"),
    [
        ("rank", 0, ValueError),
        ("rank", 2.0, TypeError),
        ("out_channels", -1, ValueError),
        ("kernel_size", 0, ValueError),
        ("kernel_size", "3", TypeError),
        ("kernel_size", [3, 5, 7], ValueError),  # three bases at rank 2
        ("stride", (1, 2, 3), TypeError),
        ("dilation", 0, ValueError),
        ("padding", "full", ValueError),
        ("padding", -1, ValueError),
        ("combining", "diag", ValueError),
        ("normalize", "max", ValueError),
        ("spatial_bias", 1, TypeError),
        ("channel_bias", "yes", TypeError),
        ("input_dependent", 1, TypeError),
        ("input_size", (0, 6), ValueError),
        ("in_channels", 0, ValueError),
        ("data_format", "NHWC", ValueError),
        ("strategy", "fastest", ValueError),
    ],
)
def test_bad_constructor_arguments_name_the_argument_and_value(name, value, exception):
    with pytest.raises(exception, match=invalid(name, value)):
        LRLC2D(**{**ARGS, name: value})


def test_inconsistent_arguments_name_the_one_to_change():
    with pytest.raises(ValueError, match="argument `combining`.*requires combining='full'"):
        LRLC2D(**ARGS, input_dependent=True)
    with pytest.raises(ValueError, match="argument `padding`.*needs padding='same'"):
        LRLC2D(**{**ARGS, "kernel_size": [3, 5]})  # a mixed basis, 'valid' padding
    with pytest.raises(ValueError, match="argument `strategy`.*needs fixed combining weights"):
        LRLC2D(**ARGS, combining="full", input_dependent=True, strategy="lc")
    with pytest.raises(ValueError, match="Invalid arguments for .*empty output grid"):
        LRLC2D(**{**ARGS, "input_size": (2, 2)})


@pytest.mark.parametrize(
    ("name", "value", "exception"),
    [
        ("out_channels", 0, ValueError),
        ("kernel_size", (3, 0), ValueError),
        ("padding", "full", ValueError),
        ("use_bias", "yes", TypeError),
        ("data_format", "NCHW", ValueError),
    ],
)
def test_bad_locally_connected_arguments(name, value, exception):
    args = {"out_channels": 3, "kernel_size": 3, "input_size": (7, 6), name: value}
    with pytest.raises(exception, match=invalid(name, value)):
        LocallyConnected2D(**args)


def test_a_keras_style_list_is_one_window_for_locally_connected2d():
    layer = LocallyConnected2D(3, [3, 2], input_size=(7, 6), dilation=[1, 2], in_channels=2)
    assert layer.config.kernel_size == (3, 2) and layer.config.dilation == (1, 2)


@pytest.mark.parametrize("cls", [LRLC2D, LocallyConnected2D])
def test_unknown_options_are_refused(cls):
    args = {key: value for key, value in ARGS.items() if cls is LRLC2D or key != "rank"}
    with pytest.raises(ValueError, match="Unrecognized keyword arguments.*'strides'"):
        cls(**args, strides=2)  # Keras's name; the spec's is `stride`


def test_inputs_of_the_wrong_shape_or_dtype():
    layer = LRLC2D(**ARGS, in_channels=2)
    with pytest.raises(ValueError, match=r"must have rank 4 \(NHWC\)"):
        layer(np.zeros((7, 6, 2), "float32"))
    with pytest.raises(ValueError, match="3 channels.*expected in_channels=2"):
        layer(np.zeros((1, 7, 6, 3), "float32"))
    with pytest.raises(ValueError, match=r"spatial size \(6, 7\).*input_size=\(7, 6\)"):
        layer(np.zeros((1, 6, 7, 2), "float32"))
    with pytest.raises(TypeError, match="floating dtype, got int32"):
        layer(np.zeros((1, 7, 6, 2), "int32"))
    first = LRLC2D(**ARGS, data_format="channels_first")
    with pytest.raises(ValueError, match=r"spatial size \(6, 2\).*NCHW"):
        first.build((None, 7, 6, 2))  # an NHWC shape given to an NCHW layer


def test_functional_models_check_the_input_when_built():
    with pytest.raises(ValueError, match="4 channels.*expected in_channels=2"):
        LRLC2D(**ARGS, in_channels=2)(keras.Input((7, 6, 4)))
    with pytest.raises(ValueError, match=r"spatial size \(8, 6\)"):
        LocallyConnected2D(3, 3, input_size=(7, 6))(keras.Input((8, 6, 2)))
    with pytest.raises(ValueError, match="channel axis must be known"):
        LRLC2D(**ARGS)(keras.Input((7, 6, None)))


def test_bad_neutral_params():
    layer = LRLC2D(**ARGS, in_channels=2)
    with pytest.raises(ValueError, match="no weights yet"):
        layer.neutral_params()
    layer.build((None, 7, 6, 2))
    params = layer.neutral_params()
    with pytest.raises(ValueError, match=r"missing tensors \['basis'\]"):
        layer.load_neutral_params({n: v for n, v in params.items() if n != "basis"})
    with pytest.raises(ValueError, match=r"row_bias.*expected \(5,\)"):
        layer.load_neutral_params({**params, "row_bias": np.zeros(3)})
    with pytest.raises(TypeError, match="channel_bias.*floating dtype, got int64"):
        layer.load_neutral_params({**params, "channel_bias": np.zeros(3, np.int64)})
    for name, value in layer.neutral_params().items():  # nothing was assigned
        np.testing.assert_array_equal(value, params[name])


def test_a_checkpoint_mixing_dtypes_needs_a_dtype(tmp_path):
    config = L.LRLCConfig(2, **ARGS)
    params = L.init_params(config)
    params["basis"] = params["basis"].astype(np.float32)
    path = tmp_path / "mixed.safetensors"
    L.save_params(path, params, config)
    with pytest.raises(ValueError, match=r"several dtypes \['float32', 'float64'\].*dtype="):
        LRLC2D.from_checkpoint(path)
    layer = LRLC2D.from_checkpoint(path, dtype="float64")
    np.testing.assert_array_equal(layer.neutral_params()["basis"], params["basis"])
