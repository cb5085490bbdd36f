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
import lrlc_numpy.reference as ref

from .backends.numpy import Backend as NumpyBackend

_original = {
    "normalize_weights": ref.normalize_weights,
    "normalize_weights_vjp": ref.normalize_weights_vjp,
    "resolve_padding": config_module.resolve_padding,
    "fixed_logits": ref.fixed_logits,
    "_window_slices": ref._window_slices,
    "bias_map": ref.bias_map,
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
    if config.combining == "rowcol":
        swapped = params["row_logits"][None, :, :] + params["col_logits"][:, None, :]
        return np.broadcast_to(swapped, (*config.output_size, config.rank))
    return _original["fixed_logits"](params, config)


def _taps_transposed(out_size, kernel_size, stride, dilation):
    for u, v, rows, cols in _original["_window_slices"](out_size, kernel_size, stride, dilation):
        if u < kernel_size[1] and v < kernel_size[0]:
            yield v, u, rows, cols


def _dilation_ignored(out_size, kernel_size, stride, dilation):
    yield from _original["_window_slices"](out_size, kernel_size, stride, (1, 1))


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
    "kernel_height_and_width_swapped": (ref, "_window_slices", _taps_transposed),
    "dilation_ignored": (ref, "_window_slices", _dilation_ignored),
    "channel_bias_dropped": (ref, "bias_map", _channel_bias_dropped),
    "spatial_bias_dropped": (ref, "spatial_bias_map", lambda params, config: None),
    "resize_without_aligned_corners": (ref, "resize_matrix", _resize_half_pixel),
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
            grads = {**grads, "basis": first["basis"]}
        return dx, grads

    def to_locally_connected(self, config, params, x=None, **kw):
        with self._planted():
            kernel, bias = super().to_locally_connected(config, params, x, **kw)
        if (
            self.fault == "conversion_kernel_taps_transposed"
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
