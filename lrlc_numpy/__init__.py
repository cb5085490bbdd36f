"""lrlc_numpy: the NumPy reference implementation of low-rank locally connected layers.

It implements spec/SPEC.md exactly, forward and backward; every other lrlc package is
checked against it. It imports no deep-learning framework.
"""

from .checkpoint import load_checkpoint, load_params, save_checkpoint, save_params
from .config import (
    COMBINING_MODES,
    NORMALIZATIONS,
    LRLCConfig,
    check_input_shape,
    check_lc_shapes,
    check_params,
    lc_shapes,
    param_shapes,
    working_dtype_name,
)
from .initializers import Initial, glorot_fans, initial_value
from .reference import (
    basis_responses,
    bias_map,
    check_input,
    combine,
    combining_weights,
    conv2d,
    forward,
    init_params,
    locally_connected,
    position_banks,
    resize_bilinear,
    resize_matrix,
    to_locally_connected,
    vjp,
)

__all__ = [
    "COMBINING_MODES",
    "NORMALIZATIONS",
    "LRLCConfig",
    "basis_responses",
    "bias_map",
    "check_input",
    "combine",
    "Initial",
    "check_input_shape",
    "check_lc_shapes",
    "check_params",
    "combining_weights",
    "conv2d",
    "forward",
    "glorot_fans",
    "initial_value",
    "init_params",
    "load_checkpoint",
    "load_params",
    "lc_shapes",
    "locally_connected",
    "param_shapes",
    "position_banks",
    "resize_bilinear",
    "resize_matrix",
    "save_checkpoint",
    "save_params",
    "to_locally_connected",
    "vjp",
    "working_dtype_name",
]
