"""LRLC layers as pure TensorFlow functions of a neutral params dict (spec/SPEC.md), in
canonical layouts (NHWC data, basis (K, kh, kw, C_in, C_out), or a mixed basis's basis.k
(kh_k, kw_k, C_in, C_out), spec section 16); they compute in the dtype of `x`. Every
function is generic in the number n of spatial axes (spec section 17): data (B, *grid, C)
(NLC, NHWC, NDHWC), basis (K, *kernel, C_in, C_out), weights (*out, K); the docstrings
write the 2-D case.

Every public function checks its arguments before any work (spec section 14), on static
shapes, so inside tf.function once per trace: TypeError or ValueError naming the argument,
the value received and what was expected. The batch may be unknown (None) or 0.

Strategies (`costs.choose_strategy`): 'conv' is Algorithm 1 (`basis_responses`, `combine`;
at rank 1 with softmax `_single_convolution`), 'lc' the locally connected form
(`position_banks`, `apply_banks`), fixed layers only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import tensorflow as tf

import lrlc_numpy
from lrlc_numpy import BasisGroup, LRLCConfig
from lrlc_numpy.config import NORMALIZATIONS, check_config, resolve_padding
from lrlc_numpy.reference import L2_FLOOR
from lrlc_numpy.strategy import combining_parameter_names, weights_are_ones

from .costs import STRATEGIES, choose_strategy, lc_crossover
from .positionwise import (
    FLOAT_DTYPES,
    apply_banks,
    as_floating,
    check_input,
    extract_patches,
    pad_input,
)

__all__ = [
    "FLOAT_DTYPES",
    "STRATEGIES",
    "apply_banks",
    "as_floating",
    "basis_responses",
    "bias_map",
    "check_input",
    "check_params",
    "choose_strategy",
    "combine",
    "combining_weights",
    "depthwise_conv3x3",
    "embedded_basis",
    "extract_patches",
    "fixed_logits",
    "forward",
    "g_forward",
    "group_basis",
    "lc_crossover",
    "locally_connected",
    "normalize_weights",
    "pad_input",
    "position_banks",
    "resize_bilinear",
    "resize_linear",
    "spatial_bias_map",
    "stack_responses",
    "to_locally_connected",
    "weights_are_ones",
]

# ---------------------------------------------------------------------------------------------
# Checks (spec section 14); `as_floating` and `check_input` live in positionwise


def check_params(params, config: LRLCConfig, dtype=None) -> dict:
    """`params` as tensors (cast to `dtype` if given) after checking names, shapes, dtypes."""
    lrlc_numpy.check_params(params, config)
    dtype = None if dtype is None else _float_dtype(dtype, "check_params")
    out = {}
    for name, value in params.items():
        value = as_floating(value, f"params[{name!r}]")
        out[name] = value if dtype is None else tf.cast(value, dtype)
    return out


def _float_dtype(dtype, where: str):
    """`dtype` as one of FLOAT_DTYPES; TypeError naming `where` otherwise."""
    try:
        resolved = tf.as_dtype(dtype)
    except (TypeError, ValueError):
        resolved = None
    if resolved not in FLOAT_DTYPES:
        names = ", ".join(d.name for d in FLOAT_DTYPES)
        raise TypeError(f"{where}: dtype must be one of {names}, got {dtype!r}")
    return resolved


def _common_dtype(tensors):
    """The dtype a fixed layer's steps run in without an input: the tensors' own if they
    share one, else the widest (two different 16-bit dtypes meet in float32), as NumPy
    promotes."""
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) == 1:
        return dtypes.pop()
    return tf.float64 if tf.float64 in dtypes else tf.float32


def _named_params(params, config: LRLCConfig, where: str, keep) -> dict:
    """The tensors of `params` whose name satisfies `keep` (a step reads only its own), each
    floating with the shape `config` gives it; errors name `where` and the tensor."""
    check_config(config, where)
    if not isinstance(params, Mapping):
        raise TypeError(
            f"{where}: params must be a mapping of name -> tensor, got {type(params).__name__}"
        )
    expected = {n: s for n, s in lrlc_numpy.param_shapes(config).items() if keep(n)}
    out = {}
    for name, shape in expected.items():
        if name not in params:
            raise ValueError(f"{where}: params has no {name!r}; it needs {sorted(expected)}")
        out[name] = _shaped(params[name], f"{where}: params[{name!r}]", shape)
    return out


def _shaped(value, name: str, expected):
    """`value` as a floating tensor of static shape `expected` (None: any size, the batch)."""
    tensor = as_floating(value, name)
    shown = "(" + ", ".join("B" if n is None else str(n) for n in expected) + ")"
    if tensor.shape.rank is None:
        raise ValueError(f"{name} has unknown rank; expected shape {shown}")
    shape = tuple(tensor.shape)
    if len(shape) != len(expected) or any(
        want is not None and got is not None and got != want for got, want in zip(shape, expected)
    ):
        raise ValueError(f"{name} has shape {shape}; expected {shown}")
    return tensor


def _check_choice(value, choices, name: str, where: str) -> None:
    if not (isinstance(value, str) and value in choices):
        raise ValueError(f"{where}: unknown {name} {value!r}; expected one of {choices}")


# ---------------------------------------------------------------------------------------------
# Algorithm 1 (eqs. 2-5; spec section 4)


def _native_padding(config: LRLCConfig, group: BasisGroup):
    """'VALID' or 'SAME' when TensorFlow's own padding is `group`'s here, else None: it saves
    a padded copy. TF's 'SAME' is the spec's rule at the convolution's own stride, so not for
    a dilated, strided window (convolved at stride 1, then subsampled)."""
    pairs = group.padding_pairs
    if all(pad == 0 for pair in pairs for pad in pair):
        return "VALID"
    native_stride = _all_ones(group.dilation) or _all_ones(config.stride)
    same = resolve_padding(
        "same", config.input_size, group.kernel_size, config.stride, group.dilation
    )
    return "SAME" if native_stride and pairs == same else None


# TensorFlow's names of the channels-last layouts, by number of spatial axes.
_TF_LAYOUTS = {1: "NWC", 2: "NHWC", 3: "NDHWC"}


def _all_ones(values) -> bool:
    return all(v == 1 for v in values)


def _convolution(x, kernel, config: LRLCConfig, group: BasisGroup):
    """`x` convolved with `kernel` on `group`'s padding and dilation, at `config`'s stride
    (tf.nn.convolution: conv1d, conv2d or conv3d by rank). A dilated window runs at stride 1
    (TF's dilated convolution allows no other, and its CPU tf.nn.conv2d has no dilated
    float64 gradient), so the stride is then a subsampling."""
    padding = _native_padding(config, group)
    if padding is None:
        x, padding = pad_input(x, config, group.padding_pairs), "VALID"
    # Named: TF's eager Conv3D gradient reads a data_format attribute left unset otherwise.
    data_format = _TF_LAYOUTS[config.spatial_dims]
    if _all_ones(group.dilation):
        return tf.nn.convolution(
            x, kernel, strides=config.stride, padding=padding, data_format=data_format
        )
    z = tf.nn.convolution(
        x, kernel, padding=padding, dilations=group.dilation, data_format=data_format
    )
    return z[(slice(None), *(slice(None, None, s) for s in config.stride), slice(None))]


def _basis(params, config: LRLCConfig):
    """The basis as `basis_responses` takes it: the stacked `basis`, or the K tensors
    `basis.k` of a mixed basis."""
    if config.mixed:
        return [params[name] for name in config.basis_names]
    return params["basis"]


def group_basis(basis, group: BasisGroup):
    """The filter banks of `group` stacked (|G|, kh, kw, C_in, C_out), in member order: a
    stacked plain `basis` is its one group already; a mixed one is the K tensors basis.k."""
    if not isinstance(group, BasisGroup):
        raise TypeError(
            f"group_basis: group must be a BasisGroup (config.basis_groups), got {group!r}"
        )
    if isinstance(basis, (list, tuple)):
        if max(group.members) >= len(basis):
            raise ValueError(
                f"group_basis: group members {group.members} index a basis of {len(basis)} tensors"
            )
        return tf.stack([as_floating(basis[k], f"basis[{k}]") for k in group.members])
    return as_floating(basis, "basis")


def stack_responses(responses, config: LRLCConfig):
    """z (B, H_out, W_out, K, C_out) from each of `config.basis_groups`' responses, the K axis
    (the second last) in basis order: groups need not be contiguous (spec section 16.3)."""
    check_config(config, "stack_responses")
    groups = config.basis_groups
    if not isinstance(responses, (list, tuple)) or len(responses) != len(groups):
        got = len(responses) if isinstance(responses, (list, tuple)) else type(responses).__name__
        raise ValueError(
            f"stack_responses: expected a list of {len(groups)} responses, one per basis "
            f"group of config.basis_groups, got {got}"
        )
    responses = [
        _shaped(
            r,
            f"stack_responses: responses[{g}]",
            (None, *config.output_size, len(group.members), config.out_channels),
        )
        for g, (r, group) in enumerate(zip(responses, groups))
    ]
    if len(responses) == 1:
        return responses[0]
    order = [k for group in groups for k in group.members]
    members_axis = config.spatial_dims + 1
    z = tf.concat(responses, axis=members_axis)
    if order == sorted(order):
        return z
    return tf.gather(z, [order.index(k) for k in range(config.rank)], axis=members_axis)


def basis_responses(x, basis, config: LRLCConfig):
    """Algorithm 1's convolution z[b, i, j, k, o] = (I * F^(k))[b, i, j, o]: ONE convolution
    with K * C_out outputs, k outer (spec section 4.3), so the combination reads contiguous
    C_out rows (see docs/performance.md, 'TensorFlow', 'conv'). A mixed basis (`basis` the
    K tensors basis.k) has one per group of equal kernel size and dilation (spec 16.3).
    `basis` is cast to the dtype of `x`."""
    x = check_input(x, config)
    shapes = lrlc_numpy.param_shapes(config)
    if config.mixed:
        if not isinstance(basis, (list, tuple)) or len(basis) != config.rank:
            raise TypeError(
                f"basis_responses: a mixed basis is a list of its {config.rank} tensors "
                f"basis.0 ... basis.{config.rank - 1}, got {type(basis).__name__}"
            )
        basis = [
            tf.cast(_shaped(b, f"basis_responses: basis[{k}]", shapes[f"basis.{k}"]), x.dtype)
            for k, b in enumerate(basis)
        ]
    else:
        basis = tf.cast(_shaped(basis, "basis_responses: basis", shapes["basis"]), x.dtype)
    responses = []
    n = config.spatial_dims
    for group in config.basis_groups:
        stacked = group_basis(basis, group)  # (members, *kernel, C_in, C_out)
        members, *window, c_in, c_out = stacked.shape
        kernel = tf.reshape(
            tf.transpose(stacked, (*range(1, n + 2), 0, n + 2)), (*window, c_in, members * c_out)
        )
        z = _convolution(x, kernel, config, group)
        # The batch from the run-time shape: it may be unknown or 0.
        responses.append(
            tf.reshape(z, tf.concat([tf.shape(z)[:1], [*config.output_size, members, c_out]], 0))
        )
    return stack_responses(responses, config)


@tf.custom_gradient
def _weighted_sum(responses, weights, *bias):
    """sum_k w[(b,) i, j, k] z[b, i, j, k, o] (+ bias) as a batched (1, K) x (K, C_out)
    product per position (plain products at rank 1); `bias` is empty or (H_out, W_out, C_out)
    ((*out, C_out) in n-D).

    The gradient never holds z beside dz: dw is read from z first, dz = w dy made after it,
    and the backward waits for y, on which dy need not depend (docs/performance.md,
    'TensorFlow', peak memory)."""
    rank_one = responses.shape[-2] == 1
    if rank_one:
        y = responses[..., 0, :] * weights
    else:
        y = tf.squeeze(tf.matmul(weights[..., None, :], responses), axis=-2)
    if bias:
        y = y + bias[0]

    def grad(dy):
        with tf.control_dependencies([y]):
            dy = tf.identity(dy)
        if rank_one:
            dweights = tf.reduce_sum(responses[..., 0, :] * dy, axis=-1, keepdims=True)
        else:
            dweights = tf.linalg.matvec(responses, dy)  # (B, H_out, W_out, K)
        if weights.shape.rank == responses.shape.rank - 2:  # shared by the batch
            dweights = tf.reduce_sum(dweights, axis=0)
        with tf.control_dependencies([dweights]):
            dresponses = weights[..., None] * dy[..., None, :]
        dbias = [tf.reduce_sum(dy, axis=0)] if bias else []
        return (dresponses, dweights, *dbias)

    return y, grad


def combine(responses, weights, bias=None):
    """Algorithm 1's combination y[b, i, j, o] = sum_k w[i, j, k] z[b, i, j, k, o] + B; `weights`
    (H_out, W_out, K) or per example (B, H_out, W_out, K), `bias` (H_out, W_out, C_out) or None,
    both cast to the dtype of `responses` (B, H_out, W_out, K, C_out). In n-D: responses
    (B, *out, K, C_out), weights (*out, K) or (B, *out, K), bias (*out, C_out)."""
    responses = as_floating(responses, "combine: responses")
    if responses.shape.rank not in (4, 5, 6):
        raise ValueError(
            f"combine: responses has shape {tuple(responses.shape)}; expected (B, *out, K, "
            "C_out) with 1, 2 or 3 grid axes"
        )
    _, *out, rank, c_out = responses.shape
    weights = as_floating(weights, "combine: weights")
    batch = (responses.shape[0],) if weights.shape.rank == len(out) + 2 else ()
    weights = tf.cast(_shaped(weights, "combine: weights", (*batch, *out, rank)), responses.dtype)
    if bias is None:
        return _weighted_sum(responses, weights)
    bias = tf.cast(_shaped(bias, "combine: bias", (*out, c_out)), responses.dtype)
    return _weighted_sum(responses, weights, bias)


def forward(x, params, config: LRLCConfig, *, strategy: str = "auto"):
    """The LRLC layer, y = sum_k w (I * F^(k)) + B (eqs. 2-6); `x` is NHWC and the parameters
    are cast to its dtype. `strategy` is 'conv' (Algorithm 1), 'lc' (the locally connected
    form, fixed layers only) or 'auto' (`choose_strategy`'s cost rule for this batch; for an
    unknown batch, its limit for a large one, so a traced batch is never branched on)."""
    check_config(config, "forward")
    x = check_input(x, config)
    params = check_params(params, config, x.dtype)
    chosen = choose_strategy(config, x.shape[0], strategy)
    has_bias = config.spatial_bias or config.channel_bias
    bias = bias_map(params, config, x.dtype) if has_bias else None
    if chosen == "conv" and weights_are_ones(config):
        return _single_convolution(x, params, config, bias)
    weights = _combining_weights(params, config, x)
    if chosen == "lc":
        banks = position_banks(weights, embedded_basis(params, config))
        y = apply_banks(x, banks, config.locally_connected_config())
        return y if bias is None else y + bias
    return combine(basis_responses(x, _basis(params, config), config), weights, bias)


def _single_convolution(x, params, config: LRLCConfig, bias):
    """Algorithm 1 when w = 1 (`weights_are_ones`): y = I * F^(1) + B, one C_out convolution.
    The softmax's Jacobian vanishes at p = 1, so the combining parameters' gradients are
    exact zeros, returned as zeros rather than None (which Keras's optimizers warn about).
    A mixed basis of one is `basis.0` on its own geometry."""
    (group,) = config.basis_groups
    kernel_shape = (*group.kernel_size, config.in_channels, config.out_channels)
    y = _convolution(x, tf.reshape(params[config.basis_names[0]], kernel_shape), config, group)
    if bias is not None:
        y = y + bias
    return _with_zero_gradients(y, *(params[n] for n in combining_parameter_names(params)))


@tf.custom_gradient
def _with_zero_gradients(y, *unused):
    """`y` itself, with zero gradients (of static shapes) for `unused`, which it ignores."""

    def grad(dy):
        return (dy, *[tf.zeros(u.shape, u.dtype) for u in unused])

    return y, grad


# ---------------------------------------------------------------------------------------------
# Combining weights (eqs. 3, 4 and 6; spec sections 5-6)


def fixed_logits(params, config: LRLCConfig):
    """Unnormalised weights w~[i, j, k] of a fixed layer (eq. 3 and its variants)."""
    check_config(config, "fixed_logits")
    if config.input_dependent:
        raise ValueError(
            "fixed_logits: an input-dependent layer's logits come from the input; use "
            "g_forward(x, params, config)"
        )
    params = _named_params(params, config, "fixed_logits", lambda n: n.endswith("logits"))
    shape = (*config.output_size, config.rank)
    if config.combining == "rowcol":  # eq. 3: w~ = alpha_i + beta_j (+ one table per axis)
        return _sum_over_axes([params[f"{axis}_logits"] for axis in config.axis_tables], 1)
    if config.combining == "row":
        return tf.broadcast_to(params["row_logits"][:, None, :], shape)
    if config.combining == "col":
        return tf.broadcast_to(params["col_logits"][None, :, :], shape)
    return params["logits"]


def _sum_over_axes(tables, trailing: int):
    """sum_a tables[a] placed on grid axis a: tables[a] is (out_a, *trailing axes), the sum
    (*out, *trailing axes), in the tables' common dtype (eq. 3 and eq. 5 per axis)."""
    dtype = _common_dtype(tables)
    n = len(tables)
    total = None
    for axis, table in enumerate(tables):
        index = tuple(slice(None) if a == axis else None for a in range(n))
        placed = tf.cast(table, dtype)[index + (slice(None),) * trailing]
        total = placed if total is None else total + placed
    return total


def normalize_weights(logits, mode: str):
    """Normalise over the last axis K (eq. 4 for 'softmax'; spec section 6). 'l2' is
    w~ / sqrt(max(sum_k w~^2, 1e-12)), computed as hypot does, from w~ / max_k |w~|, so no
    square overflows (logits of 1e20 in float32 give unit-norm weights and finite
    gradients)."""
    _check_choice(mode, NORMALIZATIONS, "mode", "normalize_weights")
    logits = as_floating(logits, "normalize_weights: logits")
    if logits.shape.rank == 0:
        raise ValueError("normalize_weights: logits must have the K axis last, got a scalar")
    if mode == "softmax":
        return tf.nn.softmax(logits, axis=-1)
    if mode == "l2":
        return _l2_normalize(logits)
    return logits


def _l2_normalize(logits):
    """'l2' over the last axis: w~ = scale * unit with scale = max_k |w~| held constant for
    the gradient (the result does not depend on it), length = |unit| in [1, sqrt K]; below
    the floor, w~ / 1e-6. Every term stays O(1) or O(1 / scale), forward and backward."""
    scale = tf.stop_gradient(tf.reduce_max(tf.abs(logits), axis=-1, keepdims=True))
    unit = logits / tf.where(scale > 0, scale, tf.ones_like(scale))
    # length >= 1 unless every logit is 0 (then unit = 0 and the floor applies)
    length = tf.sqrt(tf.maximum(tf.reduce_sum(unit * unit, axis=-1, keepdims=True), 1.0))
    floor = L2_FLOOR**0.5
    return tf.where(scale * length >= floor, unit / length, logits / floor)


def combining_weights(params, config: LRLCConfig, x=None):
    """Normalised combining weights w: (H_out, W_out, K), or (B, H_out, W_out, K) predicted
    from `x` for an input-dependent layer (eq. 6); a fixed layer checks but ignores `x`.
    Parameters are cast to the dtype of `x` when given; w is in the logits' dtype."""
    check_config(config, "combining_weights")
    if x is not None:
        x = check_input(x, config)
    elif config.input_dependent:
        raise ValueError("combining_weights: an input-dependent layer needs the input x")
    params = check_params(params, config, None if x is None else x.dtype)
    return _combining_weights(params, config, x)


def _combining_weights(params, config, x):
    dependent = config.input_dependent
    logits = g_forward(x, params, config) if dependent else fixed_logits(params, config)
    working = tf.as_dtype(lrlc_numpy.working_dtype_name(logits.dtype.name))
    weights = normalize_weights(tf.cast(logits, working), config.normalize)
    return tf.cast(weights, logits.dtype)


# ---------------------------------------------------------------------------------------------
# The input-dependent network g (eq. 6; spec section 8)


# The names of the grid axes, by their number.
_GRID_AXES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}


