"""Compiled paths of lrlc_torch: the layer's math written for torch.compile (inductor).

`forward` and `locally_connected` take `lrlc_torch.functional`'s arguments and return its
values. Where the compiled path is selected (`enabled`) they run the math below compiled by
inductor, one program per config and strategy, compiled again per input shape; elsewhere,
and for every case listed under "Eager fallbacks", they call `functional`, whose
hand-written kernels are the eager path.

What the math does differently from `functional`:
- The locally connected form (strategy 'lc' and `locally_connected`) writes no patches.
  The padded input is kept position-major, (H_pad, W_mem, C_in, B), and output positions
  run over whole padded rows, so the windows of consecutive positions are one stride apart
  in memory: for each kernel row, every position's window row (kw taps of C_in channels) is
  a strided view of the input, and the product of the banks with them is one batched
  product (`torch.bmm`) per kernel row, summed. The positions past the end of each output
  row cost W_mem / W_out more products and are dropped. These products are custom
  operators (`lrlc::window_rows` and its gradients), so that inductor calls them on the
  padded input as it is instead of copying the windows out.
- Algorithm 1 is the K C_out convolution followed by the combination and the bias written
  as tensor expressions: inductor fuses the combination, the bias, the output's layout and
  their backward into a few kernels around the vendor's convolution.
- An input-dependent layer's network g is compiled with the rest, so its elementwise
  pieces fuse and its launches fall; with CUDA graphs selected (`use_compiled(True,
  cuda_graphs=True)` or LRLC_TORCH_COMPILED=cudagraphs), each program on CUDA is also
  captured in a CUDA graph (torch.compile's mode 'reduce-overhead'), one launch per
  program. The graphs' outputs are overwritten by the next call at the same shape, so this
  is opt-in.

Selection rule: the compiled path is the default on CUDA devices only (`COMPILED_DEVICES`);
on the CPU the eager kernels were as fast or faster (docs/performance.md, 'Compiled paths
(torch)'). The environment variable LRLC_TORCH_COMPILED (read at each call) overrides it:
'0' selects the eager path on every device, '1' the compiled path on every device,
'cudagraphs' the compiled path with CUDA graphs, 'auto' (or unset) the default;
`use_compiled(...)` overrides both, in code or as a context manager. Under a user's own
torch.compile the same rule picks which math is traced into the user's program (no
program of this module is compiled then).

Eager fallbacks, whatever the rule: 1-D and 3-D layers (the window-row products and the
programs below are written for 2-D grids; spec section 17), a mixed basis, rank 1 with
softmax (one convolution), an unbatched input, autocast, torch.export, torch.func
transforms (vmap, grad), parameters of another dtype than x, per-example locally connected
weights; and gradients of gradients, which compiled programs do not have: select the eager
path for create_graph.

Compile cost: the first call at a new input shape, dtype, device or grad mode compiles
(inductor; measured in docs/performance.md, 'Compiled paths (torch), issue 17'); later
calls at a shape seen before reuse that program (guards on the shapes, `dynamic=False`: a
last, smaller batch compiles once more). Each program has its
own cache, so layers of different configs do not evict each other.
"""

from __future__ import annotations

import contextlib
import math
import os
import types
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from lrlc_numpy import LRLCConfig, check_lc_shapes
from lrlc_numpy.strategy import weights_are_ones

from . import functional
from .checkpoint import torch_lc_shapes
from .costs import choose_strategy

__all__ = [
    "COMPILED_DEVICES",
    "ENV_VAR",
    "compiled_programs",
    "cuda_graphs_enabled",
    "enabled",
    "forward",
    "locally_connected",
    "lowrank_locally_connected",
    "use_compiled",
]

# Device types on which the compiled path is the default (see the module docstring).
COMPILED_DEVICES = frozenset({"cuda"})
ENV_VAR = "LRLC_TORCH_COMPILED"
_SETTINGS = {"0": False, "1": True, "cudagraphs": True, "auto": None}
# (compiled path on, CUDA graphs on) set by `use_compiled`; None defers to the environment.
_override: tuple[bool | None, bool] | None = None
# torch.compile's backend. Tests set "aot_eager" (traced, no code generation) or None (the
# math run uncompiled) where inductor's compile time would dominate.
_BACKEND = "inductor"


def _setting() -> str:
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in _SETTINGS:
        raise ValueError(f"{ENV_VAR}={value!r}; expected one of {sorted(_SETTINGS)}")
    return value


@contextlib.contextmanager
def _restore(previous):
    global _override
    try:
        yield
    finally:
        _override = previous


