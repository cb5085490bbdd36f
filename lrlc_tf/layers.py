"""Keras 3 layers: `LowRankLocallyConnected2D` (alias `LRLC2D`) and `LocallyConnected2D`.

Both validate their arguments with `lrlc_numpy.LRLCConfig`, so padding, output size and
every option follow the spec from one place; both compute with `lrlc_tf.functional`.
Arguments use the spec's names (`out_channels`, `stride`, `dilation`, ...). The input grid
`input_size` is required because the combining weights and spatial biases live on the
output grid; the channel count is taken from the first input unless given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf

import lrlc_numpy
from lrlc_numpy import LRLCConfig

from . import functional

DATA_FORMATS = ("channels_last", "channels_first")


def _uniform(limit):
    return keras.initializers.RandomUniform(minval=-limit, maxval=limit)


def _initializer(name, shape):
    """Spec section 10 (the same fans as `lrlc_numpy.init_params`): He-uniform basis with
    fan-in kh kw C_in, Glorot-uniform kernels in g, zeros for every logit and bias."""
    if name == "basis":
        return _uniform(math.sqrt(6.0 / math.prod(shape[1:4])))
    if name.startswith("g.") and name.endswith(".kernel"):
        fan_in = math.prod(shape[:-1])
        fan_out = shape[-1] if len(shape) == 2 else math.prod(shape[:-1])
        return _uniform(math.sqrt(6.0 / (fan_in + fan_out)))
    return "zeros"


def _to_numpy(variables):
    return {name: tf.convert_to_tensor(v).numpy() for name, v in variables.items()}


def _assign(variables, params):
    """Assign `params[name]` (checked for names and shapes already) to each variable."""
    for name, variable in variables.items():
        value = functional.as_floating(params[name], f"params[{name!r}]")
        variable.assign(tf.cast(value, variable.dtype))


class _WindowedLayer(keras.layers.Layer):
    """What both layers share: the window geometry as an LRLCConfig, data_format, and
    input checks. Subclasses define `_make_config(in_channels)` and `_create_weights()`."""

    def _init_geometry(self, in_channels, data_format):
        if data_format is None:
            data_format = keras.config.image_data_format()
        if data_format not in DATA_FORMATS:
            raise ValueError(
                f"{type(self).__name__}: unknown data_format {data_format!r}; "
                f"expected one of {DATA_FORMATS}"
            )
        self.data_format = data_format
        self.in_channels = in_channels
        # Validate every argument now; only the channel count may wait for build(), and
        # nothing derived from this config before then depends on it.
        self._config = self._make_config(1 if in_channels is None else in_channels)

    @property
    def _layout(self):
        return "NHWC" if self.data_format == "channels_last" else "NCHW"

    def _check_input_shape(self, shape):
        lrlc_numpy.check_input_shape(
            shape, self._config, name=f"{self.name} input", layout=self._layout
        )

    def _input_shape(self):
        """The input shape this layer takes, batch unknown, in its data_format."""
        h, w = self._config.input_size
        if self.data_format == "channels_last":
            return (None, h, w, self._config.in_channels)
        return (None, self._config.in_channels, h, w)

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.in_channels is None and len(shape) == 4:
            channel_axis = 3 if self.data_format == "channels_last" else 1
            self.in_channels = shape[channel_axis]
            self._config = self._make_config(self.in_channels)
        self._check_input_shape(shape)
        self._create_weights()

    def compute_output_shape(self, input_shape):
        if self.in_channels is not None:
            self._check_input_shape(input_shape)
        out_h, out_w = self._config.output_size
        c_out = self._config.out_channels
        if self.data_format == "channels_last":
            return (input_shape[0], out_h, out_w, c_out)
        return (input_shape[0], c_out, out_h, out_w)

    def _to_nhwc(self, x):
        """`x` checked in this layer's layout, cast to the compute dtype, and in NHWC."""
        x = functional.check_input(x, self._config, name=f"{self.name} input", layout=self._layout)
        x = tf.cast(x, self.compute_dtype)
        return x if self.data_format == "channels_last" else tf.transpose(x, (0, 2, 3, 1))

    def _from_nhwc(self, y):
        return y if self.data_format == "channels_last" else tf.transpose(y, (0, 3, 1, 2))

    def _geometry_config(self):
        return {
            "out_channels": self._config.out_channels,
            "kernel_size": self._config.kernel_size,
            "input_size": self._config.input_size,
            "in_channels": self.in_channels,
            "stride": self._config.stride,
            "dilation": self._config.dilation,
            "padding": self._config.padding,
            "data_format": self.data_format,
        }


