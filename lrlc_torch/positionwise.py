"""The locally connected kernel: `apply_banks` applies one filter bank per output position
to that position's patches, all positions as one batched matrix product (spec section 11).
`LocallyConnected1d/2d/3d` and `LRLC1d/2d/3d(strategy='lc')` run it.

Banks come from a kernel source: `WeightKernels` reads a locally connected weight as it
is; `BasisKernels` forms the position banks sum_k w[k, p] basis[k] (eq. 2) of an LRLC layer.
Positions are processed a block of output rows (slices along the first grid axis: rows in
2-D, depth slices in 3-D, single positions in 1-D) at a time, so the patches, the banks and
their gradients exist for one block only: the working memory is two buffers of about
`BLOCK_BYTES` whatever the layer's size and rank. The padded input is kept as (*grid_pad,
C_in, B), batch innermost, so that only 2-D transposes (copied by torch in cache-sized
tiles) reorder large tensors. The backward (spec section 12.3, with the bank
in place of the basis) is hand-written: d(patches) = bank^T dy folded back onto the input,
d(bank) = dy patches^T handed block by block to the kernel source.

`config` here is always a plain config: the layer's own, or for a mixed basis its
`locally_connected_config()` (spec section 16.5). Under `torch.export` the kernel takes
out-of-place products (the exported program has no custom backward, and autograd cannot
differentiate `out=` products) and, when the batch is symbolic, one block for all rows, so
that nothing branches on the batch size.
"""

from __future__ import annotations

import itertools
import math

import torch

from lrlc_numpy import LRLCConfig

__all__ = [
    "BLOCK_BYTES",
    "DEVICE_BLOCK_BYTES",
    "BasisKernels",
    "WeightKernels",
    "apply_banks",
    "apply_banks_vjp",
    "batch_last",
    "extract_patches",
]

# Target size of one block's buffers, per device type: smaller blocks bound the working
# memory, fewer blocks mean fewer kernel calls, which dominate on GPUs
# (docs/performance.md, 'PyTorch' 'lc' and 'GPU', first GPU run).
BLOCK_BYTES = 32 * 2**20
DEVICE_BLOCK_BYTES = {"cuda": 2 * 2**30}


def _bank_width(config: LRLCConfig) -> int:
    return config.in_channels * math.prod(config.kernel_size)


def _row_positions(config: LRLCConfig) -> int:
    """Output positions in one output row: one slice along the first grid axis."""
    return math.prod(config.output_size[1:])


def _exporting() -> bool:
    return torch.compiler.is_exporting()


