"""`python -m lrlc_bench.profile`: where the time of one PyTorch benchmark workload goes.

    python -m lrlc_bench.profile --device gpu --op lrlc --rank 1 --mode train
    python -m lrlc_bench.profile --op lc --mode forward --batch 16

Builds the workload exactly as `python -m lrlc_bench` times it (same layer, input and
cotangent; `lrlc_bench.backends.torch`), runs it `--warmup` times, then `--steps` times
under `torch.profiler`, and prints the operators with the most self time on the device
(CUDA kernels on a GPU, CPU time otherwise) per step, with their call counts. The profiles
quoted in docs/performance.md come from here.
"""

from __future__ import annotations

import argparse

from .settings import DEFAULT_BATCH, DEVICES, OP_MODES, OPS, Settings


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lrlc_bench.profile", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--device", choices=DEVICES, default="cpu")
    parser.add_argument("--batch", type=int, help="default: 64 on CPU, 512 on GPU")
    parser.add_argument("--op", choices=OPS, default="lrlc")
    parser.add_argument("--rank", type=int, default=1)
    parser.add_argument("--mode", choices=("forward", "train"), default="train")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rows", type=int, default=15, help="operators listed")
    args = parser.parse_args(argv)
    if args.mode not in OP_MODES[args.op]:
        parser.error(f"op {args.op!r} is timed for {OP_MODES[args.op]} only, not {args.mode!r}")
    if args.steps < 1 or args.warmup < 0 or args.rows < 1:
        parser.error("--steps and --rows must be >= 1 and --warmup >= 0")
    return args


def profile(args: argparse.Namespace) -> str:
    """The profile table of one workload, as text."""
    import torch

    from .backends import torch as torch_backend

    settings = Settings(
        device=args.device,
        batch=args.batch or DEFAULT_BATCH[args.device],
        ranks=(args.rank,),
    )
    backend = torch_backend.Backend(settings)
    workload = backend.workload(args.op, args.rank)
    step = workload.forward if args.mode == "forward" else workload.train
    for _ in range(args.warmup):
        step()
    activities = [torch.profiler.ProfilerActivity.CPU]
    on_gpu = backend.device.type == "cuda"
    if on_gpu:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
    sort = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=args.rows)
    title = (
        f"{args.op} ({args.mode}), K={args.rank}, batch {settings.batch}, {args.device}; "
        f"{args.steps} steps profiled (divide totals and calls by {args.steps})"
    )
    return f"{title}\n{table}"


def main(argv=None) -> int:
    print(profile(parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
