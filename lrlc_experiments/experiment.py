"""Experiments: which models to train on which data, over seeds and ranks, and the run directory.

An `ExperimentConfig` lists studies (a dataset and the variants to train on it), the rank grid,
the seeds and the training protocol. `run_experiment` trains every (variant, rank, seed),
writes each model's config, seed, metrics and weights under `models/`, chooses each ranked
variant's rank on the validation split, and writes the results and figures.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from . import report
from .checks import build_dataclass, check_int, check_mapping, check_type
from .data import DataConfig, Dataset, load_dataset
from .models import VARIANTS, ModelConfig, build_model, count_parameters, matched_width
from .training import TrainingConfig, train


@dataclasses.dataclass(frozen=True)
class Study:
    """One dataset and the variants trained on it (one column of the paper's tables)."""

    data: DataConfig
    variants: tuple[str, ...]

    def __post_init__(self):
        check_type("Study.data", self.data, DataConfig)
        check_type("Study.variants", self.variants, (tuple, list))
        object.__setattr__(self, "variants", tuple(self.variants))
        if not self.variants:
            raise ValueError(f"Study.variants of {self.data.label!r} is empty")
        unknown = [v for v in self.variants if not isinstance(v, str) or v not in VARIANTS]
        if unknown:
            raise ValueError(
                f"unknown model variants {unknown}; expected some of {sorted(VARIANTS)}"
            )
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"Study.variants lists a variant twice: {list(self.variants)}")

    @classmethod
    def from_dict(cls, fields: dict, where: str = "Study") -> Study:
        fields = dict(check_mapping(where, fields))
        if "data" in fields:
            fields["data"] = DataConfig.from_dict(fields["data"], f"{where}.data")
        return build_dataclass(cls, fields, where)


def translation_studies(data: DataConfig, variants) -> tuple[Study, Study]:
    """The translation experiment (Section 4.2, Figure Supp. 6) on `data`, which has a canvas:
    the same images on the same noise canvases, centred in one study and at uniformly random
    positions in the other, so that only their alignment differs."""
    if data.canvas_size is None:
        raise ValueError(f"translation_studies: {data.label!r} has no canvas_size")
    return tuple(
        Study(dataclasses.replace(data, position=position), tuple(variants))
        for position in ("centre", "random")
    )


def variant_ranks(config: ExperimentConfig, variant: str) -> tuple[int | None, ...]:
    """The ranks a variant is trained at: (None,) when it takes none. Input-dependent layers
    skip rank 1, where the normalised weight is identically 1 and g has nothing to predict."""
    v = VARIANTS[variant]
    if not v.ranked:
        return (None,)
    if v.kind == "lrlc-input-dependent":
        return tuple(r for r in config.ranks if r >= 2)
    return config.ranks


TRANSLATION_VARIANTS = ("conv", "lrlc-3", "lrlc-input-dependent-3")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Defaults are the paper's protocol (Section 4), on the embedded digits.

    studies: every variant on the digits (Tables 1-3), and the translation experiment
    (Section 4.2) at the paper's canvas ratio, 32 px faces on 48 px: 16 px digits on 24 px.
    ranks: the grid every ranked variant is trained at; the reported rank is the one with
    the best mean validation accuracy. seeds: the model seeds (paper: 10 initialisations).
    width, depth, kernel_size: the network (paper: 64, 3, 3).
    """

    studies: tuple[Study, ...] = (
        Study(DataConfig("digits"), tuple(VARIANTS)),
        *translation_studies(DataConfig("digits", canvas_size=24), TRANSLATION_VARIANTS),
    )
    ranks: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
    seeds: tuple[int, ...] = tuple(range(10))
    training: TrainingConfig = TrainingConfig()
    width: int = 64
    depth: int = 3
    kernel_size: int = 3

    def __post_init__(self):
        for name in ("studies", "ranks", "seeds"):
            check_type(f"ExperimentConfig.{name}", getattr(self, name), (tuple, list))
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.studies:
            raise ValueError("ExperimentConfig.studies is empty")
        for i, study in enumerate(self.studies):
            check_type(f"ExperimentConfig.studies[{i}]", study, Study)
        if not self.seeds:
            raise ValueError("ExperimentConfig.seeds is empty")
        for i, seed in enumerate(self.seeds):
            check_int(f"ExperimentConfig.seeds[{i}]", seed, minimum=0)
        if not self.ranks:
            raise ValueError("ExperimentConfig.ranks is empty")
        for i, rank in enumerate(self.ranks):
            check_int(f"ExperimentConfig.ranks[{i}]", rank, minimum=1)
        for name in ("seeds", "ranks"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"ExperimentConfig.{name} lists a value twice: {list(values)}")
        check_type("ExperimentConfig.training", self.training, TrainingConfig)
        for name in ("width", "depth", "kernel_size"):
            check_int(f"ExperimentConfig.{name}", getattr(self, name), minimum=1)
        for study in self.studies:
            for variant in study.variants:
                if not variant_ranks(self, variant):
                    raise ValueError(
                        f"variant {variant!r} needs a rank >= 2 in ExperimentConfig.ranks, "
                        f"got {self.ranks}"
                    )
        labels = [s.data.label for s in self.studies]
        if len(set(labels)) != len(labels):
            raise ValueError(f"two studies share a dataset label: {labels}")

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict, where: str = "ExperimentConfig") -> ExperimentConfig:
        """From a config.json's dict (as `to_dict` writes it). 'studies' is required; the
        other keys default to the paper's values. `where` names the file in errors."""
        data = dict(check_mapping(where, data))
        if "studies" not in data:
            raise ValueError(f"{where}: missing key 'studies' (a list of {{data, variants}})")
        check_type(f"{where}: studies", data["studies"], list)
        data["studies"] = tuple(
            Study.from_dict(s, f"{where}: studies[{i}]") for i, s in enumerate(data["studies"])
        )
        if "training" in data:
            data["training"] = TrainingConfig.from_dict(data["training"], f"{where}: training")
        return build_dataclass(cls, data, where)