def _positive_int(value, name: str, where: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")


def resize_bilinear(a, size):
    """Bilinear resize of NHWC `a` to `size` with aligned corners: the 2-D case of
    `resize_linear`."""
    a = _shaped(a, "resize_bilinear: a", (None,) * 4)
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f"resize_bilinear: size must be a pair (height, width), got {size!r}")
    return _resize(a, size, "resize_bilinear")


def resize_linear(a, size):
    """Separable linear resize of `a` (B, *grid, C), 1 to 3 grid axes, to the grid `size`
    with aligned corners (spec section 17.3): linear in 1-D, bilinear in 2-D, trilinear in
    3-D."""
    a = as_floating(a, "resize_linear: a")
    if a.shape.rank not in (3, 4, 5):
        raise ValueError(
            f"resize_linear: a has shape {tuple(a.shape)}; expected (B, *grid, C) with 1, 2 "
            "or 3 grid axes"
        )
    n = a.shape.rank - 2
    if not isinstance(size, (tuple, list)) or len(size) != n:
        raise ValueError(
            f"resize_linear: size must be {n} ints (a's grid has {n} axes), got {size!r}"
        )
    return _resize(a, size, "resize_linear")


def _resize(a, size, where: str):
    """`a` resized as one matrix product per grid axis with the reference's interpolation
    matrices (a size-1 axis broadcasts); `size` has one entry per grid axis of `a`."""
    n = len(size)
    for axis, length in zip(_GRID_AXES[n], size):
        _positive_int(length, f"size {axis}", where)
    if None in a.shape[1:-1]:
        raise ValueError(f"{where}: a needs a static grid, got {a.shape}")
    # One tf.tensordot per axis (a 2-D matrix product with run-time reshapes), not einsum,
    # whose lowering writes the batch into a constant shape that TFLite cannot allocate.
    for axis in reversed(range(n)):
        matrix = tf.cast(lrlc_numpy.resize_matrix(a.shape[axis + 1], size[axis]), a.dtype)
        resized = tf.tensordot(a, matrix, axes=[[axis + 1], [1]])  # the new axis last
        order = list(range(n + 1))
        a = tf.transpose(resized, (*order[: axis + 1], n + 1, *order[axis + 1 :]))
    return a


