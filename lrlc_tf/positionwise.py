"""The locally connected kernel (spec sections 3 and 11): input windows, and `apply_banks`,
which multiplies each output position's patches by its own filter bank, a block of output
rows at a time; it runs the `LocallyConnected1D/2D/3D` layers and the LRLC layers' 'lc'
strategy. Generic in the number n of spatial axes (spec section 17). Also the
tensor checks (spec section 14) that every lrlc_tf module shares.

A reshape here never writes the batch into a static shape: it may be unknown (a traced
None) or 0, where -1 is ambiguous.
"""

from __future__ import annotations

import itertools
import math
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


def check_input(x, config: LRLCConfig, *, name: str = "x", layout: str | None = None):
    """`x` as a tensor after checking its rank, channels and grid (in `layout`, by default
    channels last: NHWC in 2-D, NLC in 1-D, NDHWC in 3-D), then dtype (spec section 14); on
    static shapes, so inside tf.function once per trace. The batch may be unknown or 0."""
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
        raise ValueError(
            f"{name} has unknown rank; expected rank {config.spatial_dims + 2} "
            f"({layout or config.layouts[0]})"
        )
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


def _taps(config: LRLCConfig):
    """The kernel taps (u, v, ...) in row-major order: a flattened kernel's order."""
    return list(itertools.product(*(range(k) for k in config.kernel_size)))


def _tap_slice(tap: int, n_out: int, stride: int, dilation: int, start: int = 0) -> slice:
    """The padded positions one kernel tap reads along one axis, for outputs start..n_out-1."""
    first = tap * dilation + start * stride
    return slice(first, tap * dilation + (n_out - 1) * stride + 1, stride)


def extract_patches(x, config: LRLCConfig):
    """patches[b, i, j, (u, v, c)] = xpad[b, i s_h + u d_h, j s_w + v d_w, c] (eq. 1); in n-D
    one output axis per grid axis and the taps (u_1, ..., u_n, c) flattened.

    One strided slice per kernel tap, concatenated tap-major: the flat index is
    (u * kw + v) * C_in + c, the order of a (kh, kw, C_in) kernel reshaped flat.
    """
    xpad = pad_input(x, config)
    geometry = list(zip(config.output_size, config.stride, config.dilation))
    taps = [
        xpad[(slice(None), *(_tap_slice(u, *axis) for u, axis in zip(tap, geometry)), slice(None))]
        for tap in _taps(config)
    ]
    return tf.concat(taps, axis=-1)


def _position_major(a):
    """(B, *grid, C) -> (*grid, B, C): each position's rows are one matrix of the products."""
    n = a.shape.rank - 2
    return tf.transpose(a, (*range(1, n + 1), 0, n + 1))


def _batch_major(a):
    n = a.shape.rank - 2
    return tf.transpose(a, (n, *range(n), n + 1))


# Bytes of patches one block of output rows may make: small enough to stay in a core's cache
# while its product runs (see docs/performance.md, 'TensorFlow', 'lc').
BLOCK_BYTES = 4 * 2**20


