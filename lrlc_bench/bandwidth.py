"""`python -m lrlc_bench.bandwidth`: this machine's memory bandwidth, by copying large arrays.

    python -m lrlc_bench.bandwidth                 # 256 MiB, numpy and torch, 9 runs
    python -m lrlc_bench.bandwidth --mib 512 --runs 15

Each figure is the bytes read and written by one copy of an array far larger than the
caches, over its wall-clock time (median and best of `--runs`), plus a read-only pass (a
sum). It bounds a memory-bound kernel: docs/performance.md compares the converted locally
connected forward's bytes with it (target 3).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _timed(fn, runs: int) -> list[float]:
    fn()  # first touch: page faults, not bandwidth
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def measure(mib: int = 256, runs: int = 9) -> list[dict]:
    """[{name, bytes moved per run, median and best GB/s}] for numpy copy, numpy sum and
    (when installed) torch copy, float32 arrays of `mib` MiB."""
    source = np.random.default_rng(0).random(mib * 2**20 // 4, dtype=np.float32)
    target = np.empty_like(source)
    cases = [
        ("numpy copy", lambda: np.copyto(target, source), 2),
        ("numpy sum (read)", source.sum, 1),
    ]
    try:
        import torch
    except ModuleNotFoundError:
        torch = None
    if torch is not None:
        source_t, target_t = torch.from_numpy(source), torch.from_numpy(target)
        cases.append(("torch copy", lambda: target_t.copy_(source_t), 2))
    results = []
    for name, fn, passes in cases:
        times = _timed(fn, runs)
        moved = passes * source.nbytes
        results.append(
            {
                "name": name,
                "bytes": moved,
                "median_gb_s": moved / statistics.median(times) / 1e9,
                "best_gb_s": moved / min(times) / 1e9,
            }
        )
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lrlc_bench.bandwidth", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--mib", type=int, default=256, help="array size (default %(default)s)")
    parser.add_argument("--runs", type=int, default=9, help="timed copies (default %(default)s)")
    args = parser.parse_args(argv)
    if args.mib < 1 or args.runs < 1:
        parser.error("--mib and --runs must be >= 1")
    for r in measure(args.mib, args.runs):
        print(
            f"{r['name']}: {r['median_gb_s']:.1f} GB/s median, {r['best_gb_s']:.1f} GB/s best "
            f"({r['bytes'] / 2**20:.0f} MiB moved per run)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