def _dense(a, params, name):
    """a @ kernel + bias over the last axis, for the g.<name> layer: tf.tensordot, whose
    kernel gradient is one product (tf.matmul's sums per-position products in 16 bits), not
    an einsum with '...' (TF 2.21's oneDNN one is wrong in float16 and bfloat16 on CPU)."""
    return tf.tensordot(a, params[f"g.{name}.kernel"], axes=1) + params[f"g.{name}.bias"]


def depthwise_conv3x3(a, kernel, bias, dilation: int):
    """g's dilated branch: a depthwise 3x3 convolution of NHWC `a`, 'VALID', plus `bias`;
    `kernel` is (3, 3, K), `bias` (K,), both cast to the dtype of `a`. In n-D, `a` is
    (B, *grid, K) and `kernel` (3,) * n + (K,): TensorFlow's 2-D depthwise convolution on a
    height-1 grid in 1-D, and in 3-D summed over the three depth taps, each on the depth
    slices it reads folded into the batch (TensorFlow has no 3-D depthwise convolution)."""
    a = as_floating(a, "depthwise_conv3x3: a")
    if a.shape.rank not in (3, 4, 5):
        raise ValueError(
            f"depthwise_conv3x3: a has shape {tuple(a.shape)}; expected (B, *grid, K) with "
            "1, 2 or 3 grid axes"
        )
    n, channels = a.shape.rank - 2, a.shape[-1]
    kernel = _shaped(kernel, "depthwise_conv3x3: kernel", (3,) * n + (channels,))
    kernel = tf.cast(kernel, a.dtype)
    bias = tf.cast(_shaped(bias, "depthwise_conv3x3: bias", (channels,)), a.dtype)
    _positive_int(dilation, "dilation", "depthwise_conv3x3")
    if any(size is not None and size <= 2 * dilation for size in a.shape[1:-1]):
        raise ValueError(
            f"depthwise_conv3x3: a of shape {tuple(a.shape)} is too small for a 3x3 window "
            f"at dilation {dilation} ('VALID' needs more than {2 * dilation} positions on "
            "every grid axis)"
        )
    kernel = _no_gradient_from_no_examples(kernel[..., None], tf.shape(a)[0])
    if n == 1:
        return _depthwise_2d(a[:, None], kernel[None], dilation)[:, 0] + bias
    if n == 2:
        return _depthwise_2d(a, kernel, dilation) + bias
    batch, depth = tf.shape(a)[0], a.shape[1] - 2 * dilation
    total = None
    for tap in range(3):
        sliced = a[:, tap * dilation : tap * dilation + depth]
        folded = tf.reshape(sliced, tf.concat([[batch * depth], tf.shape(a)[2:]], 0))
        term = _depthwise_2d(folded, kernel[tap], dilation)
        total = term if total is None else total + term
    unfolded = tf.reshape(total, tf.concat([[batch, depth], tf.shape(total)[1:]], 0))
    return unfolded + bias


