"""Flax modules for LRLC layers (the optional extra `lrlc[flax]`): `LRLC`, an nnx module, and
`LinenLRLC`, a linen module. Both hold their parameters under the neutral names of the spec
(section 9), so `neutral_params` is a checkpoint's tensors and `lrlc_jax.apply` runs on them;
the math is `lrlc_jax.forward`. Also the layout helpers between lrlc's locally connected
kernel and flax's `linen.ConvLocal`.

Imported on its own (`import lrlc_jax.flax`): `import lrlc_jax` imports no Flax.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen, nnx

from lrlc_numpy import LRLCConfig, check_config, lc_shapes, param_shapes
from lrlc_numpy.strategy import STRATEGIES

from . import checkpoint
from .functional import forward
from .layers import init
from .positionwise import as_floating, floating_dtype

__all__ = ["LRLC", "LinenLRLC", "conv_local", "from_conv_local", "to_conv_local"]


def _check_strategy(strategy) -> None:
    if not (isinstance(strategy, str) and strategy in STRATEGIES):
        raise ValueError(f"strategy: got {strategy!r}; expected one of {STRATEGIES}")


class LRLC(nnx.Module):
    """A low-rank locally connected layer as an nnx module, channels last (NHWC; NLC or
    NDHWC when the config has 1 or 3 spatial axes).

    `layer.params` is an `nnx.Dict` of `nnx.Param` under the neutral names ('basis',
    'row_logits', ... or 'basis.0', ... for a mixed basis), initialised by `lrlc_jax.init`
    from `rngs.params()`; `layer(x)` is `lrlc_jax.forward(x, params, config, strategy)`.
    """

    def __init__(
        self, config: LRLCConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, strategy: str = "auto"
    ):
        check_config(config, "LRLC")
        _check_strategy(strategy)
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"LRLC: rngs must be an nnx.Rngs, got {type(rngs).__name__}")
        self.config = config
        self.strategy = strategy
        values = init(rngs.params(), config, dtype)
        self.params = nnx.Dict({name: nnx.Param(value) for name, value in values.items()})

    @classmethod
    def from_lrlc_config(cls, config: LRLCConfig, **kwargs) -> LRLC:
        """A fresh layer for `config` (the same constructor; the name every lrlc layer has)."""
        return cls(config, **kwargs)

    def __call__(self, x) -> jax.Array:
        params = {name: param[...] for name, param in self.params.items()}
        return forward(x, params, self.config, strategy=self.strategy)

    def neutral_params(self) -> dict[str, np.ndarray]:
        """The parameters as NumPy arrays under the neutral names."""
        return {name: np.asarray(param[...]) for name, param in self.params.items()}

    def _set(self, params: Mapping) -> None:
        for name, value in params.items():
            self.params[name].set_value(value)

    def load_neutral_params(self, params: Mapping, **kwargs) -> None:
        """Set the parameters in place from `params` (neutral names and shapes, checked), each
        keeping its own floating dtype; keyword arguments go to `lrlc_jax.load_neutral_params`."""
        self._set(checkpoint.load_neutral_params(params, self.config, **kwargs))

    def save_checkpoint(self, path) -> None:
        checkpoint.save_checkpoint(path, self.neutral_params(), self.config)

    def load_checkpoint(self, path, **kwargs) -> None:
        """Load a neutral checkpoint into this layer in place; its config must equal
        `self.config`. Keyword arguments go to `lrlc_jax.load_checkpoint`."""
        params, config = checkpoint.load_checkpoint(path, **kwargs)
        if config != self.config:
            raise ValueError(
                f"checkpoint {path}: its config {config} differs from this layer's {self.config}"
            )
        self._set(params)

    @classmethod
    def from_checkpoint(cls, path, *, strategy: str = "auto", **kwargs) -> LRLC:
        """A new layer with the config and parameters of a neutral checkpoint."""
        params, config = checkpoint.load_checkpoint(path, **kwargs)
        layer = cls(config, rngs=nnx.Rngs(0), strategy=strategy)
        layer._set(params)
        return layer


class LinenLRLC(linen.Module):
    """A low-rank locally connected layer as a linen module, channels last (NHWC; NLC or
    NDHWC when the config has 1 or 3 spatial axes). Its variables are
    `{"params": neutral dict}`, drawn by `lrlc_jax.init`'s rules from the 'params' rng."""

    config: LRLCConfig
    strategy: str = "auto"
    param_dtype: jnp.dtype = jnp.float32

    @linen.compact
    def __call__(self, x) -> jax.Array:
        check_config(self.config, "LinenLRLC")
        _check_strategy(self.strategy)
        dtype = floating_dtype(self.param_dtype, "LinenLRLC")
        # Each tensor from its own rng (flax derives one per name) by lrlc_jax.init's rule;
        # flax also evaluates these shapes at apply time to check the parameters given.
        params = {
            name: self.param(name, lambda key, name=name: init(key, self.config, dtype)[name])
            for name in param_shapes(self.config)
        }
        return forward(x, params, self.config, strategy=self.strategy)


