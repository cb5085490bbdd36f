"""The initial distribution of every neutral parameter (spec section 10), written once.

Every package draws its initial values from `initial_value(name, config)`: the reference
with NumPy's generator, the framework backends with their own. The values follow the
authors' layer: 'conv_init' logits, so every normalisation starts as a convolution;
He-uniform basis; Keras's Glorot-uniform rule for the kernels of g; zero biases.
"""

from __future__ import annotations

import dataclasses
import math

from .config import LRLCConfig, check_config, param_shapes

LOGIT_NAMES = ("depth_logits", "row_logits", "col_logits", "logits")


@dataclasses.dataclass(frozen=True)
class Initial:
    """One parameter's initial distribution: U(-limit, limit) when `uniform`, else the
    constant `value` everywhere."""

    uniform: bool
    value: float = 0.0
    limit: float = 0.0


def glorot_fans(shape) -> tuple[int, int]:
    """(fan_in, fan_out) as Keras computes them: a matrix (q, r) has fans q and r; a
    convolution kernel (*window, c_in, c_out) multiplies both by the window's size."""
    if not isinstance(shape, (tuple, list)) or not all(isinstance(n, int) for n in shape):
        raise TypeError(f"glorot_fans: shape must be a tuple of ints, got {shape!r}")
    if len(shape) < 2:
        raise ValueError(f"glorot_fans: a kernel has at least 2 axes, got shape {tuple(shape)}")
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def keras_kernel_shape(name: str, shape) -> tuple[int, ...]:
    """The shape the authors' Keras layer gives g's kernel `name`: the depthwise kernels
    (3, 3, K) are (3, 3, K, 1) there, which sets their Glorot fans to 9K and 9 (3^n K and
    3^n in n-D)."""
    if name.startswith("g.dilated"):
        return (*shape, 1)
    return tuple(shape)


def initial_value(name: str, config: LRLCConfig) -> Initial:
    """The initial distribution of neutral parameter `name` of a layer with `config`."""
    check_config(config, "initial_value")
    shapes = param_shapes(config)
    if name not in shapes:
        raise ValueError(
            f"initial_value: {name!r} is not a parameter of this layer; "
            f"expected one of {sorted(shapes)}"
        )
    shape = shapes[name]
    k = config.rank
    if name == "basis" or name.startswith("basis."):  # He-uniform, fan-in: window x C_in
        fan_in = math.prod(shape[-(config.spatial_dims + 2) : -1])
        return Initial(uniform=True, limit=math.sqrt(6.0 / fan_in))
    if name in LOGIT_NAMES:
        # 'conv_init': w~ = 1/sqrt(K) at every position; rowcol splits it over its tables.
        share = 1.0 / max(len(config.axis_tables), 1)
        return Initial(uniform=False, value=share / math.sqrt(k))
    if name.startswith("g.") and name.endswith(".kernel"):
        fan_in, fan_out = glorot_fans(keras_kernel_shape(name, shape))
        return Initial(uniform=True, limit=math.sqrt(6.0 / (fan_in + fan_out)))
    return Initial(uniform=False)