def _depthwise_2d(a, kernel, dilation: int):
    return tf.nn.depthwise_conv2d(
        a, kernel, strides=(1, 1, 1, 1), padding="VALID", dilations=(dilation,) * 2
    )


def _no_gradient_from_no_examples(kernel, batch):
    """`kernel` itself, whose gradient is zero for an empty batch: TensorFlow's depthwise
    filter gradient over no examples is uninitialised memory, not a sum of nothing."""

    @tf.custom_gradient
    def identity(kernel):
        def grad(dkernel):
            return tf.where(batch > 0, dkernel, tf.zeros_like(dkernel))

        return tf.identity(kernel), grad

    return identity(kernel)


def g_forward(x, params, config: LRLCConfig):
    """Logits w~ (B, H_out, W_out, K) predicted from the input by the network g (eq. 6); the
    parameters of g are cast to the dtype of `x`."""
    check_config(config, "g_forward")
    if not config.input_dependent:
        raise ValueError("g_forward: config.input_dependent is False; a fixed layer has no g")
    x = check_input(x, config)
    params = {
        name: tf.cast(value, x.dtype)
        for name, value in _named_params(
            params, config, "g_forward", lambda n: n.startswith("g.")
        ).items()
    }
    low = _dense(x, params, "reduce")  # a 1x1 convolution to K channels
    grid_axes = tuple(range(1, config.spatial_dims + 1))
    branches = [low, tf.reduce_mean(low, axis=grid_axes, keepdims=True)]
    for r in config.g_dilations:
        branches.append(
            depthwise_conv3x3(low, params[f"g.dilated{r}.kernel"], params[f"g.dilated{r}.bias"], r)
        )
    cat = tf.concat([resize_linear(b, config.output_size) for b in branches], axis=-1)
    squeeze = tf.nn.relu(_dense(cat, params, "squeeze"))
    excite = tf.sigmoid(_dense(squeeze, params, "excite"))
    return _dense(excite, params, "project")