def read_json(path: Path) -> dict:
    """A JSON object from `path`; a missing or malformed file is named in the error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (or not a file)")
    try:
        value = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: invalid JSON ({err})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def load_config(path: Path) -> ExperimentConfig:
    """An ExperimentConfig from a config.json (e.g. an earlier run's)."""
    return ExperimentConfig.from_dict(read_json(path), str(path))


PRESETS = {
    # The paper's protocol: 150 epochs, batch 512, 10 seeds, every variant, ranks 1-10.
    "paper": ExperimentConfig(),
    # `nox -s reproduce`: a few minutes on a shared 2-core CPU. Smaller images and network,
    # fewer epochs and seeds, smaller batches (batch 512 would give one or two steps an
    # epoch here), and the comparisons the paper draws. Half the scans are the test set:
    # a small training set leaves room for inductive biases to matter, and a large test
    # set resolves smaller differences. The translation experiment keeps the paper's canvas
    # ratio (10 px digits on 15 px).
    "quick": ExperimentConfig(
        studies=(
            Study(
                DataConfig("digits", image_size=12, test_fraction=0.5),
                ("conv", "spatial-bias-3", "lrlc-3"),
            ),
            *translation_studies(
                DataConfig("digits", image_size=10, canvas_size=15, test_fraction=0.5),
                TRANSLATION_VARIANTS,
            ),
        ),
        ranks=(1, 2, 4),
        seeds=(0, 1, 2),
        training=TrainingConfig(epochs=40, batch_size=64, peak_lr=0.01, warmup_epochs=4),
        width=32,
    ),
}


# Whose rank-2 combining weights Figure Supp. 7 shows.
FIGURE_VARIANTS = ("lrlc-3", "lrlc-input-dependent-3")


def model_config(config: ExperimentConfig, dataset: Dataset, variant: str, rank) -> ModelConfig:
    channels, height, width = dataset.image_shape
    return ModelConfig(
        variant,
        channels,
        (height, width),
        dataset.num_classes,
        rank=rank,
        width=config.width,
        depth=config.depth,
        kernel_size=config.kernel_size,
    )


def model_jobs(config: ExperimentConfig, study: Study) -> list[tuple[str, int | None, int]]:
    """(variant, rank, seed) for every model a study trains."""
    return [
        (variant, rank, seed)
        for variant in study.variants
        for rank in variant_ranks(config, variant)
        for seed in config.seeds
    ]


def model_dir(run_dir: Path, data: DataConfig, variant: str, rank, seed: int) -> Path:
    name = variant if rank is None else f"{variant}-rank{rank}"
    return Path(run_dir) / "models" / data.label / name / f"seed{seed}"


def train_one(
    data: DataConfig,
    model: ModelConfig,
    training: TrainingConfig,
    seed: int,
    *,
    dataset: Dataset | None = None,
    device: torch.device,
    progress: bool = True,
) -> tuple[dict, torch.nn.Module]:
    """Train one model; `dataset` saves reloading when the caller already has it."""
    from tqdm.auto import tqdm

    dataset = dataset if dataset is not None else load_dataset(data)
    network = build_model(model, seed)
    name = model.variant + ("" if model.rank is None else f" K={model.rank}")
    start = time.perf_counter()
    with tqdm(
        total=training.epochs,
        desc=f"{data.label} {name} seed {seed}",
        leave=False,
        disable=not progress,
        unit="epoch",
    ) as bar:
        metrics = train(network, dataset, training, seed=seed, device=device, progress=bar)
    metrics["seconds"] = time.perf_counter() - start
    metrics["parameters"] = count_parameters(network)
    if VARIANTS[model.variant].kind == "wide-conv":
        metrics["wide_width"] = matched_width(model)
    return metrics, network


def save_model(directory: Path, data, model, training, seed, metrics, network) -> None:
    """Everything needed to re-run the model (`python -m lrlc_experiments rerun DIR`), its
    metrics, and its weights (safetensors: never pickled)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    spec = {
        "data": dataclasses.asdict(data),
        "model": model.to_dict(),
        "training": dataclasses.asdict(training),
        "seed": seed,
    }
    (directory / "model.json").write_text(json.dumps(spec, indent=2) + "\n")
    (directory / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    save_file(state, str(directory / "weights.safetensors"))


def load_model_spec(directory: Path):
    """(DataConfig, ModelConfig, TrainingConfig, seed) from a model directory's model.json."""
    path = Path(directory) / "model.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a model directory of a run")
    spec = read_json(path)
    expected = ("data", "model", "training", "seed")
    missing = [key for key in expected if key not in spec]
    unknown = sorted(set(spec) - set(expected))
    if missing or unknown:
        raise ValueError(
            f"{path}: expected the keys {list(expected)}; "
            + (f"missing {missing}" if missing else f"unknown {unknown}")
        )
    check_int(f"{path}: seed", spec["seed"], minimum=0)
    return (
        DataConfig.from_dict(spec["data"], f"{path}: data"),
        ModelConfig.from_dict(spec["model"], f"{path}: model"),
        TrainingConfig.from_dict(spec["training"], f"{path}: training"),
        spec["seed"],
    )


