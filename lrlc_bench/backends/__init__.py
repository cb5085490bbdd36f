"""One module per framework, each with a class `Backend(settings)` offering:

    environment() -> dict          versions, thread settings, device description
    workload(op, rank) -> Workload the layer `op` (see `lrlc_bench.settings.OPS`) at `rank`
    reset_peak_memory(), memory_in_use(), peak_memory()   accelerator allocator counters

A `Backend` raises RuntimeError when the requested device is absent. Only the lrlc
packages' public API is used, as a user would call it.
"""

from __future__ import annotations

import importlib

NAMES = ("torch", "jax", "tf")


def load(name: str, settings):
    """The `Backend` of framework `name` (one of NAMES); imports that framework only."""
    if name not in NAMES:
        raise ValueError(f"unknown backend {name!r}; expected one of {NAMES}")
    return importlib.import_module(f"lrlc_bench.backends.{name}").Backend(settings)
