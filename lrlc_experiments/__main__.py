"""Command line: `python -m lrlc_experiments {run,rerun,variants} ...` (see --help)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
from pathlib import Path

import torch

from .data import DATASETS, DataConfig
from .experiment import (
    PRESETS,
    ExperimentConfig,
    Study,
    load_model_spec,
    run_experiment,
    train_one,
)
from .models import VARIANTS
from .training import select_device


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lrlc_experiments",
        description="Reproduce the experiments of 'Revisiting Spatial Invariance with Low-Rank "
        "Local Connectivity' (Elsayed et al., ICML 2020).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="train a grid of models and write a run directory")
    run.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="quick",
        help="starting configuration (default: quick); options below override it",
    )
    run.add_argument(
        "--config",
        type=Path,
        help="an experiment config.json (e.g. from an earlier run) instead of a preset",
    )
    run.add_argument("--out", type=Path, help="run directory (default: runs/<timestamp>)")
    run.add_argument(
        "--dataset",
        choices=DATASETS,
        help="train on this dataset only (one study) instead of the preset's studies",
    )
    run.add_argument(
        "--data-dir", help="directory with the dataset's files (mnist, cifar10, celeba)"
    )
    run.add_argument("--image-size", type=int, help="digits grid / CelebA crop size")
    run.add_argument(
        "--translate-canvas",
        type=int,
        help="place each image at a random position in a noise canvas of this size",
    )
    run.add_argument("--max-train", type=int, help="use only the first N training examples")
    run.add_argument(
        "--variants",
        nargs="+",
        choices=sorted(VARIANTS),
        metavar="VARIANT",
        help="model variants (see `python -m lrlc_experiments variants`)",
    )
    run.add_argument("--ranks", nargs="+", type=int, help="rank grid of the ranked variants")
    run.add_argument("--seeds", type=int, help="number of seeds (0 .. N-1)")
    run.add_argument("--epochs", type=int)
    run.add_argument("--batch-size", type=int)
    run.add_argument("--lr", type=float, help="peak learning rate")
    run.add_argument("--warmup-epochs", type=int)
    run.add_argument("--width", type=int, help="channels per layer (paper: 64)")
    _add_runtime(run)
    run.add_argument("--no-figures", action="store_true", help="skip the PNG figures")

    rerun = commands.add_parser("rerun", help="train one model of a run again from its model.json")
    rerun.add_argument("model_dir", type=Path, help="a directory runs/<run>/models/.../seed<N>")
    _add_runtime(rerun)

    commands.add_parser("variants", help="list the model variants")
    return parser


def _add_runtime(parser):
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch (default 1: the networks are small, more threads rarely pay "
        "for their overhead, and the CPU may be shared)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def experiment_from_args(args) -> ExperimentConfig:
    """The preset (or --config file) with the command line's overrides applied."""
    if args.config is not None:
        config = ExperimentConfig.from_dict(json.loads(args.config.read_text()))
    else:
        config = PRESETS[args.preset]
    studies = list(config.studies)
    if args.dataset is not None:
        data = DataConfig(args.dataset, root=args.data_dir)
        studies = [Study(data, studies[0].variants)]
    data_overrides = {
        "image_size": args.image_size,
        "translate_canvas": args.translate_canvas,
        "max_train": args.max_train,
    }
    data_overrides = {k: v for k, v in data_overrides.items() if v is not None}
    studies = [
        Study(
            dataclasses.replace(s.data, **data_overrides),
            tuple(args.variants) if args.variants else s.variants,
        )
        for s in studies
    ]
    training = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "peak_lr": args.lr,
        "warmup_epochs": args.warmup_epochs,
    }
    training = dataclasses.replace(
        config.training, **{k: v for k, v in training.items() if v is not None}
    )
    overrides = {"studies": tuple(studies), "training": training}
    if args.ranks:
        overrides["ranks"] = tuple(args.ranks)
    if args.seeds is not None:
        overrides["seeds"] = tuple(range(args.seeds))
    if args.width is not None:
        overrides["width"] = args.width
    return dataclasses.replace(config, **overrides)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _main(args)
    except (FileNotFoundError, ValueError) as err:
        # Missing or malformed dataset files and bad options: the message names the culprit.
        print(f"error: {err}", file=sys.stderr)
        return 2


def _main(args) -> int:
    if args.command == "variants":
        for name, variant in VARIANTS.items():
            print(f"{name:24} {variant.label}" + ("  [ranked]" if variant.ranked else ""))
        return 0
    device = select_device(args.device)
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    if args.command == "rerun":
        data, model, training, seed = load_model_spec(args.model_dir)
        metrics, _ = train_one(
            data, model, training, seed, device=device, progress=not args.no_progress
        )
        recorded = json.loads((args.model_dir / "metrics.json").read_text())
        for key in ("train_accuracy", "val_accuracy", "test_accuracy"):
            print(f"{key}: {metrics[key]:.2f} (recorded: {recorded[key]:.2f})")
        return 0
    config = experiment_from_args(args)
    run_dir = args.out or Path("runs") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    where = f"device {device}, CPU threads {args.threads}"
    print(f"lrlc_experiments: run directory {run_dir} ({where})", file=sys.stderr)
    run_experiment(
        config,
        run_dir,
        device=device,
        progress=not args.no_progress,
        figures=not args.no_figures,
    )
    print((run_dir / "results.md").read_text())
    print(f"Results, figures and every model's config and seed are in {run_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