@keras.saving.register_keras_serializable(package="lrlc")
class LocallyConnected2D(_WindowedLayer):
    """A locally connected layer: a separate filter bank at every output position.

    y[b, i, j, o] = sum_{u, v, c} xpad[b, i s_h + u d_h, j s_w + v d_w, c] kernel[i, j, u, v, c, o]
    + bias[i, j, o] (spec section 11). Weights: `kernel` (H_out, W_out, kh, kw, C_in, C_out),
    He-uniform with fan-in kh kw C_in, and `bias` (H_out, W_out, C_out), zeros.
    Padding is 'valid', 'same' (TensorFlow's rule), an int, a pair or explicit pairs.
    """

    def __init__(
        self,
        out_channels,
        kernel_size,
        *,
        input_size,
        in_channels=None,
        stride=1,
        dilation=1,
        padding="valid",
        use_bias=True,
        data_format=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._geometry = dict(
            out_channels=out_channels,
            kernel_size=kernel_size,
            input_size=input_size,
            stride=stride,
            dilation=dilation,
            padding=padding,
        )
        if not isinstance(use_bias, bool):
            raise TypeError(f"LocallyConnected2D.use_bias must be a bool, got {use_bias!r}")
        self.use_bias = use_bias
        self._init_geometry(in_channels, data_format)

    def _make_config(self, in_channels):
        # The window geometry is an LRLCConfig's; the rank plays no part here.
        return LRLCConfig(in_channels=in_channels, rank=1, **self._geometry)

    def _create_weights(self):
        config = self._config
        kh, kw = config.kernel_size
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*config.output_size, kh, kw, config.in_channels, config.out_channels),
            initializer=_uniform(math.sqrt(6.0 / (kh * kw * config.in_channels))),
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(*config.output_size, config.out_channels), initializer="zeros"
            )

    def call(self, inputs):
        x = self._to_nhwc(inputs)
        y = functional.locally_connected(x, self.kernel, self.bias, self._config)
        return self._from_nhwc(y)

    def get_config(self):
        return {**super().get_config(), **self._geometry_config(), "use_bias": self.use_bias}

    def _variables_by_name(self):
        return {v.name: v for v in (self.kernel, self.bias) if v is not None}

    def get_params(self) -> dict[str, np.ndarray]:
        """{'kernel': ..., 'bias': ...} as NumPy arrays, canonical layouts (spec section 11)."""
        return _to_numpy(self._variables_by_name())

    def set_params(self, params) -> None:
        """Assign {'kernel', 'bias'} ('bias' only with use_bias); names and shapes must match."""
        variables = self._variables_by_name()
        if not isinstance(params, Mapping):
            raise TypeError(
                f"params must be a mapping of name -> array, got {type(params).__name__}"
            )
        if set(params) != set(variables):
            raise ValueError(
                f"{self.name}: got tensors {sorted(params)}; expected exactly {sorted(variables)}"
            )
        for name, variable in variables.items():
            got, want = tuple(getattr(params[name], "shape", ())), tuple(variable.shape)
            if got != want:
                raise ValueError(f"{self.name}: params[{name!r}] has shape {got}; expected {want}")
        _assign(variables, params)