def run_experiment(
    config: ExperimentConfig,
    run_dir: Path,
    *,
    device: torch.device,
    progress: bool = True,
    figures: bool = True,
    datasets: list[Dataset] | None = None,
) -> dict:
    """Train everything `config` asks for, write the run directory, return the results.

    `datasets`, one per study, saves reading them again when the caller already has."""
    from tqdm.auto import tqdm

    # Every dataset is read first, so a missing or malformed file stops the run before training.
    if datasets is None:
        datasets = [load_dataset(study.data) for study in config.studies]
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    start = time.perf_counter()
    records = []
    rank2_models = {}
    total = sum(len(model_jobs(config, study)) for study in config.studies)
    with tqdm(total=total, desc="models", unit="model", disable=not progress) as overall:
        for study, dataset in zip(config.studies, datasets):
            # A network two variants share (conv + spatial bias = LRLC of rank 1) trains once.
            trained = {}
            for variant, rank, seed in model_jobs(config, study):
                model = model_config(config, dataset, variant, rank)
                key = (model.architecture(), seed)
                if key not in trained:
                    trained[key] = train_one(
                        study.data,
                        model,
                        config.training,
                        seed,
                        dataset=dataset,
                        device=device,
                        progress=progress,
                    )
                metrics, network = trained[key]
                directory = model_dir(run_dir, study.data, variant, rank, seed)
                save_model(directory, study.data, model, config.training, seed, metrics, network)
                records.append(
                    {
                        "dataset": study.data.label,
                        "variant": variant,
                        "rank": rank,
                        "seed": seed,
                        "directory": str(directory.relative_to(run_dir)),
                        **{k: v for k, v in metrics.items() if k != "losses"},
                    }
                )
                if variant in FIGURE_VARIANTS and rank == 2 and seed == config.seeds[0]:
                    rank2_models[(study.data.label, variant)] = (network.cpu(), dataset)
                overall.update(1)
    results = report.summarize(records, config)
    results["wall_seconds"] = time.perf_counter() - start
    report.write_results(results, run_dir)
    if figures:
        report.plot_accuracy_vs_rank(results, run_dir / "accuracy_vs_rank.png")
        report.plot_combining_weights(rank2_models, run_dir / "combining_weights_rank2.png")
    return results
