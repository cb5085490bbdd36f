"""The torch.nn modules: `LowRankLocallyConnected1d/2d/3d` (aliases `LRLC1d/2d/3d`) and
`LocallyConnected1d/2d/3d`, for sequences (NCL), images (NCHW) and volumes (NCDHW).

As in `torch.nn`'s `_ConvNd`, one rank-generic base class holds everything (`_LRLCNd`,
`_LocallyConnectedNd`) and the 1-D, 2-D and 3-D classes differ only in their spatial rank
(spec section 17). The math lives in `lrlc_torch.functional`; validation and geometry come
from `lrlc_numpy.LRLCConfig`; initial values from `lrlc_numpy` (spec section 10).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

import lrlc_numpy
from lrlc_numpy import LRLCConfig

from . import checkpoint, compiled, functional
from .checkpoint import FLOAT_DTYPES, from_neutral, lc_from_neutral, lc_to_neutral, to_neutral
from .costs import choose_strategy

__all__ = [
    "LRLC1d",
    "LRLC2d",
    "LRLC3d",
    "LocallyConnected1d",
    "LocallyConnected2d",
    "LocallyConnected3d",
    "LowRankLocallyConnected1d",
    "LowRankLocallyConnected2d",
    "LowRankLocallyConnected3d",
]


class _DeprecatedAlias:
    """An old method name kept for one release: it warns (DeprecationWarning naming the
    replacement), then calls the replacement on the same instance or class."""

    def __init__(self, replacement: str, note: str = ""):
        self.replacement, self.note = replacement, note

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, instance, owner):
        target = getattr(owner if instance is None else instance, self.replacement)
        # Named after the class it is read from (LRLC2d, not the shared base).
        message = f"{owner.__name__}.{self.name} is deprecated; use {self.replacement}{self.note}"

        def alias(*args, **kwargs):
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            return target(*args, **kwargs)

        alias.__doc__ = message
        return alias


def _check_dtype(owner: str, dtype) -> None:
    """A layer's parameters are floating: refuse other dtypes before allocating them."""
    if dtype is not None and dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{owner}: dtype must be a floating torch dtype (torch.float16, torch.bfloat16, "
            f"torch.float32 or torch.float64), got {dtype!r}"
        )


def _shown(value):
    """A config field as the user writes it: a per-basis field as its list of pairs."""
    return list(value.pairs) if isinstance(value, lrlc_numpy.PerBasis) else value


def _refuse_torchscript(module: nn.Module):
    """`torch.jit.script` calls this first: TorchScript cannot compile the layer (custom
    autograd functions, a dataclass config), so say so and name the exporters that work."""
    raise RuntimeError(
        f"{type(module).__name__} does not support TorchScript (torch.jit.script); export "
        "the model with torch.export.export, or to ONNX with torch.onnx.export(model, args, "
        "dynamo=True)"
    )


def _refuse_jit_tracing(module: nn.Module) -> None:
    """torch.jit.trace, and the legacy ONNX exporter built on it (dynamo=False), record the
    layer's custom autograd functions as opaque calls and write a graph without them."""
    if torch.jit.is_tracing():
        raise RuntimeError(
            f"{type(module).__name__} cannot be traced by torch.jit.trace or exported by the "
            "TorchScript-based ONNX exporter (torch.onnx.export(..., dynamo=False)): its "
            "custom autograd functions would be missing from the graph. Use "
            "torch.onnx.export(model, args, dynamo=True) or torch.export.export"
        )


