"""lrlc_tf: low-rank locally connected layers for TensorFlow and Keras 3.

    import keras, lrlc_tf
    layer = lrlc_tf.LRLC2D(64, 3, rank=4, input_size=(32, 32), padding="same")

`LowRankLocallyConnected2D` (alias `LRLC2D`) and `LocallyConnected2D` are Keras layers,
registered for `.keras` saving under the package name "lrlc"; `lrlc_tf.functional` holds
the same computation as pure TensorFlow functions of a neutral params dict. Checkpoints are
the neutral safetensors files of spec section 13 (`save_params` / `load_params`).
"""

from . import functional
from .functional import forward, locally_connected, to_locally_connected
from .layers import LRLC2D, LocallyConnected2D, LowRankLocallyConnected2D

__all__ = [
    "LRLC2D",
    "LocallyConnected2D",
    "LowRankLocallyConnected2D",
    "forward",
    "functional",
    "locally_connected",
    "to_locally_connected",
]
