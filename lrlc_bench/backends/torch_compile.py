"""PyTorch under the user's own `torch.compile` (inductor, default mode): the torch backend's
workloads, plain convolutions included, each module wrapped in `torch.compile`, so that the
LRLC layers' ratios to the convolutions compare compiled code with compiled code."""

from __future__ import annotations

import torch

from . import torch as torch_backend


class Backend(torch_backend.Backend):
    name = "torch_compile"

    def environment(self) -> dict:
        return {**super().environment(), "compile": "torch.compile(module), inductor, default mode"}

    def _module(self, op: str, rank: int) -> torch.nn.Module:
        return torch.compile(super()._module(op, rank))
