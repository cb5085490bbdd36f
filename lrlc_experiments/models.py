"""The paper's network (Section 4) and its variants, selectable by name.

The base network: `depth` layers (paper: 3) of `width` channels (paper: 64), kernel_size×kernel_size
filters (paper: 3×3) with 'valid' padding, each followed by batch norm and ReLU, then global
average pooling and a linear classifier. A variant replaces the layers at some positions
(1-based) by another kind of layer, or appends coordinate channels to the input (CoordConv).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

import lrlc_numpy
import lrlc_torch

from .checks import build_dataclass, check_int, check_mapping, check_type

# Layer kinds a variant can put at a position. 'spatial-bias' is an LRLC layer of rank 1,
# i.e. a convolution plus row and column biases (paper eq. 5).
LAYER_KINDS = ("conv", "spatial-bias", "lrlc", "lrlc-input-dependent", "lc", "wide-conv")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of the paper's Tables 1-3.

    kind: the layer kind placed at `positions`; positions: 1-based layer indices, or 'all'.
    ranked: whether the variant takes a rank K (chosen on validation data); for wide-conv the
    rank is that of the LRLC layer whose parameter count the widened layer matches.
    """

    label: str
    kind: str = "conv"
    positions: tuple[int, ...] | str = ()
    ranked: bool = False
    coordconv: bool = False

    def __post_init__(self):
        if self.kind not in LAYER_KINDS:
            raise ValueError(f"unknown layer kind {self.kind!r}; expected one of {LAYER_KINDS}")


_ORDINAL = {1: "1st", 2: "2nd", 3: "3rd"}


def _variants() -> dict[str, Variant]:
    variants = {"conv": Variant("Convolution")}
    where = {f"{p}": ((p,), f"{_ORDINAL[p]} layer") for p in (1, 2, 3)}
    where["all"] = ("all", "all layers")
    for suffix, (positions, text) in where.items():
        variants[f"spatial-bias-{suffix}"] = Variant(
            f"Convolution + spatial bias ({text})", "spatial-bias", positions
        )
    for suffix, (positions, text) in where.items():
        variants[f"lrlc-{suffix}"] = Variant(f"LRLC ({text})", "lrlc", positions, ranked=True)
    variants["lrlc-input-dependent-3"] = Variant(
        "LRLC (3rd layer & input dependent weights)", "lrlc-input-dependent", (3,), ranked=True
    )
    variants["coordconv"] = Variant("CoordConv (Liu et al., 2018)", coordconv=True)
    for p in (1, 2, 3):
        variants[f"lc-{p}"] = Variant(f"Locally connected ({_ORDINAL[p]} layer)", "lc", (p,))
    variants["wide-conv-3"] = Variant(
        "Wide convolution (3rd layer)", "wide-conv", (3,), ranked=True
    )
    return variants


VARIANTS: dict[str, Variant] = _variants()


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes a network's architecture. Defaults are the paper's."""

    variant: str
    in_channels: int
    input_size: tuple[int, int]
    num_classes: int
    rank: int | None = None
    width: int = 64
    depth: int = 3
    kernel_size: int = 3

    def __post_init__(self):
        check_type("ModelConfig.variant", self.variant, str)
        check_type("ModelConfig.input_size", self.input_size, (tuple, list))
        object.__setattr__(self, "input_size", tuple(self.input_size))
        if len(self.input_size) != 2:
            raise ValueError(
                f"ModelConfig.input_size must be (height, width), got {self.input_size!r}"
            )
        for i, side in enumerate(self.input_size):
            check_int(f"ModelConfig.input_size[{i}]", side, minimum=1)
        if self.variant not in VARIANTS:
            raise ValueError(
                f"unknown model variant {self.variant!r}; expected one of {sorted(VARIANTS)}"
            )
        variant = VARIANTS[self.variant]
        if variant.ranked and (
            isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1
        ):
            raise ValueError(f"variant {self.variant!r} needs a rank >= 1, got {self.rank!r}")
        if not variant.ranked and self.rank is not None:
            raise ValueError(f"variant {self.variant!r} takes no rank, got rank={self.rank!r}")
        for name in ("in_channels", "num_classes", "width", "depth", "kernel_size"):
            check_int(f"ModelConfig.{name}", getattr(self, name), minimum=1)
        if isinstance(variant.positions, tuple) and max(variant.positions, default=0) > self.depth:
            raise ValueError(
                f"variant {self.variant!r} changes layer {max(variant.positions)} but the "
                f"network has depth {self.depth}"
            )
        last = self.layer_input_size(self.depth + 1)
        if min(last) < 1:
            raise ValueError(
                f"input_size {self.input_size} is too small for {self.depth} 'valid' "
                f"{self.kernel_size}×{self.kernel_size} layers (the last grid would be {last})"
            )

    def layer_input_size(self, position: int) -> tuple[int, int]:
        """Grid entering layer `position` (1-based); position depth + 1 is the final grid."""
        shrink = (position - 1) * (self.kernel_size - 1)
        return (self.input_size[0] - shrink, self.input_size[1] - shrink)

    def layer_kind(self, position: int) -> str:
        variant = VARIANTS[self.variant]
        if variant.positions == "all" or position in variant.positions:
            return variant.kind
        return "conv"

    def architecture(self) -> tuple:
        """What the network computes, whatever the variant's name: 'conv + spatial bias' at a
        layer is the LRLC layer of rank 1 there, so the two name the same network."""
        layers = []
        for position in range(1, self.depth + 1):
            kind = self.layer_kind(position)
            if kind == "spatial-bias":
                layers.append(("lrlc", 1))
            elif kind in ("lrlc", "lrlc-input-dependent", "wide-conv"):
                layers.append((kind, self.rank))
            else:
                layers.append((kind, None))
        fields = dataclasses.asdict(self)
        del fields["variant"], fields["rank"]
        return (VARIANTS[self.variant].coordconv, tuple(layers), tuple(sorted(fields.items())))

    @classmethod
    def from_dict(cls, fields: dict, where: str = "ModelConfig") -> ModelConfig:
        """From a model.json's dict; `where` names the file and key in errors."""
        return build_dataclass(cls, check_mapping(where, fields), where)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["input_size"] = list(self.input_size)
        return out