class GLayer(nn.Module):
    """One layer of the input-dependent network g: a `kernel` and a `bias`, neutral layout."""

    def __init__(self, kernel_shape, bias_shape, *, device=None, dtype=None):
        super().__init__()
        self.kernel = nn.Parameter(torch.empty(kernel_shape, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(bias_shape, device=device, dtype=dtype))

    def extra_repr(self) -> str:
        return f"kernel={tuple(self.kernel.shape)}, bias={tuple(self.bias.shape)}"


def _spatial_size(owner: str, spatial_dims: int, input_size):
    """`input_size` for a layer of `spatial_dims` axes: an int is the same size on every
    axis (as `nn.Conv3d` reads an int kernel_size); a tuple of another length is refused
    here, naming the layer's rank, rather than read as a layer of another rank."""
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        return (input_size,) * spatial_dims
    if isinstance(input_size, (tuple, list)) and len(input_size) != spatial_dims:
        raise ValueError(
            f"{owner}: input_size {input_size!r} has {len(input_size)} spatial axes; this is a "
            f"{spatial_dims}-D layer, expected an int or {spatial_dims} ints"
        )
    return input_size


def _check_rank(cls, config: LRLCConfig) -> None:
    """Raise unless `config` has the spatial rank of the layer class `cls`."""
    if not isinstance(config, LRLCConfig):
        raise TypeError(f"from_lrlc_config expects an LRLCConfig, got {type(config).__name__}")
    if config.spatial_dims != cls.spatial_dims:
        raise ValueError(
            f"{cls.__name__}.from_lrlc_config: the config has spatial rank "
            f"{config.spatial_dims} (input_size {config.input_size}); {cls.__name__} is a "
            f"{cls.spatial_dims}-D layer: use {cls.__name__[:-2]}{config.spatial_dims}d"
        )


class _LRLCNd(nn.Module):
    """Low-rank locally connected layer (paper eqs. 2-6, Algorithm 1) on channels-first
    input with `spatial_dims` grid axes: NCL (`LRLC1d`), NCHW (`LRLC2d`) or NCDHW
    (`LRLC3d`); spec sections 2-11 and 17.

    Arguments mirror `nn.Conv1d/2d/3d` plus the LRLC fields of `lrlc_numpy.LRLCConfig` (spec
    section 2): `rank` K basis filter banks are combined at each output position with
    weights normalised over K; `input_size` (one int per axis; an int for every axis) fixes
    the output grid those weights and the spatial biases live on, and every input must have
    that size. `kernel_size`, `stride` and `dilation` take an int or one int per axis;
    `padding` is 'valid', 'same' (TensorFlow's rule for any stride, asymmetric where
    needed), an int, one int per axis, or one (before, after) pair per axis, e.g.
    ((top, bottom), (left, right)) in 2-D. 'rowcol' (the default) gives each grid axis a
    logit table and a bias vector (2-D and 3-D); a 1-D layer takes combining='full'.

    `kernel_size` and `dilation` may be lists of `rank` entries, one per basis (a mixed
    basis, spec section 16; padding 'same').

    Parameters carry the neutral names (`state_dict` keys `basis`, `row_logits`,
    `g.reduce.kernel`, ...), in neutral layout except the basis, kept as convolution weights
    so that `channels_last` applies to it as to `nn.Conv2d.weight`: `basis` is (K C_out,
    C_in, *kernel), member k at rows k C_out ... (k + 1) C_out - 1; a mixed basis has
    `basis.0` ... `basis.{K-1}` (an `nn.ParameterList`), each (C_out, C_in, *kernel_k).
    `neutral_params()` and checkpoints give the neutral layouts. `strategy` picks the
    evaluation ('auto', 'conv', 'lc'). Input is (B, C_in, *grid), or (C_in, *grid) for one
    example, as for `nn.Conv2d`.
    """

    spatial_dims: int  # set by the 1-D, 2-D and 3-D classes
    _conv_type: type[nn.Module]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        rank: int,
        input_size,
        stride=1,
        padding="valid",
        dilation=1,
        *,
        combining: str = "rowcol",
        normalize: str = "softmax",
        spatial_bias: bool = True,
        channel_bias: bool = True,
        input_dependent: bool = False,
        strategy: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__()
        owner = type(self).__name__
        _check_dtype(owner, dtype)
        self.config = LRLCConfig(
            in_channels,
            out_channels,
            kernel_size,
            rank,
            _spatial_size(owner, self.spatial_dims, input_size),
            stride=stride,
            dilation=dilation,
            padding=padding,
            combining=combining,
            normalize=normalize,
            spatial_bias=spatial_bias,
            channel_bias=channel_bias,
            input_dependent=input_dependent,
        )
        choose_strategy(self.config, 1, strategy)  # rejects unknown or unfit ones
        self.strategy = strategy
        shapes = checkpoint.torch_param_shapes(self.config)
        factory = {"device": device, "dtype": dtype}
        # g's layers in the order the network applies them.
        g_names = list(
            dict.fromkeys(name.split(".")[1] for name in shapes if name.startswith("g."))
        )
        if g_names:
            self.g = nn.ModuleDict(
                {
                    layer: GLayer(shapes[f"g.{layer}.kernel"], shapes[f"g.{layer}.bias"], **factory)
                    for layer in g_names
                }
            )
        if self.config.mixed:
            self.basis = nn.ParameterList(
                [torch.empty(shapes[name], **factory) for name in self.config.basis_names]
            )
        for name, shape in shapes.items():
            if not name.startswith(("g.", "basis.")):
                self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
        self.reset_parameters()

    __prepare_scriptable__ = _refuse_torchscript

    @classmethod
    def from_lrlc_config(
        cls, config: LRLCConfig, *, strategy: str = "auto", device=None, dtype=None
    ):
        """A freshly initialised layer for `config`, which must have this class's spatial rank
        (ValueError naming both otherwise)."""
        _check_rank(cls, config)
        fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        return cls(**fields, strategy=strategy, device=device, dtype=dtype)

    from_config = _DeprecatedAlias("from_lrlc_config")

    def reset_parameters(self, seed: int | None = None) -> None:
        """Set exactly `lrlc_numpy.init_params(config, seed)` (spec section 10); without
        `seed`, one is drawn from torch's global generator, so `torch.manual_seed` makes
        layers reproducible."""
        if seed is None:
            seed = int(torch.randint(0, 2**62, (), device="cpu"))
        elif not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"reset_parameters: seed must be None or an int >= 0, got {seed!r}")
        self.load_neutral_params(lrlc_numpy.init_params(self.config, seed=seed))

    def extra_repr(self) -> str:
        c = self.config
        text = (
            f"{c.in_channels}, {c.out_channels}, kernel_size={_shown(c.kernel_size)}, "
            f"rank={c.rank}, input_size={c.input_size}, stride={c.stride}, "
            f"padding={c.padding!r}, dilation={_shown(c.dilation)}, "
            f"combining={c.combining!r}, normalize={c.normalize!r}"
        )
        if not c.spatial_bias:
            text += ", spatial_bias=False"
        if not c.channel_bias:
            text += ", channel_bias=False"
        if c.input_dependent:
            text += ", input_dependent=True"
        if self.strategy != "auto":
            text += f", strategy={self.strategy!r}"
        return text

    def _params(self) -> dict[str, torch.Tensor]:
        return dict(self.named_parameters(remove_duplicate=False))

    def _factory(self) -> dict:
        reference = next(self.parameters())
        return {"device": reference.device, "dtype": reference.dtype}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, *grid) -> (B, C_out, *out), with grid == `input_size`; one unbatched
        (C_in, *grid) example gives (C_out, *out)."""
        _refuse_jit_tracing(self)
        return compiled.forward(x, self._params(), self.config, strategy=self.strategy)

    def combining_weights(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised weights (K, *out), or (B, K, *out) predicted from `x`."""
        return functional.combining_weights(self._params(), self.config, x)

    # Locally connected form (spec section 11)

    def locally_connected_kernel(self, x: torch.Tensor | None = None):
        """(weight, bias) of the equivalent locally connected layer, in `LocallyConnected2d`'s
        layout (`LocallyConnected1d/3d`'s in 1-D and 3-D); an input-dependent layer needs `x`
        and gives one kernel per example, (B, *out, C_out, C_in, *window)."""
        return functional.to_locally_connected(self._params(), self.config, x)

    def to_locally_connected(self) -> _LocallyConnectedNd:
        """A `LocallyConnected1d/2d/3d` (this layer's rank) computing the same outputs (fixed
        layers only: an input-dependent layer's kernel changes with the input, see
        `locally_connected_kernel`)."""
        if self.config.input_dependent:
            raise ValueError(
                "to_locally_connected: an input-dependent layer has one kernel per example; "
                "use layer.locally_connected_kernel(x) with functional.locally_connected"
            )
        c = self.config
        layer = _LOCALLY_CONNECTED[self.spatial_dims].from_lrlc_config(
            c, bias=c.spatial_bias or c.channel_bias, **self._factory()
        )
        with torch.no_grad():
            weight, bias = self.locally_connected_kernel()
            layer.weight.copy_(weight)
            if layer.bias is not None:
                layer.bias.copy_(bias)
        return layer

    # Neutral parameters and checkpoints (spec sections 9 and 13)

    def neutral_params(self) -> dict[str, np.ndarray]:
        """The parameters as NumPy arrays with neutral names and layouts (bfloat16, which
        NumPy lacks, widened exactly to float32)."""
        return to_neutral(self._params(), self.config)

    def load_neutral_params(self, params) -> None:
        """Copy neutral parameters (NumPy arrays or tensors, neutral layouts) into the layer,
        each converted to the layer's dtype; every tensor is checked before any is copied:
        ValueError on missing, extra or mis-shaped tensors, TypeError on values that are not
        floating arrays or tensors (each error names the tensor)."""
        what = "neutral params"
        tensors = checkpoint.neutral_tensors(params, what=what)  # types and dtypes, each named
        lrlc_numpy.check_params(tensors, self.config, what=what)
        self._copy_in(from_neutral(tensors))

    @torch.no_grad()
    def _copy_in(self, tensors) -> None:
        """Copy checked tensors into the parameters, converted to each parameter's dtype."""
        own = self._params()
        for name, value in tensors.items():
            own[name].copy_(value.to(own[name].dtype))

    def save_checkpoint(self, path) -> None:
        """Write the neutral checkpoint (a .safetensors file with the config as JSON), each
        tensor in the layer's dtype (bfloat16 included), atomically."""
        checkpoint.save_checkpoint(path, self._params(), self.config)

    def load_checkpoint(self, path) -> None:
        """Load a neutral checkpoint into this layer, in place, as `load_state_dict` does:
        each tensor is converted from its stored dtype to the layer's. ValueError unless
        the file's config is this layer's."""
        params, config = checkpoint.load_checkpoint(path)
        if config != self.config:
            raise ValueError(
                f"load_checkpoint: {path} holds a layer with config {config}; this layer has "
                f"config {self.config}"
            )
        self._copy_in(params)

    @classmethod
    def from_checkpoint(cls, path, *, strategy: str = "auto", device=None, dtype=None):
        """A new layer read from a neutral checkpoint. `dtype=None` keeps the file's dtype,
        which must then be one for all tensors (else pass `dtype`); a given `dtype` converts
        every tensor to it."""
        _check_dtype(f"{cls.__name__}.from_checkpoint", dtype)
        params, config = checkpoint.load_checkpoint(path)
        if dtype is None:
            stored = {value.dtype for value in params.values()}
            if len(stored) != 1:
                raise ValueError(
                    f"from_checkpoint: {path} holds tensors of dtypes "
                    f"{sorted(map(str, stored))}; a layer has one dtype: pass dtype="
                )
            (dtype,) = stored
        layer = cls.from_lrlc_config(config, strategy=strategy, device=device, dtype=dtype)
        layer._copy_in(params)
        return layer

    save_neutral = _DeprecatedAlias("save_checkpoint")
    load_neutral = _DeprecatedAlias(
        "from_checkpoint",
        " (load_neutral builds a new layer and never changed the layer it was called on; "
        "load_checkpoint loads into it)",
    )

    # Upgrading a trained convolution (issue 3: "Upgrade an existing network")

    @classmethod
    def from_conv(
        cls,
        conv: nn.Module,
        rank: int,
        input_size,
        *,
        logit_scale: float = 1e-2,
        generator: torch.Generator | None = None,
        **options,
    ):
        """An LRLC layer that computes exactly `conv` (an `nn.Conv1d`, `nn.Conv2d` or
        `nn.Conv3d`, for `LRLC1d`, `LRLC2d` and `LRLC3d`) at first, yet can depart from it.

        Every basis member is the conv's kernel, the channel bias is the conv's bias, the
        spatial biases are zero, and the combining logits are normal with standard
        deviation `logit_scale` (drawn from `generator`): members that were identical and
        weighted uniformly would receive identical gradients forever. Softmax weights sum
        to one, so the output equals the conv's; hence only normalize='softmax' is
        accepted. `options` are further LRLC fields (combining, spatial_bias,
        channel_bias, input_dependent); geometry, device and dtype follow the conv.
        """
        if not isinstance(conv, cls._conv_type):
            raise TypeError(
                f"{cls.__name__}.from_conv expects an nn.{cls._conv_type.__name__}, got "
                f"{type(conv).__name__}"
            )
        if conv.groups != 1:
            raise ValueError(
                f"from_conv: conv has groups={conv.groups}; only groups=1 is supported"
            )
        if conv.padding_mode != "zeros":
            raise ValueError(
                f"from_conv: conv has padding_mode={conv.padding_mode!r}; only 'zeros' is supported"
            )
        if not isinstance(logit_scale, (int, float)) or not 0 <= logit_scale < math.inf:
            raise ValueError(
                f"from_conv: logit_scale must be a finite number >= 0, got {logit_scale!r}"
            )
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"from_conv: generator must be a torch.Generator or None, got {generator!r}"
            )
        if options.get("normalize", "softmax") != "softmax":
            raise ValueError(
                f"from_conv: normalize={options['normalize']!r} would not reproduce the conv "
                "(its weights need not sum to one); expected 'softmax'"
            )
        options.setdefault("channel_bias", conv.bias is not None)
        weight = conv.weight
        # torch allows 'same' only at stride 1, where it pads exactly like the spec's rule.
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            rank,
            input_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            device=weight.device,
            dtype=weight.dtype,
            **options,
        )
        with torch.no_grad():
            layer.basis.copy_(weight.detach().repeat(rank, *(1,) * (weight.dim() - 1)))
            if layer.config.channel_bias:
                if conv.bias is None:
                    layer.channel_bias.zero_()
                else:
                    layer.channel_bias.copy_(conv.bias)
            for name, param in layer.named_parameters():
                if "logits" in name:
                    noise = torch.randn(
                        param.shape, generator=generator, dtype=param.dtype, device="cpu"
                    )
                    param.copy_(logit_scale * noise)
        return layer


