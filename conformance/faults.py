"""Deliberately wrong backends, to prove the conformance suite can fail.

`FaultyBackend(fault)` is the NumPy reference adapter with one planted bug. Most bugs are
planted by patching one building block of `lrlc_numpy` for the duration of a backend call
only, so the reference that the runner compares against stays correct. The suite must
report every one of them (tests/test_faults.py).
"""

from __future__ import annotations

import contextlib
from unittest import mock

import numpy as np

import lrlc_numpy.config as config_module
import lrlc_numpy.initializers as initializers
import lrlc_numpy.reference as ref
from lrlc_numpy import Initial, LRLCConfig

from .backends.numpy import Backend as NumpyBackend

_original = {
    "normalize_weights": ref.normalize_weights,
    "normalize_weights_vjp": ref.normalize_weights_vjp,
    "resolve_padding": config_module.resolve_padding,
    "fixed_logits": ref.fixed_logits,
    "_window_slices": ref._window_slices,
    "_sum_of_tables": ref._sum_of_tables,
    "bias_map": ref.bias_map,
    "dilations": LRLCConfig.dilations,
    "embedded_basis": ref.embedded_basis,
    "initial_value": ref.initial_value,
    "keras_kernel_shape": initializers.keras_kernel_shape,
}


def _softmax_over_rows(logits, mode):
    if mode != "softmax":
        return _original["normalize_weights"](logits, mode)
    shifted = np.exp(logits - logits.max(axis=-3, keepdims=True))
    return shifted / shifted.sum(axis=-3, keepdims=True)


def _softmax_vjp_without_jacobian(dweights, logits, weights, mode):
    if mode == "softmax":
        return dweights
    return _original["normalize_weights_vjp"](dweights, logits, weights, mode)


def _l2_without_sqrt(logits, mode):
    if mode == "l2":
        return logits / np.maximum((logits**2).sum(axis=-1, keepdims=True), 1e-12)
    return _original["normalize_weights"](logits, mode)


def _same_padding_extra_on_top(padding, input_size, kernel_size, stride, dilation):
    pairs = _original["resolve_padding"](padding, input_size, kernel_size, stride, dilation)
    if padding != "same":
        return pairs
    return tuple((hi, lo) for lo, hi in pairs)


def _row_and_column_swapped(params, config):
    if config.combining == "rowcol" and config.spatial_dims == 2:
        swapped = params["row_logits"][None, :, :] + params["col_logits"][:, None, :]
        return np.broadcast_to(swapped, (*config.output_size, config.rank))
    return _original["fixed_logits"](params, config)


def _swapped_taps(first, second, ranks=(2, 3)):
    """`_window_slices` with tap axes `first` and `second` exchanged in windows of the
    spatial `ranks`; taps that then fall outside the window are dropped."""

    def window_slices(out_size, kernel_size, *geometry):
        for tap, *slices in _original["_window_slices"](out_size, kernel_size, *geometry):
            if len(tap) not in ranks:
                yield (tap, *slices)
                continue
            swapped = list(tap)
            swapped[first], swapped[second] = tap[second], tap[first]
            if all(u < k for u, k in zip(swapped, kernel_size)):
                yield (tuple(swapped), *slices)

    return window_slices


def _dilation_ignored(out_size, kernel_size, stride, dilation, *geometry):
    yield from _original["_window_slices"](
        out_size, kernel_size, stride, (1,) * len(dilation), *geometry
    )


def _depth_bias_dropped(params, suffix, config, trailing):
    """The sum of per-axis tables with the depth bias left out (read as zeros)."""
    if suffix == "bias" and "depth" in config.axis_tables:
        params = {**params, "depth_bias": np.zeros_like(params["depth_bias"])}
    return _original["_sum_of_tables"](params, suffix, config, trailing)


def _channel_bias_dropped(params, config, dtype):
    if config.channel_bias:
        params = {**params, "channel_bias": np.zeros_like(params["channel_bias"])}
    return _original["bias_map"](params, config, dtype)


