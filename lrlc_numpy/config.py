"""The layer configuration shared by every lrlc package (spec section 2, "Configuration").

`LRLCConfig` validates itself on construction: every later function may assume a
well-formed configuration and only has to check arrays against it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping

COMBINING_MODES = ("rowcol", "full", "row", "col")
NORMALIZATIONS = ("softmax", "l2", "none")
# Dilation rates of the input-dependent network's parallel branches (spec section 8).
G_DILATIONS = (1, 2, 4, 8)


def _pair(name, value):
    """An int or a pair of ints, as a pair of positive ints."""
    if isinstance(value, bool):
        raise TypeError(f"LRLCConfig.{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        value = (value, value)
    try:
        pair = tuple(value)
    except TypeError:
        raise TypeError(
            f"LRLCConfig.{name} must be an int or a pair of ints, got {value!r}"
        ) from None
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"LRLCConfig.{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < 1:
        raise ValueError(f"LRLCConfig.{name} must be positive, got {value!r}")
    return pair


def _is_nonneg_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _normalize_padding(padding):
    """Padding as 'valid', 'same' or ((top, bottom), (left, right)); raises on anything else."""
    expected = (
        "'valid', 'same', an int, a pair (pad_h, pad_w) or ((top, bottom), (left, right)) "
        "of non-negative ints"
    )
    if isinstance(padding, str):
        if padding.lower() in ("valid", "same"):
            return padding.lower()
        raise ValueError(f"LRLCConfig.padding: unknown padding {padding!r}; expected {expected}")
    if _is_nonneg_int(padding):
        return ((padding, padding), (padding, padding))
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        if all(_is_nonneg_int(p) for p in padding):
            return ((padding[0], padding[0]), (padding[1], padding[1]))
        if all(
            isinstance(p, (tuple, list)) and len(p) == 2 and all(_is_nonneg_int(q) for q in p)
            for p in padding
        ):
            return (tuple(padding[0]), tuple(padding[1]))
    raise ValueError(f"LRLCConfig.padding: got {padding!r}; expected {expected}")


def resolve_padding(padding, input_size, kernel_size, stride, dilation):
    """Explicit ((top, bottom), (left, right)) padding (spec section 3).

    'same' is TensorFlow's rule for every stride: per axis,
    total = max((ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0) and top = total // 2.
    """
    padding = _normalize_padding(padding)
    if padding == "valid":
        return ((0, 0), (0, 0))
    if padding == "same":
        pairs = []
        for n, k, s, d in zip(input_size, kernel_size, stride, dilation):
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            pairs.append((total // 2, total - total // 2))
        return tuple(pairs)
    return padding


def output_size(input_size, padding_pairs, kernel_size, stride, dilation):
    """Output grid of a strided, dilated window: (n + pads - (k - 1) * d - 1) // s + 1."""
    return tuple(
        (n + lo + hi - (k - 1) * d - 1) // s + 1
        for n, (lo, hi), k, s, d in zip(input_size, padding_pairs, kernel_size, stride, dilation)
    )


@dataclasses.dataclass(frozen=True)
class LRLCConfig:
    """Hyper-parameters of one low-rank locally connected layer.

    Pairs given as a single int are stored as pairs; padding is stored as 'valid',
    'same' or ((top, bottom), (left, right)). See spec section 2.
    """

    in_channels: int
    out_channels: int
    kernel_size: int | tuple[int, int]
    rank: int
    input_size: tuple[int, int]
    stride: int | tuple[int, int] = 1
    dilation: int | tuple[int, int] = 1
    padding: str | int | tuple = "valid"
    combining: str = "rowcol"
    normalize: str = "softmax"
    spatial_bias: bool = True
    channel_bias: bool = True
    input_dependent: bool = False

    def __post_init__(self):
        for name in ("in_channels", "out_channels", "rank"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"LRLCConfig.{name} must be an int, got {value!r}")
            if value < 1:
                raise ValueError(f"LRLCConfig.{name} must be >= 1, got {value!r}")
        for name in ("kernel_size", "stride", "dilation", "input_size"):
            object.__setattr__(self, name, _pair(name, getattr(self, name)))
        object.__setattr__(self, "padding", _normalize_padding(self.padding))
        if self.combining not in COMBINING_MODES:
            raise ValueError(
                f"LRLCConfig.combining: unknown mode {self.combining!r}; "
                f"expected one of {COMBINING_MODES}"
            )
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(
                f"LRLCConfig.normalize: unknown normalisation {self.normalize!r}; "
                f"expected one of {NORMALIZATIONS}"
            )
        for name in ("spatial_bias", "channel_bias", "input_dependent"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"LRLCConfig.{name} must be a bool, got {getattr(self, name)!r}")
        if self.input_dependent and self.combining != "full":
            raise ValueError(
                f"LRLCConfig.combining: input_dependent=True requires combining='full', "
                f"got {self.combining!r}"
            )
        out_h, out_w = self.output_size
        if out_h < 1 or out_w < 1:
            raise ValueError(
                f"LRLCConfig: input_size {self.input_size} with kernel_size {self.kernel_size}, "
                f"dilation {self.dilation}, stride {self.stride} and padding {self.padding!r} "
                f"gives an empty output grid {(out_h, out_w)}"
            )

    # Derived quantities (spec section 3).

    @property
    def padding_pairs(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """The explicit ((top, bottom), (left, right)) padding; 'same' follows TensorFlow."""
        return resolve_padding(
            self.padding, self.input_size, self.kernel_size, self.stride, self.dilation
        )

    @property
    def output_size(self) -> tuple[int, int]:
        """(H_out, W_out), the grid the combining weights and spatial biases live on."""
        return output_size(
            self.input_size, self.padding_pairs, self.kernel_size, self.stride, self.dilation
        )

    @property
    def g_dilations(self) -> tuple[int, ...]:
        """Active dilation rates r of the input-dependent network: r <= (min(H, W) - 1) // 2."""
        limit = (min(self.input_size) - 1) // 2
        return tuple(r for r in G_DILATIONS if r <= limit)

    # Serialisation (spec section 13).

    def to_dict(self) -> dict:
        """JSON-ready dict with pairs as lists."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, tuple):
                value = json.loads(json.dumps(value))
            out[field.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> LRLCConfig:
        """Inverse of `to_dict`; unknown or missing keys are errors."""
        if not isinstance(data, Mapping):
            raise TypeError(f"LRLCConfig.from_dict expects a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"LRLCConfig: unknown fields {unknown}; expected a subset of {sorted(names)}"
            )
        kwargs = {}
        for key, value in data.items():
            if isinstance(value, list):
                value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
            kwargs[key] = value
        try:
            return cls(**kwargs)
        except TypeError as err:
            if "missing" in str(err):
                raise ValueError(f"LRLCConfig: {err}") from None
            raise

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LRLCConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"LRLCConfig: config is not valid JSON ({err})") from None
        return cls.from_dict(data)


def param_shapes(config: LRLCConfig) -> dict[str, tuple[int, ...]]:
    """Neutral parameter names and shapes for `config` (spec section 9)."""
    k = config.rank
    kh, kw = config.kernel_size
    out_h, out_w = config.output_size
    shapes = {"basis": (k, kh, kw, config.in_channels, config.out_channels)}
    has_row = config.combining in ("rowcol", "row")
    has_col = config.combining in ("rowcol", "col")
    if not config.input_dependent:
        if has_row:
            shapes["row_logits"] = (out_h, k)
        if has_col:
            shapes["col_logits"] = (out_w, k)
        if config.combining == "full":
            shapes["logits"] = (out_h, out_w, k)
    if config.spatial_bias:
        if has_row:
            shapes["row_bias"] = (out_h,)
        if has_col:
            shapes["col_bias"] = (out_w,)
        if config.combining == "full":
            shapes["spatial_bias"] = (out_h, out_w)
    if config.channel_bias:
        shapes["channel_bias"] = (config.out_channels,)
    if config.input_dependent:
        n = len(config.g_dilations)
        shapes["g.reduce.kernel"] = (config.in_channels, k)
        shapes["g.reduce.bias"] = (k,)
        for r in config.g_dilations:
            shapes[f"g.dilated{r}.kernel"] = (3, 3, k)
            shapes[f"g.dilated{r}.bias"] = (k,)
        shapes["g.squeeze.kernel"] = ((n + 2) * k, 3 * k)
        shapes["g.squeeze.bias"] = (3 * k,)
        shapes["g.excite.kernel"] = (3 * k, 6 * k)
        shapes["g.excite.bias"] = (6 * k,)
        shapes["g.project.kernel"] = (6 * k, k)
        shapes["g.project.bias"] = (k,)
    return shapes


def check_params(params: Mapping, config: LRLCConfig, *, what: str = "params") -> None:
    """Raise ValueError unless `params` has exactly the names and shapes `config` needs."""
    if not isinstance(params, Mapping):
        raise TypeError(f"{what} must be a mapping of name -> array, got {type(params).__name__}")
    expected = param_shapes(config)
    missing = sorted(set(expected) - set(params))
    extra = sorted(set(params) - set(expected))
    if missing or extra:
        raise ValueError(
            f"{what}: missing tensors {missing}, unexpected tensors {extra}; "
            f"expected exactly {sorted(expected)}"
        )
    for name, shape in expected.items():
        got = tuple(getattr(params[name], "shape", ()))
        if got != shape:
            raise ValueError(f"{what}[{name!r}] has shape {got}; expected {shape}")


def check_input_shape(shape, config: LRLCConfig, *, name: str = "x", layout: str = "NHWC") -> None:
    """Raise ValueError unless `shape` is a rank-4 input with `config`'s channels and grid.

    Reads the shape only, so framework backends can call it on tensors or tracers;
    `layout` is 'NHWC' or 'NCHW' (the caller's native layout, named in the message).
    """
    shape = tuple(shape)
    if len(shape) != 4:
        raise ValueError(f"{name} must have rank 4 ({layout}), got shape {shape}")
    if layout == "NHWC":
        channels, grid = shape[3], shape[1:3]
    elif layout == "NCHW":
        channels, grid = shape[1], shape[2:4]
    else:
        raise ValueError(f"layout must be 'NHWC' or 'NCHW', got {layout!r}")
    if channels != config.in_channels:
        raise ValueError(
            f"{name} has {channels} channels (shape {shape}, {layout}); "
            f"expected in_channels={config.in_channels}"
        )
    if tuple(grid) != config.input_size:
        raise ValueError(
            f"{name} has spatial size {tuple(grid)} (shape {shape}, {layout}); "
            f"the layer was built for input_size={config.input_size}"
        )


def lc_shapes(config: LRLCConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Canonical shapes of the locally connected kernel (H_out, W_out, kh, kw, C_in, C_out)
    and bias (H_out, W_out, C_out) on `config`'s geometry (spec section 11)."""
    out_h, out_w = config.output_size
    kh, kw = config.kernel_size
    kernel = (out_h, out_w, kh, kw, config.in_channels, config.out_channels)
    return kernel, (out_h, out_w, config.out_channels)


def check_lc_shapes(
    kernel_shape, bias_shape, config: LRLCConfig, *, batch=None, expected=None
) -> bool:
    """Raise ValueError unless a locally connected kernel and bias fit `config`; returns
    whether the kernel is per example (a leading batch axis of size `batch`).

    Shapes only, so every backend calls it on tensors or tracers. `bias_shape` None means no
    bias; an unknown `batch` (None, or None in the kernel's leading axis) is not compared.
    `expected` replaces the canonical (kernel, bias) shapes by a backend's native ones.
    """
    shared, bias = expected if expected is not None else lc_shapes(config)
    kernel_shape = tuple(kernel_shape)
    per_example = len(kernel_shape) == len(shared) + 1
    lead = kernel_shape[0] if per_example else None
    if (
        len(kernel_shape) not in (len(shared), len(shared) + 1)
        or kernel_shape[len(kernel_shape) - len(shared) :] != shared
        or (per_example and None not in (lead, batch) and lead != batch)
    ):
        per = (batch if batch is not None else "B", *shared)
        raise ValueError(
            f"locally connected kernel has shape {kernel_shape}; expected {shared} or "
            f"({', '.join(map(str, per))}) (one per example)"
        )
    if bias_shape is not None and tuple(bias_shape) != bias:
        raise ValueError(f"locally connected bias has shape {tuple(bias_shape)}; expected {bias}")
    return per_example


def working_dtype_name(dtype_name: str) -> str:
    """The dtype in which sums and normalisations run for values of dtype `dtype_name`:
    float32 for the 16-bit floats (whose range underflows the l2 floor and whose sums lose
    precision), the dtype itself otherwise (spec section 15.4)."""
    return "float32" if dtype_name in ("float16", "bfloat16") else dtype_name
