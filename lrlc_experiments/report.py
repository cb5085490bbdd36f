"""Results: each variant's rank chosen on validation, the table in the layout of the paper's
Tables 1-3 (markdown and JSON), the checks of the paper's qualitative claims, and the figures
(Figure 3 and Figure Supp. 7) as PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from .data import translation_pairs
from .models import VARIANTS

# The paper's qualitative claims of Section 4.1 as (better, worse): `better` should beat
# `worse` on every dataset. Section 4.2's claims on translation are TRANSLATION_CLAIMS.
CLAIMS = (
    *((f"spatial-bias-{p}", "conv") for p in ("1", "2", "3", "all")),
    *((f"lrlc-{p}", "conv") for p in ("1", "2", "3", "all")),
    ("lrlc-3", "spatial-bias-3"),
    ("lrlc-3", "coordconv"),
    *(("lrlc-3", f"lc-{p}") for p in (1, 2, 3)),
    ("lrlc-3", "wide-conv-3"),
)
# A difference counts as real when it exceeds this many standard errors of the difference.
SIGNIFICANCE = 2.0


def mean_and_se(values) -> tuple[float, float]:
    """Mean and standard error of the mean (sample standard deviation / sqrt(n); NaN for n=1)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float(values.mean()), math.nan
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


def _stats(records: list[dict]) -> dict:
    test, test_se = mean_and_se([r["test_accuracy"] for r in records])
    val, val_se = mean_and_se([r["val_accuracy"] for r in records])
    train, _ = mean_and_se([r["train_accuracy"] for r in records])
    out = {
        "test_mean": test,
        "test_se": test_se,
        "val_mean": val,
        "val_se": val_se,
        "train_mean": train,
        "seeds": [r["seed"] for r in records],
        "parameters": records[0]["parameters"],
        "seconds": float(sum(r["seconds"] for r in records)),
    }
    if "wide_width" in records[0]:
        out["wide_width"] = records[0]["wide_width"]
    return out


def select_rank(records: list[dict]) -> int | None:
    """The rank whose models have the best mean validation accuracy (never the test accuracy);
    ties go to the smaller rank. None for an unranked variant."""
    ranks = sorted({r["rank"] for r in records}, key=lambda r: (r is None, r))
    if ranks == [None]:
        return None
    mean_val = {
        rank: np.mean([r["val_accuracy"] for r in records if r["rank"] == rank]) for rank in ranks
    }
    best = max(mean_val.values())
    return min(rank for rank in ranks if mean_val[rank] == best)


def summarize(records: list[dict], config) -> dict:
    """One row per (dataset, variant) at the rank chosen on validation, plus every rank's stats,
    the claims of Section 4.1 and the translation experiment of Section 4.2."""
    rows = []
    for study in config.studies:
        label = study.data.label
        for variant in study.variants:
            mine = [r for r in records if r["dataset"] == label and r["variant"] == variant]
            rank = select_rank(mine)
            by_rank = {}
            for r in sorted({r["rank"] for r in mine}, key=lambda r: (r is None, r)):
                by_rank[r] = _stats([m for m in mine if m["rank"] == r])
            rows.append(
                {
                    "dataset": label,
                    "variant": variant,
                    "label": VARIANTS[variant].label,
                    "rank": rank,
                    **by_rank[rank],
                    "by_rank": [{"rank": r, **s} for r, s in by_rank.items()],
                }
            )
    translation = []
    for centred, translated in translation_pairs(s.data for s in config.studies):
        translation.append(compare_translation(records, rows, centred.label, translated.label))
    return {
        "rows": rows,
        "checks": check_claims(rows),
        "translation": translation,
        "records": records,
        "config": config.to_dict(),
    }


def verdict(difference: float, se: float) -> str:
    """'holds' when `difference` exceeds SIGNIFICANCE standard errors, 'reversed' when it is
    below minus that, else 'within noise'."""
    if math.isnan(se):
        return "one seed: no error bar"
    if difference > SIGNIFICANCE * se:
        return "holds"
    if difference < -SIGNIFICANCE * se:
        return "reversed"
    return "within noise"


