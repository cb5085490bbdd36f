"""LRLC layers as pure TensorFlow functions of a neutral params dict (spec/SPEC.md), in
canonical layouts (NHWC data, basis (K, kh, kw, C_in, C_out), or a mixed basis's basis.k
(kh_k, kw_k, C_in, C_out), spec section 16); they compute in the dtype of `x`.

Every public function checks its arguments before any work (spec section 14), on static
shapes, so inside tf.function once per trace: TypeError or ValueError naming the argument,
the value received and what was expected. The batch may be unknown (None) or 0.

Strategies (`costs.choose_strategy`): 'conv' is Algorithm 1 (`basis_responses`, `combine`;
at rank 1 with softmax `_single_convolution`), 'lc' the locally connected form
(`position_banks`, `apply_banks`), fixed layers only.
"""

from __future__ import annotations

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
    native_stride = group.dilation == (1, 1) or config.stride == (1, 1)
    same = resolve_padding(
        "same", config.input_size, group.kernel_size, config.stride, group.dilation
    )
    return "SAME" if native_stride and pairs == same else None


def _convolution(x, kernel, config: LRLCConfig, group: BasisGroup):
    """`x` convolved with `kernel` on `group`'s padding and dilation, at `config`'s stride. A
    dilated window goes through tf.nn.convolution (TF's CPU tf.nn.conv2d has no dilated
    float64 gradient), which allows stride 1 only, so the stride is then a subsampling."""
    padding = _native_padding(config, group)
    if padding is None:
        x, padding = pad_input(x, config, group.padding_pairs), "VALID"
    if group.dilation == (1, 1):
        return tf.nn.conv2d(x, kernel, strides=config.stride, padding=padding)
    z = tf.nn.convolution(x, kernel, padding=padding, dilations=group.dilation)
    sh, sw = config.stride
    return z[:, ::sh, ::sw, :]


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
    in basis order: groups need not be contiguous (spec section 16.3)."""
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
    z = tf.concat(responses, axis=3)
    if order == sorted(order):
        return z
    return tf.gather(z, [order.index(k) for k in range(config.rank)], axis=3)


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
    for group in config.basis_groups:
        stacked = group_basis(basis, group)
        members, kh, kw, c_in, c_out = stacked.shape
        kernel = tf.reshape(tf.transpose(stacked, (1, 2, 3, 0, 4)), (kh, kw, c_in, members * c_out))
        z = _convolution(x, kernel, config, group)
        # The batch from the run-time shape: it may be unknown or 0.
        responses.append(
            tf.reshape(z, tf.concat([tf.shape(z)[:1], [*config.output_size, members, c_out]], 0))
        )
    return stack_responses(responses, config)


@tf.custom_gradient
def _weighted_sum(responses, weights, *bias):
    """sum_k w[(b,) i, j, k] z[b, i, j, k, o] (+ bias) as a batched (1, K) x (K, C_out)
    product per position (plain products at rank 1); `bias` is empty or (H_out, W_out, C_out).

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
        if weights.shape.rank == 3:  # shared by the batch
            dweights = tf.reduce_sum(dweights, axis=0)
        with tf.control_dependencies([dweights]):
            dresponses = weights[..., None] * dy[..., None, :]
        dbias = [tf.reduce_sum(dy, axis=0)] if bias else []
        return (dresponses, dweights, *dbias)

    return y, grad


