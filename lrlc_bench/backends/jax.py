"""JAX: `lax.conv_general_dilated`, `lrlc_jax.apply` and `lrlc_jax.locally_connected` on the
converted kernel; NHWC, float32. Every function is timed jitted, results blocked on."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import lrlc_jax

from ..measure import Workload
from ..settings import OP_STRATEGIES
from . import Unavailable


# Channels-last data and kernel layouts of 1, 2 and 3 spatial axes.
_DIMENSION_NUMBERS = {
    1: ("NWC", "WIO", "NWC"),
    2: ("NHWC", "HWIO", "NHWC"),
    3: ("NDHWC", "DHWIO", "NDHWC"),
}


def _conv(params, x):
    n = x.ndim - 2
    y = lax.conv_general_dilated(
        x, params["kernel"], (1,) * n, "SAME", dimension_numbers=_DIMENSION_NUMBERS[n]
    )
    return y + params["bias"]


PLAN_METHOD = "XLA memory_analysis() of the compiled step: temp + output - alias bytes"


def memory_plan(step, *args) -> dict:
    """XLA's buffer plan for the jitted `step` compiled for `args`: the bytes it allocates
    beyond its arguments, i.e. its temporaries (XLA packs them into one buffer, reusing
    space between values whose lifetimes do not overlap; on a GPU this includes the
    workspace of the convolution algorithms autotuning picked) plus its outputs, less any
    output that reuses an argument's buffer. Compiles; runs nothing."""
    stats = step.lower(*args).compile().memory_analysis()
    if stats is None:
        raise RuntimeError(f"XLA gives no memory analysis on {jax.default_backend()!r}")
    parts = {
        part: getattr(stats, f"{part}_size_in_bytes")
        for part in ("argument", "output", "alias", "temp")
    }
    return {
        "peak_bytes": parts["temp"] + parts["output"] - parts["alias"],
        "method": PLAN_METHOD,
        "parts": parts,
    }


class Backend:
    name = "jax"
    strategies = tuple(s for s in lrlc_jax.STRATEGIES if s != "auto")

    def __init__(self, settings):
        platform = "gpu" if settings.device == "gpu" else "cpu"
        try:
            self.device = jax.devices(platform)[0]
        except RuntimeError as error:
            raise Unavailable(f"jax sees no {platform} device ({error})") from error
        self.settings = settings
        self.rng = np.random.default_rng(settings.seed)

    def environment(self) -> dict:
        return {
            "versions": {"jax": jax.__version__, "jaxlib": jax.lib.__version__},
            # XLA's CPU client sizes its thread pool from the visible cores unless XLA_FLAGS
            # says otherwise.
            "threads": {"XLA_FLAGS": os.environ.get("XLA_FLAGS", "")},
            "layout": self.settings.lrlc_config(1).layouts[0],
            "dtype": "float32",
            "device_name": self.device.device_kind,
            # JAX's default precision: TF32 for float32 convolutions and products on GPUs.
            **(
                {"float32": "JAX default precision (TF32 on GPUs)"}
                if self.device.platform == "gpu"
                else {}
            ),
        }

    def _random(self, shape) -> jax.Array:
        values = self.rng.standard_normal(shape, dtype=np.float32)
        return jax.device_put(values, self.device)

    def _layer(self, op: str, rank: int):
        """(apply(params, x), params) for `op`."""
        s = self.settings
        if op in ("conv", "conv_k"):
            width = s.out_channels * (rank if op == "conv_k" else 1)
            window = (s.kernel_size,) * s.spatial_dims
            fan_in = s.kernel_size**s.spatial_dims * s.in_channels
            kernel = self._random((*window, s.in_channels, width))
            # float32 whatever jax_enable_x64 says (a NumPy float64 scalar or jnp.zeros'
            # default dtype would widen it when x64 is on, as in the test process).
            scale = np.float32(1 / np.sqrt(fan_in))
            params = {"kernel": kernel * scale, "bias": jnp.zeros(width, jnp.float32)}
            return _conv, params
        config = s.lrlc_config(rank, input_dependent=op == "lrlc_input_dependent")
        params = lrlc_jax.init(jax.random.key(s.seed), config)
        if op != "lc":
            strategy = OP_STRATEGIES.get(op, "auto")
            return (lambda p, x: lrlc_jax.apply(p, x, config, strategy=strategy)), params
        kernel, bias = lrlc_jax.to_locally_connected(params, config)
        return (
            lambda p, x: lrlc_jax.locally_connected(x, p["kernel"], p["bias"], config),
            {"kernel": kernel, "bias": bias},
        )

    def chosen_strategy(self, rank: int) -> str:
        config = self.settings.lrlc_config(rank)
        return lrlc_jax.choose_strategy(config, self.settings.batch, platform=self.device.platform)

    def workload(self, op: str, rank: int) -> Workload:
        s = self.settings
        apply, params = self._layer(op, rank)
        params = jax.device_put(params, self.device)
        x = self._random((s.batch, *s.input_size, s.in_channels))
        forward_fn = jax.jit(apply)

        def forward():
            return jax.block_until_ready(forward_fn(params, x))

        if op == "lc":
            return Workload(forward, None)
        width = s.out_channels * (rank if op == "conv_k" else 1)
        dy = self._random((s.batch, *s.lrlc_config(rank).output_size, width))

        @jax.jit
        def train_fn(p, x, dy):
            # The output as well as the gradients (parameters and input, as in a hidden
            # layer): a training step needs y for its loss, and without it XLA would drop
            # the forward convolution whose result no gradient of a plain conv uses.
            y, pullback = jax.vjp(apply, p, x)
            return y, pullback(dy)

        def train():
            return jax.block_until_ready(train_fn(params, x, dy))

        return Workload(forward, train, lambda: memory_plan(train_fn, params, x, dy))