def _row_blocks(config: LRLCConfig, x: torch.Tensor):
    """(first row, end row) of each block of output rows for the batch `x`; one block when
    the batch is symbolic (torch.export), whose size no branch may read."""
    out_h = config.output_size[0]
    batch, itemsize = x.shape[0], x.element_size()
    if not isinstance(batch, int):
        return [(0, out_h)]
    row_bytes = (
        _row_positions(config) * _bank_width(config) * max(batch, config.out_channels) * itemsize
    )
    block_bytes = DEVICE_BLOCK_BYTES.get(x.device.type, BLOCK_BYTES)
    rows = max(1, min(out_h, block_bytes // row_bytes))
    return [(start, min(start + rows, out_h)) for start in range(0, out_h, rows)]


def _padded_shape(x: torch.Tensor, config: LRLCConfig):
    grid = (
        before + size + after for (before, after), size in zip(config.padding_pairs, x.shape[2:])
    )
    return (*grid, x.shape[1], x.shape[0])


def _interior(padded: torch.Tensor, x: torch.Tensor, config: LRLCConfig) -> torch.Tensor:
    """The part of a (*grid_pad, C_in, B) tensor that is x's grid, not padding."""
    return padded[
        tuple(
            slice(before, before + size)
            for (before, _), size in zip(config.padding_pairs, x.shape[2:])
        )
    ]


def _transposed(a: torch.Tensor, split: int) -> torch.Tensor:
    """`a` read as a matrix (its first `split` axes by the rest), transposed into contiguous
    memory. torch copies 2-D transposes in cache-sized tiles; a general 4-D permutation is
    several times slower. Sizes are explicit, so an empty batch reshapes too."""
    rows, cols = math.prod(a.shape[:split]), math.prod(a.shape[split:])
    return a.reshape(rows, cols).t().contiguous()


def batch_last(x: torch.Tensor, config: LRLCConfig) -> torch.Tensor:
    """x (B, C_in, *grid) zero-padded by `config.padding_pairs`, as (*grid_pad, C_in, B)."""
    channels_first = _transposed(x, 1).view(*x.shape[1:], x.shape[0])  # (C_in, *grid, B)
    grid_first = channels_first.movedim(0, -2)  # (*grid, C_in, B)
    if _exporting():  # no in-place copy into a buffer: a pad, which export keeps functional
        spec = (0, 0) + tuple(v for pair in reversed(config.padding_pairs) for v in pair)
        padded = torch.nn.functional.pad(channels_first, spec)
        return padded.movedim(0, -2).contiguous()
    padded = x.new_zeros(_padded_shape(x, config))
    _interior(padded, x, config).copy_(grid_first)
    return padded


def _window_view(padded: torch.Tensor, config: LRLCConfig, start: int, stop: int):
    """The patches of output rows [start, stop) as a strided view of `padded`:
    (stop - start, *out[1:], C_in, *kernel, B)."""
    n = config.spatial_dims
    *grid_strides, c_stride, b_stride = padded.stride()
    shape = (stop - start, *config.output_size[1:], config.in_channels, *config.kernel_size)
    strides = (
        *(s * g for s, g in zip(config.stride, grid_strides)),
        c_stride,
        *(d * g for d, g in zip(config.dilation, grid_strides)),
    )
    first_row = padded[start * config.stride[0] :]  # as_strided then starts where this view starts
    return first_row.as_strided((*shape, padded.shape[n + 1]), (*strides, b_stride))


def extract_patches(padded: torch.Tensor, config: LRLCConfig, start: int, stop: int, out=None):
    """The patches of output rows [start, stop) as (n, C_in *kernel, B), n = their positions,
    rows in (c, *tap) order; copied into `out` (a buffer at least that large) when given."""
    window = _window_view(padded, config, start, stop)
    count = math.prod(window.shape[: config.spatial_dims])
    if out is None:
        return window.reshape(count, _bank_width(config), padded.shape[-1])
    out = out[:count]
    out.view(window.shape).copy_(window)
    return out


def _extract_patches_vjp(dpadded, dpatches, config: LRLCConfig, start: int, stop: int) -> None:
    """Add the patch gradients (n, C_in *kernel, B) of output rows [start, stop) onto
    `dpadded` (the adjoint of `extract_patches`): one strided add per kernel offset, since
    windows overlap."""
    n, out = config.spatial_dims, (stop - start, *config.output_size[1:])
    grid = dpatches.view(*out, config.in_channels, *config.kernel_size, dpatches.shape[-1])
    for tap in itertools.product(*map(range, config.kernel_size)):
        first = [u * d for u, d in zip(tap, config.dilation)]
        first[0] += start * config.stride[0]
        target = dpadded[
            tuple(
                slice(f, f + (size - 1) * s + 1, s) for f, size, s in zip(first, out, config.stride)
            )
        ]
        target.add_(grid[(slice(None),) * (n + 1) + tap])


class WeightKernels:
    """Banks read from a locally connected weight (*out, C_out, C_in, *kernel) of `config`'s
    geometry; their gradient is written straight into a gradient of the weight's shape."""

    def __init__(self, weight: torch.Tensor, config: LRLCConfig):
        self.shape = weight.shape
        self.weight = weight.reshape(-1, config.out_channels, _bank_width(config))
        self.grad = None

    def banks(self, start: int, stop: int) -> torch.Tensor:
        return self.weight[start:stop]

    def grad_buffer(self, start: int, stop: int) -> torch.Tensor:
        if self.grad is None:
            self.grad = self.weight.new_empty(self.weight.shape)
        return self.grad[start:stop]

    def accumulate(self, start: int, stop: int, dbanks: torch.Tensor) -> None:
        """Nothing to do: `grad_buffer` was the gradient itself."""

    def weight_grad(self) -> torch.Tensor:
        return self.grad.view(self.shape)


class BasisKernels:
    """The position banks (eq. 2; `functional.position_banks`) of a stacked LRLC basis
    (K C_out, C_in, *kernel) and fixed weights (K, *out), formed block by block into
    one reused buffer, which then also takes the block's bank gradients (the backward is
    done with a block's banks when it asks for `grad_buffer`). `accumulate` contracts those
    to d(basis) (summed over positions) and d(w) (per position)."""

    def __init__(self, weights, basis, *, need_weights=False, need_basis=False):
        rank = weights.shape[0]
        self.basis_shape = basis.shape
        self.weights = weights.flatten(1).t().contiguous()  # (P, K)
        self.basis = basis.reshape(rank, math.prod(basis.shape) // rank)  # (K, C_out C_in *kernel)
        out_channels = basis.shape[0] // rank
        self.bank_shape = (out_channels, self.basis.shape[1] // out_channels)
        self.buffer = None
        self.dweights = self.weights.new_empty(self.weights.shape) if need_weights else None
        self.dbasis = self.basis.new_zeros(self.basis.shape) if need_basis else None

    def _scratch(self, start: int, stop: int) -> torch.Tensor:
        if self.buffer is None:  # blocks come largest first
            self.buffer = self.basis.new_empty(stop - start, self.basis.shape[1])
        return self.buffer[: stop - start]

    def banks(self, start: int, stop: int) -> torch.Tensor:
        if _exporting():
            return torch.mm(self.weights[start:stop], self.basis).view(-1, *self.bank_shape)
        out = self._scratch(start, stop)
        torch.mm(self.weights[start:stop], self.basis, out=out)
        return out.view(-1, *self.bank_shape)

    def grad_buffer(self, start: int, stop: int) -> torch.Tensor:
        return self._scratch(start, stop).view(-1, *self.bank_shape)

    def accumulate(self, start: int, stop: int, dbanks: torch.Tensor) -> None:
        dbanks = dbanks.flatten(1)
        if self.dweights is not None:  # dw[p, k] = <dbank_p, basis[k]>
            torch.mm(dbanks, self.basis.t(), out=self.dweights[start:stop])
        if self.dbasis is not None:  # dbasis[k] = sum_p w[p, k] dbank_p
            self.dbasis.addmm_(self.weights[start:stop].t(), dbanks)

    def weights_grad(self, out_shape) -> torch.Tensor | None:
        return None if self.dweights is None else self.dweights.t().reshape(out_shape)

    def basis_grad(self) -> torch.Tensor | None:
        return None if self.dbasis is None else self.dbasis.view(self.basis_shape)


def apply_banks(x: torch.Tensor, kernels, config: LRLCConfig) -> torch.Tensor:
    """y[b, o, p] = sum_{c, tap} bank_p[o, (c, tap)] patch_p[(c, tap), b], no bias.

    Returns (B, C_out, *out) as a transposed view of a (C_out, B, *out) tensor: adding the
    bias (or `.contiguous()`) makes it channels-first in one pass.
    """
    batch = x.shape[0]
    out, out_w = config.output_size, _row_positions(config)
    padded = batch_last(x, config)
    blocks = _row_blocks(config, x)
    if _exporting():  # out-of-place: the exported program is differentiated op by op
        y = torch.cat(
            [
                torch.bmm(
                    kernels.banks(start * out_w, stop * out_w),
                    extract_patches(padded, config, start, stop),
                )
                for start, stop in blocks
            ]
        )
    else:
        y = x.new_empty(math.prod(out), config.out_channels, batch)
        buffer = None
        for start, stop in blocks:
            first, end = start * out_w, stop * out_w
            if buffer is None:
                buffer = x.new_empty(end - first, _bank_width(config), batch)
            block = extract_patches(padded, config, start, stop, buffer)
            torch.bmm(kernels.banks(first, end), block, out=y[first:end])
    y = _transposed(y, 1)  # (P, C_out, B) -> (C_out, B, P)
    return y.view(config.out_channels, batch, *out).transpose(0, 1)


def apply_banks_vjp(x, dy, kernels, config: LRLCConfig, *, need_x: bool, need_kernels: bool):
    """The gradient for x (None unless `need_x`); with `need_kernels`, hands each block's
    bank gradients d(bank_p) = dy_p patch_p^T to `kernels.accumulate`."""
    batch = x.shape[0]
    out_w = _row_positions(config)
    # dy (B, C_out, P) as (P, C_out, B): swap the leading axes, then a 2-D transpose.
    dy_rows = _transposed(dy.transpose(0, 1), 2)
    dy_rows = dy_rows.view(math.prod(dy.shape[2:]), config.out_channels, batch)
    padded = batch_last(x, config) if need_kernels else None
    dpadded = x.new_zeros(_padded_shape(x, config)) if need_x else None
    buffer = None
    for start, stop in _row_blocks(config, x):
        first, end = start * out_w, stop * out_w
        dy_block = dy_rows[first:end]  # (n, C_out, B)
        if buffer is None:
            buffer = x.new_empty(end - first, _bank_width(config), batch)
        if need_x:
            banks = kernels.banks(first, end)
            dpatches = torch.bmm(banks.transpose(1, 2), dy_block, out=buffer[: end - first])
            _extract_patches_vjp(dpadded, dpatches, config, start, stop)
        if need_kernels:
            block = extract_patches(padded, config, start, stop, buffer)
            dbanks = torch.bmm(dy_block, block.transpose(1, 2), out=kernels.grad_buffer(first, end))
            kernels.accumulate(first, end, dbanks)
    if not need_x:
        return None
    channels_first = _interior(dpadded, x, config).movedim(-2, 0)  # (C_in, *grid, B)
    return _transposed(channels_first, x.dim() - 1).view(x.shape)