# ---------------------------------------------------------------------------------------------
# Biases (eq. 5; spec section 7)

_SPATIAL_BIASES = ("depth_bias", "row_bias", "col_bias", "spatial_bias")


def spatial_bias_map(params, config: LRLCConfig):
    """The spatial part of eq. 5 as an (H_out, W_out) tensor (or one broadcasting to it along
    the shared axis of 'row' and 'col'); None without spatial biases."""
    params = _named_params(params, config, "spatial_bias_map", _SPATIAL_BIASES.__contains__)
    if not config.spatial_bias:
        return None
    if config.combining == "rowcol":  # one vector per axis, summed over the axes
        return _sum_over_axes([params[f"{axis}_bias"] for axis in config.axis_tables], 0)
    if config.combining == "row":
        return params["row_bias"][:, None]
    if config.combining == "col":
        return params["col_bias"][None, :]
    return params["spatial_bias"]


def bias_map(params, config: LRLCConfig, dtype):
    """B[i, j, o] of eq. 5 as an (H_out, W_out, C_out) tensor of `dtype` (zeros when both
    biases are off)."""
    dtype = _float_dtype(dtype, "bias_map")
    channel = _named_params(params, config, "bias_map", "channel_bias".__eq__)
    bias = tf.zeros((*config.output_size, config.out_channels), dtype)
    if config.spatial_bias:
        bias = bias + tf.cast(spatial_bias_map(params, config), dtype)[..., None]
    if config.channel_bias:
        bias = bias + tf.cast(channel["channel_bias"], dtype)
    return bias


