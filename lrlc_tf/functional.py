"""LRLC layers as pure TensorFlow functions of tensors (spec/SPEC.md).

Canonical layouts throughout: data NHWC, the basis (K, kh, kw, C_in, C_out), parameters a
mapping from neutral names to arrays, tensors or variables. `forward`, `combining_weights`,
`to_locally_connected` and `locally_connected` check their arguments (spec section 14) and
compute in the dtype of `x`. The Keras layers in `lrlc_tf.layers` are thin wrappers around
them; they are public so that code outside Keras (custom loops, tf.function, XLA) can use a
plain params dict.

A fixed layer has two evaluation strategies (`STRATEGIES`, picked by `choose_strategy`):
'conv', Algorithm 1 (`basis_responses`, one convolution with K C_out outputs, then
`combine`, the weighted sum over K with a hand-written gradient), whose cost grows with K;
and 'lc', the locally connected form (each position's filter bank formed from the basis,
then `apply_banks`, one batched matrix product over positions), whose cost barely does.
`locally_connected` uses the same `apply_banks`. Input-dependent layers have one bank per
example and position, so they always run Algorithm 1. At rank 1 with softmax the weights
are identically 1, so Algorithm 1 is the convolution alone and neither the logits nor g are
evaluated (`weights_are_ones`).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

import lrlc_numpy
from lrlc_numpy import LRLCConfig
from lrlc_numpy.reference import L2_FLOOR
from lrlc_numpy.strategy import (
    STRATEGIES,  # noqa: F401 (re-exported)
    CostModel,
    combining_parameter_names,
    weights_are_ones,
)

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


def _native_padding(config: LRLCConfig):
    """'VALID' or 'SAME' when TensorFlow's own padding is the spec's for this window, else None.

    Letting the convolution pad saves a padded copy of the input and its gradient. TF's
    'SAME' is the spec's 'same' rule at the convolution's own stride, so it applies wherever
    the convolution runs at the layer's stride (not to a dilated, strided window, which is
    convolved at stride 1 and then subsampled).
    """
    if all(pad == 0 for pair in config.padding_pairs for pad in pair):
        return "VALID"
    native_stride = config.dilation == (1, 1) or config.stride == (1, 1)
    same = dataclasses.replace(config, padding="same").padding_pairs
    return "SAME" if native_stride and config.padding_pairs == same else None


def _convolution(x, kernel, config: LRLCConfig):
    """The convolution of `x` with `kernel` under `config`'s padding, stride and dilation.

    TensorFlow's CPU kernels have no gradient for a dilated tf.nn.conv2d in float64 (nor in
    float32 without oneDNN), so a dilated window goes through tf.nn.convolution, which
    rewrites it as an undilated convolution with space_to_batch. That rewrite allows stride
    1 only, so a stride is then applied by subsampling the outputs.
    """
    padding = _native_padding(config)
    if padding is None:
        x, padding = pad_input(x, config), "VALID"
    if config.dilation == (1, 1):
        return tf.nn.conv2d(x, kernel, strides=config.stride, padding=padding)
    z = tf.nn.convolution(x, kernel, padding=padding, dilations=config.dilation)
    sh, sw = config.stride
    return z[:, ::sh, ::sw, :]


def basis_responses(x, basis, config: LRLCConfig):
    """Algorithm 1's convolution step: z[b, i, j, k, o] = (I * F^(k))[b, i, j, o] for every k.

    The K basis filter banks run as ONE convolution with K * C_out output channels, k outer
    (channel k * C_out + o, spec section 4.3): each position's responses are then a
    (K, C_out) matrix with contiguous rows, which the combination and its gradient reach
    with batched products over C_out-long rows and row-wise broadcasts (with k innermost
    they work in strides of K: at K = 2 on this project's CPU, dw took 1.6x and dz 3.5x as
    long; docs/performance.md).
    """
    rank, kh, kw, c_in, c_out = basis.shape
    kernel = tf.reshape(tf.transpose(basis, (1, 2, 3, 0, 4)), (kh, kw, c_in, rank * c_out))
    z = _convolution(x, kernel, config)
    out_h, out_w = config.output_size
    return tf.reshape(z, (-1, out_h, out_w, rank, c_out))


@tf.custom_gradient
def _weighted_sum(responses, weights, *bias):
    """sum_k w[(b,) i, j, k] z[b, i, j, k, o] (+ bias) as a batched (1, K) x (K, C_out)
    product per position, fixed weights broadcast over the batch; `bias` is empty or one
    (H_out, W_out, C_out) tensor.

    The gradient is written out so that nothing of z's size is made but dz itself: dw is one
    batched product with z, and dz = w dy is formed only after dw, so that z (dead once dw is
    read) can be freed before dz is allocated. The backward also starts only once the output
    exists: a caller's dy need not depend on y (a fixed cotangent), and the executor would
    otherwise be free to form dz while z, or y before its bias, still waits for the forward's
    last ops. The step then peaks at y, dz and dx, where the K C_out convolution's own step
    holds its output and dx. At rank 1 the products are plain multiplications, which skip
    the batched product's per-position overhead.
    """
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
    """Algorithm 1's combination step: y[b, i, j, o] = sum_k w[i, j, k] z[b, i, j, k, o] + B.

    `weights` is (H_out, W_out, K), or (B, H_out, W_out, K) for an input-dependent layer;
    `bias` is (H_out, W_out, C_out) or None.
    """
    return _weighted_sum(responses, weights, *([] if bias is None else [bias]))


def forward(x, params, config: LRLCConfig, *, strategy: str = "auto"):
    """The LRLC layer, y = sum_k w (I * F^(k)) + B (eqs. 2-6); `x` is NHWC and the parameters
    are cast to its dtype. `strategy` is 'conv' (Algorithm 1), 'lc' (the locally connected
    form, fixed layers only) or 'auto' (`choose_strategy`'s cost rule for this batch)."""
    x = check_input(x, config)
    params = check_params(params, config, x.dtype)
    chosen = choose_strategy(config, x.shape[0], strategy)
    has_bias = config.spatial_bias or config.channel_bias
    bias = bias_map(params, config, x.dtype) if has_bias else None
    if chosen == "conv" and weights_are_ones(config):
        return _single_convolution(x, params, config, bias)
    weights = _combining_weights(params, config, x)
    if chosen == "lc":
        y = apply_banks(x, position_banks(weights, params["basis"]), config)
        return y if bias is None else y + bias
    return combine(basis_responses(x, params["basis"], config), weights, bias)


def _single_convolution(x, params, config: LRLCConfig, bias):
    """Algorithm 1 when w = 1 (`weights_are_ones`): y = I * F^(1) + B, one convolution with
    C_out outputs plus the bias map; neither the logits nor g are evaluated.

    The softmax's Jacobian p (delta - p) vanishes at p = 1, so every combining parameter's
    gradient is exactly zero: `_with_zero_gradients` reports those zeros rather than None,
    which optimizers would warn about (Keras) and callers would have to special-case.
    """
    basis = params["basis"]
    y = _convolution(x, tf.reshape(basis, basis.shape[1:]), config)
    if bias is not None:
        y = y + bias
    return _with_zero_gradients(y, *(params[n] for n in combining_parameter_names(params)))


@tf.custom_gradient
def _with_zero_gradients(y, *unused):
    """`y` itself, with exact zero gradients for the tensors `unused`, which `y` does not
    depend on (zeros of their static shapes, so nothing keeps them alive for the backward)."""

    def grad(dy):
        return (dy, *[tf.zeros(u.shape, u.dtype) for u in unused])

    return y, grad


# ---------------------------------------------------------------------------------------------
# Choosing the strategy


# The cost rule's constants (the shape of lrlc_torch's rule), measured on this project's
# 2-core CPU (docs/performance.md, TensorFlow section): a multiply-add of the batched
# products over positions costs PRODUCT_COST times one of oneDNN's convolution, moving one
# patch element (slice, concat, and their adjoints) PATCH_COST multiply-adds, and a
# multiply-add of the bank products (forming banks, d(basis), d(w)) BANK_COST.
PRODUCT_COST = 2.0
PATCH_COST = 40.0
BANK_COST = 2.0


# This backend keeps the banks (3 bank products per step) and moves each patch element about three
# times (made, made again in the backward, folded back).
COSTS = CostModel(product=PRODUCT_COST, patch=3 * PATCH_COST, bank=BANK_COST, bank_passes=3)
# The shared rule (lrlc_numpy.strategy) with this backend's costs.
lc_crossover = COSTS.lc_crossover
choose_strategy = COSTS.choose_strategy


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


def position_banks(weights, basis):
    """Each output position's filter bank sum_k w[i, j, k] F^(k) (eq. 2), flattened for
    `apply_banks`: (H_out W_out, kh kw C_in, C_out), as one matrix product. Its autodiff
    gradient is the contraction of the banks' gradient straight to dw and dF."""
    rank, kh, kw, c_in, c_out = basis.shape
    flat = tf.matmul(tf.reshape(weights, (-1, rank)), tf.reshape(basis, (rank, -1)))
    return tf.reshape(flat, (-1, kh * kw * c_in, c_out))


def _position_major(a):
    """(B, H, W, C) -> (H, W, B, C): positions outermost, so each position's rows are one
    matrix of the batched products."""
    return tf.transpose(a, (1, 2, 0, 3))


def _batch_major(a):
    return tf.transpose(a, (2, 0, 1, 3))


# Bytes of patches one block of output rows may make: small enough to stay in a core's cache
# while its product runs (a whole layer's patches are kh kw times the input, e.g. 151 MB for
# the paper's layer at batch 64, and took as long to write and read as the product itself).
BLOCK_BYTES = 4 * 2**20


def _row_blocks(config: LRLCConfig, batch, itemsize: int):
    """The output rows in consecutive blocks (start, stop) of at most BLOCK_BYTES of patches;
    one row per block when the batch is unknown."""
    (out_h, out_w), (kh, kw) = config.output_size, config.kernel_size
    rows = 1
    if batch:
        row_bytes = out_w * batch * kh * kw * config.in_channels * itemsize
        rows = max(1, BLOCK_BYTES // row_bytes)
    return [(start, min(start + rows, out_h)) for start in range(0, out_h, rows)]


def _tap_slices(config: LRLCConfig, block):
    """For the output rows `block` = (start, stop) and each kernel tap (u, v), tap-major: the
    slices of padded rows and of columns that tap reads."""
    (start, stop), out_w = block, config.output_size[1]
    (kh, kw), (sh, sw), (dh, dw) = config.kernel_size, config.stride, config.dilation
    return [
        (
            slice(u * dh + start * sh, u * dh + (stop - 1) * sh + 1, sh),
            slice(v * dw, v * dw + (out_w - 1) * sw + 1, sw),
        )
        for u in range(kh)
        for v in range(kw)
    ]


def _block_patches(xpad, config: LRLCConfig, block):
    """The patches of the output rows `block` (eq. 1): (rows W_out, B, kh kw C_in), in the
    (u, v, c) order, from the position-major padded input (H_pad, W_pad, B, C_in)."""
    patches = tf.concat([xpad[rows, cols] for rows, cols in _tap_slices(config, block)], -1)
    return tf.reshape(patches, (-1, *patches.shape[2:]))


def _spread(a, axis: int, window: slice, size: int):
    """The adjoint of a[window] along `axis`, of length `size`: `a` placed at window.start
    + m window.step, zeros elsewhere."""
    n, step = a.shape[axis], window.step
    others = [[0, 0]] * (a.shape.rank - axis - 1)
    if step > 1:  # interleave step - 1 zeros after every element, then drop the trailing ones
        a = tf.pad(tf.expand_dims(a, axis + 1), [[0, 0]] * (axis + 1) + [[0, step - 1]] + others)
        shape = tf.concat([tf.shape(a)[:axis], [n * step], tf.shape(a)[axis + 2 :]], 0)
        a = tf.reshape(a, shape)[(slice(None),) * axis + (slice((n - 1) * step + 1),)]
    after = size - window.start - (n - 1) * step - 1
    return tf.pad(a, [[0, 0]] * axis + [[window.start, after]] + others)


def apply_banks(x, banks, config: LRLCConfig):
    """y[b, i, j, o] = sum_d patches[b, (i, j), d] banks[(i, j), d, o]: a locally connected
    layer without bias, as batched matrix products over the P = H_out W_out positions.

    `banks` is (P, kh kw C_in, C_out), rows in the (u, v, c) order of a flattened HWIO
    kernel. The products run a block of output rows at a time (`_row_blocks`), so that a
    block's patches are made where they are used and stay in cache, instead of a
    (P, B, kh kw C_in) copy going through memory twice. The gradient is written out the
    same way, block by block: dbanks = patches^T dy and dpatches = dy banks^T, one batched
    product each (the patches made again rather than kept), and dx the adjoint of the patch
    extraction.
    """
    (out_h, out_w), (kh, kw) = config.output_size, config.kernel_size
    (top, bottom), (left, right) = config.padding_pairs
    (h, w), c_in = config.input_size, config.in_channels
    (sh, _), (dh, _) = config.stride, config.dilation
    blocks = _row_blocks(config, x.shape[0], x.dtype.size)
    sizes = [(stop - start) * out_w for start, stop in blocks]

    @tf.custom_gradient
    def products(x, banks):
        xpad = _position_major(pad_input(x, config))  # (H_pad, W_pad, B, C_in)
        block_banks = tf.split(banks, sizes)
        y = [tf.matmul(_block_patches(xpad, config, b), k) for b, k in zip(blocks, block_banks)]

        def grad(dy):
            dy = _position_major(dy)  # (H_out, W_out, B, C_out)
            dbanks = []
            drows = [[] for _ in range(kh)]  # per tap row u, per block: dx of its padded rows
            for block, bank in zip(blocks, block_banks):
                dy_block = tf.reshape(dy[block[0] : block[1]], (-1, *dy.shape[2:]))
                patches = _block_patches(xpad, config, block)
                dbanks.append(tf.matmul(patches, dy_block, transpose_a=True))
                dpatches = tf.matmul(dy_block, bank, transpose_b=True)
                dpatches = tf.reshape(dpatches, (block[1] - block[0], out_w, *dpatches.shape[1:]))
                taps = _tap_slices(config, block)
                for u in range(kh):
                    drows[u].append(
                        tf.add_n(
                            [
                                _spread(
                                    dpatches[..., t * c_in : (t + 1) * c_in],
                                    1,
                                    cols,
                                    left + w + right,
                                )
                                for t, (_, cols) in enumerate(taps)
                                if t // kw == u
                            ]
                        )
                    )
            # Tap row u of output row i was read from padded row u d_h + i s_h.
            dxpad = tf.add_n(
                [
                    _spread(tf.concat(drows[u], 0), 0, slice(u * dh, None, sh), top + h + bottom)
                    for u in range(kh)
                ]
            )
            dx = _batch_major(dxpad[top : top + h, left : left + w])
            return dx, tf.concat(dbanks, axis=0)

        y = tf.reshape(tf.concat(y, axis=0), (out_h, out_w, *y[0].shape[1:]))
        return _batch_major(y), grad

    return products(x, banks)


def locally_connected(x, kernel, bias, config: LRLCConfig):
    """y[b, i, j, o] = sum_{u, v, c} xpad[b, i s_h + u d_h, j s_w + v d_w, c] K[i, j, u, v, c, o]
    + bias[i, j, o].

    `kernel` is (H_out, W_out, kh, kw, C_in, C_out), applied by `apply_banks`, or carries a
    leading batch axis equal to the batch of `x` (one kernel per example, as an
    input-dependent layer converts), applied by one einsum over examples and positions;
    `bias` is (H_out, W_out, C_out) or None.
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
    kernel = tf.cast(kernel, x.dtype)
    depth = kh * kw * config.in_channels
    if per_example:
        flat = tf.reshape(kernel, (-1, out_h, out_w, depth, config.out_channels))
        y = tf.einsum("bijp,bijpo->bijo", extract_patches(x, config), flat)
    else:
        y = apply_banks(x, tf.reshape(kernel, (out_h * out_w, depth, config.out_channels)), config)
    return y if bias is None else y + bias