@keras.saving.register_keras_serializable(package="lrlc")
class LowRankLocallyConnected2D(_WindowedLayer):
    """Low-rank locally connected layer (paper eqs. 2-6; spec sections 4-8).

    K basis filter banks F^(k), combined at each output position by normalised weights w
    (fixed, or predicted from the input when `input_dependent=True`), plus spatial and
    channel biases; computed by Algorithm 1 (one convolution with K C_out outputs and one
    fused combination; at rank 1 with softmax the convolution alone) or, for fixed weights,
    in the locally connected form (`strategy`; see `lrlc_tf.functional.choose_strategy`).
    Arguments are `lrlc_numpy.LRLCConfig`'s, plus `data_format` ('channels_last', the
    default, or 'channels_first'), `strategy` and Keras's layer arguments.

    Weights carry the neutral names (`basis`, `row_logits`, ..., `g.reduce.kernel`) with the
    neutral shapes; `get_params`/`set_params` and `save_params`/`load_params` exchange
    them with the neutral safetensors checkpoint.
    """

    def __init__(
        self,
        out_channels,
        kernel_size,
        rank,
        *,
        input_size,
        in_channels=None,
        stride=1,
        dilation=1,
        padding="valid",
        combining="rowcol",
        normalize="softmax",
        spatial_bias=True,
        channel_bias=True,
        input_dependent=False,
        data_format=None,
        strategy="auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._options = dict(
            out_channels=out_channels,
            kernel_size=kernel_size,
            rank=rank,
            input_size=input_size,
            stride=stride,
            dilation=dilation,
            padding=padding,
            combining=combining,
            normalize=normalize,
            spatial_bias=spatial_bias,
            channel_bias=channel_bias,
            input_dependent=input_dependent,
        )
        self._init_geometry(in_channels, data_format)
        functional.choose_strategy(self._config, None, strategy)  # rejects unknown or unfit
        self.strategy = strategy

    def _make_config(self, in_channels):
        return LRLCConfig(in_channels=in_channels, **self._options)

    @classmethod
    def from_lrlc_config(cls, config: LRLCConfig, **kwargs):
        """A layer with the hyper-parameters of `config` (Keras arguments in `kwargs`)."""
        if not isinstance(config, LRLCConfig):
            raise TypeError(f"expected an LRLCConfig, got {type(config).__name__}")
        return cls(**config.to_dict(), **kwargs)

    @property
    def lrlc_config(self) -> LRLCConfig:
        """The layer's LRLCConfig (available once the channel count is known)."""
        if self.in_channels is None:
            raise ValueError(
                f"{self.name}: in_channels is not known before the layer is built; "
                "pass in_channels= or call the layer on an input first"
            )
        return self._config

    def _create_weights(self):
        self._neutral = {
            name: self.add_weight(name=name, shape=shape, initializer=_initializer(name, shape))
            for name, shape in lrlc_numpy.param_shapes(self._config).items()
        }

    def call(self, inputs):
        x = self._to_nhwc(inputs)
        y = functional.forward(x, self._neutral, self._config, strategy=self.strategy)
        return self._from_nhwc(y)

    def get_config(self):
        fields = {**self._config.to_dict(), "in_channels": self.in_channels}
        return {
            **super().get_config(),
            **fields,
            "data_format": self.data_format,
            "strategy": self.strategy,
        }

    # -----------------------------------------------------------------------------------------
    # Combining weights and the locally connected form (spec section 11)

    def _require_built(self):
        if not self.built:
            raise ValueError(f"{self.name} has no weights yet; build it or call it on an input")

    def combining_weights(self, x=None):
        """Normalised combining weights w (eq. 4): (H_out, W_out, K), or (B, H_out, W_out, K)
        predicted from `x` (in this layer's data_format) for an input-dependent layer."""
        self._require_built()
        x = None if x is None else self._to_nhwc(x)
        return functional.combining_weights(self._neutral, self._config, x)

    def locally_connected_kernel(self, x=None):
        """(kernel, bias) of the equivalent locally connected layer, canonical layouts:
        kernel (H_out, W_out, kh, kw, C_in, C_out), or one per example of `x` (a leading
        batch axis) for an input-dependent layer; bias (H_out, W_out, C_out). Without `x`
        they are in the variables' dtype, with it in the compute dtype."""
        self._require_built()
        x = None if x is None else self._to_nhwc(x)
        return functional.to_locally_connected(self._neutral, self._config, x)

    def to_locally_connected(self) -> LocallyConnected2D:
        """A built `LocallyConnected2D` with the same outputs (fixed combining weights only:
        an input-dependent layer has one kernel per example, see `locally_connected_kernel`)."""
        if self._config.input_dependent:
            raise ValueError(
                f"{self.name} is input-dependent, so its locally connected kernel differs per "
                "example; use locally_connected_kernel(x)"
            )
        kernel, bias = self.locally_connected_kernel()
        config = self._config
        geometry = self._geometry_config()
        layer = LocallyConnected2D(
            geometry.pop("out_channels"),
            geometry.pop("kernel_size"),
            use_bias=config.spatial_bias or config.channel_bias,
            dtype=self.dtype_policy,
            **geometry,
        )
        layer.build(self._input_shape())
        layer.kernel.assign(kernel)
        if layer.bias is not None:
            layer.bias.assign(bias)
        return layer

    # -----------------------------------------------------------------------------------------
    # Neutral parameters and checkpoints (spec sections 9 and 13)

    def get_params(self) -> dict[str, np.ndarray]:
        """The weights as NumPy arrays under their neutral names (canonical layouts)."""
        self._require_built()
        return _to_numpy(self._neutral)

    def set_params(self, params) -> None:
        """Assign neutral-named arrays; names and shapes must match the layer exactly."""
        self._require_built()
        lrlc_numpy.check_params(params, self._config)
        _assign(self._neutral, params)

    def save_params(self, path) -> None:
        """Write the neutral safetensors checkpoint (tensors and config) to `path`."""
        params = {
            # NumPy has no bfloat16; float32 holds every bfloat16 value exactly.
            name: value if np.issubdtype(value.dtype, np.floating) else value.astype(np.float32)
            for name, value in self.get_params().items()
        }
        lrlc_numpy.save_params(path, params, self.lrlc_config)

    @classmethod
    def load_params(cls, path, **kwargs) -> LowRankLocallyConnected2D:
        """A built layer holding the neutral checkpoint at `path` (validated on read).

        `kwargs` are Keras/layout arguments such as `dtype`, `data_format` or `name`; without
        `dtype` the variables keep the stored dtype (spec section 13), so a save and a load
        round-trip bit-exactly."""
        params, config = lrlc_numpy.load_params(path)
        kwargs.setdefault("dtype", np.result_type(*params.values()).name)
        layer = cls.from_lrlc_config(config, **kwargs)
        layer.build(layer._input_shape())
        layer.set_params(params)
        return layer


LRLC2D = LowRankLocallyConnected2D
