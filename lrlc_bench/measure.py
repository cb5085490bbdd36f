"""Timing and peak memory of one workload, inside a worker process.

Timing: `warmup` untimed calls (the first compiles under jax.jit / tf.function), then at
least `min_runs` timed calls, more until their total exceeds about `budget_s`; the figure is
the median. The layers of one rank are timed in turns (see `interleaved_medians`). Every
callable blocks until its results exist (CUDA synchronised, JAX `block_until_ready`), so a
wall-clock interval covers the whole computation.

Peak memory of a training step, each measured in a fresh process:
- CPU (torch, JAX): after one warm-up step (compilation and lazy allocations happen there),
  freed heap is handed back to the OS (`malloc_trim`) and Linux's peak-RSS counter is reset
  to the current RSS (writing 5 to /proc/self/clear_refs, which `getrusage`'s ru_maxrss
  follows); the figure is ru_maxrss after one more step minus the RSS at the reset: the
  memory the step itself needed above the layer, its input and its cotangent.
- TensorFlow on the CPU (a backend whose allocator counts its CPU memory:
  `counts_cpu_allocations`), and torch and TensorFlow on a GPU: the framework's allocator
  counters, peak bytes allocated during the step minus the bytes allocated before it. The
  RSS figure cannot be trusted where the allocator keeps freed buffers resident:
  TensorFlow's pool does, and with the system allocator (malloc) the RSS at the reset still
  held the warm-up step's buffers, which the next step reused, so a K = 1 convolution step
  read 0.3-32 MiB in one process where its allocator counts exactly 32 MiB (its output and
  input gradient).
- JAX on a GPU: XLA's own plan of the compiled step (`Workload.memory_plan`; compiled, not
  run), the bytes of its temporaries and of its outputs not aliased to an argument; like
  the CPU figure, what the step needs beyond the layer, its input and dy. JAX cannot reset
  its allocator's peak counter, and the lifetime peak includes the convolution autotuning
  that compilation does on a GPU (on an H100 a K = 1 convolution step read 2.8 GB where
  torch's allocator counted 0.5 GB). On the CPU, where the RSS figure stands, the plan is
  recorded beside it ('planned') for comparison.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from .settings import OPS, Settings


@dataclass
class Workload:
    """One layer with its input, ready to run: `forward()` (inference) and `train()` (forward
    and backward; None for layers timed for inference only). Both block until done."""

    forward: Callable[[], object]
    train: Callable[[], object] | None
    # Where the framework compiles the whole training step ahead of running it (JAX): the
    # compiler's memory plan of that step, {"peak_bytes": int, "method": str, ...details}.
    memory_plan: Callable[[], dict] | None = None


def interleaved_medians(functions: dict, settings: Settings) -> dict:
    """Median wall-clock seconds of each of `functions` (key -> callable), timed in turns.

    Each callable first runs `warmup` times untimed (the first of these, which compiles
    where a framework compiles, is timed apart as `first_s`). Then come `min_runs` rounds; in each,
    every callable in turn runs until it has spent budget_s / min_runs (at least once). On a
    machine shared with other work, turns make the callables of one table row see the same
    load, so their ratios stay meaningful while the absolute times drift.
    """
    first: dict = {}
    for key, fn in functions.items():
        for run in range(settings.warmup):
            start = time.perf_counter()
            fn()
            if run == 0:
                first[key] = time.perf_counter() - start
    times: dict = {key: [] for key in functions}
    share = settings.budget_s / settings.min_runs
    for _ in range(settings.min_runs):
        for key, fn in functions.items():
            spent = 0.0
            while True:  # at least once per round
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
                spent += times[key][-1]
                if spent >= share:
                    break
    return {
        key: {
            "median_s": statistics.median(t),
            "runs": len(t),
            "times_s": t,
            "first_s": first.get(key),
        }
        for key, t in times.items()
    }


def time_backend(backend, settings: Settings) -> list[dict]:
    """Every op and mode at every rank. The ops of one rank, plain convolution included,
    are timed in turns (`interleaved_medians`), so each ratio compares figures taken under
    the same conditions.

    The converted locally connected layer costs the same at every rank (one filter bank per
    position whatever K was), so it is timed once, converted from the first rank's layer.
    With `settings.targets_only`, only the measurements the targets read are taken (the LC
    strategy only at ranks where the backend's automatic choice picks it).
    """
    records = []
    ops = [op for op in OPS if op != "lrlc_lc" or "lc" in backend.strategies]
    for rank in settings.ranks:
        timed = [op for op in ops if op != "lc" or rank == settings.ranks[0]]
        if (
            settings.targets_only
            and "lc" in backend.strategies
            and backend.chosen_strategy(rank) != "lc"
        ):
            timed.remove("lrlc_lc")  # target 2 reads it only where 'auto' picks it
        workloads = {op: backend.workload(op, rank) for op in timed}
        functions = {
            (op, mode): getattr(workload, mode)
            for op, workload in workloads.items()
            for mode in settings.measured(op)
        }
        for (op, mode), stats in interleaved_medians(functions, settings).items():
            records.append({"op": op, "rank": rank, "mode": mode, **stats})
        del workloads, functions
        gc.collect()  # free this rank's buffers before the next, larger ones
    return records


# ---------------------------------------------------------------------------------------------
# Peak memory


def _libc():
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def _reset_peak_rss() -> int:
    """Reset Linux's peak-RSS counter to the current RSS; return that RSS in bytes."""
    gc.collect()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)  # glibc keeps freed heap pages mapped unless asked
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        with open("/proc/self/statm") as handle:
            resident_pages = int(handle.read().split()[1])
    except OSError as error:
        raise RuntimeError(
            f"peak CPU memory needs Linux's /proc/self/clear_refs and statm ({error})"
        ) from error
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def train_peak_memory(backend, settings: Settings, op: str, rank: int) -> dict:
    """Peak bytes one training step of `op` at `rank` needs (see the module docstring)."""
    workload = backend.workload(op, rank)
    record = {"op": op, "rank": rank, "mode": "train"}
    if settings.device != "cpu" and workload.memory_plan is not None:
        return {**record, **workload.memory_plan()}
    workload.train()
    if settings.device == "cpu" and not getattr(backend, "counts_cpu_allocations", False):
        baseline = _reset_peak_rss()
        workload.train()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        method = "ru_maxrss after reset via /proc/self/clear_refs, minus RSS at reset"
    else:
        backend.reset_peak_memory()
        baseline = backend.memory_in_use()
        workload.train()
        peak = backend.peak_memory()
        method = "framework allocator: peak bytes allocated minus bytes allocated before"
    record.update(peak_bytes=max(peak - baseline, 0), baseline_bytes=baseline, method=method)
    if workload.memory_plan is not None:
        # After the measured step, so that compiling it again does not enter the RSS.
        record["planned"] = workload.memory_plan()
    return record
