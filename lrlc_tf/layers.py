"""Keras 3 layers: `LowRankLocallyConnected2D` (alias `LRLC2D`) and `LocallyConnected2D`.

Both validate their arguments with `lrlc_numpy.LRLCConfig` and compute with
`lrlc_tf.functional`. Arguments use the spec's names (`out_channels`, `stride`,
`dilation`, ...). `input_size` is required because the combining weights and spatial
biases live on the output grid; the channel count is taken from the first input unless
given. Both share one surface with lrlc_torch: `config`, `from_lrlc_config`,
`neutral_params`, `load_neutral_params`, and for LRLC2D the neutral checkpoint
(`save_checkpoint`, `load_checkpoint`, `from_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf

import lrlc_numpy
from lrlc_numpy import LRLCConfig

from . import checkpoint, functional
from .costs import choose_strategy

DATA_FORMATS = ("channels_last", "channels_first")


def _initializer(initial: lrlc_numpy.Initial):
    """The Keras initializer drawing `initial` (spec section 10, `lrlc_numpy.initial_value`)."""
    if initial.uniform:
        return keras.initializers.RandomUniform(minval=-initial.limit, maxval=initial.limit)
    # A float64 scalar: Keras would round a Python float to float32 before casting it.
    return keras.initializers.Constant(np.float64(initial.value))


_DEPRECATED = set()


def _deprecated_alias(old: str, new: str, kind: str = "method", note: str = ""):
    """A class attribute `old` that warns (DeprecationWarning naming `new`) and then does what
    `new` does; `kind` is 'method', 'classmethod' or 'property'."""
    _DEPRECATED.add(old)

    def target(owner):  # warns at the caller of `alias` or of the property
        cls = owner if isinstance(owner, type) else type(owner)
        warnings.warn(
            f"{cls.__name__}.{old} is deprecated; use {new} instead{note}",
            DeprecationWarning,
            stacklevel=3,
        )
        return getattr(owner, new)

    if kind == "property":
        # A lambda, not `target` itself, so that the caller is as many frames up as alias's.
        return property(lambda self: target(self), doc=f"Deprecated alias of `{new}`.")

    def alias(owner, *args, **kwargs):
        return target(owner)(*args, **kwargs)

    alias.__name__, alias.__doc__ = old, f"Deprecated alias of `{new}`."
    return classmethod(alias) if kind == "classmethod" else alias


def _json_fields(config: Mapping) -> dict:
    """The LRLCConfig fields of a Keras config as constructor arguments. JSON has no tuples,
    so they are read by `LRLCConfig.from_dict`'s rule: [3, 3] is one pair, a list of pairs
    one entry per basis (the constructor, like LRLCConfig, reads a list as per basis)."""
    given = {f.name: config[f.name] for f in dataclasses.fields(LRLCConfig) if f.name in config}
    # The channel count may be unknown (None) in the config; rank is absent for LC layers.
    parsed = LRLCConfig.from_dict({"rank": 1, **given, "in_channels": given["in_channels"] or 1})
    out = {}
    for name in given.keys() - {"in_channels"}:
        value = getattr(parsed, name)
        out[name] = list(value.pairs) if isinstance(value, lrlc_numpy.PerBasis) else value
    return out


class _WindowedLayer(keras.layers.Layer):
    """What both layers share: the window geometry as an LRLCConfig, data_format, input
    checks. Subclasses define `_make_config(in_channels)` and `_create_weights()`."""

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

    def __dir__(self):
        # Keras's .keras saver reads every attribute dir() lists: deprecated aliases stay out
        # of it (and of tab completion), so that saving a model does not warn.
        return [name for name in super().__dir__() if name not in _DEPRECATED]

    @classmethod
    def from_config(cls, config):
        return super().from_config({**config, **_json_fields(config)})

    @property
    def config(self) -> LRLCConfig:
        """The layer's LRLCConfig (available once the channel count is known)."""
        if self.in_channels is None:
            raise ValueError(
                f"{self.name}: in_channels is not known before the layer is built; "
                "pass in_channels= or call the layer on an input first"
            )
        return self._config

    @property
    def _layout(self):
        return "NHWC" if self.data_format == "channels_last" else "NCHW"

    def _check_input_shape(self, shape):
        lrlc_numpy.check_input_shape(
            shape, self._config, name=f"{self.name} input", layout=self._layout
        )

    def _input_shape(self, in_channels=None):
        """The input shape this layer takes, batch unknown, in its data_format."""
        (h, w), c = self._config.input_size, in_channels or self._config.in_channels
        return (None, h, w, c) if self.data_format == "channels_last" else (None, c, h, w)

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.in_channels is None and len(shape) == 4:
            channel_axis = 3 if self.data_format == "channels_last" else 1
            self.in_channels = shape[channel_axis]
            self._config = self._make_config(self.in_channels)
        self._check_input_shape(shape)
        self._create_weights()

    def _require_built(self):
        if not self.built:
            raise ValueError(f"{self.name} has no weights yet; build it or call it on an input")

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
    initialised as the LRLC basis (He-uniform), and `bias` (H_out, W_out, C_out), zeros.
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

    @classmethod
    def from_lrlc_config(cls, config: LRLCConfig, **kwargs):
        """A layer on `config`'s geometry (channels, window, grid, stride, dilation, padding);
        the LRLC-only fields play no part. `kwargs`: `use_bias`, `data_format`, Keras's."""
        if not isinstance(config, LRLCConfig):
            raise TypeError(f"expected an LRLCConfig, got {type(config).__name__}")
        geometry = ("in_channels", "input_size", "stride", "dilation", "padding")
        return cls(
            config.out_channels,
            config.kernel_size,
            **{name: getattr(config, name) for name in geometry},
            **kwargs,
        )

    def _make_config(self, in_channels):
        # The window geometry is an LRLCConfig's; the rank plays no part here.
        return LRLCConfig(in_channels=in_channels, rank=1, **self._geometry)

    def _create_weights(self):
        config = self._config
        kh, kw = config.kernel_size
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*config.output_size, kh, kw, config.in_channels, config.out_channels),
            # The LRLC basis's rule (He-uniform, fan-in kh kw C_in) on this geometry.
            initializer=_initializer(lrlc_numpy.initial_value("basis", config)),
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

    def neutral_params(self) -> dict[str, np.ndarray]:
        """{'kernel': ..., 'bias': ...} as NumPy arrays, canonical layouts (spec section 11);
        no 'bias' without use_bias."""
        return checkpoint.neutral_params(self._variables_by_name())

    def load_neutral_params(self, params) -> None:
        """Assign {'kernel', 'bias'} ('bias' only with use_bias) in place; names and shapes
        must match, values be float."""
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
        checkpoint.assign(variables, params)

    get_params = _deprecated_alias("get_params", "neutral_params")
    set_params = _deprecated_alias("set_params", "load_neutral_params")


