"""Adapter for lrlc_tf: float64 and float32 on CPU, plus GPU (with bfloat16) when present.

It goes through lrlc_tf's public API only: a Keras layer (LRLC1D, LRLC2D or LRLC3D, by the
config's number of spatial axes) built from the config with the requested dtype, neutral
parameters assigned with `load_neutral_params`, `tf.GradientTape` for the vjp (gradients
read back by neutral name, the layer's variable names), and `LocallyConnected1D/2D/3D` (or
`lrlc_tf.locally_connected` for per-example kernels) for `lc_forward`. Everything runs
eagerly: each case has its own shapes, so tracing a tf.function per call would cost more
than it saves.

`Backend(strategy=...)` runs the layers with that evaluation strategy ('auto', 'conv' or
'lc'; see `lrlc_tf.costs.choose_strategy`). 'lc' applies to fixed layers only: the
catalogue's input-dependent cases then run Algorithm 1, which is what 'auto' picks for
them (the layer refuses strategy='lc' with input_dependent=True).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

import lrlc_numpy
import lrlc_tf

from . import strategy_adapter_name


def _lrlc_class(config):
    """The LRLC layer class of `config`'s number of spatial axes (LRLC1D, LRLC2D, LRLC3D)."""
    return getattr(lrlc_tf, f"LRLC{config.spatial_dims}D")


def _lc_class(config):
    """The locally connected layer class of `config`'s number of spatial axes."""
    return getattr(lrlc_tf, f"LocallyConnected{config.spatial_dims}D")


def _numpy(tensor) -> np.ndarray:
    return tf.cast(tensor, tf.float64).numpy()


class Backend:
    supports_mixed_basis = True  # spec section 16: one kernel size and dilation per basis
    spatial_dims = (1, 2, 3)  # sequences, images and volumes (spec section 17)

    def __init__(self, strategy: str = "auto", **unknown):
        self.name = strategy_adapter_name("tf", strategy, unknown)
        self.strategy = strategy
        has_gpu = bool(tf.config.list_physical_devices("GPU"))
        if has_gpu:
            # Spec section 15.4: float32 at full precision, not TensorFloat-32 on tensor cores.
            tf.config.experimental.enable_tensor_float_32_execution(False)
        self.devices = ("cpu", "gpu") if has_gpu else ("cpu",)
        self.dtypes = ("float64", "float32", "bfloat16") if has_gpu else ("float64", "float32")

    def _device(self, dtype, device):
        if device not in self.devices:
            raise ValueError(f"device {device!r} not available; expected one of {self.devices}")
        if dtype not in self.dtypes:
            raise ValueError(f"dtype {dtype!r} not supported; expected one of {self.dtypes}")
        return tf.device("/GPU:0" if device == "gpu" else "/CPU:0")

    def _layer(self, config, params, dtype):
        strategy = "auto" if config.input_dependent else self.strategy
        layer = _lrlc_class(config).from_lrlc_config(config, dtype=dtype, strategy=strategy)
        layer.build((None, *config.input_size, config.in_channels))
        layer.load_neutral_params(params)
        return layer

    def init_params(self, config, *, seed=0) -> dict[str, np.ndarray]:
        """A built LRLC2D's own default initial values, neutral names, float64."""
        keras.utils.set_random_seed(seed)
        layer = _lrlc_class(config).from_lrlc_config(config, dtype="float64")
        layer.build((None, *config.input_size, config.in_channels))
        return {name: value.astype(np.float64) for name, value in layer.neutral_params().items()}

    def forward(self, config, params, x, *, dtype="float64", device="cpu"):
        with self._device(dtype, device):
            layer = self._layer(config, params, dtype)
            return _numpy(layer(tf.constant(x, dtype)))

    def vjp(self, config, params, x, dy, *, dtype="float64", device="cpu"):
        with self._device(dtype, device):
            layer = self._layer(config, params, dtype)
            x = tf.constant(x, dtype)
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
            variables = layer.trainable_variables
            grads = tape.gradient(
                y,
                [x, *variables],
                output_gradients=tf.constant(dy, dtype),
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            dparams = {v.name: _numpy(g) for v, g in zip(variables, grads[1:])}
            return _numpy(grads[0]), dparams

    def to_locally_connected(self, config, params, x=None, *, dtype="float64", device="cpu"):
        with self._device(dtype, device):
            layer = self._layer(config, params, dtype)
            if config.input_dependent:
                kernel, bias = layer.locally_connected_kernel(tf.constant(x, dtype))
                return _numpy(kernel), _numpy(bias)
            lc_params = layer.to_locally_connected().neutral_params()
        kernel = lc_params["kernel"]
        # A layer with neither bias converts to a LocallyConnected2D without one: bias zero.
        bias = lc_params.get("bias", np.zeros((*config.output_size, config.out_channels)))
        return kernel, bias

    def lc_forward(self, kernel, bias, x, config, *, dtype="float64", device="cpu"):
        with self._device(dtype, device):
            x = tf.constant(x, dtype)
            # One kernel per example (a leading batch axis): the functional form takes it.
            if np.ndim(kernel) == 2 * config.spatial_dims + 3:
                y = lrlc_tf.locally_connected(
                    x, tf.constant(kernel, dtype), tf.constant(bias, dtype), config
                )
                return _numpy(y)
            # A mixed basis's locally connected layer has the window covering every basis.
            window = config.locally_connected_config()
            layer = _lc_class(config).from_lrlc_config(window, dtype=dtype)
            layer.build((None, *config.input_size, config.in_channels))
            layer.load_neutral_params({"kernel": kernel, "bias": bias})
            return _numpy(layer(x))

    def save_checkpoint(self, path, config, params):
        self._layer(config, params, "float64").save_checkpoint(path)

    def load_checkpoint(self, path):
        config = lrlc_numpy.read_checkpoint(path).config
        layer = _lrlc_class(config).from_checkpoint(path)
        return layer.neutral_params(), layer.config
