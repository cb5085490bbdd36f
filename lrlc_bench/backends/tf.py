"""TensorFlow / Keras 3: `keras.layers.Conv2D`, `lrlc_tf.LRLC2D` and its
`to_locally_connected()`; NHWC, float32, each call wrapped in `tf.function`
(`jit_compile` as the settings say; off by default, TensorFlow's usual graph mode)."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import lrlc_tf  # noqa: E402

from ..measure import Workload  # noqa: E402
from ..settings import OP_STRATEGIES  # noqa: E402
from . import Unavailable  # noqa: E402


class Backend:
    name = "tf"
    strategies = tuple(s for s in lrlc_tf.costs.STRATEGIES if s != "auto")
    # TensorFlow's default CPU allocator (oneDNN's pool) counts bytes in use and their peak,
    # exactly, where the process's RSS does not move with buffers the pool reuses.
    counts_cpu_allocations = True

    def __init__(self, settings):
        if settings.device == "gpu":
            if not tf.config.list_physical_devices("GPU"):
                raise Unavailable("tensorflow sees no GPU")
            self.device, self.memory_device = "/GPU:0", "GPU:0"
        else:
            self.device, self.memory_device = "/CPU:0", "CPU:0"
        self.settings = settings
        self.rng = np.random.default_rng(settings.seed)

    def environment(self) -> dict:
        info = {
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
            # 0 means TensorFlow's default: one thread per visible core.
            "threads": {
                "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
            },
            "layout": self.settings.lrlc_config(1).layouts[0],
            "dtype": "float32",
            "jit_compile": self.settings.tf_jit_compile,
        }
        if self.device != "/CPU:0":
            details = tf.config.experimental.get_device_details(
                tf.config.list_physical_devices("GPU")[0]
            )
            info["device_name"] = details.get("device_name")
        return info

    def _random(self, shape) -> tf.Tensor:
        return tf.constant(self.rng.standard_normal(shape, dtype=np.float32))

    def _layer(self, op: str, rank: int) -> keras.layers.Layer:
        s = self.settings
        if op in ("conv", "conv_k"):
            width = s.out_channels * (rank if op == "conv_k" else 1)
            conv = getattr(keras.layers, f"Conv{s.spatial_dims}D")
            layer = conv(width, s.kernel_size, padding="same")
        else:
            config = s.lrlc_config(rank, input_dependent=op == "lrlc_input_dependent")
            strategy = OP_STRATEGIES.get(op, "auto")
            lrlc = getattr(lrlc_tf, f"LRLC{s.spatial_dims}D")
            layer = lrlc.from_lrlc_config(config, strategy=strategy)
        layer.build((s.batch, *s.input_size, s.in_channels))
        return layer.to_locally_connected() if op == "lc" else layer

    def chosen_strategy(self, rank: int) -> str:
        config = self.settings.lrlc_config(rank)
        return lrlc_tf.costs.choose_strategy(config, self.settings.batch)

    def _sync(self) -> None:
        # CPU kernels finish before a call returns; GPU kernels may still be queued.
        if self.device != "/CPU:0":
            tf.test.experimental.sync_devices()

    def workload(self, op: str, rank: int) -> Workload:
        s = self.settings
        jit = s.tf_jit_compile
        with tf.device(self.device):
            layer = self._layer(op, rank)
            x = self._random((s.batch, *s.input_size, s.in_channels))
            width = s.out_channels * (rank if op == "conv_k" else 1)
            dy = self._random((s.batch, *s.lrlc_config(rank).output_size, width))

        forward_fn = tf.function(lambda x: layer(x), jit_compile=jit)

        @tf.function(jit_compile=jit)
        def train_fn(x, dy):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
            # y is returned with the gradients: a training step needs it for its loss, and
            # Grappler would otherwise prune a plain conv's forward pass (no gradient uses it).
            return y, tape.gradient(y, [x, *layer.trainable_variables], output_gradients=dy)

        def forward():
            with tf.device(self.device):
                forward_fn(x)
            self._sync()

        def train():
            with tf.device(self.device):
                train_fn(x, dy)
            self._sync()

        return Workload(forward, None if op == "lc" else train)

    def reset_peak_memory(self) -> None:
        tf.config.experimental.reset_memory_stats(self.memory_device)

    def memory_in_use(self) -> int:
        return tf.config.experimental.get_memory_info(self.memory_device)["current"]

    def peak_memory(self) -> int:
        return tf.config.experimental.get_memory_info(self.memory_device)["peak"]
