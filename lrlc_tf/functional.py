"""LRLC layers as pure TensorFlow functions of tensors (spec/SPEC.md).

Canonical layouts throughout: data NHWC, the basis (K, kh, kw, C_in, C_out), parameters a
mapping from neutral names to arrays, tensors or variables. `forward`, `combining_weights`,
`to_locally_connected` and `locally_connected` check their arguments (spec section 14) and
compute in the dtype of `x`. The Keras layers in `lrlc_tf.layers` are thin wrappers around
them; they are public so that code outside Keras (custom loops, tf.function, XLA) can use a
plain params dict.

The layer is evaluated by Algorithm 1 in two separate steps, `basis_responses` (one
convolution) and `combine` (one einsum), so that another evaluation strategy can reuse
the pieces it shares with this one.
"""

from __future__ import annotations

import tensorflow as tf

import lrlc_numpy
from lrlc_numpy import LRLCConfig
from lrlc_numpy.reference import L2_FLOOR

# ---------------------------------------------------------------------------------------------
# Checks (spec section 14): on static shapes, so inside tf.function they run once per trace


def check_input(x, config: LRLCConfig, *, name: str = "x", layout: str = "NHWC"):
    """`x` as a tensor after checking its rank, channels and grid (in `layout`), then dtype."""
    x = tf.convert_to_tensor(x)
    lrlc_numpy.check_input_shape(x.shape, config, name=name, layout=layout)
    return as_floating(x, name)


def as_floating(value, name: str):
    """`value` as a tensor; TypeError unless its dtype is floating."""
    value = tf.convert_to_tensor(value)
    if not value.dtype.is_floating:
        raise TypeError(f"{name} must have a floating dtype, got {value.dtype.name}")
    return value


def check_params(params, config: LRLCConfig, dtype=None) -> dict:
    """`params` as tensors (cast to `dtype` if given) after checking names, shapes, dtypes."""
    lrlc_numpy.check_params(params, config)
    out = {}
    for name, value in params.items():
        value = as_floating(value, f"params[{name!r}]")
        out[name] = value if dtype is None else tf.cast(value, dtype)
    return out


# ---------------------------------------------------------------------------------------------
# Windows (spec section 3)


def pad_input(x, config: LRLCConfig):
    """`x` zero-padded by `config.padding_pairs`, so every later window is a 'VALID' one.

    Padding explicitly (rather than passing 'SAME' to TensorFlow) keeps the spec's padding
    rule the only one in play, asymmetric padding and stride with dilation included.
    """
    return tf.pad(x, [[0, 0], *config.padding_pairs, [0, 0]])


def extract_patches(x, config: LRLCConfig):
    """patches[b, i, j, (u, v, c)] = xpad[b, i s_h + u d_h, j s_w + v d_w, c] (eq. 1).

    One strided slice per kernel tap, concatenated tap-major on channels: the flat patch
    index is (u * kw + v) * C_in + c, the order of a (kh, kw, C_in) kernel reshaped flat.
    """
    xpad = pad_input(x, config)
    (out_h, out_w), (kh, kw) = config.output_size, config.kernel_size
    (sh, sw), (dh, dw) = config.stride, config.dilation
    taps = [
        xpad[
            :,
            u * dh : u * dh + (out_h - 1) * sh + 1 : sh,
            v * dw : v * dw + (out_w - 1) * sw + 1 : sw,
            :,
        ]
        for u in range(kh)
        for v in range(kw)
    ]
    return tf.concat(taps, axis=-1)


# ---------------------------------------------------------------------------------------------
# Algorithm 1 (eqs. 2-5; spec section 4)


def _valid_convolution(xpad, kernel, config: LRLCConfig):
    """A 'VALID' convolution of padded input with `config`'s stride and dilation.

    TensorFlow's CPU kernels have no gradient for a dilated tf.nn.conv2d in float64 (nor in
    float32 without oneDNN), so a dilated window goes through tf.nn.convolution, which
    rewrites it as an undilated convolution with space_to_batch. That rewrite allows stride
    1 only, so a stride is then applied by subsampling the outputs.
    """
    if config.dilation == (1, 1):
        return tf.nn.conv2d(xpad, kernel, strides=config.stride, padding="VALID")
    z = tf.nn.convolution(xpad, kernel, padding="VALID", dilations=config.dilation)
    sh, sw = config.stride
    return z[:, ::sh, ::sw, :]


def basis_responses(x, basis, config: LRLCConfig):
    """Algorithm 1's convolution step: z[b, i, j, o, k] = (I * F^(k))[b, i, j, o] for every k.

    The K basis filter banks run as ONE convolution with K * C_out output channels, ordered
    with k innermost (channel o * K + k) so that the combination reduces a contiguous axis.
    """
    rank, kh, kw, c_in, c_out = basis.shape
    kernel = tf.reshape(tf.transpose(basis, (1, 2, 3, 4, 0)), (kh, kw, c_in, c_out * rank))
    z = _valid_convolution(pad_input(x, config), kernel, config)
    out_h, out_w = config.output_size
    return tf.reshape(z, (-1, out_h, out_w, c_out, rank))


