"""Adapter for lrlc_tf's Keras layers under whichever backend Keras runs: float64 and float32
on CPU. Its name is 'keras[<backend>]'; KERAS_BACKEND is fixed when Keras is imported, so
each Keras backend is checked in a process of its own:

    KERAS_BACKEND=jax python -m conformance --backend keras

It goes through the layers' public API only (the 1-D, 2-D or 3-D class by the config's
number of spatial axes): `LRLC2D.from_lrlc_config` with the requested
dtype, `load_neutral_params`, the layer's call, `locally_connected_kernel`,
`LocallyConnected2D` (or `lrlc_tf.ops.locally_connected` for per-example kernels), the
neutral checkpoint methods, and a built layer's own initial values. Layers are built once
per config and dtype, then given each check's parameters. Gradients come from the running
framework's autodiff (a GradientTape, `jax.vjp` of the layer's `stateless_call`, torch
autograd), read back by neutral name through `neutral_variables`. Under jax, float64 needs
`jax_enable_x64`, which importing this adapter turns on (as the jax adapter does).
"""

from __future__ import annotations

import functools

import keras
import numpy as np

import lrlc_numpy
import lrlc_tf

from . import strategy_adapter_name


def _lrlc_class(config):
    """The LRLC layer class of `config`'s number of spatial axes (LRLC1D, LRLC2D, LRLC3D)."""
    return getattr(lrlc_tf, f"LRLC{config.spatial_dims}D")


def _lc_class(config):
    """The locally connected layer class of `config`'s number of spatial axes."""
    return getattr(lrlc_tf, f"LocallyConnected{config.spatial_dims}D")


BACKEND = keras.backend.backend()
if BACKEND == "jax":
    import jax

    jax.config.update("jax_enable_x64", True)


def _numpy(tensor) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(tensor), dtype=np.float64)


def _tensorflow_vjp(layer, variables, x, dy):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    return tape.gradient(
        y,
        [x, *variables],
        output_gradients=dy,
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )


def _jax_vjp(layer, variables, x, dy):
    return _jax_step(layer)([v.value for v in variables], x, dy)[1:]


@functools.cache
def _jax_step(layer):
    """(y, dx, *dvalues) of `layer` as one function compiled per input shape and dtype: op by
    op, JAX would compile each operation for each case's shapes, which dominates the run."""

    def step(values, x, dy):
        y, pullback = jax.vjp(lambda v, x: layer.stateless_call(v, [], x)[0], values, x)
        dvalues, dx = pullback(dy)
        return y, dx, *dvalues

    return jax.jit(step)


def _torch_vjp(layer, variables, x, dy):
    import torch

    x = x.detach().requires_grad_(True)
    y = layer(x)
    return torch.autograd.grad(y, [x, *(v.value for v in variables)], dy)


_VJPS = {"tensorflow": _tensorflow_vjp, "jax": _jax_vjp, "torch": _torch_vjp}