def combine(responses, weights, bias=None):
    """Algorithm 1's combination y[b, i, j, o] = sum_k w[i, j, k] z[b, i, j, k, o] + B; `weights`
    (H_out, W_out, K) or per example (B, H_out, W_out, K), `bias` (H_out, W_out, C_out) or None,
    both cast to the dtype of `responses` (B, H_out, W_out, K, C_out)."""
    responses = _shaped(responses, "combine: responses", (None,) * 5)
    _, out_h, out_w, rank, c_out = responses.shape
    weights = as_floating(weights, "combine: weights")
    batch = (responses.shape[0],) if weights.shape.rank == 4 else ()
    weights = tf.cast(
        _shaped(weights, "combine: weights", (*batch, out_h, out_w, rank)), responses.dtype
    )
    if bias is None:
        return _weighted_sum(responses, weights)
    bias = tf.cast(_shaped(bias, "combine: bias", (out_h, out_w, c_out)), responses.dtype)
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
    out_h, out_w = config.output_size
    shape = (out_h, out_w, config.rank)
    if config.combining == "rowcol":  # eq. 3: w~ = alpha_i + beta_j
        rows, cols = params["row_logits"], params["col_logits"]
        dtype = _common_dtype([rows, cols])
        return tf.cast(rows, dtype)[:, None, :] + tf.cast(cols, dtype)[None, :, :]
    if config.combining == "row":
        return tf.broadcast_to(params["row_logits"][:, None, :], shape)
    if config.combining == "col":
        return tf.broadcast_to(params["col_logits"][None, :, :], shape)
    return params["logits"]


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


def _positive_int(value, name: str, where: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")


def resize_bilinear(a, size):
    """Bilinear resize of NHWC `a` to `size` with aligned corners, as two matrix products
    with the reference's interpolation matrices (a size-1 axis broadcasts)."""
    a = _shaped(a, "resize_bilinear: a", (None,) * 4)
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f"resize_bilinear: size must be a pair (height, width), got {size!r}")
    for axis, n in zip(("height", "width"), size):
        _positive_int(n, f"size {axis}", "resize_bilinear")
    if None in a.shape[1:3]:
        raise ValueError(f"resize_bilinear: a needs a static height and width, got {a.shape}")
    rows = tf.cast(lrlc_numpy.resize_matrix(a.shape[1], size[0]), a.dtype)
    cols = tf.cast(lrlc_numpy.resize_matrix(a.shape[2], size[1]), a.dtype)
    # Two tf.tensordot products (2-D matrix products with run-time reshapes), not einsum,
    # whose lowering writes the batch into a constant shape that TFLite cannot allocate.
    columns = tf.tensordot(a, cols, axes=[[2], [1]])  # (B, H, C, W_out)
    resized = tf.tensordot(rows, columns, axes=[[1], [1]])  # (H_out, B, C, W_out)
    return tf.transpose(resized, (1, 0, 3, 2))


def _dense(a, params, name):
    """a @ kernel + bias over the last axis, for the g.<name> layer: tf.tensordot, whose
    kernel gradient is one product (tf.matmul's sums per-position products in 16 bits), not
    an einsum with '...' (TF 2.21's oneDNN one is wrong in float16 and bfloat16 on CPU)."""
    return tf.tensordot(a, params[f"g.{name}.kernel"], axes=1) + params[f"g.{name}.bias"]


def depthwise_conv3x3(a, kernel, bias, dilation: int):
    """g's dilated branch: a depthwise 3x3 convolution of NHWC `a`, 'VALID', plus `bias`;
    `kernel` is (3, 3, K), `bias` (K,), both cast to the dtype of `a`."""
    a = _shaped(a, "depthwise_conv3x3: a", (None,) * 4)
    channels = a.shape[3]
    kernel = tf.cast(_shaped(kernel, "depthwise_conv3x3: kernel", (3, 3, channels)), a.dtype)
    bias = tf.cast(_shaped(bias, "depthwise_conv3x3: bias", (channels,)), a.dtype)
    _positive_int(dilation, "dilation", "depthwise_conv3x3")
    if any(n is not None and n <= 2 * dilation for n in a.shape[1:3]):
        raise ValueError(
            f"depthwise_conv3x3: a of shape {tuple(a.shape)} is too small for a 3x3 window "
            f"at dilation {dilation} ('VALID' needs more than {2 * dilation} rows and columns)"
        )
    kernel = _no_gradient_from_no_examples(kernel[:, :, :, None], tf.shape(a)[0])
    dilated = tf.nn.depthwise_conv2d(
        a, kernel, strides=(1, 1, 1, 1), padding="VALID", dilations=(dilation,) * 2
    )
    return dilated + bias


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
    branches = [low, tf.reduce_mean(low, axis=(1, 2), keepdims=True)]
    for r in config.g_dilations:
        branches.append(
            depthwise_conv3x3(low, params[f"g.dilated{r}.kernel"], params[f"g.dilated{r}.bias"], r)
        )
    cat = tf.concat([resize_bilinear(b, config.output_size) for b in branches], axis=-1)
    squeeze = tf.nn.relu(_dense(cat, params, "squeeze"))
    excite = tf.sigmoid(_dense(squeeze, params, "excite"))
    return _dense(excite, params, "project")


