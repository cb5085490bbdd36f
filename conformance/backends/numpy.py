"""Adapter for the NumPy reference itself (float64 and float32, CPU)."""

from __future__ import annotations

import numpy as np

import lrlc_numpy


def _cast(tree, dtype):
    return {name: np.asarray(value, dtype=dtype) for name, value in tree.items()}


class Backend:
    name = "numpy"
    dtypes = ("float64", "float32")
    devices = ("cpu",)
    supports_mixed_basis = True
    spatial_dims = (1, 2, 3)  # the reference is generic in n (spec section 17)

    def __init__(self, **options):
        if options:
            raise ValueError(
                f"numpy adapter: unknown options {sorted(options)}; it takes none (the "
                "reference has one evaluation)"
            )

    def _check_device(self, device):
        if device != "cpu":
            raise ValueError(f"the numpy backend runs on 'cpu' only, got device={device!r}")

    def forward(self, config, params, x, *, dtype="float64", device="cpu"):
        self._check_device(device)
        return lrlc_numpy.forward(np.asarray(x, dtype), _cast(params, dtype), config)

    def vjp(self, config, params, x, dy, *, dtype="float64", device="cpu"):
        self._check_device(device)
        return lrlc_numpy.vjp(
            np.asarray(x, dtype), _cast(params, dtype), config, np.asarray(dy, dtype)
        )

    def to_locally_connected(self, config, params, x=None, *, dtype="float64", device="cpu"):
        self._check_device(device)
        x = None if x is None else np.asarray(x, dtype)
        return lrlc_numpy.to_locally_connected(_cast(params, dtype), config, x)

    def lc_forward(self, kernel, bias, x, config, *, dtype="float64", device="cpu"):
        self._check_device(device)
        return lrlc_numpy.locally_connected(
            np.asarray(x, dtype), np.asarray(kernel, dtype), np.asarray(bias, dtype), config
        )

    def save_checkpoint(self, path, config, params):
        lrlc_numpy.save_params(path, params, config)

    def load_checkpoint(self, path):
        return lrlc_numpy.load_params(path)

    def init_params(self, config, *, seed=0):
        return lrlc_numpy.init_params(config, seed=seed)