class Backend:
    """`strategy` is `LRLC2D`'s evaluation strategy ('auto', 'conv' or 'lc'). 'lc' applies to
    fixed layers only; the catalogue's input-dependent cases then run Algorithm 1, which is
    what 'auto' picks for them (the layer refuses strategy='lc' with input_dependent=True)."""

    devices = ("cpu",)
    dtypes = ("float64", "float32")
    supports_mixed_basis = True  # each backend's own mixed basis, through the layer
    spatial_dims = (1, 2, 3)  # sequences, images and volumes (spec section 17)

    def __init__(self, strategy: str = "auto", **unknown):
        lrlc_tf.ops.native()  # refuses a Keras backend lrlc does not run on, now
        self.name = strategy_adapter_name(f"keras[{BACKEND}]", strategy, unknown)
        self.strategy = strategy
        self._layers = {}

    def _check(self, dtype, device):
        if device not in self.devices:
            raise ValueError(f"device {device!r} not available; expected one of {self.devices}")
        if dtype not in self.dtypes:
            raise ValueError(f"dtype {dtype!r} not supported; expected one of {self.dtypes}")
        return keras.device("cpu:0")

    def _built(self, kind, config, dtype):
        """A built LRLC2D ('lrlc') or LocallyConnected2D ('lc') for (config, dtype), made once
        and reused by every check: building runs the initializers, which JAX compiles anew
        for every shape."""
        if (kind, config, dtype) not in self._layers:
            if kind == "lrlc":
                strategy = "auto" if config.input_dependent else self.strategy
                layer = _lrlc_class(config).from_lrlc_config(config, dtype=dtype, strategy=strategy)
            else:
                layer = _lc_class(config).from_lrlc_config(
                    config.locally_connected_config(), dtype=dtype
                )
            layer.build((None, *config.input_size, config.in_channels))
            self._layers[kind, config, dtype] = layer
        return self._layers[kind, config, dtype]

    def _layer(self, config, params, dtype):
        layer = self._built("lrlc", config, dtype)
        layer.load_neutral_params(params)
        return layer

    def init_params(self, config, *, seed=0) -> dict[str, np.ndarray]:
        """A built LRLC2D's own default initial values, neutral names, float64."""
        keras.utils.set_random_seed(seed)
        with self._check("float64", "cpu"):
            layer = _lrlc_class(config).from_lrlc_config(config, dtype="float64")
            layer.build((None, *config.input_size, config.in_channels))
            return {
                name: value.astype(np.float64) for name, value in layer.neutral_params().items()
            }

    def forward(self, config, params, x, *, dtype="float64", device="cpu"):
        with self._check(dtype, device):
            layer = self._layer(config, params, dtype)
            x = keras.ops.convert_to_tensor(x, dtype)
            if BACKEND == "jax":  # the compiled step, which the vjp shares
                values = [v.value for v in layer.trainable_variables]
                dy = keras.ops.zeros(layer.compute_output_shape(x.shape), dtype)
                return _numpy(_jax_step(layer)(values, x, dy)[0])
            return _numpy(layer(x))

    def vjp(self, config, params, x, dy, *, dtype="float64", device="cpu"):
        with self._check(dtype, device):
            layer = self._layer(config, params, dtype)
            names = {id(v): name for name, v in layer.neutral_variables().items()}
            variables = layer.trainable_variables  # the order stateless_call takes
            grads = _VJPS[BACKEND](
                layer,
                variables,
                keras.ops.convert_to_tensor(x, dtype),
                keras.ops.convert_to_tensor(dy, dtype),
            )
            dparams = {names[id(v)]: _numpy(g) for v, g in zip(variables, grads[1:])}
            return _numpy(grads[0]), dparams

    def to_locally_connected(self, config, params, x=None, *, dtype="float64", device="cpu"):
        with self._check(dtype, device):
            layer = self._layer(config, params, dtype)
            x = None if x is None else keras.ops.convert_to_tensor(x, dtype)
            kernel, bias = layer.locally_connected_kernel(x)
            return _numpy(kernel), _numpy(bias)

    def lc_forward(self, kernel, bias, x, config, *, dtype="float64", device="cpu"):
        with self._check(dtype, device):
            x = keras.ops.convert_to_tensor(x, dtype)
            # One kernel per example (a leading batch axis): no layer holds that.
            if np.ndim(kernel) == 2 * config.spatial_dims + 3:
                y = lrlc_tf.ops.locally_connected(
                    x,
                    keras.ops.convert_to_tensor(kernel, dtype),
                    keras.ops.convert_to_tensor(bias, dtype),
                    config,
                )
                return _numpy(y)
            layer = self._built("lc", config, dtype)
            layer.load_neutral_params({"kernel": kernel, "bias": bias})
            return _numpy(layer(x))

    def save_checkpoint(self, path, config, params):
        with self._check("float64", "cpu"):
            self._layer(config, params, "float64").save_checkpoint(path)

    def load_checkpoint(self, path):
        with self._check("float64", "cpu"):
            config = lrlc_numpy.read_checkpoint(path).config
            layer = _lrlc_class(config).from_checkpoint(path)
            return layer.neutral_params(), layer.config
