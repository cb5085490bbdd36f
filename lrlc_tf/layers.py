"""Keras 3 layers: `LowRankLocallyConnected1D/2D/3D` (aliases `LRLC1D/2D/3D`) and
`LocallyConnected1D/2D/3D`, for sequences (NLC), images (NHWC) and volumes (NDHWC), or
channels first (spec section 17). Each is a thin subclass of one rank-generic base that
fixes its number of spatial axes, `spatial_dims`; the docstrings write the 2-D case.

They run under every Keras backend lrlc has (tensorflow, jax, torch): a layer owns its
variables, under the neutral names and layouts, and its call hands them to the running
backend's own implementation through `lrlc_tf.ops`. Only Keras is imported here.

Both validate their arguments with `lrlc_numpy.LRLCConfig`; arguments use the spec's names
(`out_channels`, `stride`, `dilation`, ...). `input_size` is required because the combining
weights and spatial biases live on the output grid; the channel count is taken from the
first input unless given. Both share one surface with lrlc_torch: `config`,
`from_lrlc_config`, `neutral_params`, `load_neutral_params`, and for LRLC2D the neutral
checkpoint (`save_checkpoint`, `load_checkpoint`, `from_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Mapping

import keras
import numpy as np

import lrlc_numpy
from lrlc_numpy import LRLCConfig
from lrlc_numpy.strategy import STRATEGIES

from . import ops
from .ops import DATA_FORMATS


def _variable_name(neutral_name: str) -> str:
    """The Keras variable name of a neutral parameter: the neutral name itself, except under
    the torch backend, where 'g.reduce.kernel' is 'g_reduce_kernel' and 'basis.0' 'basis_0':
    Keras registers each variable as a torch parameter, whose name cannot hold '.'."""
    if keras.backend.backend() == "torch":
        return neutral_name.replace(".", "_")
    return neutral_name


def _initializer(initial: lrlc_numpy.Initial):
    """The Keras initializer drawing `initial` (spec section 10, `lrlc_numpy.initial_value`)."""
    if initial.uniform:
        return keras.initializers.RandomUniform(minval=-initial.limit, maxval=initial.limit)
    # A float64 scalar: Keras would round a Python float to float32 before casting it.
    return keras.initializers.Constant(np.float64(initial.value))


def _invalid_argument(cls_name: str, err: Exception, given: Mapping) -> Exception:
    """`err` (from LRLCConfig) restated for the layer's constructor, in Keras's words: the
    argument, what was wrong, and the value received. Same exception type."""
    message = str(err)
    field = re.match(r"LRLCConfig\.(\w+)", message)
    if field is None or field.group(1) not in given:
        detail = message.removeprefix("LRLCConfig: ")
        return type(err)(f"Invalid arguments for {cls_name}: {detail}")
    name = field.group(1)
    return type(err)(
        f"Invalid value for argument `{name}` of {cls_name}: "
        f"{message.removeprefix('LRLCConfig.')}. Received: {name}={given[name]!r}"
    )


def _numpy(variable) -> np.ndarray:
    """A Keras variable's value as a NumPy array of its dtype: a copy, never a view of the
    variable's storage (which later training steps would change)."""
    return np.array(variable.numpy())


def _dtype_name(value) -> str:
    dtype = getattr(value, "dtype", None)
    return keras.backend.standardize_dtype(np.asarray(value).dtype if dtype is None else dtype)


def _assign(variables: Mapping, params: Mapping) -> None:
    """Assign `params[name]` (names and shapes checked already) to each of `variables`, cast
    to the variable's dtype; TypeError for a non-float value (nothing is assigned then)."""
    for name in variables:
        if not keras.backend.is_float_dtype(_dtype_name(params[name])):
            raise TypeError(
                f"params[{name!r}] must have a floating dtype, got {_dtype_name(params[name])}"
            )
    for name, variable in variables.items():
        variable.assign(keras.ops.cast(params[name], variable.dtype))