def check_claims(rows: list[dict]) -> list[dict]:
    """Each applicable claim with the measured difference in test accuracy and a verdict:
    'holds' (better by more than SIGNIFICANCE standard errors), 'reversed', or 'within noise'."""
    table = {(r["dataset"], r["variant"]): r for r in rows}
    checks = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for better, worse in CLAIMS:
            if (dataset, better) not in table or (dataset, worse) not in table:
                continue
            a, b = table[dataset, better], table[dataset, worse]
            difference = a["test_mean"] - b["test_mean"]
            se = math.sqrt(a["test_se"] ** 2 + b["test_se"] ** 2)
            checks.append(
                {
                    "dataset": dataset,
                    "claim": f"{a['label']} > {b['label']}",
                    "difference": difference,
                    "se": se,
                    "verdict": verdict(difference, se),
                }
            )
    return checks


# Section 4.2 in the paper's words: "the LRLC accuracy on 'Translated CelebA' dropped while
# input dependent LRLC accuracy remained largely invariant to the translation", and Section
# 4.2's conclusion that input-dependent LRLC suits less aligned data better.
FIXED, INPUT_DEPENDENT = "lrlc-3", "lrlc-input-dependent-3"
TRANSLATION_CLAIMS = {
    "fixed drops": "LRLC accuracy drops when the images are translated",
    "input-dependent invariant": "input-dependent LRLC accuracy stays about the same",
    "input-dependent >= fixed": "input-dependent LRLC >= LRLC on the translated images",
    "input-dependent drops less": "input-dependent LRLC drops less than LRLC",
}
# The drop's verdict read as a verdict on "stays about the same".
INVARIANCE_VERDICTS = {
    "holds": "does not hold: it drops",
    "reversed": "does not hold: it rises",
    "within noise": "holds: no change beyond noise",
}


def _seed_accuracies(records, dataset: str, variant: str, rank) -> dict[int, float]:
    return {
        r["seed"]: r["test_accuracy"]
        for r in records
        if (r["dataset"], r["variant"], r["rank"]) == (dataset, variant, rank)
    }


def compare_translation(records, rows, centred: str, translated: str) -> dict:
    """Each variant trained on both datasets: its test accuracy on each (at the rank chosen on
    that dataset's validation split) and the drop, centred minus translated, with the standard
    error of the per-seed drops (the seed fixes the initialisation and the minibatch order, so
    the two models of a seed are a pair); then the claims of Section 4.2 with verdicts."""
    table = {(r["dataset"], r["variant"]): r for r in rows}
    variants = [v for (d, v) in table if d == centred and (translated, v) in table]
    models, drops = [], {}
    for variant in variants:
        a, b = table[centred, variant], table[translated, variant]
        on_centred = _seed_accuracies(records, centred, variant, a["rank"])
        on_translated = _seed_accuracies(records, translated, variant, b["rank"])
        seeds = sorted(set(on_centred) & set(on_translated))
        drops[variant] = {s: on_centred[s] - on_translated[s] for s in seeds}
        drop, drop_se = mean_and_se(list(drops[variant].values()))
        models.append(
            {
                "variant": variant,
                "label": a["label"],
                "rank_centred": a["rank"],
                "rank_translated": b["rank"],
                "centred_mean": a["test_mean"],
                "centred_se": a["test_se"],
                "translated_mean": b["test_mean"],
                "translated_se": b["test_se"],
                "drop_mean": drop,
                "drop_se": drop_se,
            }
        )
    by_variant = {m["variant"]: m for m in models}
    checks = []

    def check(key, measured, difference, se, outcome):
        checks.append(
            {
                "claim": TRANSLATION_CLAIMS[key],
                "measured": measured,
                "difference": difference,
                "se": se,
                "verdict": outcome,
            }
        )

    if FIXED in by_variant:
        m = by_variant[FIXED]
        check(
            "fixed drops",
            "drop",
            m["drop_mean"],
            m["drop_se"],
            verdict(m["drop_mean"], m["drop_se"]),
        )
    if INPUT_DEPENDENT in by_variant:
        m = by_variant[INPUT_DEPENDENT]
        # "About the same" holds when the drop is within noise of zero.
        outcome = verdict(m["drop_mean"], m["drop_se"])
        outcome = INVARIANCE_VERDICTS.get(outcome, outcome)
        check("input-dependent invariant", "drop", m["drop_mean"], m["drop_se"], outcome)
    if FIXED in by_variant and INPUT_DEPENDENT in by_variant:
        fixed, dependent = by_variant[FIXED], by_variant[INPUT_DEPENDENT]
        difference = dependent["translated_mean"] - fixed["translated_mean"]
        se = math.sqrt(dependent["translated_se"] ** 2 + fixed["translated_se"] ** 2)
        check(
            "input-dependent >= fixed",
            "input-dependent - LRLC, translated",
            difference,
            se,
            verdict(difference, se),
        )
        seeds = sorted(set(drops[FIXED]) & set(drops[INPUT_DEPENDENT]))
        difference, se = mean_and_se([drops[FIXED][s] - drops[INPUT_DEPENDENT][s] for s in seeds])
        check(
            "input-dependent drops less",
            "LRLC drop - input-dependent drop",
            difference,
            se,
            verdict(difference, se),
        )
    return {"centred": centred, "translated": translated, "models": models, "checks": checks}


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def _cell(row: dict) -> str:
    text = f"{_number(row['test_mean'])} ± {_number(row['test_se'])}"
    if row["rank"] is not None:
        text += f" (K={row['rank']}" + (
            f", width {row['wide_width']})" if "wide_width" in row else ")"
        )
    return text


