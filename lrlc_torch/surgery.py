"""Model surgery: replace chosen `nn.Conv2d` modules of a network by LRLC layers."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .layers import LowRankLocallyConnected2d

__all__ = ["convert_convs"]


def _every_conv(name: str, conv: nn.Conv2d) -> bool:
    return True


def convert_convs(
    model: nn.Module,
    example_input: torch.Tensor,
    rank: int,
    *,
    predicate: Callable[[str, nn.Conv2d], bool] = _every_conv,
    generator: torch.Generator | None = None,
    **options,
) -> list[str]:
    """Replace, in place, every `nn.Conv2d` of `model` for which `predicate(name, conv)` holds
    by `LowRankLocallyConnected2d.from_conv(conv, rank, input_size, **options)`.

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
        if isinstance(module, nn.Conv2d) and predicate(name, module)
    }
    sizes: dict[str, tuple[int, int]] = {}

    def recorder(name):
        def hook(module, args):
            size = tuple(args[0].shape[-2:])
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
            layers[name] = LowRankLocallyConnected2d.from_conv(
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
