"""Model surgery: replace chosen `nn.Conv1d`, `nn.Conv2d` and `nn.Conv3d` modules of a network
by LRLC layers of the same rank."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .layers import (
    LowRankLocallyConnected1d,
    LowRankLocallyConnected2d,
    LowRankLocallyConnected3d,
)

__all__ = ["convert_convs"]

# The LRLC layer that upgrades each kind of convolution.
_UPGRADES = {
    nn.Conv1d: LowRankLocallyConnected1d,
    nn.Conv2d: LowRankLocallyConnected2d,
    nn.Conv3d: LowRankLocallyConnected3d,
}


def _every_conv(name: str, conv: nn.Module) -> bool:
    return True


def _upgrade(module: nn.Module):
    """The LRLC class for a convolution module, or None for any other module."""
    for conv_type, layer_type in _UPGRADES.items():
        if isinstance(module, conv_type):
            return layer_type
    return None


def convert_convs(
    model: nn.Module,
    example_input: torch.Tensor,
    rank: int,
    *,
    predicate: Callable[[str, nn.Module], bool] = _every_conv,
    generator: torch.Generator | None = None,
    **options,
) -> list[str]:
    """Replace, in place, every `nn.Conv2d` of `model` for which `predicate(name, conv)` holds
    by `LowRankLocallyConnected2d.from_conv(conv, rank, input_size, **options)`, and likewise
    every chosen `nn.Conv1d` by `LowRankLocallyConnected1d` and `nn.Conv3d` by
    `LowRankLocallyConnected3d` (`options` apply to all; a 1-D layer needs combining='full').

    An LRLC layer needs its input size, so one forward pass on `example_input` (in eval
    mode and without gradients, so batch-norm statistics are left alone) records the
    spatial size each chosen conv sees. A chosen conv that the pass does not reach, or
    reaches with two sizes, is an error. All or nothing: every replacement is built (and so
    checked) before the first is put in, so an error leaves the model unchanged. Returns
    the names of the replaced modules. At initialisation the model computes what it
    computed before (see `from_conv`).

    The paper's Table 4 setting, every 3x3 convolution of a torchvision ResNet-50 (not
    tested here: torchvision is not installed alongside this project's torch build;
    the tests run the same surgery on a small CNN and a ResNet-style block)::

        model = torchvision.models.resnet50()
        convert_convs(
            model, torch.randn(1, 3, 224, 224), rank=4,
            predicate=lambda name, conv: conv.kernel_size == (3, 3),
        )
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert_convs: model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(
            f"convert_convs: example_input must be a torch.Tensor, got "
            f"{type(example_input).__name__}"
        )
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"convert_convs: rank must be an int >= 1, got {rank!r}")
    if not callable(predicate):
        raise TypeError(f"convert_convs: predicate must be callable, got {predicate!r}")
    chosen = {
        name: module
        for name, module in model.named_modules()
        if _upgrade(module) is not None and predicate(name, module)
    }
    sizes: dict[str, tuple[int, ...]] = {}

    def recorder(name):
        def hook(module, args):
            size = tuple(args[0].shape[-_upgrade(module).spatial_dims :])
            if sizes.setdefault(name, size) != size:
                raise ValueError(
                    f"convert_convs: {name!r} sees inputs of sizes {sizes[name]} and {size}; "
                    "an LRLC layer needs a single input size"
                )

        return hook

    handles = [conv.register_forward_pre_hook(recorder(name)) for name, conv in chosen.items()]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    unreached = sorted(set(chosen) - set(sizes))
    if unreached:
        raise ValueError(
            f"convert_convs: the example forward pass never reached {unreached}, so their "
            "input sizes are unknown; exclude them with `predicate`"
        )
    layers, problems = {}, []
    for name, conv in chosen.items():
        try:
            layers[name] = _upgrade(conv).from_conv(
                conv, rank, sizes[name], generator=generator, **options
            )
        except (TypeError, ValueError) as err:
            problems.append(f"{name!r}: {err}")
    if problems:
        raise ValueError(
            f"convert_convs: cannot convert {len(problems)} of the {len(chosen)} chosen "
            f"convolutions, so the model was left unchanged; {'; '.join(problems)}"
        )
    for name, layer in layers.items():
        layer.train(chosen[name].training)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer)
    return list(chosen)
