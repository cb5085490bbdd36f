"""lrlc_numpy: the NumPy reference implementation of low-rank locally connected layers.

It implements spec/SPEC.md exactly, forward and backward; every other lrlc package is
checked against it. It imports no deep-learning framework.
"""

from importlib.metadata import version

from .checkpoint import (
    Checkpoint,
    load_checkpoint,
    load_params,
    read_checkpoint,
    save_checkpoint,
    save_params,
)
from .config import (
    COMBINING_MODES,
    NORMALIZATIONS,
    BasisGroup,
    LRLCConfig,
    PerBasis,
    check_config,
    check_input_shape,
    check_lc_shapes,
    check_param_shapes,
    check_params,
    lc_shapes,
    param_shapes,
    working_dtype_name,
)
from .initializers import Initial, glorot_fans, initial_value
from .reference import (
    basis_members,
    basis_responses,
    bias_map,
    check_input,
    combine,
    combining_weights,
    conv2d,
    embedded_basis,
    forward,
    group_patches,
    init_params,
    locally_connected,
    position_banks,
    resize_bilinear,
    resize_matrix,
    stack_responses,
    to_locally_connected,
    vjp,
)

__version__ = version("lrlc")

__all__ = [
    "COMBINING_MODES",
    "NORMALIZATIONS",
    "BasisGroup",
    "Checkpoint",
    "LRLCConfig",
    "PerBasis",
    "basis_members",
    "basis_responses",
    "bias_map",
    "check_input",
    "combine",
    "Initial",
    "check_config",
    "check_input_shape",
    "check_lc_shapes",
    "check_param_shapes",
    "check_params",
    "combining_weights",
    "conv2d",
    "embedded_basis",
    "forward",
    "glorot_fans",
    "group_patches",
    "initial_value",
    "init_params",
    "load_checkpoint",
    "load_params",
    "lc_shapes",
    "locally_connected",
    "param_shapes",
    "position_banks",
    "read_checkpoint",
    "resize_bilinear",
    "resize_matrix",
    "save_checkpoint",
    "save_params",
    "stack_responses",
    "to_locally_connected",
    "vjp",
    "working_dtype_name",
]
