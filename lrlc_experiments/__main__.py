"""Command line: `python -m lrlc_experiments {run,rerun,variants} ...` (see --help).

Every bad option or file ends the command with one line on stderr naming it, and exit
status 2, before any training starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import math
import sys
from pathlib import Path

# Modules of the [experiments] extra, by import name (scikit-learn is sklearn, pillow is PIL).
EXTRA_MODULES = ("torch", "sklearn", "matplotlib", "tqdm", "PIL", "safetensors")


def missing_extra_modules() -> list[str]:
    return [name for name in EXTRA_MODULES if importlib.util.find_spec(name) is None]


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (argparse prints the usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _integer(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


def _learning_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _device(text: str):
    from .training import select_device

    try:
        return select_device(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _parser() -> argparse.ArgumentParser:
    from .data import DATASETS
    from .experiment import PRESETS
    from .models import VARIANTS

    parser = _Parser(
        prog="python -m lrlc_experiments",
        description="Reproduce the experiments of 'Revisiting Spatial Invariance with Low-Rank "
        "Local Connectivity' (Elsayed et al., ICML 2020).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="train a grid of models and write a run directory")
    start = run.add_mutually_exclusive_group()
    start.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="starting configuration (default: quick); options below override it",
    )
    start.add_argument(
        "--config",
        type=Path,
        help="an experiment config.json (e.g. from an earlier run) instead of a preset",
    )
    run.add_argument("--out", type=Path, help="a new run directory (default: runs/<timestamp>)")
    run.add_argument(
        "--dataset",
        choices=DATASETS,
        help="train on this dataset only (one study) instead of the preset's studies; with "
        "--translate-canvas, the translation experiment on it",
    )
    run.add_argument(
        "--data-dir", help="directory with the --dataset's files (mnist, cifar10, celeba)"
    )
    run.add_argument("--image-size", type=_integer(1), help="digits grid / CelebA crop size")
    run.add_argument(
        "--translate-canvas",
        type=_integer(1),
        metavar="SIZE",
        help="the translation experiment's noise canvas size: the images centred on it, and "
        "at random positions on it (paper: 48 for 32 px CelebA)",
    )
    run.add_argument("--max-train", type=_integer(1), help="use only the first N training examples")
    run.add_argument(
        "--variants",
        nargs="+",
        choices=sorted(VARIANTS),
        metavar="VARIANT",
        help="model variants (see `python -m lrlc_experiments variants`)",
    )
    run.add_argument(
        "--ranks", nargs="+", type=_integer(1), help="rank grid of the ranked variants"
    )
    run.add_argument("--seeds", type=_integer(1), help="number of seeds (0 .. N-1)")
    run.add_argument("--epochs", type=_integer(1))
    run.add_argument("--batch-size", type=_integer(1))
    run.add_argument("--lr", type=_learning_rate, help="peak learning rate")
    run.add_argument(
        "--warmup-epochs",
        type=_integer(0),
        help="linear warm-up epochs; when --epochs is shorter than the preset's warm-up and "
        "this is not given, the warm-up is clamped to --epochs (with a note)",
    )
    run.add_argument("--width", type=_integer(1), help="channels per layer (paper: 64)")
    _add_runtime(run)
    run.add_argument("--no-figures", action="store_true", help="skip the PNG figures")

    rerun = commands.add_parser("rerun", help="train one model of a run again from its model.json")
    rerun.add_argument("model_dir", type=Path, help="a directory runs/<run>/models/.../seed<N>")
    _add_runtime(rerun)

    diagnose = commands.add_parser(
        "diagnose",
        help="why input-dependent LRLC trails fixed LRLC: curves, weight spread, learning rate",
    )
    diagnose.add_argument(
        "--out", type=Path, help="a new output directory (default: runs/diagnose-<timestamp>)"
    )
    diagnose.add_argument("--seeds", type=_integer(1), help="number of seeds (default: quick's)")
    diagnose.add_argument("--rank", type=_integer(2), default=2, help="LRLC rank (default 2)")
    diagnose.add_argument(
        "--lrs", nargs="+", type=_learning_rate, help="peak learning rates to try for LRLC"
    )
    _add_runtime(diagnose)

    commands.add_parser("variants", help="list the model variants")
    return parser


def _add_runtime(parser):
    parser.add_argument(
        "--device", type=_device, default="auto", help="auto (CUDA when present), cpu or cuda[:N]"
    )
    parser.add_argument(
        "--threads",
        type=_integer(1),
        default=1,
        help="CPU threads for torch (default 1: the networks are small, more threads rarely pay "
        "for their overhead, and the CPU may be shared)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def experiment_from_args(args):
    """The preset (or --config file) with the command line's overrides applied."""
    from .data import DataConfig
    from .experiment import PRESETS, Study, load_config, translation_studies

    if args.config is not None:
        config, source = load_config(args.config), str(args.config)
    else:
        config, source = PRESETS[args.preset or "quick"], f"preset {args.preset or 'quick'!r}"
    studies = list(config.studies)
    if args.data_dir is not None and args.dataset in (None, "digits"):
        raise ValueError(
            "--data-dir is read only with --dataset mnist, cifar10 or celeba "
            "(the digits are embedded)"
        )
    if args.dataset is not None:
        if args.dataset != "digits" and args.data_dir is None:
            raise ValueError(f"--dataset {args.dataset} needs --data-dir DIR with its files")
        data = DataConfig(args.dataset, root=args.data_dir)
        if args.translate_canvas is None:
            studies = [Study(data, studies[0].variants)]
        else:
            # The variants of the source's translation experiment, if it has one.
            canvas = [s for s in studies if s.data.canvas_size is not None] or studies
            data = dataclasses.replace(data, canvas_size=args.translate_canvas)
            studies = list(translation_studies(data, canvas[0].variants))
    elif args.translate_canvas is not None:
        if not any(s.data.canvas_size is not None for s in studies):
            raise ValueError(
                f"--translate-canvas: the {source} has no study on a canvas; add --dataset NAME "
                "to run the translation experiment on that dataset"
            )
        studies = [
            s
            if s.data.canvas_size is None
            else Study(dataclasses.replace(s.data, canvas_size=args.translate_canvas), s.variants)
            for s in studies
        ]
    data_overrides = {"image_size": args.image_size, "max_train": args.max_train}
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
    training = {k: v for k, v in training.items() if v is not None}
    epochs = training.get("epochs", config.training.epochs)
    if args.warmup_epochs is not None and args.warmup_epochs > epochs:
        raise ValueError(f"--warmup-epochs {args.warmup_epochs} exceeds the {epochs} epochs")
    if args.warmup_epochs is None and config.training.warmup_epochs > epochs:
        training["warmup_epochs"] = epochs
        print(
            f"lrlc_experiments: note: --epochs {epochs} is shorter than the "
            f"{config.training.warmup_epochs}-epoch warm-up of {source}; warm-up clamped to "
            f"{epochs} epochs (--warmup-epochs sets it)",
            file=sys.stderr,
        )
    overrides = {
        "studies": tuple(studies),
        "training": dataclasses.replace(config.training, **training),
    }
    if args.ranks:
        overrides["ranks"] = tuple(args.ranks)
    if args.seeds is not None:
        overrides["seeds"] = tuple(range(args.seeds))
    if args.width is not None:
        overrides["width"] = args.width
    return dataclasses.replace(config, **overrides)