def _resize_half_pixel(n_in, n_out, dtype=np.float64):
    """Resizing with half-pixel centres instead of aligned corners."""
    matrix = np.zeros((n_out, n_in), dtype=dtype)
    for o in range(n_out):
        src = min(max((o + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
        lo = int(np.floor(src))
        hi = min(lo + 1, n_in - 1)
        matrix[o, lo] += 1.0 - (src - lo)
        matrix[o, hi] += src - lo
    return matrix


def _every_basis_padded_like_the_largest(x, config):
    """One padded input for every basis, with the padding of the basis that needs most, and
    each basis's windows anchored there: smaller bases read shifted windows."""
    pads = tuple(
        max((group.padding_pairs[axis] for group in config.basis_groups), key=sum)
        for axis in range(config.spatial_dims)
    )
    grid = tuple(slice(0, n) for n in config.output_size)
    return [
        ref.extract_patches(x, group.kernel_size, config.stride, group.dilation, pads)[
            (slice(None), *grid)
        ]
        for group in config.basis_groups
    ]


def _dilation_of_basis_0(config):
    return (_original["dilations"].fget(config)[0],) * config.rank


def _responses_in_group_order(responses, config):
    """The groups' responses concatenated as they come, not put back in basis order."""
    return np.concatenate(responses, axis=-2)


def _bases_centred_in_window(params, config):
    """Each basis centred in the union window instead of placed by its own SAME padding:
    right for odd kernels at stride 1, a tap off for even ones (SAME's odd pixel is after)."""
    window = config.locally_connected_config()
    if window is config:
        return _original["embedded_basis"](params, config)
    members = ref.basis_members(params, config)
    out = np.zeros((config.rank, *window.kernel_size, *members[0].shape[-2:]), members[0].dtype)
    for k, (member, dilation) in enumerate(zip(members, config.dilations)):
        taps = []
        for size, d, span in zip(member.shape[:-2], dilation, window.kernel_size):
            extent = (size - 1) * d + 1
            start = (span - extent) // 2
            taps.append(slice(start, start + extent, d))
        out[(k, *taps)] = member
    return out


def _logits_start_at_zero(name, config):
    """The initial logits of lrlc before issue 13: 0, which leaves 'l2' and 'none' dead."""
    rule = _original["initial_value"](name, config)
    return Initial(uniform=False) if "logits" in name else rule


def _depthwise_fans_without_rank(name, shape):
    """g's depthwise kernels with Glorot fans 9 and 9, as lrlc had them before issue 13."""
    return (3, 3, 1, 1) if name.startswith("g.dilated") else tuple(shape)


# fault name -> (module, attribute, replacement) patched during backend calls
_PATCHES = {
    "softmax_over_wrong_axis": (ref, "normalize_weights", _softmax_over_rows),
    "softmax_gradient_without_jacobian": (
        ref,
        "normalize_weights_vjp",
        _softmax_vjp_without_jacobian,
    ),
    "l2_norm_without_sqrt": (ref, "normalize_weights", _l2_without_sqrt),
    "same_padding_off_by_one": (config_module, "resolve_padding", _same_padding_extra_on_top),
    "row_and_column_logits_swapped": (ref, "fixed_logits", _row_and_column_swapped),
    "kernel_height_and_width_swapped": (ref, "_window_slices", _swapped_taps(-2, -1)),
    "dilation_ignored": (ref, "_window_slices", _dilation_ignored),
    "channel_bias_dropped": (ref, "bias_map", _channel_bias_dropped),
    "spatial_bias_dropped": (ref, "spatial_bias_map", lambda params, config: None),
    "resize_without_aligned_corners": (ref, "resize_matrix", _resize_half_pixel),
    # Caught by mixed cases only: a plain basis has one padding, one dilation, one group.
    "mixed_padding_of_largest_basis": (
        ref,
        "group_patches",
        _every_basis_padded_like_the_largest,
    ),
    "mixed_dilation_of_basis_0": (LRLCConfig, "dilations", property(_dilation_of_basis_0)),
    "mixed_responses_in_group_order": (ref, "stack_responses", _responses_in_group_order),
    "conversion_window_centred": (ref, "embedded_basis", _bases_centred_in_window),
    # Caught by 3-D cases only (spec section 17): the depth axis read as the row axis, and
    # 'rowcol' without its depth bias.
    "depth_and_row_taps_swapped": (ref, "_window_slices", _swapped_taps(0, 1, ranks=(3,))),
    "depth_bias_dropped": (ref, "_sum_of_tables", _depth_bias_dropped),
    # Caught by the init check: the two initialisation bugs of issue 13.
    "init_logits_zero": (ref, "initial_value", _logits_start_at_zero),
    "init_depthwise_fans_without_rank": (
        initializers,
        "keras_kernel_shape",
        _depthwise_fans_without_rank,
    ),
}

# Faults outside the computation proper: in conversion, the LC layer and checkpoints.
_ADAPTER_FAULTS = (
    "conversion_kernel_taps_transposed",
    "lc_bias_dropped",
    "checkpoint_loses_precision",
    "basis_gradient_from_first_example_only",
)

FAULTS = tuple(_PATCHES) + _ADAPTER_FAULTS


class FaultyBackend(NumpyBackend):
    """The numpy adapter with the planted bug `fault` (one of FAULTS)."""

    def __init__(self, fault: str):
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {FAULTS}")
        self.fault = fault
        self.name = f"faulty[{fault}]"

    def _planted(self):
        if self.fault not in _PATCHES:
            return contextlib.nullcontext()
        module, attribute, replacement = _PATCHES[self.fault]
        return mock.patch.object(module, attribute, replacement)

    def forward(self, config, params, x, **kw):
        with self._planted():
            return super().forward(config, params, x, **kw)

    def vjp(self, config, params, x, dy, **kw):
        with self._planted():
            dx, grads = super().vjp(config, params, x, dy, **kw)
        if self.fault == "basis_gradient_from_first_example_only":
            _, first = super().vjp(config, params, x[:1], dy[:1], **kw)
            grads = {**grads, **{name: first[name] for name in config.basis_names}}
        return dx, grads

    def to_locally_connected(self, config, params, x=None, **kw):
        with self._planted():
            kernel, bias = super().to_locally_connected(config, params, x, **kw)
        if (
            self.fault == "conversion_kernel_taps_transposed"
            and config.spatial_dims >= 2
            and kernel.shape[-4] == kernel.shape[-3]
        ):
            kernel = kernel.swapaxes(-4, -3)
        return kernel, bias

    def lc_forward(self, kernel, bias, x, config, **kw):
        if self.fault == "lc_bias_dropped":
            bias = np.zeros_like(bias)
        with self._planted():
            return super().lc_forward(kernel, bias, x, config, **kw)

    def save_checkpoint(self, path, config, params):
        if self.fault == "checkpoint_loses_precision":
            params = {k: np.asarray(v, np.float32) for k, v in params.items()}
        super().save_checkpoint(path, config, params)

    def init_params(self, config, *, seed=0):
        with self._planted():
            return super().init_params(config, seed=seed)
