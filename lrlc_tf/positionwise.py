"""The locally connected kernel (spec sections 3 and 11): input windows, and `apply_banks`,
which multiplies each output position's patches by its own filter bank, a block of output
rows at a time; it runs `LocallyConnected2D` and the LRLC layer's 'lc' strategy. Also the
tensor checks (spec section 14) that every lrlc_tf module shares.

A reshape here never writes the batch into a static shape: it may be unknown (a traced
None) or 0, where -1 is ambiguous.
"""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf

import lrlc_numpy
from lrlc_numpy import LRLCConfig
from lrlc_numpy.config import check_config

__all__ = [
    "BLOCK_BYTES",
    "FLOAT_DTYPES",
    "apply_banks",
    "as_floating",
    "check_input",
    "extract_patches",
    "pad_input",
]

# The dtypes lrlc_tf computes in; others (integers, float8) are refused by name.
FLOAT_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)


def as_floating(value, name: str):
    """`value` (a tensor, variable or array) as a tensor of one of FLOAT_DTYPES; TypeError
    naming `name` otherwise. Never casts."""
    if value is None or isinstance(value, (str, bytes, Mapping)):
        raise TypeError(f"{name} must be a tensor or array, got {type(value).__name__}")
    try:
        tensor = tf.convert_to_tensor(value)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name} must be a tensor or array, got {type(value).__name__} ({err})"
        ) from None
    if tensor.dtype not in FLOAT_DTYPES:
        names = ", ".join(d.name for d in FLOAT_DTYPES)
        raise TypeError(f"{name} must have a floating dtype ({names}), got {tensor.dtype.name}")
    return tensor


def check_input(x, config: LRLCConfig, *, name: str = "x", layout: str = "NHWC"):
    """`x` as a tensor after checking its rank, channels and grid (in `layout`), then dtype
    (spec section 14); on static shapes, so inside tf.function once per trace. The batch may
    be unknown or 0."""
    check_config(config, f"check_input ({name})")
    if x is None or isinstance(x, (str, bytes, Mapping)):
        raise TypeError(f"{name} must be a tensor or array, got {type(x).__name__}")
    try:
        x = tf.convert_to_tensor(x)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name} must be a tensor or array, got {type(x).__name__} ({err})"
        ) from None
    if x.shape.rank is None:
        raise ValueError(f"{name} has unknown rank; expected rank 4 ({layout})")
    lrlc_numpy.check_input_shape(tuple(x.shape), config, name=name, layout=layout)
    return as_floating(x, name)


def _with_leading(a, leading):
    """`a` (..., B, C) reshaped to (*leading, B, C), B and C read at run time."""
    return tf.reshape(a, tf.concat([leading, tf.shape(a)[-2:]], axis=0))


def pad_input(x, config: LRLCConfig, padding_pairs=None):
    """`x` zero-padded by `padding_pairs` (a mixed basis's group's; default
    `config.padding_pairs`), so every later window is a 'VALID' one.

    Padding explicitly keeps the spec's padding rule the only one in play, asymmetric
    padding and stride with dilation included.
    """
    x = check_input(x, config)
    pairs = config.padding_pairs if padding_pairs is None else padding_pairs
    return tf.pad(x, [[0, 0], *pairs, [0, 0]])


def extract_patches(x, config: LRLCConfig):
    """patches[b, i, j, (u, v, c)] = xpad[b, i s_h + u d_h, j s_w + v d_w, c] (eq. 1).

    One strided slice per kernel tap, concatenated tap-major: the flat index is
    (u * kw + v) * C_in + c, the order of a (kh, kw, C_in) kernel reshaped flat.
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


def _position_major(a):
    """(B, H, W, C) -> (H, W, B, C): each position's rows are one matrix of the products."""
    return tf.transpose(a, (1, 2, 0, 3))


def _batch_major(a):
    return tf.transpose(a, (2, 0, 1, 3))


# Bytes of patches one block of output rows may make: small enough to stay in a core's cache
# while its product runs (see docs/performance.md, 'TensorFlow', 'lc').
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
    """For the output rows `block` = (start, stop), per kernel tap (u, v), tap-major: the
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
    """The patches of the output rows `block` (eq. 1) as (rows W_out, B, kh kw C_in), from
    the position-major padded input."""
    patches = tf.concat([xpad[rows, cols] for rows, cols in _tap_slices(config, block)], -1)
    return _with_leading(patches, [(block[1] - block[0]) * config.output_size[1]])


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

    `banks` is (P, kh kw C_in, C_out), rows in a flattened HWIO kernel's (u, v, c) order.
    Patches are made per block (`_row_blocks`), not as one (P, B, kh kw C_in) copy; so is
    the gradient: dbanks = patches^T dy, dpatches = dy banks^T (patches made again), dx
    the adjoint of the patch extraction.
    """
    x = check_input(x, config)
    (out_h, out_w), (kh, kw) = config.output_size, config.kernel_size
    depth = kh * kw * config.in_channels
    banks = as_floating(banks, "banks")
    if tuple(banks.shape) != (out_h * out_w, depth, config.out_channels):
        raise ValueError(
            f"banks has shape {tuple(banks.shape)}; expected (H_out W_out, kh kw C_in, C_out) "
            f"= {(out_h * out_w, depth, config.out_channels)}"
        )
    banks = tf.cast(banks, x.dtype)
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
                rows = block[1] - block[0]
                dy_block = _with_leading(dy[block[0] : block[1]], [rows * out_w])
                patches = _block_patches(xpad, config, block)
                dbanks.append(tf.matmul(patches, dy_block, transpose_a=True))
                dpatches = tf.matmul(dy_block, bank, transpose_b=True)
                dpatches = _with_leading(dpatches, [rows, out_w])
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

        y = _with_leading(tf.concat(y, axis=0), [out_h, out_w])
        return _batch_major(y), grad

    return products(x, banks)