def _stored_dtype(checkpoint: lrlc_numpy.Checkpoint, path) -> str:
    """The one dtype a checkpoint's tensors are stored in; a Keras layer has one variable
    dtype, so a file mixing dtypes needs `dtype=` chosen by the caller, not a silent cast."""
    dtypes = sorted(set(checkpoint.stored_dtypes.values()))
    if len(dtypes) > 1:
        raise ValueError(
            f"checkpoint {path} holds tensors of several dtypes {dtypes}; a Keras layer keeps "
            "one, so pass dtype= (for example the widest) to load it"
        )
    return dtypes[0]


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
    # The channel count may be unknown (None) in the config; rank and combining are absent
    # for LC layers ('full' being the mode every rank has).
    parsed = LRLCConfig.from_dict(
        {"rank": 1, "combining": "full", **given, "in_channels": given["in_channels"] or 1}
    )
    out = {}
    for name in given.keys() - {"in_channels"}:
        value = getattr(parsed, name)
        out[name] = list(value.pairs) if isinstance(value, lrlc_numpy.PerBasis) else value
    return out


_TUPLE_WORDS = {1: "a 1-tuple", 2: "a pair", 3: "a triple"}


def _grid(input_size, spatial_dims: int):
    """`input_size` for a layer of `spatial_dims` axes: an int is the same size on every
    axis (LRLCConfig would read it as a 2-D grid); anything else as given."""
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        return (input_size,) * spatial_dims
    return input_size


class _WindowedLayer(keras.layers.Layer):
    """What every layer shares: the window geometry as an LRLCConfig of `spatial_dims` axes,
    data_format, input checks. Subclasses define `spatial_dims`, `_arguments()` (the
    constructor's LRLCConfig fields, as given), `_make_config(in_channels)` and
    `_create_weights()`."""

    spatial_dims = 2

    def _init_geometry(self, in_channels, data_format):
        if data_format is None:
            data_format = keras.config.image_data_format()
        if data_format not in DATA_FORMATS:
            raise ValueError(
                f"Invalid value for argument `data_format` of {type(self).__name__}: expected "
                f"one of {DATA_FORMATS}. Received: data_format={data_format!r}"
            )
        self.data_format = data_format
        self.in_channels = in_channels
        # Validate every argument now; only the channel count may wait for build(), and
        # nothing derived from this config before then depends on it.
        self._config = self._checked_config(1 if in_channels is None else in_channels)

    def _checked_config(self, in_channels) -> LRLCConfig:
        given = self._arguments()
        n, name = self.spatial_dims, type(self).__name__
        size = given["input_size"]
        if isinstance(size, (tuple, list)) and len(size) != n and len(size) in _TUPLE_WORDS:
            other = re.sub(r"\dD$", f"{len(size)}D", name)
            raise ValueError(
                f"Invalid value for argument `input_size` of {name}: a {n}-D layer takes an "
                f"int or {_TUPLE_WORDS[n]} of ints (its grid), not {len(size)}; {other} takes "
                f"a {len(size)}-D grid. Received: input_size={size!r}"
            )
        try:
            return self._make_config(in_channels)
        except (TypeError, ValueError) as err:
            given = {**given, "in_channels": in_channels}
            raise _invalid_argument(name, err, given) from None

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
        """The layout's name: NHWC or NCHW in 2-D, NLC or NCL in 1-D, NDHWC or NCDHW in 3-D."""
        last, first = lrlc_numpy.config.LAYOUTS[self.spatial_dims]
        return last if self.data_format == "channels_last" else first

    def _check_input_shape(self, shape):
        lrlc_numpy.check_input_shape(
            shape, self._config, name=f"{self.name} input", layout=self._layout
        )

    def _input_shape(self, in_channels=None):
        """The input shape this layer takes, batch unknown, in its data_format."""
        grid, c = self._config.input_size, in_channels or self._config.in_channels
        return (None, *grid, c) if self.data_format == "channels_last" else (None, c, *grid)

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.in_channels is None and len(shape) == self.spatial_dims + 2:
            channels = shape[-1 if self.data_format == "channels_last" else 1]
            if channels is None:
                raise ValueError(
                    f"{self.name}: the input's channel axis must be known to build the layer "
                    f"(input shape {shape}, {self._layout}); pass in_channels= otherwise"
                )
            self.in_channels = channels
            self._config = self._checked_config(channels)
        self._check_input_shape(shape)
        for dtype in {self.variable_dtype, self.compute_dtype}:
            ops.check_dtype(dtype, self.name)
        self._create_weights()

    def _require_built(self):
        if not self.built:
            raise ValueError(f"{self.name} has no weights yet; build it or call it on an input")

    def compute_output_shape(self, input_shape):
        if self.in_channels is not None:
            self._check_input_shape(input_shape)
        out = self._config.output_size
        c_out = self._config.out_channels
        if self.data_format == "channels_last":
            return (input_shape[0], *out, c_out)
        return (input_shape[0], c_out, *out)

    def _checked_input(self, x):
        """`x` checked in this layer's layout (rank, channels, grid, then a float dtype) and
        cast to the compute dtype."""
        self._check_input_shape(x.shape)
        if not keras.backend.is_float_dtype(_dtype_name(x)):
            raise TypeError(f"{self.name} input must have a floating dtype, got {_dtype_name(x)}")
        return keras.ops.cast(x, self.compute_dtype)

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