# ---------------------------------------------------------------------------------------------
# Locally connected form (spec section 11)


def embedded_basis(params, config: LRLCConfig):
    """The basis on the window of `config.locally_connected_config()`, (K, kh, kw, C_in,
    C_out): a plain basis as it is; each basis.k of a mixed one at its own taps, from (window
    padding before - its padding before) in steps of its dilation, zeros elsewhere (spec
    section 16.5). The tensors keep their dtypes, which a mixed basis's must share."""
    params = _named_params(params, config, "embedded_basis", config.basis_names.__contains__)
    window = config.locally_connected_config()
    if window is config:
        return params["basis"]
    dtype = _common_dtype(params.values())
    before = [lo for lo, _ in window.padding_pairs]
    n = config.spatial_dims
    members = []
    for name, dilation, pads in zip(
        config.basis_names, config.dilations, config.basis_padding_pairs
    ):
        member = tf.cast(params[name], dtype)
        kernel = member.shape[:n]
        # Tap (u_1, ..., u_n) of this basis sits at window offset before - its pad + u d.
        taps = [
            [first - pad + u * d for u, first, (pad, _), d in zip(tap, before, pads, dilation)]
            for tap in itertools.product(*(range(k) for k in kernel))
        ]
        flat = tf.reshape(member, (len(taps), *member.shape[n:]))
        members.append(tf.scatter_nd(taps, flat, (*window.kernel_size, *member.shape[n:])))
    return tf.stack(members)


