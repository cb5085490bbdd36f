"""lrlc_tf: low-rank locally connected layers for Keras 3 (every backend) and TensorFlow.

    import keras, lrlc_tf
    layer = lrlc_tf.LRLC2D(64, 3, rank=4, input_size=(32, 32), padding="same")

`LowRankLocallyConnected2D` (alias `LRLC2D`) and `LocallyConnected2D` are Keras layers
(`layers`), with the same surface for sequences (`LRLC1D`, `LocallyConnected1D`) and
volumes (`LRLC3D`, `LocallyConnected3D`; spec section 17), registered for `.keras`
saving under the package name "lrlc". They run under KERAS_BACKEND tensorflow, jax or
torch, each time on that framework's own lrlc code
(`ops`). The TensorFlow computation as pure functions of a neutral params dict is in
`functional`, the locally connected kernel in `positionwise`, the strategy rule's costs in
`costs`, and the neutral safetensors checkpoint of spec section 13 in `checkpoint`; these
import TensorFlow, so they load on first use, and `import lrlc_tf` needs only Keras.
"""

import importlib

from lrlc_numpy import __version__  # the one version of the lrlc distribution

from . import ops
from .layers import (
    LRLC1D,
    LRLC2D,
    LRLC3D,
    LocallyConnected1D,
    LocallyConnected2D,
    LocallyConnected3D,
    LowRankLocallyConnected1D,
    LowRankLocallyConnected2D,
    LowRankLocallyConnected3D,
)

# TensorFlow's modules, and the names re-exported from them: loaded on first access.
_TENSORFLOW_MODULES = ("checkpoint", "costs", "functional", "positionwise")
_TENSORFLOW_NAMES = {
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "choose_strategy": "costs",
    "lc_crossover": "costs",
    "combining_weights": "functional",
    "forward": "functional",
    "locally_connected": "functional",
    "to_locally_connected": "functional",
}


def __getattr__(name):
    if name in _TENSORFLOW_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _TENSORFLOW_NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_TENSORFLOW_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "__version__",
    "LRLC1D",
    "LRLC2D",
    "LRLC3D",
    "LocallyConnected1D",
    "LocallyConnected2D",
    "LocallyConnected3D",
    "LowRankLocallyConnected1D",
    "LowRankLocallyConnected2D",
    "LowRankLocallyConnected3D",
    "checkpoint",
    "choose_strategy",
    "combining_weights",
    "costs",
    "forward",
    "functional",
    "lc_crossover",
    "load_checkpoint",
    "locally_connected",
    "ops",
    "positionwise",
    "save_checkpoint",
    "to_locally_connected",
]
