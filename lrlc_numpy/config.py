"""The layer configuration shared by every lrlc package (spec section 2, "Configuration").

`LRLCConfig` validates itself on construction: every later function may assume a
well-formed configuration and only has to check arrays against it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import NamedTuple

COMBINING_MODES = ("rowcol", "full", "row", "col")
NORMALIZATIONS = ("softmax", "l2", "none")
# Dilation rates of the input-dependent network's parallel branches (spec section 8).
G_DILATIONS = (1, 2, 4, 8)
# The fields a mixed basis gives per basis filter bank (spec section 16).
PER_BASIS_FIELDS = ("kernel_size", "dilation")
# Spatial ranks a layer may have (spec section 17): sequences, images, volumes.
SPATIAL_DIMS = (1, 2, 3)
# Names of the spatial axes that 'rowcol' gives one logit table and one bias vector each.
AXIS_NAMES = {2: ("row", "col"), 3: ("depth", "row", "col")}
# Canonical (channels-last) and channels-first layout names per spatial rank.
LAYOUTS = {1: ("NLC", "NCL"), 2: ("NHWC", "NCHW"), 3: ("NDHWC", "NCDHW")}


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def check_config(config, where: str) -> None:
    """Raise TypeError unless `config` is an LRLCConfig; `where` names the caller (spec
    section 14). A dict is the common mistake, so its message says how to build one."""
    if isinstance(config, LRLCConfig):
        return
    if isinstance(config, Mapping):
        raise TypeError(
            f"{where}: config must be an LRLCConfig, got a {type(config).__name__}; build one "
            "with LRLCConfig(**config) or LRLCConfig.from_dict(config)"
        )
    raise TypeError(f"{where}: config must be an LRLCConfig, got {type(config).__name__}")


def _tuple_words(n):
    return {1: "a 1-tuple", 2: "a pair", 3: "a triple"}.get(n, f"a {n}-tuple")


def _pair(name, value, owner="LRLCConfig", n=2):
    """An int or an n-tuple (tuple or list) of ints, as n positive ints (a pair in 2-D).
    Other iterables (strings, sets, dicts, arrays) are refused: their order or items would
    be guessed."""
    words = _tuple_words(n)
    expected = f"{owner}.{name} must be an int or {words} of ints, got {value!r}"
    if name in PER_BASIS_FIELDS and owner == "LRLCConfig":
        expected = (
            f"{owner}.{name} must be an int, {words} of ints or a list of one int or "
            f"{words[2:]} per basis filter bank, got {value!r}"
        )
    if _is_int(value):
        value = (value,) * n
    if not isinstance(value, (tuple, list)) or len(value) != n or not all(map(_is_int, value)):
        raise TypeError(expected)
    if min(value) < 1:
        raise ValueError(f"{owner}.{name} must be positive, got {value!r}")
    return tuple(value)


class PerBasis:
    """A `kernel_size` or `dilation` given per basis filter bank: one (h, w) pair per basis
    (spec section 16; one n-tuple per basis in n spatial dimensions). `pairs` is the tuple of
    K entries.

    Deliberately not a sequence: unpacking (`kh, kw = config.kernel_size`), indexing,
    iteration and `np.asarray` raise TypeError, so code written for one shared window fails
    loudly on a mixed config instead of reading two bases' pairs as (kh, kw). Read
    `config.kernel_sizes` and `config.dilations` (K pairs, for every config) instead.
    """

    __slots__ = ("name", "pairs")

    def __init__(self, pairs, name="kernel_size"):
        object.__setattr__(self, "pairs", tuple(tuple(pair) for pair in pairs))
        object.__setattr__(self, "name", name)

    def __setattr__(self, name, value):
        raise AttributeError("PerBasis is immutable")

    def _misuse(self, *args, **kwargs):
        raise TypeError(
            f"LRLCConfig.{self.name} is per basis (a mixed basis of {len(self.pairs)} filter "
            f"banks: {self!r}), not one (h, w) pair; read config.{self.name}s[k] for basis k, "
            "or config.locally_connected_config() for the window covering them all"
        )

    __iter__ = __getitem__ = __array__ = _misuse

    def __eq__(self, other):
        return isinstance(other, PerBasis) and self.pairs == other.pairs

    def __hash__(self):
        return hash(self.pairs)

    def __repr__(self):
        return f"PerBasis({self.pairs!r})"

    def __reduce__(self):
        return (PerBasis, (self.pairs, self.name))


def _given_per_basis(value) -> bool:
    """A list (as in the authors' layer), or a tuple holding tuples, is one entry per basis;
    a tuple of ints is always one entry shared by every basis."""
    if isinstance(value, (list, PerBasis)):
        return True
    return isinstance(value, tuple) and any(isinstance(v, (tuple, list)) for v in value)


def _per_basis_pairs(name, value, n=2):
    """The entries of a per-basis `value` as positive n-tuples; raises naming the bad entry."""
    if isinstance(value, PerBasis):
        if any(len(entry) != n for entry in value.pairs):
            raise TypeError(
                f"LRLCConfig.{name}: {value!r} has entries of length other than the layer's "
                f"{n} spatial dimensions"
            )
        return value.pairs
    pairs = []
    for index, entry in enumerate(value):
        expected = (
            f"LRLCConfig.{name}[{index}] must be a positive int or {_tuple_words(n)} of "
            f"positive ints (one entry per basis filter bank), got {entry!r} in {value!r}"
        )
        if _is_int(entry):
            entry = (entry,) * n
        if not (isinstance(entry, (tuple, list)) and len(entry) == n and all(map(_is_int, entry))):
            raise TypeError(expected)
        if min(entry) < 1:
            raise ValueError(expected)
        pairs.append(tuple(entry))
    return tuple(pairs)


def _is_nonneg_int(v):
    return _is_int(v) and v >= 0


def _normalize_padding(padding, owner="LRLCConfig", n=2):
    """Padding as 'valid', 'same' or n (before, after) pairs, ((top, bottom), (left, right))
    in 2-D; raises on anything else."""
    if n == 2:
        expected = (
            "'valid', 'same', an int, a pair (pad_h, pad_w) or ((top, bottom), (left, right)) "
            "of non-negative ints"
        )
    else:
        expected = (
            f"'valid', 'same', an int, {_tuple_words(n)} of ints (one per axis) or {n} "
            f"(before, after) pairs, of non-negative ints"
        )
    if isinstance(padding, str):
        if padding.lower() in ("valid", "same"):
            return padding.lower()
        raise ValueError(f"{owner}.padding: unknown padding {padding!r}; expected {expected}")
    if _is_nonneg_int(padding):
        return ((padding, padding),) * n
    if isinstance(padding, (tuple, list)) and len(padding) == n:
        if all(_is_nonneg_int(p) for p in padding):
            return tuple((p, p) for p in padding)
        if all(
            isinstance(p, (tuple, list)) and len(p) == 2 and all(_is_nonneg_int(q) for q in p)
            for p in padding
        ):
            return tuple(tuple(p) for p in padding)
    raise ValueError(f"{owner}.padding: got {padding!r}; expected {expected}")


def resolve_padding(padding, input_size, kernel_size, stride, dilation):
    """Explicit padding, one (before, after) pair per axis: ((top, bottom), (left, right))
    in 2-D (spec section 3).

    'same' is TensorFlow's rule for every stride: per axis,
    total = max((ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0) and top = total // 2.
    """
    padding = _normalize_padding(padding, n=len(input_size))
    if padding == "valid":
        return ((0, 0),) * len(input_size)
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


def _input_size(value):
    """`input_size` as n positive ints, n in SPATIAL_DIMS; an int is a square 2-D grid."""
    if _is_int(value):
        value = (value, value)
    if (
        not isinstance(value, (tuple, list))
        or len(value) not in SPATIAL_DIMS
        or not all(map(_is_int, value))
    ):
        raise TypeError(
            f"LRLCConfig.input_size must be an int (a square 2-D grid) or a tuple of 1, 2 or 3 "
            f"ints (the grid of a sequence, an image or a volume), got {value!r}"
        )
    if min(value) < 1:
        raise ValueError(f"LRLCConfig.input_size must be positive, got {value!r}")
    return tuple(value)


class BasisGroup(NamedTuple):
    """Bases that share a kernel size and dilation (hence padding): one convolution."""

    members: tuple[int, ...]
    kernel_size: tuple[int, ...]
    dilation: tuple[int, ...]
    padding_pairs: tuple[tuple[int, int], ...]


@dataclasses.dataclass(frozen=True)
class LRLCConfig:
    """Hyper-parameters of one low-rank locally connected layer.

    The spatial rank n (1, 2 or 3: sequences, images, volumes; spec section 17) is the
    length of `input_size`; an int `input_size` is a square 2-D grid. Window fields given as
    a single int are stored as n-tuples (pairs in 2-D); padding is stored as 'valid', 'same'
    or n (before, after) pairs, ((top, bottom), (left, right)) in 2-D. See spec section 2.
    A `kernel_size` or
    `dilation` given as a list of `rank` entries makes a mixed basis (spec section 16):
    both fields are then stored as `PerBasis`, which refuses to unpack as one pair; read
    `kernel_sizes`, `dilations` and `basis_padding_pairs` (K entries for every config).
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
        object.__setattr__(self, "input_size", _input_size(self.input_size))
        n = self.spatial_dims
        object.__setattr__(self, "stride", _pair("stride", self.stride, n=n))
        self._set_window_fields()
        given_padding = self.padding
        object.__setattr__(self, "padding", _normalize_padding(self.padding, n=n))
        if self.mixed and self.padding != "same":
            raise ValueError(
                f"LRLCConfig.padding: a per-basis kernel_size or dilation needs padding='same' "
                f"(each basis is padded as TensorFlow's SAME pads its own kernel and dilation, "
                f"so every basis has the same output grid), got {given_padding!r}"
            )
        # A str first: `in` would compare anything, an array elementwise.
        if not (isinstance(self.combining, str) and self.combining in COMBINING_MODES):
            raise ValueError(
                f"LRLCConfig.combining: unknown mode {self.combining!r}; "
                f"expected one of {COMBINING_MODES}"
            )
        if not (isinstance(self.normalize, str) and self.normalize in NORMALIZATIONS):
            raise ValueError(
                f"LRLCConfig.normalize: unknown normalisation {self.normalize!r}; "
                f"expected one of {NORMALIZATIONS}"
            )
        for name in ("spatial_bias", "channel_bias", "input_dependent"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"LRLCConfig.{name} must be a bool, got {getattr(self, name)!r}")
        if n == 1 and self.combining != "full":
            raise ValueError(
                f"LRLCConfig.combining: a 1-D layer (input_size {self.input_size}) has one "
                f"spatial axis, so its only combining mode is 'full' (one logit vector and "
                f"bias per position); got {self.combining!r}"
            )
        if n != 2 and self.combining in ("row", "col"):
            raise ValueError(
                f"LRLCConfig.combining: {self.combining!r} is defined for 2-D layers only; "
                f"a {n}-D layer takes 'rowcol' or 'full'"
            )
        if self.input_dependent and self.combining != "full":
            raise ValueError(
                f"LRLCConfig.combining: input_dependent=True requires combining='full', "
                f"got {self.combining!r}"
            )
        out = self.output_size
        if min(out) < 1:
            raise ValueError(
                f"LRLCConfig: input_size {self.input_size} with kernel_size {self.kernel_size}, "
                f"dilation {self.dilation}, stride {self.stride} and padding {self.padding!r} "
                f"gives an empty output grid {out}"
            )

    def _set_window_fields(self):
        """Normalise `kernel_size` and `dilation`: pairs, or both PerBasis when either is
        given per basis (the other then applies to every basis; spec section 16.1)."""
        n = self.spatial_dims
        given = {name: getattr(self, name) for name in PER_BASIS_FIELDS}
        per_basis = {
            name: _per_basis_pairs(name, value, n)
            for name, value in given.items()
            if _given_per_basis(value)
        }
        if not per_basis:
            for name, value in given.items():
                object.__setattr__(self, name, _pair(name, value, n=n))
            return
        if len({len(pairs) for pairs in per_basis.values()}) > 1:
            raise ValueError(
                f"LRLCConfig: kernel_size {given['kernel_size']!r} has "
                f"{len(per_basis['kernel_size'])} per-basis entries and dilation "
                f"{given['dilation']!r} has {len(per_basis['dilation'])}; each needs exactly "
                f"rank={self.rank} entries"
            )
        name, pairs = next(iter(per_basis.items()))
        if len(pairs) != self.rank:  # checked before a shared pair is repeated rank times
            raise ValueError(
                f"LRLCConfig.{name}: a list gives one entry per basis filter bank, so it "
                f"needs exactly rank={self.rank} entries; got {len(pairs)} in {given[name]!r} "
                "(for one (h, w) pair shared by every basis, pass a tuple)"
            )
        for name, value in given.items():
            pairs = per_basis[name] if name in per_basis else (_pair(name, value, n=n),) * self.rank
            object.__setattr__(self, name, PerBasis(pairs, name))

    # Derived quantities (spec sections 3, 16 and 17).

    @property
    def spatial_dims(self) -> int:
        """The number n of spatial axes (1, 2 or 3): the length of `input_size`."""
        return len(self.input_size)

    @property
    def axis_tables(self) -> tuple[str, ...]:
        """The axes that have a logit table `{axis}_logits` and a bias vector `{axis}_bias`:
        every axis for 'rowcol' (('row', 'col') in 2-D, ('depth', 'row', 'col') in 3-D),
        one for 'row' or 'col', none for 'full'."""
        if self.combining == "rowcol":
            return AXIS_NAMES[self.spatial_dims]
        if self.combining in ("row", "col"):
            return (self.combining,)
        return ()

    def axis_index(self, axis: str) -> int:
        """The position of the named grid axis ('depth', 'row' or 'col'; `AXIS_NAMES`) in
        `input_size` and `output_size`."""
        return AXIS_NAMES[self.spatial_dims].index(axis)

    @property
    def layouts(self) -> tuple[str, str]:
        """The (channels-last, channels-first) layout names: ('NHWC', 'NCHW') in 2-D,
        ('NLC', 'NCL') in 1-D, ('NDHWC', 'NCDHW') in 3-D."""
        return LAYOUTS[self.spatial_dims]

    @property
    def mixed(self) -> bool:
        """Whether each basis has its own kernel size and dilation (`kernel_size` and
        `dilation` are then PerBasis, and the parameters `basis.0` ... `basis.{K-1}`)."""
        return isinstance(self.kernel_size, PerBasis)

    @property
    def kernel_sizes(self) -> tuple[tuple[int, int], ...]:
        """One (k_h, k_w) per basis, K pairs, for every config."""
        return self.kernel_size.pairs if self.mixed else (self.kernel_size,) * self.rank

    @property
    def dilations(self) -> tuple[tuple[int, int], ...]:
        """One (d_h, d_w) per basis, K pairs, for every config."""
        return self.dilation.pairs if self.mixed else (self.dilation,) * self.rank

    @property
    def basis_padding_pairs(self) -> tuple[tuple[tuple[int, int], tuple[int, int]], ...]:
        """One ((top, bottom), (left, right)) per basis: a mixed basis pads each basis by
        TensorFlow's SAME rule for its own kernel and dilation."""
        return tuple(
            resolve_padding(self.padding, self.input_size, kernel, self.stride, dilation)
            for kernel, dilation in zip(self.kernel_sizes, self.dilations)
        )

    @property
    def padding_pairs(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """The explicit ((top, bottom), (left, right)) padding; 'same' follows TensorFlow.
        A mixed basis has none shared by all bases: use `basis_padding_pairs`."""
        if self.mixed:
            raise TypeError(
                "LRLCConfig.padding_pairs: a mixed basis pads each basis for its own kernel "
                "and dilation; read config.basis_padding_pairs[k] for basis k, or "
                "config.locally_connected_config().padding_pairs for the window covering all"
            )
        # Not through basis_padding_pairs: a plain config's cost does not grow with its rank.
        return resolve_padding(
            self.padding, self.input_size, self.kernel_size, self.stride, self.dilation
        )

    @property
    def output_size(self) -> tuple[int, int]:
        """(H_out, W_out), the grid the combining weights and spatial biases live on (the
        same for every basis: ceil(H / s_h) x ceil(W / s_w) for a mixed basis)."""
        if not self.mixed:
            return output_size(
                self.input_size, self.padding_pairs, self.kernel_size, self.stride, self.dilation
            )
        return output_size(
            self.input_size,
            self.basis_padding_pairs[0],
            self.kernel_sizes[0],
            self.stride,
            self.dilations[0],
        )

    @property
    def basis_names(self) -> tuple[str, ...]:
        """Neutral names of the basis tensors: ('basis',) stacked, or `basis.k` per basis."""
        if self.mixed:
            return tuple(f"basis.{k}" for k in range(self.rank))
        return ("basis",)

    @property
    def basis_groups(self) -> tuple[BasisGroup, ...]:
        """The bases grouped by equal (kernel size, dilation), in order of first member:
        Algorithm 1 runs one convolution per group (spec section 16.3). A plain config has
        one group holding every basis."""
        members = {}
        for k, key in enumerate(zip(self.kernel_sizes, self.dilations)):
            members.setdefault(key, []).append(k)
        pads = self.basis_padding_pairs
        return tuple(
            BasisGroup(tuple(ks), kernel, dilation, pads[ks[0]])
            for (kernel, dilation), ks in members.items()
        )

    def locally_connected_config(self) -> LRLCConfig:
        """The plain config whose window the equivalent locally connected layer uses (spec
        section 16.5); `self` for a plain config.

        For a mixed basis, per axis: basis k's tap u reads input row i*s + u*d_k - p_k
        (p_k its SAME padding before); the window spans the union of these offsets, from
        -max_k p_k to max_k ((k_k - 1) d_k - p_k), with dilation 1 and explicit padding
        (max_k p_k before; after, enough for the last output's window, never negative).
        Stride, channels, rank, input size and modes are unchanged; the output grid too.
        """
        if not self.mixed:
            return self
        window, padding = [], []
        for axis in range(self.spatial_dims):
            n, s = self.input_size[axis], self.stride[axis]
            first = max(pads[axis][0] for pads in self.basis_padding_pairs)
            last = max(
                (kernel[axis] - 1) * dilation[axis] - pads[axis][0]
                for kernel, dilation, pads in zip(
                    self.kernel_sizes, self.dilations, self.basis_padding_pairs
                )
            )
            n_out = self.output_size[axis]
            window.append(first + last + 1)
            padding.append((first, max((n_out - 1) * s + last + 1 - n, 0)))
        return dataclasses.replace(
            self, kernel_size=tuple(window), dilation=1, padding=tuple(padding)
        )

    @property
    def g_dilations(self) -> tuple[int, ...]:
        """Active dilation rates r of the input-dependent network: r <= (min(H, W) - 1) // 2
        (the smallest input axis in n-D)."""
        limit = (min(self.input_size) - 1) // 2
        return tuple(r for r in G_DILATIONS if r <= limit)

    # Serialisation (spec section 13).

    def to_dict(self) -> dict:
        """JSON-ready dict with pairs as lists (a per-basis field as a list of K pairs)."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, PerBasis):
                value = value.pairs
            if isinstance(value, tuple):
                value = json.loads(json.dumps(value))
            out[field.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> LRLCConfig:
        """Inverse of `to_dict`; unknown or missing keys are errors.

        JSON has no tuples, so lists become tuples, except that a `kernel_size` or
        `dilation` list holding lists, or not of the layer's spatial rank n (the length of
        `input_size`; 2 for an int), stays a list: one entry per basis.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"LRLCConfig.from_dict expects a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted((key for key in data if key not in names), key=repr)
        if unknown:
            raise ValueError(
                f"LRLCConfig: unknown fields {unknown}; expected a subset of {sorted(names)}"
            )
        size = data.get("input_size")
        n = len(size) if isinstance(size, (list, tuple)) else 2
        kwargs = {}
        for key, value in data.items():
            if isinstance(value, list):
                entries = [tuple(v) if isinstance(v, list) else v for v in value]
                per_basis = key in PER_BASIS_FIELDS and (
                    len(value) != n or any(isinstance(v, list) for v in value)
                )
                value = entries if per_basis else tuple(entries)
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
        """Inverse of `to_json`: a JSON object as `from_dict` reads it."""
        if not isinstance(text, (str, bytes, bytearray)):
            raise TypeError(f"LRLCConfig.from_json expects a str, got {type(text).__name__}")
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"LRLCConfig: config is not valid JSON ({err})") from None
        except RecursionError:
            raise ValueError("LRLCConfig: config JSON is nested too deeply") from None
        return cls.from_dict(data)


def param_shapes(config: LRLCConfig) -> dict[str, tuple[int, ...]]:
    """Neutral parameter names and shapes for `config` (spec sections 9 and 17)."""
    check_config(config, "param_shapes")
    k = config.rank
    out = config.output_size
    channels = (config.in_channels, config.out_channels)
    if config.mixed:  # one tensor per basis, each with its own window (spec section 16.4)
        shapes = {
            name: (*kernel, *channels)
            for name, kernel in zip(config.basis_names, config.kernel_sizes)
        }
    else:
        shapes = {"basis": (k, *config.kernel_size, *channels)}
    tables = {axis: out[config.axis_index(axis)] for axis in config.axis_tables}
    if not config.input_dependent:
        for axis, size in tables.items():
            shapes[f"{axis}_logits"] = (size, k)
        if config.combining == "full":
            shapes["logits"] = (*out, k)
    if config.spatial_bias:
        for axis, size in tables.items():
            shapes[f"{axis}_bias"] = (size,)
        if config.combining == "full":
            shapes["spatial_bias"] = out
    if config.channel_bias:
        shapes["channel_bias"] = (config.out_channels,)
    if config.input_dependent:
        n = len(config.g_dilations)
        shapes["g.reduce.kernel"] = (config.in_channels, k)
        shapes["g.reduce.bias"] = (k,)
        for r in config.g_dilations:
            shapes[f"g.dilated{r}.kernel"] = (3,) * config.spatial_dims + (k,)
            shapes[f"g.dilated{r}.bias"] = (k,)
        shapes["g.squeeze.kernel"] = ((n + 2) * k, 3 * k)
        shapes["g.squeeze.bias"] = (3 * k,)
        shapes["g.excite.kernel"] = (3 * k, 6 * k)
        shapes["g.excite.bias"] = (6 * k,)
        shapes["g.project.kernel"] = (6 * k, k)
        shapes["g.project.bias"] = (k,)
    return shapes


def check_params(params: Mapping, config: LRLCConfig, *, what: str = "params") -> None:
    """Raise unless `params` has exactly the names and shapes `config` needs: TypeError for
    a non-mapping or a value that is no array or tensor (a list, a number), ValueError for
    wrong names or shapes. Shapes only, so backends call it on their tensors."""
    check_config(config, "check_params")
    if not isinstance(params, Mapping):
        raise TypeError(f"{what} must be a mapping of name -> array, got {type(params).__name__}")
    shapes = {}
    for name, value in params.items():
        if not hasattr(value, "shape"):
            raise TypeError(
                f"{what}[{name!r}] is a {type(value).__name__}, not an array or tensor; "
                "convert it first (for example numpy.asarray(value, dtype=float))"
            )
        shapes[name] = value.shape
    check_param_shapes(shapes, config, what=what)


def check_param_shapes(shapes: Mapping, config: LRLCConfig, *, what: str = "params") -> None:
    """Raise ValueError unless `shapes` (name -> shape) are exactly those `config` needs."""
    expected = param_shapes(config)
    missing = sorted(set(expected) - set(shapes))
    extra = sorted((name for name in shapes if name not in expected), key=repr)
    if missing or extra:
        raise ValueError(
            f"{what}: missing tensors {missing}, unexpected tensors {extra}; "
            f"expected exactly {sorted(expected)}"
        )
    for name, shape in expected.items():
        got = tuple(shapes[name])
        if got != shape:
            raise ValueError(f"{what}[{name!r}] has shape {got}; expected {shape}")


def check_input_shape(shape, config: LRLCConfig, *, name: str = "x", layout=None) -> None:
    """Raise ValueError unless `shape` is a batched input with `config`'s channels and grid.

    Reads the shape only, so framework backends can call it on tensors or tracers;
    `layout` is the caller's native layout, named in the message: channels last ('NHWC' in
    2-D, 'NLC' in 1-D, 'NDHWC' in 3-D; the default) or channels first ('NCHW', 'NCL',
    'NCDHW'). The 2-D names are also read as channels last / first in any rank.
    """
    check_config(config, "check_input_shape")
    last, first = config.layouts
    if layout is None:
        layout = last
    if layout in (last, "NHWC"):
        layout, channels_last = last, True
    elif layout in (first, "NCHW"):
        layout, channels_last = first, False
    else:
        raise ValueError(
            f"layout must be {last!r} or {first!r} for a {config.spatial_dims}-D layer, "
            f"got {layout!r}"
        )
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"{name}: expected a shape (a tuple of ints), got {shape!r}") from None
    rank = config.spatial_dims + 2
    if len(shape) != rank:
        raise ValueError(f"{name} must have rank {rank} ({layout}), got shape {shape}")
    channels, grid = (shape[-1], shape[1:-1]) if channels_last else (shape[1], shape[2:])
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
    and bias (H_out, W_out, C_out) on the geometry of `config.locally_connected_config()`
    (spec sections 11 and 16.5); (*out, *window, C_in, C_out) and (*out, C_out) in n-D."""
    check_config(config, "lc_shapes")
    out = config.output_size
    window = config.locally_connected_config().kernel_size
    kernel = (*out, *window, config.in_channels, config.out_channels)
    return kernel, (*out, config.out_channels)


def check_lc_shapes(
    kernel_shape, bias_shape, config: LRLCConfig, *, batch=None, expected=None
) -> bool:
    """Raise ValueError unless a locally connected kernel and bias fit `config`; returns
    whether the kernel is per example (a leading batch axis of size `batch`).

    Shapes only, so every backend calls it on tensors or tracers. `bias_shape` None means no
    bias; an unknown `batch` (None, or None in the kernel's leading axis) is not compared.
    `expected` replaces the canonical (kernel, bias) shapes by a backend's native ones.
    """
    check_config(config, "check_lc_shapes")
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
    if not isinstance(dtype_name, str):
        raise TypeError(
            f"working_dtype_name: expected a dtype name such as 'float32', got {dtype_name!r}"
        )
    return "float32" if dtype_name in ("float16", "bfloat16") else dtype_name