def to_locally_connected(params, config: LRLCConfig, x=None):
    """The equivalent locally connected (kernel, bias): kernel[i, j] = sum_k w[i, j, k] F^(k),
    (H_out, W_out, kh, kw, C_in, C_out), or per example for an input-dependent layer (`x`
    required); bias (H_out, W_out, C_out), zeros when the layer has neither bias. The window
    is `config.locally_connected_config()`'s: a mixed basis's covers every basis's taps. In
    the dtype of `x`, else the parameters' (`_common_dtype`)."""
    check_config(config, "to_locally_connected")
    if x is not None:
        x = check_input(x, config)
    elif config.input_dependent:
        raise ValueError("to_locally_connected: an input-dependent layer needs the input x")
    params = check_params(params, config, None if x is None else x.dtype)
    if x is None:
        dtype = _common_dtype(params.values())
        params = {name: tf.cast(value, dtype) for name, value in params.items()}
    weights = _combining_weights(params, config, x)
    n = config.spatial_dims
    out, window = "ijl"[:n], "uvw"[:n]
    batch = "b" if weights.shape.rank == n + 2 else ""
    equation = f"{batch}{out}k,k{window}co->{batch}{out}{window}co"
    kernel = tf.einsum(equation, weights, tf.cast(embedded_basis(params, config), weights.dtype))
    return kernel, bias_map(params, config, weights.dtype)