def combine(responses, weights, bias=None):
    """Algorithm 1's combination step: y[b, i, j, o] = sum_k w[i, j, k] z[b, i, j, o, k] + B.

    One einsum does the weighting and the sum over k. `weights` is (H_out, W_out, K), or
    (B, H_out, W_out, K) for an input-dependent layer; `bias` is (H_out, W_out, C_out) or None.
    """
    equation = "bijok,bijk->bijo" if weights.shape.rank == 4 else "bijok,ijk->bijo"
    y = tf.einsum(equation, responses, weights)
    return y if bias is None else y + bias


def forward(x, params, config: LRLCConfig):
    """The LRLC layer, y = sum_k w (I * F^(k)) + B (Algorithm 1, eqs. 2-6); `x` is NHWC and
    the parameters are cast to its dtype."""
    x = check_input(x, config)
    params = check_params(params, config, x.dtype)
    responses = basis_responses(x, params["basis"], config)
    weights = _combining_weights(params, config, x)
    has_bias = config.spatial_bias or config.channel_bias
    return combine(responses, weights, bias_map(params, config, x.dtype) if has_bias else None)


# ---------------------------------------------------------------------------------------------
# Combining weights (eqs. 3, 4 and 6; spec sections 5-6)


def fixed_logits(params, config: LRLCConfig):
    """Unnormalised weights w~[i, j, k] of a fixed layer (eq. 3 and its variants)."""
    out_h, out_w = config.output_size
    shape = (out_h, out_w, config.rank)
    if config.combining == "rowcol":  # eq. 3: w~ = alpha_i + beta_j
        return params["row_logits"][:, None, :] + params["col_logits"][None, :, :]
    if config.combining == "row":
        return tf.broadcast_to(params["row_logits"][:, None, :], shape)
    if config.combining == "col":
        return tf.broadcast_to(params["col_logits"][None, :, :], shape)
    return params["logits"]


def normalize_weights(logits, mode: str):
    """Normalise over the last axis K (eq. 4 for 'softmax'; 'l2' floors the squared norm)."""
    if mode == "softmax":
        return tf.nn.softmax(logits, axis=-1)
    if mode == "l2":  # w~ / sqrt(max(sum_k w~^2, floor)), the spec's rule exactly
        return tf.math.l2_normalize(logits, axis=-1, epsilon=L2_FLOOR)
    return logits


def combining_weights(params, config: LRLCConfig, x=None):
    """Normalised combining weights w: (H_out, W_out, K), or (B, H_out, W_out, K) predicted
    from `x` for an input-dependent layer (eq. 6); a fixed layer checks but ignores `x`.

    Parameters are cast to the dtype of `x` when given. 16-bit logits are normalised in
    float32 (the l2 floor underflows in float16), and w is returned in the logits' dtype.
    """
    if x is not None:
        x = check_input(x, config)
    elif config.input_dependent:
        raise ValueError("combining_weights: an input-dependent layer needs the input x")
    params = check_params(params, config, None if x is None else x.dtype)
    return _combining_weights(params, config, x)


def _combining_weights(params, config, x):
    logits = g_logits(x, params, config) if config.input_dependent else fixed_logits(params, config)
    working = logits.dtype if logits.dtype in (tf.float32, tf.float64) else tf.float32
    weights = normalize_weights(tf.cast(logits, working), config.normalize)
    return tf.cast(weights, logits.dtype)


# ---------------------------------------------------------------------------------------------
# The input-dependent network g (eq. 6; spec section 8)


def resize_bilinear(a, size):
    """Bilinear resize of NHWC `a` to `size` with aligned corners, as two matrix products
    with the reference's interpolation matrices (a size-1 axis broadcasts)."""
    rows = tf.cast(lrlc_numpy.resize_matrix(a.shape[1], size[0]), a.dtype)
    cols = tf.cast(lrlc_numpy.resize_matrix(a.shape[2], size[1]), a.dtype)
    return tf.einsum("oh,bhpc->bopc", rows, tf.einsum("pw,bhwc->bhpc", cols, a))


def _dense(a, params, name):
    """a @ kernel + bias over the last axis, for the g.<name> layer.

    tf.tensordot flattens the leading axes into one matrix product, whose kernel gradient is
    one product too (a broadcast tf.matmul's is a product per position, summed afterwards:
    slower, and summed in the 16-bit type). An einsum with '...' is avoided: TF 2.21's
    oneDNN einsum with an ellipsis returns wrong values in float16 and bfloat16 on CPU.
    """
    return tf.tensordot(a, params[f"g.{name}.kernel"], axes=1) + params[f"g.{name}.bias"]