@keras.saving.register_keras_serializable(package="lrlc")
class LowRankLocallyConnected2D(_WindowedLayer):
    """Low-rank locally connected layer (paper eqs. 2-6; spec sections 4-8).

    K basis filter banks F^(k), combined at each output position by normalised weights w
    (fixed, or predicted from the input when `input_dependent=True`), plus spatial and
    channel biases; evaluated by Algorithm 1 or, for fixed weights, in the locally
    connected form (`strategy`; see `lrlc_tf.costs.choose_strategy`). Arguments are
    `lrlc_numpy.LRLCConfig`'s, plus `data_format` ('channels_last', the default, or
    'channels_first'), `strategy` and Keras's layer arguments.

    Weights carry the neutral names and shapes (`basis`, `row_logits`, ...,
    `g.reduce.kernel`), exchanged by `neutral_params`/`load_neutral_params` and the
    neutral checkpoint.
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
        choose_strategy(self._config, None, strategy)  # rejects unknown or unfit
        self.strategy = strategy

    def _make_config(self, in_channels):
        return LRLCConfig(in_channels=in_channels, **self._options)

    @classmethod
    def from_lrlc_config(cls, config: LRLCConfig, **kwargs):
        """A layer with the hyper-parameters of `config` (Keras arguments in `kwargs`)."""
        if not isinstance(config, LRLCConfig):
            raise TypeError(f"expected an LRLCConfig, got {type(config).__name__}")
        fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        return cls(**fields, **kwargs)

    def _create_weights(self):
        self._neutral = {
            name: self.add_weight(
                name=name,
                shape=shape,
                initializer=_initializer(lrlc_numpy.initial_value(name, self._config)),
            )
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

    def combining_weights(self, x=None):
        """Normalised combining weights w (eq. 4): (H_out, W_out, K), or (B, H_out, W_out, K)
        predicted from `x` (in this layer's data_format) for an input-dependent layer."""
        self._require_built()
        x = None if x is None else self._to_nhwc(x)
        return functional.combining_weights(self._neutral, self._config, x)

    def locally_connected_kernel(self, x=None):
        """(kernel, bias) of the equivalent locally connected layer, canonical layouts:
        kernel (H_out, W_out, kh, kw, C_in, C_out), or one per example of `x` for an
        input-dependent layer; bias (H_out, W_out, C_out). In the variables' dtype without
        `x`, in the compute dtype with it."""
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
        config = self.config
        layer = LocallyConnected2D.from_lrlc_config(
            config,
            use_bias=config.spatial_bias or config.channel_bias,
            data_format=self.data_format,
            dtype=self.dtype_policy,
        )
        layer.build(self._input_shape())
        layer.kernel.assign(kernel)
        if layer.bias is not None:
            layer.bias.assign(bias)
        return layer

    # -----------------------------------------------------------------------------------------
    # Neutral parameters and checkpoints (spec sections 9 and 13)

    def neutral_params(self) -> dict[str, np.ndarray]:
        """The weights as NumPy arrays under their neutral names (canonical layouts)."""
        self._require_built()
        return checkpoint.neutral_params(self._neutral)

    def load_neutral_params(self, params) -> None:
        """Assign neutral-named arrays in place; names, shapes and a float dtype are checked."""
        self._require_built()
        lrlc_numpy.check_params(params, self._config)
        checkpoint.assign(self._neutral, params)

    def save_checkpoint(self, path) -> None:
        """Write the neutral safetensors checkpoint (tensors and config) to `path`."""
        self._require_built()
        checkpoint.save_checkpoint(path, self._neutral, self.config)

    def load_checkpoint(self, path) -> None:
        """Load the neutral checkpoint at `path` into this layer, building it first if needed.

        The file's config must equal this layer's (ValueError naming both); values are cast
        to the variables' dtype.
        """
        params, config = checkpoint.load_checkpoint(path)
        mine = self._config if self.in_channels else self._make_config(config.in_channels)
        if config != mine:
            raise ValueError(
                f"{self.name}: checkpoint {path} holds a layer with config {config}, which "
                f"differs from this layer's config {mine}"
            )
        if not self.built:
            self.build(self._input_shape(config.in_channels))
        self.load_neutral_params(params)

    @classmethod
    def from_checkpoint(cls, path, **kwargs) -> LowRankLocallyConnected2D:
        """A new built layer holding the neutral checkpoint at `path` (validated on read).

        `kwargs` are Keras/layout arguments such as `dtype`, `data_format` or `name`; without
        `dtype` the variables keep the stored dtype (spec section 13), so a save and a load
        round-trip bit-exactly."""
        params, config = checkpoint.load_checkpoint(path)
        kwargs.setdefault("dtype", checkpoint.stored_dtype(params))
        layer = cls.from_lrlc_config(config, **kwargs)
        layer.build(layer._input_shape())
        layer.load_neutral_params(params)
        return layer

    lrlc_config = _deprecated_alias("lrlc_config", "config", kind="property")
    get_params = _deprecated_alias("get_params", "neutral_params")
    set_params = _deprecated_alias("set_params", "load_neutral_params")
    save_params = _deprecated_alias("save_params", "save_checkpoint")
    load_params = _deprecated_alias(
        "load_params",
        "from_checkpoint",
        kind="classmethod",
        note=" (it returns a new layer and never changed the layer it was called on; "
        "load_checkpoint loads into this layer)",
    )


LRLC2D = LowRankLocallyConnected2D