def position_banks(weights, basis):
    """Each output position's filter bank sum_k w[i, j, k] F^(k) (eq. 2), flattened for
    `apply_banks`: (H_out W_out, kh kw C_in, C_out), as one matrix product (whose autodiff
    gradient contracts the banks' gradient straight to dw and dF). `weights` is (H_out,
    W_out, K), fixed; `basis` (K, kh, kw, C_in, C_out) is cast to its dtype. In n-D, weights
    (*out, K) and basis (K, *kernel, C_in, C_out) give (prod out, prod kernel C_in, C_out)."""
    basis = as_floating(basis, "position_banks: basis")
    # The number of grid axes from the basis (K, *kernel, C_in, C_out); 2 if that is mis-ranked.
    n = basis.shape.rank - 3 if basis.shape.rank in (4, 5, 6) else 2
    weights = _shaped(weights, "position_banks: weights", (None,) * (n + 1))
    rank = weights.shape[-1]
    basis = _shaped(basis, "position_banks: basis", (rank,) + (None,) * (n + 2))
    *_, c_out = basis.shape
    basis = tf.cast(basis, weights.dtype)
    flat = tf.matmul(tf.reshape(weights, (-1, rank)), tf.reshape(basis, (rank, -1)))
    return tf.reshape(flat, (-1, math.prod(basis.shape[1:-1]), c_out))


def locally_connected(x, kernel, bias, config: LRLCConfig):
    """y[b, i, j, o] = sum_{u, v, c} xpad[b, i s_h + u d_h, j s_w + v d_w, c] K[i, j, u, v, c, o]
    + bias[i, j, o] on the window of `config.locally_connected_config()`. `kernel` is (H_out,
    W_out, kh, kw, C_in, C_out) (`apply_banks`) or one per example of `x` (one einsum); `bias`
    is (H_out, W_out, C_out) or None. Both are cast to the dtype of `x`."""
    check_config(config, "locally_connected")
    x = check_input(x, config)
    kernel = as_floating(kernel, "locally connected kernel")
    if bias is not None:
        bias = as_floating(bias, "locally connected bias")
    if kernel.shape.rank is None:
        raise ValueError("locally connected kernel has unknown rank")
    per_example = lrlc_numpy.check_lc_shapes(
        tuple(kernel.shape), None if bias is None else tuple(bias.shape), config, batch=x.shape[0]
    )
    kernel = tf.cast(kernel, x.dtype)
    window = config.locally_connected_config()
    out = config.output_size
    depth = math.prod(window.kernel_size) * config.in_channels
    if per_example:
        flat = tf.reshape(
            kernel, tf.concat([tf.shape(kernel)[:1], [*out, depth, config.out_channels]], 0)
        )
        letters = "ijl"[: len(out)]
        y = tf.einsum(f"b{letters}p,b{letters}po->b{letters}o", extract_patches(x, window), flat)
    else:
        banks = tf.reshape(kernel, (math.prod(out), depth, config.out_channels))
        y = apply_banks(x, banks, window)
    return y if bias is None else y + tf.cast(bias, x.dtype)
