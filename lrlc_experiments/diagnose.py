"""Why input-dependent LRLC trails fixed LRLC on the translated digits (issue 13), as evidence:
training curves, the spread of the combining weights and of g's kernels, and the sensitivity
to the peak learning rate. Nothing here changes a preset.

`python -m lrlc_experiments diagnose` trains, on the quick preset's centred and translated
digits, the convolution at the preset's learning rate and fixed and input-dependent LRLC at
one rank over a grid of learning rates, and writes diagnosis.md and diagnosis.json.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from .checks import check_int, check_number
from .data import Dataset, load_dataset, translation_pairs
from .experiment import PRESETS, ExperimentConfig, model_config
from .models import build_model
from .report import json_ready, mean_and_se
from .training import accuracy, train

VARIANTS = ("conv", "lrlc-3", "lrlc-input-dependent-3")
LEARNING_RATES = (0.001, 0.003, 0.01, 0.03)


@dataclasses.dataclass(frozen=True)
class DiagnosisConfig:
    """base: the experiment whose translation pair, training protocol, seeds and network are
    used; rank: the LRLC layers' rank; learning_rates: the peak learning rates tried for the
    LRLC layers (the convolution trains at base's only)."""

    base: ExperimentConfig = PRESETS["quick"]
    rank: int = 2
    learning_rates: tuple[float, ...] = LEARNING_RATES

    def __post_init__(self):
        check_int("DiagnosisConfig.rank", self.rank, minimum=2)
        object.__setattr__(self, "learning_rates", tuple(self.learning_rates))
        if not self.learning_rates:
            raise ValueError("DiagnosisConfig.learning_rates is empty")
        for i, lr in enumerate(self.learning_rates):
            check_number(f"DiagnosisConfig.learning_rates[{i}]", lr, positive=True)
        if not translation_pairs(s.data for s in self.base.studies):
            raise ValueError("DiagnosisConfig.base has no translation experiment")


def _last_layer(network):
    return network.layers[network.config.depth - 1]


@torch.no_grad()
def weight_spread(network, dataset: Dataset) -> dict | None:
    """How the last layer's normalised combining weights w (K per output position) vary, on
    the validation images: the standard deviation across positions and, for an
    input-dependent layer, across images (each averaged over the rest), and the mean largest
    weight (1/K: uniform; 1: one basis member per position). None for a layer without w."""
    layer = _last_layer(network)
    if not hasattr(layer, "combining_weights"):
        return None
    network.eval()
    images = torch.from_numpy(dataset.val.images)
    if layer.config.input_dependent:
        weights = layer.combining_weights(network.layer_input(images, network.config.depth))
    else:
        weights = layer.combining_weights()[None]
    weights = weights.double().numpy()  # (B, K, H, W)
    flat = weights.reshape(*weights.shape[:2], -1)
    return {
        "across_positions": float(flat.std(axis=2).mean()),
        "across_images": float(weights.std(axis=0).mean()) if len(weights) > 1 else 0.0,
        "largest": float(weights.max(axis=1).mean()),
    }


def g_kernel_spread(network) -> dict[str, float]:
    """Standard deviation of each kernel of the last layer's network g."""
    return {
        name.removesuffix(".kernel"): float(p.detach().double().std())
        for name, p in _last_layer(network).named_parameters()
        if name.startswith("g.") and name.endswith(".kernel")
    }


def train_and_watch(config, dataset, variant, lr, seed, *, device) -> dict:
    """Train one model, recording the training loss and the validation accuracy after every
    epoch, and the combining weights' and g's spread before and after training."""
    rank = config.rank if variant != "conv" else None
    model = model_config(config.base, dataset, variant, rank)
    network = build_model(model, seed)
    before = {"weights": weight_spread(network, dataset), "g": g_kernel_spread(network)}
    curve = {"loss": [], "val_accuracy": []}

    def watch(epoch, net, loss):
        curve["loss"].append(loss)
        curve["val_accuracy"].append(accuracy(net, dataset.val, device))

    training = dataclasses.replace(config.base.training, peak_lr=lr)
    start = time.perf_counter()
    metrics = train(network, dataset, training, seed=seed, device=device, after_epoch=watch)
    network.cpu()
    return {
        "variant": variant,
        "rank": rank,
        "lr": lr,
        "seed": seed,
        "seconds": time.perf_counter() - start,
        **{k: metrics[k] for k in ("train_accuracy", "val_accuracy", "test_accuracy")},
        "curve": curve,
        "before": before,
        "after": {"weights": weight_spread(network, dataset), "g": g_kernel_spread(network)},
    }


def diagnose(config: DiagnosisConfig, out: Path, *, device, progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    centred, translated = translation_pairs(s.data for s in config.base.studies)[0]
    datasets = {data.label: load_dataset(data) for data in (centred, translated)}
    preset_lr = config.base.training.peak_lr
    jobs = [
        (label, variant, lr, seed)
        for label in datasets
        for variant in VARIANTS
        for lr in (config.learning_rates if variant != "conv" else (preset_lr,))
        for seed in config.base.seeds
    ]
    runs = []
    start = time.perf_counter()
    for label, variant, lr, seed in tqdm(jobs, desc="diagnose", disable=not progress):
        run = train_and_watch(config, datasets[label], variant, lr, seed, device=device)
        runs.append({"dataset": label, **run})
    results = {
        "rank": config.rank,
        "learning_rates": list(config.learning_rates),
        "preset_lr": preset_lr,
        "epochs": config.base.training.epochs,
        "datasets": list(datasets),
        "runs": runs,
        "wall_seconds": time.perf_counter() - start,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "diagnosis.json").write_text(json.dumps(json_ready(results), indent=2) + "\n")
    (out / "diagnosis.md").write_text(markdown(results))
    return results


def _select(runs, **fields):
    return [r for r in runs if all(r[k] == v for k, v in fields.items())]


def _cell(values, digits=2) -> str:
    mean, se = mean_and_se(values)
    return f"{mean:.{digits}f} ± {se:.{digits}f}" if np.isfinite(se) else f"{mean:.{digits}f}"


def markdown(results: dict) -> str:
    runs, preset_lr, rank = results["runs"], results["preset_lr"], results["rank"]
    seeds = len({r["seed"] for r in runs})
    lines = [
        f"Diagnosis: fixed vs input-dependent LRLC (rank {rank}), {seeds} seeds, "
        f"{results['epochs']} epochs; mean ± standard error over seeds.",
        "",
        "Learning-rate sensitivity: final test accuracy (%) [train accuracy] by peak "
        "learning rate.",
        "",
        "| Dataset | Model | "
        + " | ".join(f"lr {lr:g}" for lr in results["learning_rates"])
        + " |",
        "| --- | --- | " + " | ".join("---" for _ in results["learning_rates"]) + " |",
    ]
    for dataset in results["datasets"]:
        for variant in VARIANTS:
            cells = []
            for lr in results["learning_rates"]:
                mine = _select(runs, dataset=dataset, variant=variant, lr=lr)
                cells.append(
                    f"{_cell([r['test_accuracy'] for r in mine])} "
                    f"[{np.mean([r['train_accuracy'] for r in mine]):.1f}]"
                    if mine
                    else "—"
                )
            lines.append(f"| {dataset} | {variant} | " + " | ".join(cells) + " |")
    epochs = results["epochs"]
    marks = sorted({1, *range(5, epochs + 1, 5), epochs})
    lines += [
        "",
        f"Training curves at the preset's learning rate {preset_lr:g}: training loss / "
        "validation accuracy (%) after each epoch shown, mean over seeds.",
        "",
        "| Dataset | Model | " + " | ".join(f"epoch {e}" for e in marks) + " |",
        "| --- | --- | " + " | ".join("---" for _ in marks) + " |",
    ]
    for dataset in results["datasets"]:
        for variant in VARIANTS:
            mine = _select(runs, dataset=dataset, variant=variant, lr=preset_lr)
            loss = np.mean([r["curve"]["loss"] for r in mine], axis=0)
            val = np.mean([r["curve"]["val_accuracy"] for r in mine], axis=0)
            cells = [f"{loss[e - 1]:.3f} / {val[e - 1]:.1f}" for e in marks]
            lines.append(f"| {dataset} | {variant} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Combining weights of the last layer on the validation images, before → after "
        f"training at lr {preset_lr:g}: standard deviation across positions and across "
        f"images, and the mean largest weight (uniform: {1 / rank:.2f}).",
        "",
        "| Dataset | Model | Across positions | Across images | Largest weight |",
        "| --- | --- | --- | --- | --- |",
    ]
    for dataset in results["datasets"]:
        for variant in VARIANTS[1:]:
            mine = _select(runs, dataset=dataset, variant=variant, lr=preset_lr)
            cells = []
            for key in ("across_positions", "across_images", "largest"):
                before = _cell([r["before"]["weights"][key] for r in mine], 3)
                after = _cell([r["after"]["weights"][key] for r in mine], 3)
                cells.append(f"{before} → {after}")
            lines.append(f"| {dataset} | {variant} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Spread (standard deviation) of each kernel of g, before → after training, by "
        "learning rate (input-dependent LRLC; mean over seeds and datasets).",
        "",
    ]
    dependent = _select(runs, variant="lrlc-input-dependent-3")
    names = list(dependent[0]["before"]["g"]) if dependent else []
    lines += [
        "| g kernel | " + " | ".join(f"lr {lr:g}" for lr in results["learning_rates"]) + " |",
        "| --- | " + " | ".join("---" for _ in results["learning_rates"]) + " |",
    ]
    for name in names:
        cells = []
        for lr in results["learning_rates"]:
            mine = _select(dependent, lr=lr)
            before = np.mean([r["before"]["g"][name] for r in mine])
            after = np.mean([r["after"]["g"][name] for r in mine])
            cells.append(f"{before:.3f} → {after:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Wall time: {results['wall_seconds']:.0f} s."]
    return "\n".join(lines) + "\n"
