"""lrlc_tf: low-rank locally connected layers for TensorFlow and Keras 3.

    import keras, lrlc_tf
    layer = lrlc_tf.LRLC2D(64, 3, rank=4, input_size=(32, 32), padding="same")

`LowRankLocallyConnected2D` (alias `LRLC2D`) and `LocallyConnected2D` are Keras layers
(`layers`), registered for `.keras` saving under the package name "lrlc". The same
computation as pure TensorFlow functions of a neutral params dict is in `functional`, the
locally connected kernel in `positionwise`, the strategy rule's costs in `costs`, and the
neutral safetensors checkpoint of spec section 13 in `checkpoint`.
"""

from . import checkpoint, costs, functional, positionwise
from .checkpoint import load_checkpoint, save_checkpoint
from .costs import choose_strategy, lc_crossover
from .functional import combining_weights, forward, locally_connected, to_locally_connected
from .layers import LRLC2D, LocallyConnected2D, LowRankLocallyConnected2D

__all__ = [
    "LRLC2D",
    "LocallyConnected2D",
    "LowRankLocallyConnected2D",
    "checkpoint",
    "choose_strategy",
    "combining_weights",
    "costs",
    "forward",
    "functional",
    "lc_crossover",
    "load_checkpoint",
    "locally_connected",
    "positionwise",
    "save_checkpoint",
    "to_locally_connected",
]
