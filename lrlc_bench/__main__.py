"""`python -m lrlc_bench`: time every backend, each in its own process, then report.

    python -m lrlc_bench                       # CPU, batch 64, K in {1, 2, 16}
    python -m lrlc_bench --full                # K in {1, 2, 4, 8, 16, 32}
    python -m lrlc_bench --device gpu          # batch 512
    python -m lrlc_bench --preset gpu-targets  # every target on a GPU, in minutes
    python -m lrlc_bench --backends torch --ranks 4 16 --output-dir reports

Prints the markdown tables and the targets verdict; `--output-dir DIR` also writes them to
DIR/bench-<device>.md and every raw measurement to DIR/bench-<device>.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import backends
from .report import add_ratios, evaluate_targets, markdown
from .settings import (
    ALL_RANKS,
    DEFAULT_BATCH,
    DEFAULT_RANKS,
    DEVICES,
    MEMORY_OPS,
    PRESETS,
    Settings,
)

DEFAULTS = Settings()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lrlc_bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a named set of the options below (those given explicitly win): "
        + "; ".join(f"{name}: {values}" for name, values in PRESETS.items()),
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=backends.NAMES,
        help="default: "
        + "; ".join(f"{d}: {' '.join(n)}" for d, n in backends.DEFAULT_NAMES.items()),
    )
    parser.add_argument("--device", choices=DEVICES, default="cpu")
    parser.add_argument("--batch", type=int, help="default: 64 on CPU, 512 on GPU")
    ranks = parser.add_mutually_exclusive_group()
    ranks.add_argument(
        "--ranks", type=int, nargs="+", default=DEFAULT_RANKS, help="default: %(default)s"
    )
    ranks.add_argument(
        "--full", action="store_const", dest="ranks", const=ALL_RANKS, help=f"ranks {ALL_RANKS}"
    )
    parser.add_argument(
        "--input-size",
        type=int,
        nargs="+",
        default=DEFAULTS.input_size,
        metavar="N",
        help="the grid: one size (a sequence, 1-D layers), two (an image, the default "
        "%(default)s) or three (a volume, 3-D layers)",
    )
    parser.add_argument(
        "--channels",
        type=int,
        nargs=2,
        default=(DEFAULTS.in_channels, DEFAULTS.out_channels),
        metavar=("IN", "OUT"),
    )
    parser.add_argument("--kernel-size", type=int, default=DEFAULTS.kernel_size)
    parser.add_argument(
        "--budget",
        type=float,
        default=DEFAULTS.budget_s,
        help="seconds of timed runs per measurement",
    )
    parser.add_argument("--min-runs", type=int, default=DEFAULTS.min_runs)
    parser.add_argument("--warmup", type=int, default=DEFAULTS.warmup)
    parser.add_argument(
        "--tf-jit-compile", action="store_true", help="tf.function(jit_compile=True) (XLA)"
    )
    parser.add_argument(
        "--targets-only",
        action="store_true",
        help="time only the measurements the targets read (fewer compiles)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument(
        "--report",
        type=Path,
        metavar="JSON",
        help="measure nothing: print the tables and targets of a saved bench-<device>.json",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        help="write bench-<device>.json (every measurement) and bench-<device>.md (the tables)",
    )
    preset = parser.parse_args(argv).preset
    if preset:
        parser.set_defaults(**PRESETS[preset])
    args = parser.parse_args(argv)
    if args.backends is None:
        args.backends = backends.DEFAULT_NAMES[args.device]
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        device=args.device,
        batch=args.batch or DEFAULT_BATCH[args.device],
        ranks=tuple(args.ranks),
        input_size=tuple(args.input_size),
        in_channels=args.channels[0],
        out_channels=args.channels[1],
        kernel_size=args.kernel_size,
        budget_s=args.budget,
        min_runs=args.min_runs,
        warmup=args.warmup,
        tf_jit_compile=args.tf_jit_compile,
        targets_only=args.targets_only,
    )


def run_worker(request: dict) -> dict:
    """Run one job in a fresh interpreter; a crash becomes a 'failed' result with its stderr."""
    with tempfile.TemporaryDirectory() as tmp:
        request_path, result_path = Path(tmp, "request.json"), Path(tmp, "result.json")
        request_path.write_text(json.dumps(request))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        if request["task"] == "memory":
            # Memory processes run two at a time: JAX must not claim most of a GPU up front.
            env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        process = subprocess.run(
            [sys.executable, "-m", "lrlc_bench.worker", str(request_path), str(result_path)],
            env=env,
            capture_output=True,
            text=True,
        )
        if process.returncode != 0 or not result_path.exists():
            tail = process.stderr.strip().splitlines()[-5:]
            return {"status": "failed", "error": f"exit {process.returncode}: " + " | ".join(tail)}
        return json.loads(result_path.read_text())


def source_version() -> str | None:
    """`git describe --always --dirty` of the measured code, when it is a git checkout."""
    try:
        process = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
        )
    except OSError:
        return None
    return process.stdout.strip() or None


def machine_info() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": platform.processor() or None,
    }
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    try:
        with open("/proc/cpuinfo") as handle:
            models = [
                line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")
            ]
        if models:
            info["cpu_model"] = models[0]
    except OSError:
        pass
    return info


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def peak_memories(settings: Settings, name: str, ops) -> list[dict]:
    """The peak memory of each op's training step at each rank, one fresh process each.
    Several run at a time (two on the CPU, four beside a GPU, whose machines have more
    cores): a process's own peak RSS or allocator counters do not depend on its neighbour."""
    requests = [
        {"task": "memory", "backend": name, "settings": settings.to_dict(), "op": op, "rank": k}
        for k in settings.ranks
        for op in ops
    ]
    workers = 4 if settings.device == "gpu" else 2
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(run_worker, requests)
        return [
            {"op": r["op"], "rank": r["rank"], **result} for r, result in zip(requests, results)
        ]