def main(argv=None) -> int:
    missing = missing_extra_modules()
    if missing:
        print(
            "python -m lrlc_experiments: error: needs the 'experiments' extra (missing modules: "
            f"{', '.join(missing)}); install it with pip install '.[experiments]' in a clone of "
            "lrlc, or pip install 'lrlc[experiments]'",
            file=sys.stderr,
        )
        return 2
    args = _parser().parse_args(argv)
    try:
        return _main(args)
    except (FileNotFoundError, ValueError, TypeError) as err:
        # Missing or malformed dataset or config files and bad options: the message names them.
        print(f"python -m lrlc_experiments: error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        print(f"python -m lrlc_experiments: {err}", file=sys.stderr)
        return 1


def _main(args) -> int:
    import torch

    from .data import load_dataset
    from .experiment import run_experiment
    from .models import VARIANTS

    if args.command == "variants":
        for name, variant in VARIANTS.items():
            print(f"{name:24} {variant.label}" + ("  [ranked]" if variant.ranked else ""))
        return 0
    torch.set_num_threads(args.threads)
    if args.command == "rerun":
        return _rerun(args)
    if args.command == "diagnose":
        return _diagnose(args)
    config = experiment_from_args(args)
    run_dir = _new_directory(args.out, "")
    # Every dataset is read first, so a bad file stops the run before anything is written.
    datasets = [load_dataset(study.data) for study in config.studies]
    where = f"device {args.device}, CPU threads {args.threads}"
    print(f"lrlc_experiments: run directory {run_dir} ({where})", file=sys.stderr)
    run_experiment(
        config,
        run_dir,
        device=args.device,
        progress=not args.no_progress,
        figures=not args.no_figures,
        datasets=datasets,
    )
    print((run_dir / "results.md").read_text())
    print(f"Results, figures and every model's config and seed are in {run_dir}/")
    return 0


def _new_directory(out: Path | None, prefix: str) -> Path:
    """--out, or runs/<prefix><timestamp>; refused when it already holds files."""
    out = out or Path("runs") / (prefix + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out}: exists and is not an empty directory")
    return out


def _diagnose(args) -> int:
    from .diagnose import LEARNING_RATES, DiagnosisConfig, diagnose
    from .experiment import PRESETS

    base = PRESETS["quick"]
    if args.seeds is not None:
        base = dataclasses.replace(base, seeds=tuple(range(args.seeds)))
    config = DiagnosisConfig(base, rank=args.rank, learning_rates=args.lrs or LEARNING_RATES)
    out = _new_directory(args.out, "diagnose-")
    print(f"lrlc_experiments: diagnosis in {out} (device {args.device})", file=sys.stderr)
    diagnose(config, out, device=args.device, progress=not args.no_progress)
    print((out / "diagnosis.md").read_text())
    return 0


def _rerun(args) -> int:
    from .experiment import load_model_spec, read_json, train_one

    data, model, training, seed = load_model_spec(args.model_dir)
    metrics_path = args.model_dir / "metrics.json"
    recorded = read_json(metrics_path)
    keys = ("train_accuracy", "val_accuracy", "test_accuracy")
    missing = [key for key in keys if not isinstance(recorded.get(key), int | float)]
    if missing:
        raise ValueError(f"{metrics_path}: expected numbers under {missing}")
    metrics, _ = train_one(
        data, model, training, seed, device=args.device, progress=not args.no_progress
    )
    for key in keys:
        print(f"{key}: {metrics[key]:.2f} (recorded: {recorded[key]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
