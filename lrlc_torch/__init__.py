"""lrlc_torch: low-rank locally connected layers for PyTorch (NCHW), conforming to spec/SPEC.md.

    layer = lrlc_torch.LRLC2d(16, 32, 3, rank=4, input_size=(28, 28), padding="same")
    y = layer(torch.randn(8, 16, 28, 28))        # (8, 32, 28, 28)

Modules (`layers`): `LowRankLocallyConnected2d` (alias `LRLC2d`) and `LocallyConnected2d`,
and their 1-D (NCL) and 3-D (NCDHW) counterparts `LRLC1d`, `LRLC3d`, `LocallyConnected1d`,
`LocallyConnected3d` (spec section 17); the same computations as functions in `functional`;
the strategy rule in `costs`; neutral parameters and checkpoints in `checkpoint`;
`convert_convs` upgrades the convolutions (1-D, 2-D, 3-D) of an existing model.

The modules follow `nn.Conv2d`'s conventions: unbatched (C, H, W) input, 4-D convolution
weights that `model.to(memory_format=torch.channels_last)` converts, `torch.export` with a
dynamic batch (inference and training) and `torch.onnx.export(..., dynamo=True)`;
TorchScript and the legacy ONNX exporter raise an error saying so.
"""

from lrlc_numpy import __version__  # the one version of the lrlc distribution

from . import compiled, costs, functional
from .checkpoint import (
    from_neutral,
    lc_from_neutral,
    lc_to_neutral,
    load_checkpoint,
    neutral_tensors,
    save_checkpoint,
    to_neutral,
    torch_lc_shapes,
    torch_param_shapes,
)
from .layers import (
    LocallyConnected1d,
    LocallyConnected2d,
    LocallyConnected3d,
    LowRankLocallyConnected1d,
    LowRankLocallyConnected2d,
    LowRankLocallyConnected3d,
    LRLC1d,
    LRLC2d,
    LRLC3d,
)
from .surgery import convert_convs

__all__ = [
    "compiled",
    "LRLC1d",
    "LRLC2d",
    "LRLC3d",
    "LocallyConnected1d",
    "LocallyConnected2d",
    "LocallyConnected3d",
    "LowRankLocallyConnected1d",
    "LowRankLocallyConnected2d",
    "LowRankLocallyConnected3d",
    "convert_convs",
    "costs",
    "from_neutral",
    "functional",
    "lc_from_neutral",
    "lc_to_neutral",
    "load_checkpoint",
    "neutral_tensors",
    "save_checkpoint",
    "to_neutral",
    "torch_lc_shapes",
    "torch_param_shapes",
    "__version__",
]