class AppendCoordinates(nn.Module):
    """CoordConv's input: two extra channels holding the row and column coordinate in [-1, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        rows = torch.linspace(-1.0, 1.0, height, dtype=x.dtype, device=x.device)
        cols = torch.linspace(-1.0, 1.0, width, dtype=x.dtype, device=x.device)
        grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"))
        return torch.cat([x, grid.expand(batch, -1, -1, -1)], dim=1)


def _he_uniform_conv(layer: nn.Conv2d, input_size: tuple[int, int]) -> None:
    """The LRLC basis's initial distribution (lrlc_numpy.initial_value) and a zero bias, so a
    convolution and an LRLC layer of rank 1 start from the same distribution."""
    out_channels, in_channels, k, _ = layer.weight.shape
    basis = lrlc_numpy.LRLCConfig(in_channels, out_channels, k, 1, input_size)
    bound = lrlc_numpy.initial_value("basis", basis).limit
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound)
        if layer.bias is not None:
            layer.bias.zero_()


def _make_layer(kind, in_channels, out_channels, config: ModelConfig, position: int) -> nn.Module:
    size = config.layer_input_size(position)
    k = config.kernel_size
    if kind in ("conv", "wide-conv"):
        layer = nn.Conv2d(in_channels, out_channels, k)
        _he_uniform_conv(layer, size)
        return layer
    if kind == "lc":
        return lrlc_torch.LocallyConnected2d(in_channels, out_channels, k, input_size=size)
    rank = 1 if kind == "spatial-bias" else config.rank
    extra = {"combining": "full", "input_dependent": True} if kind == "lrlc-input-dependent" else {}
    return lrlc_torch.LowRankLocallyConnected2d(
        in_channels, out_channels, k, rank=rank, input_size=size, **extra
    )


class Network(nn.Module):
    """The paper's classifier for one ModelConfig (NCHW input)."""

    def __init__(self, config: ModelConfig, *, wide_width: int | None = None):
        super().__init__()
        self.config = config
        variant = VARIANTS[config.variant]
        self.coordinates = AppendCoordinates() if variant.coordconv else None
        channels = config.in_channels + (2 if variant.coordconv else 0)
        self.layers = nn.ModuleList()
        self.norms = nn.ModuleList()
        for position in range(1, config.depth + 1):
            kind = config.layer_kind(position)
            out_channels = wide_width if kind == "wide-conv" else config.width
            self.layers.append(_make_layer(kind, channels, out_channels, config, position))
            self.norms.append(nn.BatchNorm2d(out_channels))
            channels = out_channels
        self.classifier = nn.Linear(channels, config.num_classes)

    def check_input(self, x: torch.Tensor) -> None:
        expected = (self.config.in_channels, *self.config.input_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"Network input has shape {tuple(x.shape)}; expected (batch, {expected[0]}, "
                f"{expected[1]}, {expected[2]})"
            )

    def layer_input(self, x: torch.Tensor, position: int) -> torch.Tensor:
        """The activation entering layer `position` (1-based); depth + 1 gives the last features."""
        self.check_input(x)
        if self.coordinates is not None:
            x = self.coordinates(x)
        for layer, norm in zip(self.layers[: position - 1], self.norms):
            x = torch.relu(norm(layer(x)))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.layer_input(x, self.config.depth + 1)
        return self.classifier(features.mean(dim=(2, 3)))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (batch-norm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def matched_width(config: ModelConfig) -> int:
    """Width of the widened layer whose network has the parameter count closest to the network
    with an LRLC layer of rank `config.rank` at the same positions (ties go to the narrower)."""
    variant = VARIANTS[config.variant]
    lrlc = dataclasses.replace(config, variant=f"lrlc-{variant.positions[0]}")
    target = count_parameters(Network(lrlc))
    # The count is affine in the width, so two evaluations give it exactly.
    base = count_parameters(Network(config, wide_width=config.width))
    slope = count_parameters(Network(config, wide_width=config.width + 1)) - base
    width = config.width + (target - base) / slope
    return max(1, math.ceil(width - 0.5))


def build_model(config: ModelConfig, seed: int = 0) -> Network:
    """The network for `config`, initialised from `seed` without touching the global RNG."""
    wide = matched_width(config) if VARIANTS[config.variant].kind == "wide-conv" else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Network(config, wide_width=wide)