def _one_pair(value):
    """A Keras-style list [h, w] as the pair it means for a single window."""
    return tuple(value) if isinstance(value, list) else value


class _LocallyConnected(_WindowedLayer):
    """A locally connected layer of any rank: `LocallyConnected1D/2D/3D`."""

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
            kernel_size=_one_pair(kernel_size),
            input_size=input_size,
            stride=stride,
            dilation=_one_pair(dilation),
            padding=padding,
        )
        if not isinstance(use_bias, bool):
            raise TypeError(
                f"Invalid value for argument `use_bias` of {type(self).__name__}: expected a "
                f"bool. Received: use_bias={use_bias!r}"
            )
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

    def _arguments(self):
        return self._geometry

    def _make_config(self, in_channels):
        # The window geometry is an LRLCConfig's; the rank and modes play no part here
        # (a 1-D config has the mode 'full' only).
        size = _grid(self._geometry["input_size"], self.spatial_dims)
        modes = {"combining": "full"} if self.spatial_dims == 1 else {}
        return LRLCConfig(
            in_channels=in_channels, rank=1, **{**self._geometry, "input_size": size}, **modes
        )

    def _create_weights(self):
        config = self._config
        self.kernel = self.add_weight(
            name="kernel",
            shape=(
                *config.output_size,
                *config.kernel_size,
                config.in_channels,
                config.out_channels,
            ),
            # The LRLC basis's rule (He-uniform, fan-in kh kw C_in) on this geometry.
            initializer=_initializer(lrlc_numpy.initial_value("basis", config)),
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(*config.output_size, config.out_channels), initializer="zeros"
            )

    def call(self, inputs):
        return ops.locally_connected(
            self._checked_input(inputs),
            self.kernel,
            self.bias,
            self._config,
            data_format=self.data_format,
        )

    def get_config(self):
        return {**super().get_config(), **self._geometry_config(), "use_bias": self.use_bias}

    def _variables_by_name(self):
        return {v.name: v for v in (self.kernel, self.bias) if v is not None}

    def neutral_params(self) -> dict[str, np.ndarray]:
        """{'kernel': ..., 'bias': ...} as NumPy arrays, canonical layouts (spec section 11);
        no 'bias' without use_bias."""
        self._require_built()
        return {name: _numpy(v) for name, v in self._variables_by_name().items()}

    def load_neutral_params(self, params) -> None:
        """Assign {'kernel', 'bias'} ('bias' only with use_bias) in place; names and shapes
        must match, values be float."""
        self._require_built()
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

    get_params = _deprecated_alias("get_params", "neutral_params")
    set_params = _deprecated_alias("set_params", "load_neutral_params")


@keras.saving.register_keras_serializable(package="lrlc")
class LocallyConnected1D(_LocallyConnected):
    """A locally connected layer over a sequence: a separate filter bank at every output
    position (spec sections 11 and 17). Input (B, L, C_in) ('channels_last') or (B, C_in, L);
    weights `kernel` (L_out, k, C_in, C_out) and `bias` (L_out, C_out). Arguments as
    `LocallyConnected2D`'s; each window argument an int or a 1-tuple."""

    spatial_dims = 1


@keras.saving.register_keras_serializable(package="lrlc")
class LocallyConnected2D(_LocallyConnected):
    """A locally connected layer: a separate filter bank at every output position.

    y[b, i, j, o] = sum_{u, v, c} xpad[b, i s_h + u d_h, j s_w + v d_w, c] kernel[i, j, u, v, c, o]
    + bias[i, j, o] (spec section 11). Weights: `kernel` (H_out, W_out, kh, kw, C_in, C_out),
    initialised as the LRLC basis (He-uniform), and `bias` (H_out, W_out, C_out), zeros.
    Padding is 'valid', 'same' (TensorFlow's rule), an int, a pair or explicit pairs.
    """

    spatial_dims = 2


