"""lrlc_experiments training, rank selection, run directory and CLI."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from lrlc_experiments import data, experiment, report
from lrlc_experiments.models import ModelConfig, build_model
from lrlc_experiments.training import TrainingConfig, learning_rate, select_device, train

pytest.importorskip("lrlc_torch")

# ---------------------------------------------------------------------------------------------
# Schedule (paper Section 4: linear warm-up, then cosine decay)


def test_schedule_warms_up_linearly_then_decays_as_a_cosine():
    total, warmup, peak = 100, 10, 0.01
    lrs = [
        learning_rate(s, total_steps=total, warmup_steps=warmup, peak_lr=peak) for s in range(total)
    ]
    # Warm-up: peak / 10, 2 peak / 10, ..., reaching the peak at the last warm-up step.
    np.testing.assert_allclose(lrs[:warmup], peak * np.arange(1, 11) / 10, rtol=1e-12)
    # Decay: half a cosine period over the remaining 90 steps, starting at the peak.
    assert lrs[10] == pytest.approx(peak)
    assert lrs[10 + 45] == pytest.approx(peak / 2)  # halfway down the cosine
    assert lrs[10 + 30] == pytest.approx(peak * 0.75)  # cos(pi / 3) = 1 / 2
    assert lrs[-1] == pytest.approx(peak * (1 + math.cos(math.pi * 89 / 90)) / 2)
    assert np.all(np.diff(lrs[:warmup]) > 0) and np.all(np.diff(lrs[warmup:]) < 0)


def test_schedule_without_warmup_starts_at_peak_and_rejects_steps_out_of_range():
    assert learning_rate(0, total_steps=4, warmup_steps=0, peak_lr=1.0) == 1.0
    with pytest.raises(ValueError, match="step 4 outside"):
        learning_rate(4, total_steps=4, warmup_steps=0, peak_lr=1.0)


def test_training_config_defaults_are_the_papers_and_are_checked():
    config = TrainingConfig()
    assert (config.epochs, config.batch_size, config.peak_lr, config.warmup_epochs) == (
        150,
        512,
        0.01,
        10,
    )
    with pytest.raises(ValueError, match="warmup_epochs must lie in"):
        TrainingConfig(epochs=5, warmup_epochs=6)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        TrainingConfig(batch_size=0)


def _random_dataset(n=40, size=8, seed=0):
    rng = np.random.default_rng(seed)

    def split():
        return data.Split(
            rng.uniform(size=(n, 1, size, size)).astype(np.float32), rng.integers(0, 3, n)
        )

    return data.Dataset("random", split(), split(), split(), num_classes=3)


def test_train_uses_the_schedule_and_is_reproducible():
    dataset = _random_dataset()
    config = TrainingConfig(epochs=3, batch_size=16, peak_lr=0.02, warmup_epochs=1)
    seen = []

    class Recorder(torch.optim.Adam):
        def step(self, closure=None):
            seen.append(self.param_groups[0]["lr"])
            return super().step(closure)

    model_config = ModelConfig("lrlc-3", 1, (8, 8), 3, rank=2, width=4)
    original = torch.optim.Adam
    torch.optim.Adam = Recorder
    try:
        first = train(
            build_model(model_config, 0), dataset, config, seed=5, device=torch.device("cpu")
        )
    finally:
        torch.optim.Adam = original
    steps = 3 * math.ceil(40 / 16)
    expected = [
        learning_rate(s, total_steps=steps, warmup_steps=3, peak_lr=0.02) for s in range(steps)
    ]
    np.testing.assert_allclose(seen, expected)
    again = train(build_model(model_config, 0), dataset, config, seed=5, device=torch.device("cpu"))
    assert first == again
    for key in ("train_accuracy", "val_accuracy", "test_accuracy"):
        assert 0 <= first[key] <= 100


def test_device_selection():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected
    assert select_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda' requested but no CUDA device"):
            select_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_runs_on_the_gpu():
    model = build_model(ModelConfig("lrlc-input-dependent-3", 1, (8, 8), 3, rank=2, width=4))
    config = TrainingConfig(epochs=2, batch_size=16, warmup_epochs=1)
    metrics = train(model, _random_dataset(), config, seed=0, device=torch.device("cuda"))
    assert all(p.is_cuda for p in model.parameters())
    assert 0 <= metrics["test_accuracy"] <= 100 and np.isfinite(metrics["final_loss"])


# ---------------------------------------------------------------------------------------------
# Rank selection: validation, never test


def _records(val_by_rank, test_by_rank, seeds=(0, 1)):
    records = []
    for rank in val_by_rank:
        for seed in seeds:
            records.append(
                {
                    "dataset": "d",
                    "variant": "lrlc-3",
                    "rank": rank,
                    "seed": seed,
                    "val_accuracy": val_by_rank[rank] + seed,
                    "test_accuracy": test_by_rank[rank] + seed,
                    "train_accuracy": 100.0,
                    "parameters": 1,
                    "seconds": 1.0,
                }
            )
    return records


def test_rank_is_chosen_on_validation_even_when_test_disagrees():
    records = _records({1: 90.0, 2: 95.0, 4: 93.0}, {1: 99.0, 2: 80.0, 4: 99.5})
    assert report.select_rank(records) == 2
    config = experiment.ExperimentConfig(
        studies=(experiment.Study(data.DataConfig(), ("lrlc-3",)),), ranks=(1, 2, 4), seeds=(0, 1)
    )
    # summarize needs the dataset label of the study: "digits".
    for r in records:
        r["dataset"] = "digits"
    (row,) = report.summarize(records, config)["rows"]
    assert row["rank"] == 2
    assert row["test_mean"] == pytest.approx(80.5)  # the rank-2 test accuracy, not the best test
    assert row["val_mean"] == pytest.approx(95.5)


def test_rank_ties_go_to_the_smaller_rank_and_unranked_variants_have_none():
    assert report.select_rank(_records({3: 90.0, 2: 90.0}, {3: 1.0, 2: 2.0})) == 2
    assert report.select_rank(_records({None: 90.0}, {None: 1.0})) is None


def test_input_dependent_variants_skip_rank_one():
    study = experiment.Study(data.DataConfig(), ("lrlc-3", "lrlc-input-dependent-3"))
    config = experiment.ExperimentConfig(studies=(study,), ranks=(1, 3), seeds=(0,))
    assert experiment.model_jobs(config, study) == [
        ("lrlc-3", 1, 0),
        ("lrlc-3", 3, 0),
        ("lrlc-input-dependent-3", 3, 0),
    ]
    with pytest.raises(ValueError, match="'lrlc-input-dependent-3' needs a rank >= 2"):
        experiment.ExperimentConfig(studies=(study,), ranks=(1,), seeds=(0,))


def test_claims_compare_against_the_standard_error_of_the_difference():
    rows = [
        {
            "dataset": "d",
            "variant": "conv",
            "label": "Convolution",
            "test_mean": 90.0,
            "test_se": 0.3,
        },
        {"dataset": "d", "variant": "lrlc-3", "label": "LRLC", "test_mean": 91.0, "test_se": 0.4},
        {
            "dataset": "d",
            "variant": "spatial-bias-3",
            "label": "SB",
            "test_mean": 90.5,
            "test_se": 0.4,
        },
    ]
    verdicts = {c["claim"]: c["verdict"] for c in report.check_claims(rows)}
    # 1.0 > 2 * sqrt(0.3² + 0.4²) = 1.0 is false: not significant; 0.5 likewise.
    assert verdicts == {
        "SB > Convolution": "within noise",
        "LRLC > Convolution": "within noise",
        "LRLC > SB": "within noise",
    }
    rows[1]["test_mean"] = 91.01
    assert {c["claim"]: c["verdict"] for c in report.check_claims(rows)}[
        "LRLC > Convolution"
    ] == "holds"
    rows[1]["test_mean"] = 88.0
    assert {c["claim"]: c["verdict"] for c in report.check_claims(rows)}["LRLC > Convolution"] == (
        "reversed"
    )


def test_mean_and_standard_error():
    mean, se = report.mean_and_se([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3)
    assert se == pytest.approx(np.sqrt(np.sum((np.array([1, 2, 4]) - 7 / 3) ** 2) / 2 / 3))
    assert math.isnan(report.mean_and_se([1.0])[1])


# ---------------------------------------------------------------------------------------------
# A whole (tiny) run through the command line


def test_cli_run_writes_a_rerunnable_run_directory(tmp_path, capsys):
    for module in ("sklearn", "tqdm", "matplotlib"):
        pytest.importorskip(module, reason="the run needs the [experiments] extra")
    from lrlc_experiments.__main__ import main

    out = tmp_path / "run"
    argv = [
        "run",
        "--preset",
        "quick",
        "--out",
        str(out),
        "--epochs",
        "2",
        "--warmup-epochs",
        "1",
        "--seeds",
        "2",
        "--ranks",
        "1",
        "2",
        "--width",
        "4",
        "--image-size",
        "8",
        "--threads",
        "1",
        "--no-progress",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for name in (
        "config.json",
        "results.json",
        "results.md",
        "accuracy_vs_rank.png",
        "combining_weights_rank2.png",
    ):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    config = experiment.ExperimentConfig.from_dict(json.loads((out / "config.json").read_text()))
    assert config.ranks == (1, 2) and config.seeds == (0, 1) and config.width == 4
    # Every model trained has its own directory with config, seed, metrics and weights.
    expected_models = sum(len(experiment.model_jobs(config, s)) for s in config.studies)
    assert len(results["records"]) == expected_models
    for record in results["records"]:
        directory = out / record["directory"]
        assert {p.name for p in directory.iterdir()} == {
            "model.json",
            "metrics.json",
            "weights.safetensors",
        }
        _, model, _, seed = experiment.load_model_spec(directory)
        assert (model.variant, model.rank, seed) == (
            record["variant"],
            record["rank"],
            record["seed"],
        )
    # The reported rank is the best mean validation accuracy, recomputed here from the records.
    for row in results["rows"]:
        mine = [
            r
            for r in results["records"]
            if (r["dataset"], r["variant"]) == (row["dataset"], row["variant"])
        ]
        if row["rank"] is not None:
            ranks = {r["rank"] for r in mine}
            assert ranks == ({2} if row["variant"] == "lrlc-input-dependent-3" else {1, 2})
            val = {k: np.mean([r["val_accuracy"] for r in mine if r["rank"] == k]) for k in ranks}
            assert row["rank"] == min(k for k in val if val[k] == max(val.values()))
        assert "| " + row["label"] + " |" in printed
    # The translation experiment: every model on the centred and the translated digits.
    (comparison,) = results["translation"]
    assert [m["variant"] for m in comparison["models"]] == [
        "conv",
        "lrlc-3",
        "lrlc-input-dependent-3",
    ]
    assert len(comparison["checks"]) == len(report.TRANSLATION_CLAIMS)
    assert "| Layer | digits-centred | digits-translated | Drop |" in printed
    # Convolution + spatial bias is LRLC of rank 1: the same networks, trained once.
    by_key = {(r["dataset"], r["variant"], r["rank"], r["seed"]): r for r in results["records"]}
    for seed in (0, 1):
        shared = by_key["digits", "spatial-bias-3", None, seed], by_key["digits", "lrlc-3", 1, seed]
        for key in ("train_accuracy", "val_accuracy", "test_accuracy", "final_loss"):
            assert shared[0][key] == shared[1][key]
    # Re-running one model from its directory reproduces its recorded accuracies.
    record = results["records"][-1]
    assert main(["rerun", str(out / record["directory"]), "--threads", "1", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for line in lines:
        got, recorded = re.fullmatch(r"\w+: ([\d.]+) \(recorded: ([\d.]+)\)", line).groups()
        assert got == recorded


def test_cli_names_a_missing_dataset_file_before_training(tmp_path, capsys):
    from lrlc_experiments.__main__ import main

    out = tmp_path / "run"
    argv = ["run", "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(out)]
    assert main(argv) == 2
    assert "train-images-idx3-ubyte" in capsys.readouterr().err
    assert not out.exists()
