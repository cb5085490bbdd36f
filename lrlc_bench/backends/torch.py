"""PyTorch: `nn.Conv2d`, `lrlc_torch.LRLC2d` and its `to_locally_connected()`; NCHW, float32.

The LRLC layers are called through `lrlc_torch.compiled` (`forward`, `locally_connected`),
which takes the compiled path where its rule says (CUDA by default) and the layers' eager
functions elsewhere: the path a layer takes once `lrlc_torch.compiled` is wired into its
forward, measured whether or not it is yet. `LRLC_TORCH_COMPILED=0|1` in the environment
picks the eager or compiled path for every device (docs/performance.md, 'Compiled paths
(torch)').
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import lrlc_torch
from lrlc_torch import compiled

from ..measure import Workload
from ..settings import OP_STRATEGIES
from . import Unavailable


class _Routed(nn.Module):
    """An lrlc_torch layer whose forward goes through `lrlc_torch.compiled`."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        if not hasattr(layer, "strategy"):  # a LocallyConnected{1,2,3}d layer
            return compiled.locally_connected(x, layer.weight, layer.bias, layer.config)
        params = dict(layer.named_parameters())
        return compiled.forward(x, params, layer.config, strategy=layer.strategy)


class Backend:
    name = "torch"
    strategies = tuple(s for s in lrlc_torch.costs.STRATEGIES if s != "auto")

    def __init__(self, settings):
        if settings.device == "gpu" and not torch.cuda.is_available():
            raise Unavailable("torch sees no CUDA device")
        self.settings = settings
        self.device = torch.device("cuda" if settings.device == "gpu" else "cpu")
        if self.device.type == "cuda":
            # One float32 precision for every kernel: PyTorch's default lets cuDNN's
            # convolutions use TensorFloat-32 but not matrix products, which would time the
            # locally connected products at a precision the convolutions do not pay for. TF32
            # for both is also JAX's default on GPUs.
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        self.rng = np.random.default_rng(settings.seed)

    def environment(self) -> dict:
        info = {
            "versions": {"torch": torch.__version__},
            "threads": {
                "intra_op": torch.get_num_threads(),
                "inter_op": torch.get_num_interop_threads(),
            },
            "layout": self.settings.lrlc_config(1).layouts[1],
            "dtype": "float32",
            "lrlc_path": "compiled" if compiled.enabled(self.device) else "eager",
        }
        if self.device.type == "cuda":
            info["device_name"] = torch.cuda.get_device_name(self.device)
            info["versions"]["cudnn"] = torch.backends.cudnn.version()
            info["float32"] = "TF32 in convolutions and matrix products"
        return info

    def _random(self, shape) -> torch.Tensor:
        values = self.rng.standard_normal(shape, dtype=np.float32)
        return torch.from_numpy(values).to(self.device)

    def _module(self, op: str, rank: int) -> nn.Module:
        s = self.settings
        factory = {"device": self.device, "dtype": torch.float32}
        if op in ("conv", "conv_k"):
            width = s.out_channels * (rank if op == "conv_k" else 1)
            conv = getattr(nn, f"Conv{s.spatial_dims}d")
            return conv(s.in_channels, width, s.kernel_size, padding="same", **factory)
        config = s.lrlc_config(rank, input_dependent=op == "lrlc_input_dependent")
        strategy = OP_STRATEGIES.get(op, "auto")
        lrlc = getattr(lrlc_torch, f"LRLC{s.spatial_dims}d")
        layer = lrlc.from_lrlc_config(config, strategy=strategy, **factory)
        return _Routed(layer.to_locally_connected() if op == "lc" else layer)

    def chosen_strategy(self, rank: int) -> str:
        config = self.settings.lrlc_config(rank)
        return lrlc_torch.costs.choose_strategy(config, self.settings.batch, device=self.device)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def workload(self, op: str, rank: int) -> Workload:
        s = self.settings
        layer = self._module(op, rank)
        x = self._random((s.batch, s.in_channels, *s.input_size))

        def forward():
            with torch.no_grad():
                layer(x)
            self._sync()

        if op == "lc":
            return Workload(forward, None)
        x_grad = x.clone().requires_grad_(True)
        wrt = (x_grad, *layer.parameters())
        width = s.out_channels * (rank if op == "conv_k" else 1)
        dy = self._random((s.batch, width, *s.lrlc_config(rank).output_size))

        def train():
            torch.autograd.grad(layer(x_grad), wrt, dy)
            self._sync()

        return Workload(forward, train)

    def reset_peak_memory(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)

    def memory_in_use(self) -> int:
        return torch.cuda.memory_allocated(self.device)

    def peak_memory(self) -> int:
        return torch.cuda.max_memory_allocated(self.device)