def _row_blocks(config: LRLCConfig, batch, itemsize: int):
    """The output rows (indices on the first grid axis) in consecutive blocks (start, stop)
    of at most BLOCK_BYTES of patches; one row per block when the batch is unknown."""
    out = config.output_size
    rows = 1
    if batch:
        row_bytes = (
            math.prod(out[1:]) * batch * math.prod(config.kernel_size) * config.in_channels
        ) * itemsize
        rows = max(1, BLOCK_BYTES // row_bytes)
    return [(start, min(start + rows, out[0])) for start in range(0, out[0], rows)]


def _tap_slices(config: LRLCConfig, block):
    """For the output rows `block` = (start, stop), per kernel tap, tap-major: the slices of
    padded positions that tap reads on each grid axis (rows of the block on the first)."""
    (start, stop), out = block, config.output_size
    geometry = list(zip(config.stride, config.dilation))
    slices = []
    for tap in _taps(config):
        first = _tap_slice(tap[0], stop, *geometry[0], start=start)
        rest = (_tap_slice(u, n, *axis) for u, n, axis in zip(tap[1:], out[1:], geometry[1:]))
        slices.append((first, *rest))
    return slices


def _block_patches(xpad, config: LRLCConfig, block):
    """The patches of the output rows `block` (eq. 1) as (positions of the block, B,
    window C_in), from the position-major padded input."""
    patches = tf.concat([xpad[slices] for slices in _tap_slices(config, block)], -1)
    positions = (block[1] - block[0]) * math.prod(config.output_size[1:])
    return _with_leading(patches, [positions])


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


# The shape of `apply_banks`'s banks in words, by number of grid axes.
_BANKS_SHAPE = {
    1: "(L_out, k C_in, C_out)",
    2: "(H_out W_out, kh kw C_in, C_out)",
    3: "(D_out H_out W_out, kd kh kw C_in, C_out)",
}


def apply_banks(x, banks, config: LRLCConfig):
    """y[b, i, j, o] = sum_d patches[b, (i, j), d] banks[(i, j), d, o]: a locally connected
    layer without bias, as batched matrix products over the P output positions (H_out W_out
    in 2-D, the product of the output grid in n-D).

    `banks` is (P, window C_in, C_out), rows in a flattened kernel's (u, v, c) order.
    Patches are made per block of rows of the first grid axis (`_row_blocks`), not as one
    (P, B, window C_in) copy; so is the gradient: dbanks = patches^T dy, dpatches = dy
    banks^T (patches made again), dx the adjoint of the patch extraction.
    """
    x = check_input(x, config)
    out, kernel_size = config.output_size, config.kernel_size
    depth = math.prod(kernel_size) * config.in_channels
    banks = as_floating(banks, "banks")
    positions = math.prod(out)
    if tuple(banks.shape) != (positions, depth, config.out_channels):
        raise ValueError(
            f"banks has shape {tuple(banks.shape)}; expected {_BANKS_SHAPE[len(out)]} = "
            f"{(positions, depth, config.out_channels)}"
        )
    banks = tf.cast(banks, x.dtype)
    padded = [lo + n + hi for n, (lo, hi) in zip(config.input_size, config.padding_pairs)]
    c_in, rest = config.in_channels, math.prod(out[1:])
    blocks = _row_blocks(config, x.shape[0], x.dtype.size)
    sizes = [(stop - start) * rest for start, stop in blocks]
    taps = _taps(config)

    @tf.custom_gradient
    def products(x, banks):
        xpad = _position_major(pad_input(x, config))  # (*padded grid, B, C_in)
        block_banks = tf.split(banks, sizes)
        y = [tf.matmul(_block_patches(xpad, config, b), k) for b, k in zip(blocks, block_banks)]

        def grad(dy):
            dy = _position_major(dy)  # (*out, B, C_out)
            dbanks = []
            # per tap on the first axis, per block: dx of its padded rows
            drows = [[] for _ in range(kernel_size[0])]
            for block, bank in zip(blocks, block_banks):
                rows = block[1] - block[0]
                dy_block = _with_leading(dy[block[0] : block[1]], [rows * rest])
                patches = _block_patches(xpad, config, block)
                dbanks.append(tf.matmul(patches, dy_block, transpose_a=True))
                dpatches = tf.matmul(dy_block, bank, transpose_b=True)
                dpatches = _with_leading(dpatches, [rows, *out[1:]])
                by_first_tap = [[] for _ in range(kernel_size[0])]
                for t, (tap, slices) in enumerate(zip(taps, _tap_slices(config, block))):
                    part = dpatches[..., t * c_in : (t + 1) * c_in]
                    for axis in range(1, len(out)):  # back onto the padded grid, but rows
                        part = _spread(part, axis, slices[axis], padded[axis])
                    by_first_tap[tap[0]].append(part)
                for u, parts in enumerate(by_first_tap):
                    drows[u].append(tf.add_n(parts))
            # Tap u of output row i was read from padded row u d + i s on the first axis.
            stride, dilation = config.stride[0], config.dilation[0]
            dxpad = tf.add_n(
                [
                    _spread(tf.concat(parts, 0), 0, slice(u * dilation, None, stride), padded[0])
                    for u, parts in enumerate(drows)
                ]
            )
            inside = tuple(
                slice(lo, lo + n) for n, (lo, _) in zip(config.input_size, config.padding_pairs)
            )
            dx = _batch_major(dxpad[inside])
            return dx, tf.concat(dbanks, axis=0)

        y = _with_leading(tf.concat(y, axis=0), list(out))
        return _batch_major(y), grad

    return products(x, banks)