# ---------------------------------------------------------------------------------------------
# flax.linen.ConvLocal: kernel (H_out, W_out, C_in kh kw, C_out), its patch axis ordered
# (c, u, v) as lax.conv_general_dilated_patches cuts it; lrlc's is (H_out, W_out, kh, kw, C_in,
# C_out). The bias, (H_out, W_out, C_out), is the same in both. In n-D: (*out, C_in
# prod(window), C_out) against (*out, *window, C_in, C_out), the channel still outermost.


def to_conv_local(kernel) -> jax.Array:
    """lrlc's locally connected kernel (H_out, W_out, kh, kw, C_in, C_out) in ConvLocal's
    layout (H_out, W_out, C_in kh kw, C_out); (*out, *window, C_in, C_out) of rank 2n + 2 in
    n-D, with n read from the rank."""
    kernel = as_floating(kernel, "to_conv_local: kernel")
    n = (kernel.ndim - 2) // 2
    if kernel.ndim not in (4, 6, 8):
        raise ValueError(
            f"to_conv_local: kernel has shape {kernel.shape}; expected (*out, *window, C_in, "
            "C_out) of rank 4, 6 or 8 for 1, 2 or 3 spatial axes, such as (H_out, W_out, kh, "
            "kw, C_in, C_out) (one kernel for every example: ConvLocal has no per-example kernel)"
        )
    out, window, (c_in, c_out) = kernel.shape[:n], kernel.shape[n:-2], kernel.shape[-2:]
    # (*out, *window, C_in, C_out) -> (*out, C_in, *window, C_out)
    axes = (*range(n), 2 * n, *range(n, 2 * n), 2 * n + 1)
    return jnp.transpose(kernel, axes).reshape(*out, c_in * math.prod(window), c_out)


def from_conv_local(kernel, config: LRLCConfig) -> jax.Array:
    """A ConvLocal kernel (H_out, W_out, C_in kh kw, C_out) as lrlc's locally connected kernel
    for `config` (the window of `config.locally_connected_config()`); (*out, C_in
    prod(window), C_out) in n-D."""
    check_config(config, "from_conv_local")
    kernel = as_floating(kernel, "from_conv_local: kernel")
    n = config.spatial_dims
    shape = lc_shapes(config)[0]
    out, window, (c_in, c_out) = shape[:n], shape[n:-2], shape[-2:]
    expected = (*out, c_in * math.prod(window), c_out)
    if kernel.shape != expected:
        raise ValueError(
            f"from_conv_local: kernel has shape {kernel.shape}; expected {expected} for this "
            "config (ConvLocal's (*out, C_in prod(window), C_out))"
        )
    split = kernel.reshape(*out, c_in, *window, c_out)
    # (*out, C_in, *window, C_out) -> (*out, *window, C_in, C_out)
    return jnp.transpose(split, (*range(n), *range(n + 1, 2 * n + 1), n, 2 * n + 1))


def conv_local(config: LRLCConfig, **kwargs) -> linen.ConvLocal:
    """A `linen.ConvLocal` with the geometry of `config`'s locally connected layer (window,
    stride, dilation and explicit padding of `config.locally_connected_config()`), so that
    `to_conv_local(kernel)` and the bias are its parameters. Keyword arguments go to
    ConvLocal (e.g. `use_bias=False`, `param_dtype`)."""
    check_config(config, "conv_local")
    window = config.locally_connected_config()
    return linen.ConvLocal(
        features=config.out_channels,
        kernel_size=window.kernel_size,
        strides=window.stride,
        padding=window.padding_pairs,
        kernel_dilation=window.dilation,
        **kwargs,
    )