def measure(settings: Settings, names, *, memory: bool = True) -> dict:
    """Every backend's timings (one process each) and, when `memory`, each training step's
    peak memory (one process per backend, op and rank); ratios and targets added."""
    started = time.perf_counter()
    results = {
        "settings": settings.to_dict(),
        "machine": machine_info(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "source": source_version(),
        "backends": {},
    }
    for name in names:
        log(f"[lrlc_bench] {name}: timing")
        clock = time.perf_counter()
        backend = run_worker({"task": "time", "backend": name, "settings": settings.to_dict()})
        backend["elapsed_s"] = time.perf_counter() - clock
        results["backends"][name] = backend
        if backend["status"] != "ok":
            log(f"[lrlc_bench] {name}: {backend['status']}: {backend['error']}")
            continue
        add_ratios(backend["times"])
        if memory:
            log(f"[lrlc_bench] {name}: peak memory")
            ops = [op for op in MEMORY_OPS if op != "lrlc_lc" or backend["auto_strategy"]]
            if settings.targets_only:  # target 5b compares these two
                ops = [op for op in ops if op in ("conv_k", "lrlc")]
            backend["memory"] = peak_memories(settings, name, ops)
        backend["elapsed_s"] = time.perf_counter() - clock
        log(f"[lrlc_bench] {name}: done in {backend['elapsed_s']:.0f} s")
    results["targets"] = evaluate_targets(results)
    results["elapsed_s"] = time.perf_counter() - started
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report:
        results = json.loads(args.report.read_text())
        results["targets"] = evaluate_targets(results)
        print(markdown(results))
        return 0
    try:
        settings = settings_from(args)
    except ValueError as error:
        raise SystemExit(f"lrlc_bench: {error}") from error
    results = measure(settings, args.backends, memory=not args.no_memory)
    text = markdown(results)
    print(text)
    if args.output_dir:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        stem = args.output_dir / f"bench-{settings.device}"
        stem.with_suffix(".json").write_text(json.dumps(results, indent=1))
        stem.with_suffix(".md").write_text(text)
    statuses = [b["status"] for b in results["backends"].values()]
    # A failed backend, or none able to run, fails the command (and `nox -s bench`).
    return 0 if "ok" in statuses and "failed" not in statuses else 1


if __name__ == "__main__":
    sys.exit(main())
