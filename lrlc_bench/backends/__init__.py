"""One module per framework, each with a class `Backend(settings)` offering:

    environment() -> dict          versions, thread settings, device description
    workload(op, rank) -> Workload the layer `op` (see `lrlc_bench.settings.OPS`) at `rank`
    strategies                     the evaluation strategies a fixed layer can be told to
                                   use, e.g. ('conv', 'lc'); () where Algorithm 1 is the
                                   only one (then op 'lrlc_lc' is not timed)
    chosen_strategy(rank) -> str   the one the backend's automatic choice picks
    reset_peak_memory(), memory_in_use(), peak_memory()   allocator counters: the
                                   accelerator's, and the CPU's where the optional
                                   `counts_cpu_allocations` is true (else CPU memory is RSS);
                                   not needed where workloads carry a `memory_plan` (JAX),
                                   which gives the accelerator's figure instead

A `Backend` raises `Unavailable` when the requested device is absent. Only the lrlc
packages' public API is used, as a user would call it.
"""

from __future__ import annotations

import importlib

NAMES = ("torch", "torch_compile", "jax", "tf")
# "torch_compile" is the user's own view of torch.compile: every workload, the plain
# convolutions included, wrapped in torch.compile (inductor), so its ratios compare compiled
# with compiled. Inductor's compiles make it too slow for the CPU default (docs/
# performance.md, 'Compiled paths (torch), issue 17'); on a GPU it is a default backend.
DEFAULT_NAMES = {"cpu": ("torch", "jax", "tf"), "gpu": NAMES}
# The third-party modules each backend needs: when one is not installed, the backend is
# reported unavailable; any other import error is a failure of the code under test.
FRAMEWORKS = {
    "torch": ("torch",),
    "torch_compile": ("torch",),
    "jax": ("jax", "jaxlib"),
    "tf": ("tensorflow", "keras"),
}


class Unavailable(RuntimeError):
    """This machine cannot run the backend as asked (a device is absent)."""


def load(name: str, settings):
    """The `Backend` of framework `name` (one of NAMES); imports that framework only."""
    if name not in NAMES:
        raise ValueError(f"unknown backend {name!r}; expected one of {NAMES}")
    return importlib.import_module(f"lrlc_bench.backends.{name}").Backend(settings)