def g_logits(x, params, config: LRLCConfig):
    """Logits w~ (B, H_out, W_out, K) predicted from the input by the network g (eq. 6)."""
    low = _dense(x, params, "reduce")  # a 1x1 convolution to K channels
    branches = [low, tf.reduce_mean(low, axis=(1, 2), keepdims=True)]
    for r in config.g_dilations:
        kernel = params[f"g.dilated{r}.kernel"][:, :, :, None]  # depthwise, multiplier 1
        dilated = tf.nn.depthwise_conv2d(
            low, kernel, strides=(1, 1, 1, 1), padding="VALID", dilations=(r, r)
        )
        branches.append(dilated + params[f"g.dilated{r}.bias"])
    cat = tf.concat([resize_bilinear(b, config.output_size) for b in branches], axis=-1)
    squeeze = tf.nn.relu(_dense(cat, params, "squeeze"))
    excite = tf.sigmoid(_dense(squeeze, params, "excite"))
    return _dense(excite, params, "project")


# ---------------------------------------------------------------------------------------------
# Biases (eq. 5; spec section 7)


def bias_map(params, config: LRLCConfig, dtype):
    """B[i, j, o] of eq. 5 as an (H_out, W_out, C_out) tensor (zeros when both are off)."""
    out_h, out_w = config.output_size
    bias = tf.zeros((out_h, out_w, config.out_channels), dtype)
    if config.spatial_bias:
        if config.combining == "rowcol":
            spatial = params["row_bias"][:, None] + params["col_bias"][None, :]
        elif config.combining == "row":
            spatial = params["row_bias"][:, None]
        elif config.combining == "col":
            spatial = params["col_bias"][None, :]
        else:
            spatial = params["spatial_bias"]
        bias = bias + spatial[:, :, None]
    if config.channel_bias:
        bias = bias + params["channel_bias"]
    return bias


# ---------------------------------------------------------------------------------------------
# Locally connected form (spec section 11)


def to_locally_connected(params, config: LRLCConfig, x=None):
    """The equivalent locally connected (kernel, bias): kernel[i, j] = sum_k w[i, j, k] F^(k).

    kernel is (H_out, W_out, kh, kw, C_in, C_out), or (B, H_out, W_out, ...) per example for
    an input-dependent layer (then `x` is required); bias is (H_out, W_out, C_out), zeros
    when the layer has neither bias.
    """
    if x is not None:
        x = check_input(x, config)
    elif config.input_dependent:
        raise ValueError("to_locally_connected: an input-dependent layer needs the input x")
    params = check_params(params, config, None if x is None else x.dtype)
    weights = _combining_weights(params, config, x)
    equation = "bijk,kuvco->bijuvco" if weights.shape.rank == 4 else "ijk,kuvco->ijuvco"
    kernel = tf.einsum(equation, weights, params["basis"])
    return kernel, bias_map(params, config, weights.dtype)


def locally_connected(x, kernel, bias, config: LRLCConfig):
    """y[b, i, j, o] = sum_{u, v, c} xpad[b, i s_h + u d_h, j s_w + v d_w, c] K[i, j, u, v, c, o]
    + bias[i, j, o], by patch extraction and one einsum over positions.

    `kernel` is (H_out, W_out, kh, kw, C_in, C_out) or carries a leading batch axis equal to
    the batch of `x` (one kernel per example); `bias` is (H_out, W_out, C_out) or None.
    """
    x = check_input(x, config)
    kernel = as_floating(kernel, "locally connected kernel")
    out_h, out_w = config.output_size
    kh, kw = config.kernel_size
    shared = (out_h, out_w, kh, kw, config.in_channels, config.out_channels)
    shape = tuple(kernel.shape)
    per_example = len(shape) == len(shared) + 1
    if (
        shape[-len(shared) :] != shared
        or len(shape) not in (len(shared), len(shared) + 1)
        or (per_example and None not in (shape[0], x.shape[0]) and shape[0] != x.shape[0])
    ):
        raise ValueError(
            f"locally connected kernel has shape {shape}; expected {shared} or "
            f"({x.shape[0]}, {', '.join(map(str, shared))}) (one per example of x)"
        )
    if bias is not None:
        bias = as_floating(bias, "locally connected bias")
        if tuple(bias.shape) != (out_h, out_w, config.out_channels):
            raise ValueError(
                f"locally connected bias has shape {tuple(bias.shape)}; "
                f"expected {(out_h, out_w, config.out_channels)}"
            )
        bias = tf.cast(bias, x.dtype)
    flat = (-1,) * per_example + (out_h, out_w, kh * kw * config.in_channels, config.out_channels)
    equation = "bijp,bijpo->bijo" if per_example else "bijp,ijpo->bijo"
    patches = extract_patches(x, config)
    y = tf.einsum(equation, patches, tf.cast(tf.reshape(kernel, flat), x.dtype))
    return y if bias is None else y + bias
