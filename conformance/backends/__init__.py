"""Adapters that drive each lrlc package through its public API in neutral terms.

An adapter is any object with `name`, `dtypes`, `devices` and the methods

    forward(config, params, x, *, dtype="float64", device="cpu") -> y
    vjp(config, params, x, dy, *, dtype="float64", device="cpu") -> (dx, dparams)
    to_locally_connected(config, params, x=None, *, dtype="float64", device="cpu")
        -> (kernel, bias)
    lc_forward(kernel, bias, x, config, *, dtype="float64", device="cpu") -> y

and optionally `save_checkpoint(path, config, params)` / `load_checkpoint(path)` and
`init_params(config, *, seed=0)` (the package's own default initial parameters, float64).
An adapter whose package has a mixed basis (spec section 16) sets
`supports_mixed_basis = True`; the runner skips mixed cases for the others. An adapter
runs the 1-D and 3-D cases (spec section 17) of the ranks in its `spatial_dims` (2-D only
without it).
Arrays in and out are NumPy in canonical layouts (NHWC, HWIO) with neutral names.
"""

from __future__ import annotations

import importlib

from lrlc_numpy.strategy import STRATEGIES

NAMES = ("numpy", "torch", "jax", "tf", "keras")


def load(name: str, **options):
    """The adapter for backend `name` (one of NAMES); imports that framework only.

    `options` go to the adapter's constructor (for example `strategy="lc"` where a backend
    has several evaluation strategies); an adapter rejects options it does not know.
    """
    if name not in NAMES:
        raise ValueError(f"unknown backend {name!r}; expected one of {NAMES}")
    module = importlib.import_module(f"conformance.backends.{name}")
    return module.Backend(**options)


def strategy_adapter_name(
    backend: str, strategy: str, unknown: dict, options: tuple[str, ...] = ("strategy",)
) -> str:
    """Validate the options of a backend with evaluation strategies and return the
    adapter's name: `backend`, or `backend[strategy=S]` for a strategy other than 'auto'.
    `options` names every option the adapter knows, for the error message."""
    if unknown:
        raise ValueError(
            f"{backend} adapter: unknown options {sorted(unknown)}; expected only {options}"
        )
    if strategy not in STRATEGIES:
        raise ValueError(
            f"{backend} adapter: unknown strategy {strategy!r}; expected one of {STRATEGIES}"
        )
    return backend if strategy == "auto" else f"{backend}[strategy={strategy}]"


def flag(backend: str, name: str, value) -> bool:
    """An on/off adapter option given as a bool or, from the command line, 'true'/'false'."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"{backend} adapter: {name}={value!r}; expected true or false")
