"""The LRLC computations on the tensors of whichever backend Keras runs (KERAS_BACKEND), as
`keras.ops` offers a convolution on every backend. Each function hands its arguments to that
framework's own lrlc implementation: `lrlc_tf.functional` under tensorflow, `lrlc_jax` under
jax, `lrlc_torch.functional` under torch. So each framework has one implementation, which
the Keras layers share with that framework's users.

Data is in a Keras `data_format` ('channels_last', NHWC, or 'channels_first', NCHW; NLC and
NCL in 1-D, NDHWC and NCDHW in 3-D, spec section 17), moved to the native layout only where
it differs; parameters and results carry the neutral names and layouts (spec sections 9
and 11). Every function serves 1, 2 and 3 spatial axes, read from the config. Parameters
may be Keras variables. Imports only Keras at module level: a framework's package is
imported on first use.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import keras

import lrlc_numpy
from lrlc_numpy import LRLCConfig

__all__ = [
    "BACKENDS",
    "DATA_FORMATS",
    "check_dtype",
    "combining_weights",
    "forward",
    "locally_connected",
    "native",
    "to_locally_connected",
]

BACKENDS = ("tensorflow", "jax", "torch")
DATA_FORMATS = ("channels_last", "channels_first")


class _NeutralLayouts:
    """An lrlc implementation (`self.functional`) taking channels-last data and neutral
    layouts."""

    layout = "channels_last"

    def forward(self, x, params, config, strategy):
        return self.functional.forward(x, params, config, strategy=strategy)

    def combining_weights(self, params, config, x):
        return self.functional.combining_weights(params, config, x)

    def to_locally_connected(self, params, config, x):
        return self.functional.to_locally_connected(params, config, x)

    def locally_connected(self, x, kernel, bias, config):
        return self.functional.locally_connected(x, kernel, bias, config)


class _TensorFlow(_NeutralLayouts):
    def __init__(self):
        from . import functional

        self.functional = functional


class _Jax(_NeutralLayouts):
    def __init__(self):
        import jax.numpy as jnp

        import lrlc_jax

        self.functional, self.zeros = lrlc_jax, jnp.zeros

    def locally_connected(self, x, kernel, bias, config):
        if bias is None:  # lrlc_jax always takes a bias
            bias = self.zeros(lrlc_numpy.lc_shapes(config)[1], x.dtype)
        return self.functional.locally_connected(x, kernel, bias, config)


class _Torch:
    """lrlc_torch.functional: channels-first data (NCL, NCHW, NCDHW), channel-first combining
    weights and biases, and torch weight layouts (a locally connected weight (*out, C_out,
    C_in, *window), as torch.nn.ConvNd's per position), converted by lrlc_torch's own basis
    rules (lrlc_torch/checkpoint.py) as views that autograd differentiates."""

    layout = "channels_first"

    def __init__(self):
        import lrlc_torch
        from lrlc_torch import checkpoint

        self.functional, self.layouts = lrlc_torch.functional, checkpoint

    def _params(self, params):
        return {
            name: self.layouts._basis_to_torch(name, value) if name.startswith("basis") else value
            for name, value in params.items()
        }

    def forward(self, x, params, config, strategy):
        return self.functional.forward(x, self._params(params), config, strategy=strategy)

    def combining_weights(self, params, config, x):
        weights = self.functional.combining_weights(self._params(params), config, x)
        # (..., K, H_out, W_out) -> (..., H_out, W_out, K)
        return weights.movedim(-config.spatial_dims - 1, -1)

    def to_locally_connected(self, params, config, x):
        weight, bias = self.functional.to_locally_connected(self._params(params), config, x)
        # (..., *out, C_out, C_in, *window) -> (..., *out, *window, C_in, C_out)
        lead = weight.dim() - config.spatial_dims - 2
        return self.layouts._member_to_neutral(weight, lead), bias.movedim(0, -1)

    def locally_connected(self, x, kernel, bias, config):
        lead = kernel.dim() - config.spatial_dims - 2
        weight = self.layouts._member_to_torch(kernel, lead)
        bias = None if bias is None else bias.movedim(-1, 0)
        return self.functional.locally_connected(x, weight, bias, config)


_NATIVE = {"tensorflow": _TensorFlow, "jax": _Jax, "torch": _Torch}


@functools.cache
def native(backend: str | None = None):
    """The native implementation for Keras backend `backend` (default: the running one)."""
    backend = backend or keras.backend.backend()
    if backend not in _NATIVE:
        raise NotImplementedError(
            f"lrlc_tf's Keras layers run under the Keras backends {BACKENDS}; this process "
            f"runs Keras with backend {backend!r} (set KERAS_BACKEND before importing keras)"
        )
    return _NATIVE[backend]()


def check_dtype(dtype: str, what: str) -> None:
    """Raise where the running backend would hold `dtype` in fewer bits without a word:
    float64 under jax unless `jax_enable_x64` is on (JAX then makes float32 arrays)."""
    if dtype == "float64" and keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            raise ValueError(
                f"{what}: float64 under Keras's jax backend needs "
                "jax.config.update('jax_enable_x64', True) first; without it JAX holds "
                "float32 values (or ask for dtype='float32')"
            )


def _values(params: Mapping) -> dict:
    """Keras variables as their values (autocast inside a layer's call), tensors as given."""
    return {
        name: value.value if isinstance(value, keras.Variable) else value
        for name, value in params.items()
    }


def _layout(data_format: str) -> str:
    if data_format not in DATA_FORMATS:
        raise ValueError(
            f"Invalid value for argument `data_format`: expected one of {DATA_FORMATS}. "
            f"Received: data_format={data_format!r}"
        )
    return data_format


def _relayout(x, source: str, target: str):
    """`x` (batch first, then channels and grid in `source`'s order) in `target`'s order."""
    if source == target:
        return x
    n = len(x.shape) - 2
    if target == "channels_first":
        return keras.ops.transpose(x, (0, n + 1, *range(1, n + 1)))
    return keras.ops.transpose(x, (0, *range(2, n + 2), 1))


def forward(x, params, config: LRLCConfig, *, strategy="auto", data_format="channels_last"):
    """The LRLC layer (eqs. 2-6) on `x` in `data_format`; output in the same format."""
    implementation, layout = native(), _layout(data_format)
    y = implementation.forward(
        _relayout(x, layout, implementation.layout), _values(params), config, strategy
    )
    return _relayout(y, implementation.layout, layout)


def combining_weights(params, config: LRLCConfig, x=None, *, data_format="channels_last"):
    """Normalised combining weights w (eq. 4), (H_out, W_out, K), or (B, H_out, W_out, K)
    predicted from `x` (in `data_format`) for an input-dependent layer (eq. 6); (*out, K)
    in n-D."""
    implementation, layout = native(), _layout(data_format)
    x = None if x is None else _relayout(x, layout, implementation.layout)
    return implementation.combining_weights(_values(params), config, x)


def to_locally_connected(params, config: LRLCConfig, x=None, *, data_format="channels_last"):
    """The equivalent locally connected (kernel, bias) in neutral layouts (spec section 11):
    kernel (H_out, W_out, kh, kw, C_in, C_out), or one per example of `x` (in `data_format`)
    for an input-dependent layer; bias (H_out, W_out, C_out). In n-D (*out, *window, C_in,
    C_out) and (*out, C_out)."""
    implementation, layout = native(), _layout(data_format)
    x = None if x is None else _relayout(x, layout, implementation.layout)
    return implementation.to_locally_connected(_values(params), config, x)


def locally_connected(x, kernel, bias, config: LRLCConfig, *, data_format="channels_last"):
    """A locally connected layer (spec section 11) on `x` in `data_format`; `kernel` (H_out,
    W_out, kh, kw, C_in, C_out) or one per example, `bias` (H_out, W_out, C_out) or None
    ((*out, *window, C_in, C_out) and (*out, C_out) in n-D)."""
    implementation, layout = native(), _layout(data_format)
    kernel, bias = _values({"kernel": kernel, "bias": bias}).values()
    y = implementation.locally_connected(
        _relayout(x, layout, implementation.layout), kernel, bias, config
    )
    return _relayout(y, implementation.layout, layout)