def use_compiled(on: bool | None = True, *, cuda_graphs: bool = False):
    """Select the compiled path on every device (`True`), the eager path everywhere
    (`False`) or the default rule (`None`), overriding LRLC_TORCH_COMPILED; `cuda_graphs`
    also captures the compiled programs on CUDA. Takes effect at once; as a context
    manager (`with use_compiled(False): ...`) it restores the previous choice on exit."""
    global _override
    previous = _override
    _override = None if on is None else (on, bool(cuda_graphs and on))
    return _restore(previous)


def enabled(device) -> bool:
    """Whether `forward` and `locally_connected` take the compiled path on `device`."""
    on = _override[0] if _override is not None else _SETTINGS[_setting()]
    if on is None:
        return torch.device(device).type in COMPILED_DEVICES
    return on


def cuda_graphs_enabled() -> bool:
    """Whether compiled programs on CUDA are captured in CUDA graphs."""
    if _override is not None:
        return _override[1]
    return _setting() == "cudagraphs"


# ---------------------------------------------------------------------------------------------
# The locally connected form by window rows


def _windows(pixels, start: int, positions: int, step: int, group: int, channels: int):
    """The window rows of one term: pixels start + step p + (0 .. group-1) of every position
    p, each (group C_in, B), as a strided view of `pixels` (L, C_in B): (P, group C_in, B)."""
    batch = pixels.shape[1] // channels
    if group == 1:
        rows = pixels[start : start + step * (positions - 1) + 1 : step]
        return rows.view(positions, channels, batch)
    taps = pixels[start : start + step * (positions - 1) + group].unfold(0, group, step)
    return taps.transpose(1, 2).reshape(positions, group * channels, batch)


# The window-row products are custom operators: inductor calls them as they are, with the
# padded input as their argument, so the windows stay views (compiled, it would copy them).