@keras.saving.register_keras_serializable(package="lrlc")
class LocallyConnected3D(_LocallyConnected):
    """A locally connected layer over a volume: a separate filter bank at every output
    position (spec sections 11 and 17). Input (B, D, H, W, C_in) ('channels_last') or
    (B, C_in, D, H, W); weights `kernel` (D_out, H_out, W_out, kd, kh, kw, C_in, C_out) and
    `bias` (D_out, H_out, W_out, C_out). Arguments as `LocallyConnected2D`'s; each window
    argument an int or a triple."""

    spatial_dims = 3


_LOCALLY_CONNECTED = {1: LocallyConnected1D, 2: LocallyConnected2D, 3: LocallyConnected3D}


class _LowRankLocallyConnected(_WindowedLayer):
    """A low-rank locally connected layer of any rank: `LowRankLocallyConnected1D/2D/3D`."""

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
        if strategy not in STRATEGIES:
            raise ValueError(
                f"Invalid value for argument `strategy` of {type(self).__name__}: unknown "
                f"strategy {strategy!r}; expected one of {STRATEGIES}. Received: "
                f"strategy={strategy!r}"
            )
        if strategy == "lc" and self._config.input_dependent:
            raise ValueError(
                f"Invalid value for argument `strategy` of {type(self).__name__}: "
                "strategy='lc' needs fixed combining weights; an input-dependent layer has "
                "one filter bank per example and position, so it runs Algorithm 1 "
                "(strategy='conv' or 'auto')"
            )
        self.strategy = strategy

    def _arguments(self):
        return self._options

    def _make_config(self, in_channels):
        size = _grid(self._options["input_size"], self.spatial_dims)
        return LRLCConfig(in_channels=in_channels, **{**self._options, "input_size": size})

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
                name=_variable_name(name),
                shape=shape,
                initializer=_initializer(lrlc_numpy.initial_value(name, self._config)),
            )
            for name, shape in lrlc_numpy.param_shapes(self._config).items()
        }

    def call(self, inputs):
        return ops.forward(
            self._checked_input(inputs),
            self._neutral,
            self._config,
            strategy=self.strategy,
            data_format=self.data_format,
        )

    def get_config(self):
        fields = {**self._config.to_dict(), "in_channels": self.in_channels}
        return {
            **super().get_config(),
            **fields,
            "data_format": self.data_format,
            "strategy": self.strategy,
        }

    def neutral_variables(self) -> dict:
        """The layer's Keras variables by neutral name (for gradients by neutral name)."""
        self._require_built()
        return dict(self._neutral)

    # -----------------------------------------------------------------------------------------
    # Combining weights and the locally connected form (spec section 11)

    def combining_weights(self, x=None):
        """Normalised combining weights w (eq. 4): (H_out, W_out, K), or (B, H_out, W_out, K)
        predicted from `x` (in this layer's data_format) for an input-dependent layer."""
        self._require_built()
        x = None if x is None else self._checked_input(x)
        return ops.combining_weights(self._neutral, self._config, x, data_format=self.data_format)

    def locally_connected_kernel(self, x=None):
        """(kernel, bias) of the equivalent locally connected layer, canonical layouts:
        kernel (H_out, W_out, kh, kw, C_in, C_out), or one per example of `x` for an
        input-dependent layer; bias (H_out, W_out, C_out). A mixed basis converts on the
        window of `config.locally_connected_config()`. In the variables' dtype without `x`,
        in the compute dtype with it."""
        self._require_built()
        x = None if x is None else self._checked_input(x)
        return ops.to_locally_connected(
            self._neutral, self._config, x, data_format=self.data_format
        )

    def to_locally_connected(self) -> _LocallyConnected:
        """A built `LocallyConnected2D` (1D, 3D for those ranks) with the same outputs (fixed
        combining weights only:
        an input-dependent layer has one kernel per example, see `locally_connected_kernel`)."""
        if self._config.input_dependent:
            raise ValueError(
                f"{self.name} is input-dependent, so its locally connected kernel differs per "
                "example; use locally_connected_kernel(x)"
            )
        kernel, bias = self.locally_connected_kernel()
        config = self.config
        layer = _LOCALLY_CONNECTED[self.spatial_dims].from_lrlc_config(
            config.locally_connected_config(),
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
        return {name: _numpy(variable) for name, variable in self._neutral.items()}

    def load_neutral_params(self, params) -> None:
        """Assign neutral-named arrays in place; names, shapes and a float dtype are checked."""
        self._require_built()
        lrlc_numpy.check_params(params, self._config)
        _assign(self._neutral, params)

    def save_checkpoint(self, path) -> None:
        """Write the neutral safetensors checkpoint (tensors, each in the variables' dtype,
        and the config) to `path`."""
        lrlc_numpy.save_params(path, self.neutral_params(), self.config)

    def load_checkpoint(self, path) -> None:
        """Load the neutral checkpoint at `path` into this layer, building it first if needed.

        The file's config must equal this layer's (ValueError naming both); values are cast
        to the variables' dtype.
        """
        params, config, _ = lrlc_numpy.read_checkpoint(path)
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
    def from_checkpoint(cls, path, **kwargs) -> _LowRankLocallyConnected:
        """A new built layer holding the neutral checkpoint at `path` (validated on read).

        `kwargs` are Keras/layout arguments such as `dtype`, `data_format` or `name`; without
        `dtype` the variables take the stored dtype (spec section 13), so a save and a load
        round-trip bit-exactly (a file mixing dtypes needs `dtype`)."""
        checkpoint = lrlc_numpy.read_checkpoint(path)
        if "dtype" not in kwargs:
            kwargs["dtype"] = _stored_dtype(checkpoint, path)
        layer = cls.from_lrlc_config(checkpoint.config, **kwargs)
        layer.build(layer._input_shape())
        layer.load_neutral_params(checkpoint.params)
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


@keras.saving.register_keras_serializable(package="lrlc")
class LowRankLocallyConnected1D(_LowRankLocallyConnected):
    """Low-rank locally connected layer over a sequence (spec section 17): as
    `LowRankLocallyConnected2D` on input (B, L, C_in) ('channels_last') or (B, C_in, L).
    One spatial axis has one combining mode, so `combining='full'` must be given (spec
    section 17.2); weights `basis` (K, k, C_in, C_out), `logits` (L_out, K), ...."""

    spatial_dims = 1


@keras.saving.register_keras_serializable(package="lrlc")
class LowRankLocallyConnected2D(_LowRankLocallyConnected):
    """Low-rank locally connected layer (paper eqs. 2-6; spec sections 4-8).

    K basis filter banks F^(k), combined at each output position by normalised weights w
    (fixed, or predicted from the input when `input_dependent=True`), plus spatial and
    channel biases; evaluated by Algorithm 1 or, for fixed weights, in the locally
    connected form (`strategy`: 'auto' lets the running backend's cost rule choose, with
    an unknown batch counted as large). Arguments are `lrlc_numpy.LRLCConfig`'s (a list
    `kernel_size` or `dilation` is one entry per basis: a mixed basis), plus `data_format`
    ('channels_last', the default, or 'channels_first'), `strategy` and Keras's arguments.

    Weights carry the neutral shapes and names (`basis`, `row_logits`, ...,
    `g.reduce.kernel`; under the torch backend, whose parameter names cannot hold '.',
    `g_reduce_kernel`), and are exchanged under the neutral names by `neutral_params`,
    `load_neutral_params` and the neutral checkpoint.
    """

    spatial_dims = 2


@keras.saving.register_keras_serializable(package="lrlc")
class LowRankLocallyConnected3D(_LowRankLocallyConnected):
    """Low-rank locally connected layer over a volume (spec section 17): as
    `LowRankLocallyConnected2D` on input (B, D, H, W, C_in) ('channels_last') or
    (B, C_in, D, H, W). 'rowcol' has one logit table and bias vector per axis
    (`depth_logits`, `row_logits`, `col_logits`, ...); weights `basis` (K, kd, kh, kw, C_in,
    C_out)."""

    spatial_dims = 3


LRLC1D = LowRankLocallyConnected1D
LRLC2D = LowRankLocallyConnected2D
LRLC3D = LowRankLocallyConnected3D
