"""tf.distribute.MirroredStrategy over two logical CPU devices trains a model with LRLC layers
to the same losses and weights as one device.

Logical devices must be configured before TensorFlow initialises, which has already happened
in the test process, so the training runs in a fresh Python subprocess.
"""

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("tensorflow")

SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    import lrlc_tf

    keras.config.set_floatx("float64")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8, 8, 2))
    y = rng.normal(size=(16, 8, 8, 2))
    initial = None


    def train(strategy):
        global initial
        with strategy.scope():
            model = keras.Sequential([
                keras.Input((8, 8, 2)),
                lrlc_tf.LRLC2D(4, 3, 2, input_size=(8, 8), padding="same", combining="row"),
                keras.layers.ReLU(),
                lrlc_tf.LRLC2D(2, 3, 2, input_size=(8, 8), padding="same", combining="full",
                               input_dependent=True),
            ])
            if initial is None:
                # Start from non-constant logits and biases, so every weight gets a gradient.
                initial = [w.numpy() + rng.normal(scale=0.3, size=w.shape) for w in model.weights]
            model.set_weights(initial)
            model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        history = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
        return {
            "replicas": strategy.num_replicas_in_sync,
            "loss": history.history["loss"],
            "weights": [w.numpy().tolist() for w in model.weights],
        }


    one = train(tf.distribute.get_strategy())
    mirrored = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    print("RESULT " + json.dumps({"one": one, "mirrored": mirrored}))
    """
)


def test_mirrored_strategy_matches_one_device():
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(line for line in run.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    one, mirrored = result["one"], result["mirrored"]
    assert one["replicas"] == 1 and mirrored["replicas"] == 2
    # float64 throughout: the runs differ only in how each gradient sum is split between
    # the replicas, a rounding-level difference. The longest sums have n = B H W C terms
    # (B = 8 examples, 8x8 grid, up to 6K = 12 channels inside g), so each step agrees to
    # 8 eps sqrt(n); six SGD steps with a small learning rate add at most that per step.
    n = 8 * 8 * 8 * 12
    tol = 6 * 8 * np.finfo(np.float64).eps * math.sqrt(n)
    np.testing.assert_allclose(mirrored["loss"], one["loss"], rtol=tol, atol=0)
    assert one["loss"][-1] < one["loss"][0]
    for got, want in zip(mirrored["weights"], one["weights"]):
        want = np.asarray(want)
        assert np.max(np.abs(np.asarray(got) - want)) <= tol * max(1.0, np.max(np.abs(want)))