def markdown(results: dict) -> str:
    """The results table (rows: models, columns: datasets; cells: test accuracy mean ± SE),
    the claim checks, and per-model details."""
    rows = results["rows"]
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    cells = {(r["dataset"], r["variant"]): _cell(r) for r in rows}
    seeds = len(results["config"]["seeds"])
    lines = [
        f"Top-1 test accuracy (%), mean ± standard error over {seeds} seeds; K = the rank "
        "chosen on the validation split.",
        "",
        "| Layer | " + " | ".join(datasets) + " |",
        "| --- | " + " | ".join("---" for _ in datasets) + " |",
    ]
    for variant in VARIANTS:
        if any((d, variant) in cells for d in datasets):
            row = [cells.get((d, variant), "—") for d in datasets]
            lines.append(f"| {VARIANTS[variant].label} | " + " | ".join(row) + " |")
    if results["checks"]:
        lines += [
            "",
            "Paper's claims on this run (difference in test accuracy ± its standard error):",
            "",
            "| Dataset | Claim | Difference | Verdict |",
            "| --- | --- | --- | --- |",
        ]
    for c in results["checks"]:
        lines.append(
            f"| {c['dataset']} | {c['claim']} | {c['difference']:+.2f} ± {_number(c['se'])} "
            f"| {c['verdict']} |"
        )
    for comparison in results.get("translation", []):
        lines += ["", *translation_markdown(comparison)]
    lines += [
        "",
        "Every rank trained (mean over seeds):",
        "",
        "| Dataset | Model | K | Parameters | Train | Validation | Test | Seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        for s in r["by_rank"]:
            rank = "—" if s["rank"] is None else str(s["rank"])
            chosen = " ←" if s["rank"] is not None and s["rank"] == r["rank"] else ""
            lines.append(
                f"| {r['dataset']} | {r['label']} | {rank}{chosen} | {s['parameters']:,} "
                f"| {s['train_mean']:.2f} | {s['val_mean']:.2f} ± {_number(s['val_se'])} "
                f"| {s['test_mean']:.2f} ± {_number(s['test_se'])} | {s['seconds']:.0f} |"
            )
    if "wall_seconds" in results:
        lines += ["", f"Wall time: {results['wall_seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def translation_markdown(comparison: dict) -> list[str]:
    """The translation table (each model on the centred and the translated data, and the drop)
    and the verdicts on Section 4.2's claims, as markdown lines."""
    centred, translated = comparison["centred"], comparison["translated"]
    lines = [
        f"Translation (Section 4.2, Figure Supp. 6): every model is trained and tested on "
        f"{centred} and, separately, on {translated} (the same images on the same noise "
        "canvases, centred or at random positions). Test accuracy (%) at the rank chosen on "
        "each dataset's validation split; drop = centred - translated, mean ± standard error "
        "of the per-seed drops.",
        "",
        f"| Layer | {centred} | {translated} | Drop |",
        "| --- | --- | --- | --- |",
    ]
    for m in comparison["models"]:
        cells = []
        for which in ("centred", "translated"):
            rank = m[f"rank_{which}"]
            cells.append(
                f"{_number(m[f'{which}_mean'])} ± {_number(m[f'{which}_se'])}"
                + ("" if rank is None else f" (K={rank})")
            )
        drop = f"{m['drop_mean']:+.2f} ± {_number(m['drop_se'])}"
        lines.append(f"| {m['label']} | {cells[0]} | {cells[1]} | {drop} |")
    lines += [
        "",
        "Section 4.2's claims on this run (a difference counts when it exceeds "
        f"{SIGNIFICANCE:g} standard errors):",
        "",
        "| Claim | Measured | Value | Verdict |",
        "| --- | --- | --- | --- |",
    ]
    for c in comparison["checks"]:
        lines.append(
            f"| {c['claim']} | {c['measured']} | {c['difference']:+.2f} ± {_number(c['se'])} "
            f"| {c['verdict']} |"
        )
    return lines


def json_ready(value):
    """NaN becomes null, so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def write_results(results: dict, run_dir: Path) -> None:
    run_dir = Path(run_dir)
    (run_dir / "results.json").write_text(json.dumps(json_ready(results), indent=2) + "\n")
    (run_dir / "results.md").write_text(markdown(results))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_vs_rank(results: dict, path: Path) -> Path | None:
    """Figure 3: test accuracy (mean ± SE) against rank for each ranked variant, one panel per
    dataset; black markers at the rank chosen on validation; convolution as a dotted line."""
    rows = results["rows"]
    datasets = [
        d
        for d in dict.fromkeys(r["dataset"] for r in rows)
        if any(r["rank"] is not None for r in rows if r["dataset"] == d)
    ]
    if not datasets:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for r in rows:
            if r["dataset"] != dataset:
                continue
            if r["rank"] is None:
                if r["variant"] == "conv":
                    ax.axhline(r["test_mean"], color="black", linestyle=":", label=r["label"])
                continue
            ranks = [s["rank"] for s in r["by_rank"]]
            means = [s["test_mean"] for s in r["by_rank"]]
            errors = [0.0 if math.isnan(s["test_se"]) else s["test_se"] for s in r["by_rank"]]
            ax.errorbar(ranks, means, yerr=errors, marker="o", capsize=3, label=r["label"])
            ax.plot([r["rank"]], [r["test_mean"]], "ks", markersize=8)
        ax.set_title(dataset)
        ax.set_xticks(
            sorted(
                {
                    s["rank"]
                    for r in rows
                    if r["dataset"] == dataset and r["rank"]
                    for s in r["by_rank"]
                }
            )
        )
        ax.set_xlabel("spatial rank K")
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize=7)
    fig.suptitle("Accuracy vs rank (black squares: rank chosen on validation)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@torch.no_grad()
def plot_combining_weights(models: dict, path: Path, examples: int = 4) -> Path | None:
    """Figure Supp. 7: the rank-2 combining weight w[k=0] of the last layer, beside test images.

    `models` maps (dataset label, variant) to (network, dataset). A fixed layer has one map
    for every image; an input-dependent one predicts a map per image.
    """
    if not models:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(
        len(models), 2 * examples, figsize=(1.6 * 2 * examples, 1.9 * len(models)), squeeze=False
    )
    for row, ((dataset_label, variant), (network, dataset)) in zip(axes, models.items()):
        network.eval()
        depth = network.config.depth
        images = torch.from_numpy(dataset.test.images[:examples])
        layer = network.layers[depth - 1]
        input_dependent = layer.config.input_dependent
        weights = layer.combining_weights(
            network.layer_input(images, depth) if input_dependent else None
        )
        weights = weights[:, 0] if input_dependent else weights[0].expand(len(images), -1, -1)
        for i, (image, weight) in enumerate(zip(images, weights)):
            row[2 * i].imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray")
            shown = row[2 * i + 1].imshow(weight.numpy(), cmap="viridis", vmin=0, vmax=1)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(f"{dataset_label}\n{VARIANTS[variant].label}", fontsize=6)
    fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.8, label="weight of basis member 1")
    fig.suptitle("Rank-2 combining weights of the last layer (each image, then its map)")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
