"""Adapter for lrlc_jax: `apply` under `jax.jit`, gradients from `jax.vjp`.

Importing it enables `jax_enable_x64` so that float64 is real float64. Every call runs under
`jax.default_matmul_precision("highest")`, so float32 is not silently computed in TF32 or
bfloat16 passes on GPUs and TPUs. Compilation dominates the run on CPU, so the forward pass
and its vector-Jacobian product are one jitted function, compiled once per
(config, dtype, shapes) by jit's own cache.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import lrlc_jax

jax.config.update("jax_enable_x64", True)

_DTYPES = {"float64": jnp.float64, "float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _platforms() -> tuple[str, ...]:
    found = ["cpu"]
    for platform in ("gpu", "tpu"):
        try:
            jax.devices(platform)
        except RuntimeError:  # JAX raises when a platform is absent or fails to initialise
            continue
        found.append(platform)
    return tuple(found)


@functools.partial(jax.jit, static_argnames="config")
def _forward_and_vjp(params, x, dy, config):
    y, pullback = jax.vjp(lambda p, xs: lrlc_jax.apply(p, xs, config), params, x)
    dparams, dx = pullback(dy)
    return y, dx, dparams


_to_locally_connected = jax.jit(lrlc_jax.to_locally_connected, static_argnames="config")
_locally_connected = jax.jit(lrlc_jax.locally_connected, static_argnames="config")


class Backend:
    name = "jax"

    def __init__(self):
        self.devices = _platforms()
        accelerated = len(self.devices) > 1
        self.dtypes = ("float64", "float32") + (("bfloat16",) if accelerated else ())

    def _put(self, tree, dtype, device):
        if device not in self.devices:
            raise ValueError(f"device {device!r} not found; this JAX install has {self.devices}")
        if dtype not in self.dtypes:
            raise ValueError(f"dtype {dtype!r} not supported here; expected one of {self.dtypes}")
        target = jax.devices(device)[0]
        return jax.tree.map(lambda a: jax.device_put(np.asarray(a, _DTYPES[dtype]), target), tree)

    def _run(self, config, params, x, dy, dtype, device):
        params, x, dy = self._put((params, x, dy), dtype, device)
        with jax.default_matmul_precision("highest"):
            return _forward_and_vjp(params, x, dy, config=config)

    def forward(self, config, params, x, *, dtype="float64", device="cpu"):
        dy = np.zeros((x.shape[0], *config.output_size, config.out_channels))
        y, _, _ = self._run(config, params, x, dy, dtype, device)
        return np.asarray(y)

    def vjp(self, config, params, x, dy, *, dtype="float64", device="cpu"):
        _, dx, dparams = self._run(config, params, x, dy, dtype, device)
        return np.asarray(dx), {name: np.asarray(value) for name, value in dparams.items()}

    def to_locally_connected(self, config, params, x=None, *, dtype="float64", device="cpu"):
        params, x = self._put((params, x), dtype, device)
        with jax.default_matmul_precision("highest"):
            kernel, bias = _to_locally_connected(params, config=config, x=x)
        return np.asarray(kernel), np.asarray(bias)

    def lc_forward(self, kernel, bias, x, config, *, dtype="float64", device="cpu"):
        x, kernel, bias = self._put((x, kernel, bias), dtype, device)
        with jax.default_matmul_precision("highest"):
            return np.asarray(_locally_connected(x, kernel, bias, config=config))

    def save_checkpoint(self, path, config, params):
        lrlc_jax.save_params(path, {name: jnp.asarray(v) for name, v in params.items()}, config)

    def load_checkpoint(self, path):
        params, config = lrlc_jax.load_params(path)
        return {name: np.asarray(value) for name, value in params.items()}, config
