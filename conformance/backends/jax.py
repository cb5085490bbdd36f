"""Adapter for lrlc_jax: `forward` under `jax.jit`, gradients from `jax.vjp`.

Arrays are channels last in every spatial rank (NLC, NHWC, NDHWC), as lrlc_jax's own, so
they pass through unchanged. Importing it enables `jax_enable_x64` so that float64 is real
float64. Every call runs under `jax.default_matmul_precision("highest")`, so float32 is not
silently computed in TF32 or bfloat16 passes on GPUs and TPUs. Compilation dominates the
run on CPU, so every check's output for one input comes from one jitted function, compiled
once per (config, dtype, shapes) by jit's own cache.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import lrlc_jax
import lrlc_numpy

from . import strategy_adapter_name

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


@functools.partial(jax.jit, static_argnames=("config", "strategy"))
def _checked_outputs(params, x, dy, lc_kernel, lc_bias, config, strategy):
    """Everything the checks ask of one input, as one compiled function per config and dtype:
    compiling, not running, dominates on CPU. Each check passes zeros for what it lacks."""
    y, pullback = jax.vjp(
        lambda p, xs: lrlc_jax.forward(xs, p, config, strategy=strategy), params, x
    )
    dparams, dx = pullback(dy)
    out = {"y": y, "dx": dx, "dparams": dparams}
    out["lc_y"] = lrlc_jax.locally_connected(x, lc_kernel, lc_bias, config)
    if config.input_dependent:  # a fixed layer's conversion takes no input: see below
        out["kernel"], out["bias"] = lrlc_jax.to_locally_connected(params, config, x)
    return out


_to_locally_connected = jax.jit(lrlc_jax.to_locally_connected, static_argnames="config")


def _zeros_like_inputs(config, batch):
    """Zero stand-ins (params, dy, lc_kernel, lc_bias) for what a check does not supply."""
    kernel, bias = lrlc_numpy.lc_shapes(config)
    if config.input_dependent:
        kernel = (batch, *kernel)
    return (
        {name: np.zeros(shape) for name, shape in lrlc_numpy.param_shapes(config).items()},
        np.zeros((batch, *bias)),
        np.zeros(kernel),
        np.zeros(bias),
    )


class Backend:
    """`strategy` is `lrlc_jax.forward`'s evaluation strategy ('auto', 'conv' or 'lc'). 'lc'
    applies to fixed layers; input-dependent cases run 'auto' (Algorithm 1), as `forward`
    refuses strategy='lc' for them."""

    supports_mixed_basis = True
    spatial_dims = (1, 2, 3)  # sequences, images and volumes (spec section 17)

    def __init__(self, strategy: str = "auto", **options):
        self.name = strategy_adapter_name("jax", strategy, options)
        self.strategy = strategy
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

    def _run(self, config, x, dtype, device, **given):
        params, dy, lc_kernel, lc_bias = _zeros_like_inputs(config, x.shape[0])
        inputs = dict(params=params, x=x, dy=dy, lc_kernel=lc_kernel, lc_bias=lc_bias)
        inputs.update(given)
        strategy = "auto" if config.input_dependent else self.strategy
        with jax.default_matmul_precision("highest"):
            return _checked_outputs(
                **self._put(inputs, dtype, device), config=config, strategy=strategy
            )

    def forward(self, config, params, x, *, dtype="float64", device="cpu"):
        return np.asarray(self._run(config, x, dtype, device, params=params)["y"])

    def vjp(self, config, params, x, dy, *, dtype="float64", device="cpu"):
        out = self._run(config, x, dtype, device, params=params, dy=dy)
        return np.asarray(out["dx"]), {k: np.asarray(v) for k, v in out["dparams"].items()}

    def to_locally_connected(self, config, params, x=None, *, dtype="float64", device="cpu"):
        if config.input_dependent and x is not None:
            out = self._run(config, x, dtype, device, params=params)
            kernel, bias = out["kernel"], out["bias"]
        else:
            params, x = self._put((params, x), dtype, device)
            with jax.default_matmul_precision("highest"):
                kernel, bias = _to_locally_connected(params, config=config, x=x)
        return np.asarray(kernel), np.asarray(bias)

    def lc_forward(self, kernel, bias, x, config, *, dtype="float64", device="cpu"):
        out = self._run(config, x, dtype, device, lc_kernel=kernel, lc_bias=bias)
        return np.asarray(out["lc_y"])

    def init_params(self, config, *, seed=0):
        """lrlc_jax's own initialiser, as float64 NumPy arrays under the neutral names."""
        params = lrlc_jax.init(jax.random.key(seed), config, dtype=jnp.float64)
        return lrlc_jax.neutral_params(params)

    def save_checkpoint(self, path, config, params):
        lrlc_jax.save_checkpoint(path, {name: jnp.asarray(v) for name, v in params.items()}, config)

    def load_checkpoint(self, path):
        params, config = lrlc_jax.load_checkpoint(path)
        return lrlc_jax.neutral_params(params), config