class LowRankLocallyConnected1d(_LRLCNd):
    """Low-rank locally connected layer on sequences, NCL input (B, C_in, L) like
    `nn.Conv1d`; `input_size` is (L,) or an int. Only combining='full' exists in 1-D (spec
    section 17.2). Otherwise as `LowRankLocallyConnected2d`."""

    spatial_dims = 1
    _conv_type = nn.Conv1d


class LowRankLocallyConnected2d(_LRLCNd):
    """Low-rank locally connected layer (paper eqs. 2-6, Algorithm 1) on NCHW input.

    Arguments mirror `nn.Conv2d` plus the LRLC fields of `lrlc_numpy.LRLCConfig` (spec
    section 2); `input_size` (H, W) fixes the output grid the combining weights and the
    spatial biases live on, and every input must have that size. `padding` is 'valid',
    'same' (TensorFlow's rule for any stride, asymmetric where needed), an int, a pair, or
    ((top, bottom), (left, right)). `basis` is (K C_out, C_in, kh, kw). Input is
    (B, C_in, H, W), or (C_in, H, W) for one example, as for `nn.Conv2d`. The arguments and
    the parameters are described in full on the shared base, `_LRLCNd`.
    """

    spatial_dims = 2
    _conv_type = nn.Conv2d


class LowRankLocallyConnected3d(_LRLCNd):
    """Low-rank locally connected layer on volumes, NCDHW input (B, C_in, D, H, W) like
    `nn.Conv3d`; `input_size` is (D, H, W) or an int. 'rowcol' gives the depth, row and
    column axes a logit table and a bias vector each (spec section 17.2). Otherwise as
    `LowRankLocallyConnected2d`."""

    spatial_dims = 3
    _conv_type = nn.Conv3d