@torch.library.custom_op("lrlc::window_rows", mutates_args=())
def _window_rows(
    pixels: torch.Tensor, banks: torch.Tensor, starts: list[int], step: int, group: int
) -> torch.Tensor:
    """y[p] = sum_t banks[t, p] windows_t[p]: pixels (L, C_in B), banks (T, P, C_out,
    group C_in) -> (P, C_out, B)."""
    terms, positions, out_channels, width = banks.shape
    channels = width // group
    y = pixels.new_empty(positions, out_channels, pixels.shape[1] // channels)
    for term, start in enumerate(starts):
        window = _windows(pixels, start, positions, step, group, channels)
        if term == 0:
            torch.bmm(banks[0], window, out=y)
        else:
            y.baddbmm_(banks[term], window)
    return y


@_window_rows.register_fake
def _(pixels, banks, starts, step, group):
    channels = banks.shape[-1] // group
    return pixels.new_empty(banks.shape[1], banks.shape[2], pixels.shape[1] // channels)


@torch.library.custom_op("lrlc::window_rows_pixels_grad", mutates_args=())
def _window_rows_pixels_grad(
    banks: torch.Tensor, dy: torch.Tensor, length: int, starts: list[int], step: int, group: int
) -> torch.Tensor:
    """d(pixels) (length, C_in B), the adjoint of the window products: pixel start + step p + v
    receives banks[t, p][:, v]^T dy[p] from every position p and tap v reaching it."""
    terms, positions, out_channels, width = banks.shape
    channels, batch = width // group, dy.shape[-1]
    dpixels = dy.new_zeros(length, channels * batch)
    if step == 1:
        # Pixel start + r gathers tap v of position r - v for each v: one product of a
        # (C_in, group C_out) matrix of bank columns, gathered from `group` positions, with
        # a window of `group` rows of dy, accumulated in place. Nothing of the patches' size
        # (B values per tap) is written: the gathered banks do not grow with the batch.
        reach = positions + group - 1
        dy_rows = F.pad(dy, (0, 0, 0, 0, group - 1, group - 1)).flatten(1)
        dy_windows = _windows(dy_rows, 0, reach, 1, group, out_channels)
        gathered = banks.new_zeros(reach, channels, group, out_channels)
        for term, start in enumerate(starts):
            taps = banks[term].unflatten(-1, (group, channels))  # (P, C_out, group, C_in)
            for shift in range(group):  # window row `shift` holds tap group - 1 - shift
                tap = taps[:, :, group - 1 - shift].transpose(1, 2)  # (P, C_in, C_out)
                gathered[group - 1 - shift : group - 1 - shift + positions, :, shift] = tap
            target = dpixels[start : start + reach].view(reach, channels, batch)
            target.baddbmm_(gathered.view(reach, channels, -1), dy_windows)
        return dpixels
    span = step * (positions - 1) + group
    for term, start in enumerate(starts):
        dwindow = torch.bmm(banks[term].transpose(1, 2), dy)  # (P, group C_in, B)
        target = dpixels[start : start + span]
        if group == 1:
            target[::step].add_(dwindow.view(positions, -1))
        else:
            taps = dwindow.view(positions, group, -1).transpose(1, 2)  # (P, C_in B, group)
            target.add_(torch.ops.aten.unfold_backward(taps, target.shape, 0, group, step))
    return dpixels


@_window_rows_pixels_grad.register_fake
def _(banks, dy, length, starts, step, group):
    return dy.new_empty(length, banks.shape[-1] // group * dy.shape[-1])


@torch.library.custom_op("lrlc::window_rows_banks_grad", mutates_args=())
def _window_rows_banks_grad(
    pixels: torch.Tensor, dy: torch.Tensor, starts: list[int], step: int, group: int,
    channels: int,
) -> torch.Tensor:  # fmt: skip
    """d(banks)[t, p] = dy[p] windows_t[p]^T: (T, P, C_out, group C_in)."""
    positions, out_channels, _ = dy.shape
    dbanks = dy.new_empty(len(starts), positions, out_channels, group * channels)
    for term, start in enumerate(starts):
        window = _windows(pixels, start, positions, step, group, channels)
        torch.bmm(dy, window.transpose(1, 2), out=dbanks[term])
    return dbanks


@_window_rows_banks_grad.register_fake
def _(pixels, dy, starts, step, group, channels):
    return dy.new_empty(len(starts), dy.shape[0], dy.shape[1], group * channels)


def _window_rows_setup(ctx, inputs, output):
    pixels, banks, starts, step, group = inputs
    ctx.save_for_backward(pixels, banks)
    ctx.geometry = (starts, step, group)


def _window_rows_backward(ctx, dy):
    pixels, banks = ctx.saved_tensors
    starts, step, group = ctx.geometry
    dy = dy.contiguous()
    dpixels = dbanks = None
    if ctx.needs_input_grad[0]:
        dpixels = _window_rows_pixels_grad(banks, dy, pixels.shape[0], starts, step, group)
    if ctx.needs_input_grad[1]:
        channels = banks.shape[-1] // group
        dbanks = _window_rows_banks_grad(pixels, dy, starts, step, group, channels)
    return dpixels, dbanks, None, None, None


_window_rows.register_autograd(_window_rows_backward, setup_context=_window_rows_setup)


class _RowGeometry:
    """Where each output position's window rows lie in the position-major padded input.

    The padded input is (H_pad, W_mem, C_in, B) with W_mem >= W_pad chosen so that output
    row i starts sh W_mem pixels after row i - 1: position p = i W_row + j (only j < W_out
    kept) reads pixel u dh W_mem + v dw + sw p for tap (u, v). The taps of a kernel row are
    one term of the product (`group` = kw of them, contiguous, when dw = 1; else one tap
    per term).
    """

    def __init__(self, config: LRLCConfig):
        (self.top, bottom), (self.left, right) = config.padding_pairs
        height, width = config.input_size
        (self.kh, self.kw), (sh, sw) = config.kernel_size, config.stride
        self.dh, self.dw = config.dilation
        self.out_h, self.out_w = config.output_size
        w_pad = self.left + width + right
        unit = sw // math.gcd(sh, sw)  # so that sh W_mem is a multiple of sw
        self.w_mem = -(-w_pad // unit) * unit
        self.h_pad = self.top + height + bottom
        self.w_row = sh * self.w_mem // sw
        self.step = sw
        self.positions = (self.out_h - 1) * self.w_row + self.out_w
        self.group = self.kw if self.dw == 1 else 1
        self.blocks = self.kw // self.group
        self.terms = self.kh * self.blocks
        self.starts = [
            u * self.dh * self.w_mem + b * self.group * self.dw
            for u in range(self.kh)
            for b in range(self.blocks)
        ]

    def pad_input(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C_in, H, W) as (H_pad W_mem, C_in B), zero-padded, position-major."""
        rows = x.permute(2, 3, 1, 0)  # (H, W, C_in, B)
        right = self.w_mem - self.left - x.shape[3]
        bottom = self.h_pad - self.top - x.shape[2]
        padded = F.pad(rows, (0, 0, 0, 0, self.left, right, self.top, bottom))
        return padded.reshape(self.h_pad * self.w_mem, -1)

    def position_major(self, per_position: torch.Tensor) -> torch.Tensor:
        """(H_out, W_out, ...) as (P, ...): W_out padded to W_row with zeros, then trimmed."""
        extra = self.w_row - self.out_w
        if extra:
            per_position = F.pad(per_position, [0, 0] * (per_position.dim() - 2) + [0, extra])
        return per_position.flatten(0, 1)[: self.positions]

    def bank_layout(self, kernel: torch.Tensor) -> torch.Tensor:
        """Kernels (..., C_out, C_in, kh, kw) as (terms, ..., C_out, group C_in), taps (v, c)
        ordered as in the window rows."""
        lead = kernel.dim() - 4
        split = kernel.unflatten(-1, (self.blocks, self.group))  # (..., O, C, kh, nb, g)
        order = (lead + 2, lead + 3, *range(lead), lead, lead + 4, lead + 1)
        out_channels = kernel.shape[-4]
        return split.permute(order).reshape(self.terms, *kernel.shape[:lead], out_channels, -1)

    def apply(self, x: torch.Tensor, banks: torch.Tensor) -> torch.Tensor:
        """y (B, C_out, H_out, W_out) from banks (terms, P, C_out, group C_in), no bias."""
        y = _window_rows(self.pad_input(x), banks, self.starts, self.step, self.group)
        out_channels, batch = y.shape[1], y.shape[2]
        y = F.pad(y, (0, 0, 0, 0, 0, self.out_h * self.w_row - self.positions))
        y = y.view(self.out_h, self.w_row, out_channels, batch)[:, : self.out_w]
        return y.permute(3, 2, 0, 1)


def _members(basis: torch.Tensor, config: LRLCConfig) -> torch.Tensor:
    """lrlc_torch's stacked basis (K C_out, C_in, kh, kw) as (K, C_out, C_in, kh, kw)."""
    return basis.reshape(config.rank, config.out_channels, config.in_channels, *config.kernel_size)


def lowrank_locally_connected(x, weights, basis, config: LRLCConfig) -> torch.Tensor:
    """`functional.lowrank_locally_connected` by window rows: the banks of all positions
    formed at once, (P, K) x (K, C_out C_in kh kw) per term, and no patches."""
    rows, basis = _RowGeometry(config), _members(basis, config)
    per_position = rows.position_major(weights.permute(1, 2, 0))  # (P, K)
    basis_rows = rows.bank_layout(basis).flatten(2)  # (terms, K, C_out group C_in)
    banks = torch.matmul(per_position, basis_rows)  # (terms, P, C_out group C_in)
    return rows.apply(x, banks.unflatten(-1, (basis.shape[1], -1)))


def _locally_connected_rows(x, weight, config: LRLCConfig) -> torch.Tensor:
    """A shared locally connected weight (H_out, W_out, C_out, C_in, kh, kw) by window rows."""
    rows = _RowGeometry(config)
    banks = rows.bank_layout(weight)  # (terms, H_out, W_out, C_out, group C_in)
    return rows.apply(x, rows.position_major(banks.movedim(0, 2)).movedim(1, 0))


# ---------------------------------------------------------------------------------------------
# The layer as traceable functions


def _algorithm1(x, weights, basis, config: LRLCConfig) -> torch.Tensor:
    """Algorithm 1 as tensor expressions: the K C_out convolution, then the combination."""
    basis = _members(basis, config)
    (top, bottom), (left, right) = config.padding_pairs
    if top == bottom and left == right:  # the convolution pads: no padded copy
        padding = (top, left)
    else:
        x, padding = functional.pad_input(x, config), (0, 0)
    z = F.conv2d(
        x, basis.flatten(0, 1), stride=config.stride, padding=padding, dilation=config.dilation
    )
    z = z.unflatten(1, basis.shape[:2])  # (B, K, C_out, H_out, W_out)
    return (z * weights.unsqueeze(-3)).sum(1)


def _with_bias(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return y.contiguous() if bias is None else bias + y


def _layer(x, params, config: LRLCConfig, strategy: str) -> torch.Tensor:
    """`functional.forward`'s values, x batched, strategy chosen, basis not mixed."""
    weights = functional.combining_weights(params, config, x if config.input_dependent else None)
    if strategy == "lc":
        y = lowrank_locally_connected(x, weights, params["basis"], config)
    else:
        y = _algorithm1(x, weights, params["basis"], config)
    return _with_bias(y, functional.bias_map(params, config))


def _locally_connected(x, weight, bias, config: LRLCConfig) -> torch.Tensor:
    return _with_bias(_locally_connected_rows(x, weight, config), bias)


# ---------------------------------------------------------------------------------------------
# Compiled programs

_programs: dict = {}


def compiled_programs() -> int:
    """How many programs have been made (one per config, strategy and CUDA graphs setting;
    each compiles once per input shape, dtype, device and grad mode: torch._dynamo counts
    those)."""
    return len(_programs)


def _program(key, fn):
    """`fn` compiled (static shapes, one graph: a graph break is an error), made once per
    key. `fn` gets a code object of its own, so that torch._dynamo keeps a cache for it
    alone: its caches are per code object, and their size is limited (recompile_limit)."""
    program = _programs.get(key)
    if program is None:
        name = f"lrlc_program_{len(_programs)}"
        names = {"co_name": name}
        if hasattr(fn.__code__, "co_qualname"):  # Python >= 3.11
            names["co_qualname"] = name
        code = fn.__code__.replace(**names)
        fresh = types.FunctionType(code, fn.__globals__, code.co_name, None, fn.__closure__)
        options = {"mode": "reduce-overhead"} if key[-1] else {}
        program = fresh
        if _BACKEND is not None:
            program = torch.compile(
                fresh, backend=_BACKEND, dynamic=False, fullgraph=True, **options
            )
        _programs[key] = program
    return program


def _plain_arguments(x, config, tensors) -> bool:
    """Whether the arguments have the expected types (else `functional` reports the error)."""
    return (
        isinstance(x, torch.Tensor)
        and isinstance(config, LRLCConfig)
        and isinstance(tensors, Mapping)
        and all(t is None or isinstance(t, torch.Tensor) for t in tensors.values())
    )


def _eager(x: torch.Tensor, config: LRLCConfig, tensors) -> bool:
    """Whether a call must take the eager path (the module docstring's list, and the rule)."""
    return (
        x.dim() != 4
        or config.spatial_dims != 2
        or config.mixed
        or not enabled(x.device)
        or torch.is_autocast_enabled(x.device.type)
        or torch._C._are_functorch_transforms_active()
        or torch.compiler.is_exporting()
        or any(t is not None and t.dtype != x.dtype for t in tensors)
    )


def forward(
    x: torch.Tensor, params: Mapping[str, torch.Tensor], config: LRLCConfig, *,
    strategy: str = "auto",
) -> torch.Tensor:  # fmt: skip
    """`functional.forward`, compiled where `enabled` (see the module docstring)."""
    if not _plain_arguments(x, config, params) or _eager(x, config, params.values()):
        return functional.forward(x, params, config, strategy=strategy)
    functional.check_params(params, config)
    functional.check_input(x, config)
    chosen = choose_strategy(config, x.shape[0], strategy, x.device)
    if chosen == "conv" and weights_are_ones(config):
        return functional.forward(x, params, config, strategy=chosen)
    if torch.compiler.is_compiling():  # traced into the caller's own program
        return _layer(x, params, config, chosen)
    names = tuple(sorted(params))

    def layer(x, *tensors):
        return _layer(x, dict(zip(names, tensors)), config, chosen)

    graphs = x.device.type == "cuda" and cuda_graphs_enabled()
    program = _program(("forward", config, chosen, names, graphs), layer)
    return program(x, *(params[name] for name in names))


def locally_connected(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, config: LRLCConfig
) -> torch.Tensor:
    """`functional.locally_connected`, compiled where `enabled`, for a weight shared by the
    batch; per-example weights take the eager path."""
    tensors = {"weight": weight, "bias": bias}
    if (
        not _plain_arguments(x, config, tensors)
        or weight is None
        or _eager(x, config, tensors.values())
        or weight.dim() != 6
    ):
        return functional.locally_connected(x, weight, bias, config)
    functional.check_input(x, config)
    bias_shape = None if bias is None else bias.shape
    check_lc_shapes(weight.shape, bias_shape, config, expected=torch_lc_shapes(config))
    window = config.locally_connected_config()
    if torch.compiler.is_compiling():
        return _locally_connected(x, weight, bias, window)

    def layer(x, weight, bias):
        return _locally_connected(x, weight, bias, window)

    graphs = x.device.type == "cuda" and cuda_graphs_enabled()
    program = _program(("locally_connected", window, bias is None, graphs), layer)
    return program(x, weight, bias)
