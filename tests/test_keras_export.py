"""The README's layer (32x32 input, 64 -> 64 channels, 3x3 'same'; docs/performance.md) with
an unknown batch under Keras's TensorFlow backend, at K = 4 and K = 16 (issue 15):
`model.fit` whose last batch is short, `model.export()` serving any batch size, and TFLite
conversion. With the batch unknown, the strategy rule takes its documented default (an
unknown batch counts as large), so 'auto' runs the locally connected form at both ranks;
fit's traced step sees the batch as unknown too. Also an input-dependent layer."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import keras  # noqa: E402

import conformance  # noqa: E402
import lrlc_numpy as L  # noqa: E402
from lrlc_tf import LRLC2D, LocallyConnected2D  # noqa: E402

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="export and TFLite are TensorFlow's"
)

SIZE, CHANNELS = 32, 64


def readme_layer(rank):
    return LRLC2D(CHANNELS, 3, rank, input_size=(SIZE, SIZE), padding="same", name="lrlc")


def inputs(batch, seed=0, channels=CHANNELS, size=SIZE):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, size, size, channels)).astype("float32")


def within_float32(got, want, config, batch):
    error = conformance.relative_error(np.asarray(got, np.float64), np.asarray(want, np.float64))
    assert error <= conformance.tolerance("float32", config, batch), error


@pytest.mark.parametrize("rank", [4, 16])
def test_fit_with_a_short_last_batch(rank):
    keras.utils.set_random_seed(0)
    layer = readme_layer(rank)
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, CHANNELS)),
            layer,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = layer.neutral_params()
    x = inputs(10)
    model.fit(x, np.arange(10), batch_size=4, epochs=1, verbose=0)  # batches 4, 4, 2
    assert int(model.optimizer.iterations.numpy()) == 3
    after = layer.neutral_params()
    assert all(np.any(after[name] != before[name]) for name in before)


@pytest.mark.parametrize("rank", [4, 16])
def test_export_and_tflite_take_any_batch(rank, tmp_path):
    keras.utils.set_random_seed(0)
    layer = readme_layer(rank)
    model = keras.Sequential([keras.Input((SIZE, SIZE, CHANNELS)), layer])
    params = {  # move logits and biases off their constant start
        name: value + 0.1 * np.random.default_rng(1).standard_normal(value.shape)
        for name, value in layer.neutral_params().items()
    }
    layer.load_neutral_params(params)
    params = {name: value.astype(np.float64) for name, value in layer.neutral_params().items()}
    path = str(tmp_path / "exported")
    model.export(path, verbose=False)
    exported = tf.saved_model.load(path)  # owns the variables that serve reads
    for batch in (3, 5):
        x = inputs(batch, seed=batch)
        want = L.forward(x.astype(np.float64), params, layer.config)
        within_float32(exported.serve(tf.constant(x)), want, layer.config, batch)

    converter = tf.lite.TFLiteConverter.from_saved_model(path)
    interpreter = tf.lite.Interpreter(model_content=converter.convert())
    x = inputs(2, seed=2)
    signature = interpreter.get_signature_runner()
    (output,) = signature(**{signature.get_input_details().popitem()[0]: x}).values()
    within_float32(output, L.forward(x.astype(np.float64), params, layer.config), layer.config, 2)


def test_export_and_tflite_of_input_dependent_and_locally_connected_layers(tmp_path):
    keras.utils.set_random_seed(0)
    dependent = LRLC2D(
        4, 3, 4, input_size=(9, 9), padding="same", combining="full", input_dependent=True
    )
    local = LocallyConnected2D(3, 3, input_size=(9, 9))
    model = keras.Sequential([keras.Input((9, 9, 2)), dependent, local])
    path = str(tmp_path / "exported")
    model.export(path, verbose=False)
    x = inputs(3, channels=2, size=9)
    want = keras.ops.convert_to_numpy(model(x))
    exported = tf.saved_model.load(path)
    np.testing.assert_allclose(exported.serve(tf.constant(x)), want, atol=1e-6)
    interpreter = tf.lite.Interpreter(
        model_content=tf.lite.TFLiteConverter.from_saved_model(path).convert()
    )
    signature = interpreter.get_signature_runner()
    (output,) = signature(**{signature.get_input_details().popitem()[0]: x}).values()
    np.testing.assert_allclose(output, want, atol=1e-5)