LRLC1d = LowRankLocallyConnected1d
LRLC2d = LowRankLocallyConnected2d
LRLC3d = LowRankLocallyConnected3d


class _LocallyConnectedNd(nn.Module):
    """A locally connected layer: a convolution with a separate filter bank at every output
    position (spec sections 11 and 17.5), on channels-first input with `spatial_dims` grid
    axes (NCL, NCHW or NCDHW) of a fixed `input_size`.

    `weight` is (*out, C_out, C_in, *kernel) and `bias` (C_out, *out).
    Padding, stride and dilation follow `LRLCConfig` ('same' as in TensorFlow). Input is
    (B, C_in, *grid), or (C_in, *grid) for one example, as for `nn.Conv2d`.
    """

    spatial_dims: int  # set by the 1-D, 2-D and 3-D classes

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        input_size,
        stride=1,
        padding="valid",
        dilation=1,
        bias: bool = True,
        *,
        device=None,
        dtype=None,
    ):
        super().__init__()
        owner = type(self).__name__
        _check_dtype(owner, dtype)
        if not isinstance(bias, bool):
            raise TypeError(f"{owner}: bias must be a bool, got {bias!r}")
        # The geometry rules are LRLCConfig's; rank plays no part in a locally connected layer.
        self.config = LRLCConfig(
            in_channels,
            out_channels,
            kernel_size,
            1,
            _spatial_size(owner, self.spatial_dims, input_size),
            combining="full" if self.spatial_dims == 1 else "rowcol",  # 1-D has only 'full'
            stride=stride,
            dilation=dilation,
            padding=padding,
        )
        factory = {"device": device, "dtype": dtype}
        weight_shape, bias_shape = checkpoint.torch_lc_shapes(self.config)
        self.weight = nn.Parameter(torch.empty(weight_shape, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(bias_shape, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    __prepare_scriptable__ = _refuse_torchscript

    @classmethod
    def from_lrlc_config(cls, config: LRLCConfig, *, bias: bool = True, device=None, dtype=None):
        """A locally connected layer on the geometry of `config.locally_connected_config()`
        (channels, window, grid, stride, padding, dilation: `config`'s own, or a mixed
        basis's union window); the LRLC-only fields (rank, combining, ...) play no part. The
        config must have this class's spatial rank."""
        _check_rank(cls, config)
        window = config.locally_connected_config()
        return cls(
            window.in_channels,
            window.out_channels,
            window.kernel_size,
            window.input_size,
            stride=window.stride,
            padding=window.padding,
            dilation=window.dilation,
            bias=bias,
            device=device,
            dtype=dtype,
        )

    from_config = _DeprecatedAlias("from_lrlc_config")

    def reset_parameters(self) -> None:
        """The LRLC basis's He-uniform weights (`lrlc_numpy.initial_value`) and zero bias."""
        limit = lrlc_numpy.initial_value("basis", self.config).limit
        nn.init.uniform_(self.weight, -limit, limit)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"{c.in_channels}, {c.out_channels}, kernel_size={c.kernel_size}, "
            f"input_size={c.input_size}, stride={c.stride}, padding={c.padding!r}, "
            f"dilation={c.dilation}, bias={self.bias is not None}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _refuse_jit_tracing(self)
        return compiled.locally_connected(x, self.weight, self.bias, self.config)

    def neutral_params(self) -> dict[str, np.ndarray]:
        """{'kernel', 'bias'} in the neutral layouts (zeros for an absent bias)."""
        bias = self.bias
        if bias is None:
            bias = self.weight.new_zeros((self.config.out_channels, *self.config.output_size))
        kernel, bias = lc_to_neutral(self.weight, bias)
        return {"kernel": kernel, "bias": bias}

    @torch.no_grad()
    def load_neutral_params(self, params) -> None:
        """Copy a neutral {'kernel', 'bias'} (as from `lrlc_numpy.to_locally_connected`),
        converted to the layer's dtype, after checking both."""
        if not isinstance(params, Mapping):
            raise TypeError(
                f"locally connected params must be a mapping, got {type(params).__name__}"
            )
        if set(params) != {"kernel", "bias"}:
            raise ValueError(
                f"locally connected params have names {sorted(params)}; expected ['bias', 'kernel']"
            )
        weight, bias = lc_from_neutral(params["kernel"], params["bias"])  # types, dtypes
        kernel_shape = tuple(params["kernel"].shape)
        if lrlc_numpy.check_lc_shapes(kernel_shape, tuple(params["bias"].shape), self.config):
            raise ValueError(
                f"locally connected params['kernel'] has shape {kernel_shape}, one kernel "
                f"per example; a {type(self).__name__} holds one for the batch"
            )
        if self.bias is None and bias.any():
            raise ValueError("locally connected params: non-zero bias for a layer with bias=False")
        self.weight.copy_(weight.to(self.weight.dtype))
        if self.bias is not None:
            self.bias.copy_(bias.to(self.bias.dtype))


class LocallyConnected1d(_LocallyConnectedNd):
    """A locally connected layer on sequences, NCL input (B, C_in, L) like `nn.Conv1d`:
    `weight` (L_out, C_out, C_in, k), `bias` (C_out, L_out)."""

    spatial_dims = 1


class LocallyConnected2d(_LocallyConnectedNd):
    """A locally connected layer: `nn.Conv2d` with a separate filter bank at every output
    position (spec section 11), on NCHW input of a fixed `input_size`.

    `weight` is (H_out, W_out, C_out, C_in, kh, kw) and `bias` (C_out, H_out, W_out).
    Padding, stride and dilation follow `LRLCConfig` ('same' as in TensorFlow). Input is
    (B, C_in, H, W), or (C_in, H, W) for one example, as for `nn.Conv2d`.
    """

    spatial_dims = 2


class LocallyConnected3d(_LocallyConnectedNd):
    """A locally connected layer on volumes, NCDHW input (B, C_in, D, H, W) like `nn.Conv3d`:
    `weight` (D_out, H_out, W_out, C_out, C_in, kd, kh, kw), `bias` (C_out, D_out, H_out,
    W_out)."""

    spatial_dims = 3


# The locally connected class of each spatial rank (`to_locally_connected`).
_LOCALLY_CONNECTED = {1: LocallyConnected1d, 2: LocallyConnected2d, 3: LocallyConnected3d}