# ---------------------------------------------------------------------------------------------
# Biases (eq. 5; spec section 7)

_SPATIAL_BIASES = ("row_bias", "col_bias", "spatial_bias")


def spatial_bias_map(params, config: LRLCConfig):
    """The spatial part of eq. 5 as an (H_out, W_out) tensor (or one broadcasting to it along
    the shared axis of 'row' and 'col'); None without spatial biases."""
    params = _named_params(params, config, "spatial_bias_map", _SPATIAL_BIASES.__contains__)
    if not config.spatial_bias:
        return None
    if config.combining == "rowcol":
        rows, cols = params["row_bias"], params["col_bias"]
        dtype = _common_dtype([rows, cols])
        return tf.cast(rows, dtype)[:, None] + tf.cast(cols, dtype)[None, :]
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
    out_h, out_w = config.output_size
    bias = tf.zeros((out_h, out_w, config.out_channels), dtype)
    if config.spatial_bias:
        bias = bias + tf.cast(spatial_bias_map(params, config), dtype)[:, :, None]
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
    (top, _), (left, _) = window.padding_pairs
    members = []
    for name, (dh, dw), ((pad_top, _), (pad_left, _)) in zip(
        config.basis_names, config.dilations, config.basis_padding_pairs
    ):
        member = tf.cast(params[name], dtype)
        kh, kw = member.shape[:2]
        taps = [
            [(top - pad_top + u * dh, left - pad_left + v * dw) for v in range(kw)]
            for u in range(kh)
        ]
        members.append(tf.scatter_nd(taps, member, (*window.kernel_size, *member.shape[2:])))
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
    equation = "bijk,kuvco->bijuvco" if weights.shape.rank == 4 else "ijk,kuvco->ijuvco"
    kernel = tf.einsum(equation, weights, tf.cast(embedded_basis(params, config), weights.dtype))
    return kernel, bias_map(params, config, weights.dtype)


def position_banks(weights, basis):
    """Each output position's filter bank sum_k w[i, j, k] F^(k) (eq. 2), flattened for
    `apply_banks`: (H_out W_out, kh kw C_in, C_out), as one matrix product (whose autodiff
    gradient contracts the banks' gradient straight to dw and dF). `weights` is (H_out,
    W_out, K), fixed; `basis` (K, kh, kw, C_in, C_out) is cast to its dtype."""
    weights = _shaped(weights, "position_banks: weights", (None, None, None))
    rank = weights.shape[2]
    basis = _shaped(basis, "position_banks: basis", (rank, None, None, None, None))
    _, kh, kw, c_in, c_out = basis.shape
    basis = tf.cast(basis, weights.dtype)
    flat = tf.matmul(tf.reshape(weights, (-1, rank)), tf.reshape(basis, (rank, -1)))
    return tf.reshape(flat, (-1, kh * kw * c_in, c_out))


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
    (out_h, out_w), (kh, kw) = config.output_size, window.kernel_size
    depth = kh * kw * config.in_channels
    if per_example:
        flat = tf.reshape(
            kernel, tf.concat([tf.shape(kernel)[:1], [out_h, out_w, depth, config.out_channels]], 0)
        )
        y = tf.einsum("bijp,bijpo->bijo", extract_patches(x, window), flat)
    else:
        y = apply_banks(x, tf.reshape(kernel, (out_h * out_w, depth, config.out_channels)), window)
    return y if bias is None else y + tf.cast(bias, x.dtype)
