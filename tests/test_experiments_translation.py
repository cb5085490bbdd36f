"""The translation experiment (paper Section 4.2, Figure Supp. 6): the presets hold it at the
paper's canvas ratio, and the report computes each model's drop and the claims' verdicts
from the records (expected values are recomputed here with NumPy)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lrlc_experiments import data, experiment, report

pytest.importorskip("lrlc_torch")

# The paper's Translated CelebA: 32 px faces on a 48 px canvas.
PAPER_RATIO = 48 / 32


@pytest.mark.parametrize("preset", sorted(experiment.PRESETS))
def test_every_preset_runs_the_translation_experiment_at_the_papers_ratio(preset):
    config = experiment.PRESETS[preset]
    pairs = data.translation_pairs(s.data for s in config.studies)
    assert len(pairs) == 1
    centred, translated = pairs[0]
    assert centred.canvas_size / centred.grid_size == PAPER_RATIO
    assert (centred.label, translated.label) == ("digits-centred", "digits-translated")
    variants = {s.data.label: set(s.variants) for s in config.studies}
    expected = {"conv", "lrlc-3", "lrlc-input-dependent-3"}
    assert variants["digits-centred"] == variants["digits-translated"] == expected
    if preset == "paper":
        assert (centred.grid_size, centred.canvas_size) == (16, 24)


def test_translation_studies_need_a_canvas():
    with pytest.raises(ValueError, match="'digits' has no canvas_size"):
        experiment.translation_studies(data.DataConfig(), ("conv",))


SEEDS = (0, 1, 2)


def _config():
    base = data.DataConfig(image_size=10, canvas_size=15)
    studies = experiment.translation_studies(base, ("conv", "lrlc-3", "lrlc-input-dependent-3"))
    return experiment.ExperimentConfig(studies=studies, ranks=(1, 2), seeds=SEEDS)


def _records(test):
    """Records whose validation accuracy picks rank 2 for lrlc-3 on both datasets; `test` maps
    (dataset, variant) to the per-seed test accuracies at the chosen rank."""
    records = []
    for (dataset, variant), accuracies in test.items():
        ranks = {"conv": [None], "lrlc-3": [1, 2], "lrlc-input-dependent-3": [2]}[variant]
        for rank in ranks:
            for seed, accuracy in zip(SEEDS, accuracies):
                chosen = rank in (None, 2)
                records.append(
                    {
                        "dataset": dataset,
                        "variant": variant,
                        "rank": rank,
                        "seed": seed,
                        "val_accuracy": 90.0 if chosen else 80.0,
                        # A rank not chosen gets a test accuracy that would change every number.
                        "test_accuracy": accuracy if chosen else 10.0,
                        "train_accuracy": 100.0,
                        "parameters": 1,
                        "seconds": 1.0,
                    }
                )
    return records


TEST = {
    ("digits-centred", "conv"): [97.0, 97.5, 98.0],
    ("digits-translated", "conv"): [96.0, 97.0, 97.0],
    ("digits-centred", "lrlc-3"): [95.0, 96.0, 97.0],
    ("digits-translated", "lrlc-3"): [90.0, 90.5, 91.5],
    ("digits-centred", "lrlc-input-dependent-3"): [94.0, 95.0, 96.0],
    ("digits-translated", "lrlc-input-dependent-3"): [94.1, 94.9, 96.1],
}


def _se(values):
    values = np.asarray(values, float)
    return values.std(ddof=1) / math.sqrt(values.size)


def test_drop_is_paired_by_seed_at_each_datasets_chosen_rank():
    results = report.summarize(_records(TEST), _config())
    (comparison,) = results["translation"]
    assert (comparison["centred"], comparison["translated"]) == (
        "digits-centred",
        "digits-translated",
    )
    models = {m["variant"]: m for m in comparison["models"]}
    for variant, m in models.items():
        centred = np.array(TEST["digits-centred", variant])
        translated = np.array(TEST["digits-translated", variant])
        assert m["centred_mean"] == pytest.approx(centred.mean())
        assert m["translated_se"] == pytest.approx(_se(translated))
        assert m["drop_mean"] == pytest.approx((centred - translated).mean())
        assert m["drop_se"] == pytest.approx(_se(centred - translated))
    assert models["lrlc-3"]["rank_centred"] == models["lrlc-3"]["rank_translated"] == 2
    assert models["conv"]["rank_centred"] is None


def _verdicts(test):
    (comparison,) = report.summarize(_records(test), _config())["translation"]
    return {c["claim"]: (c["difference"], c["se"], c["verdict"]) for c in comparison["checks"]}


def test_claims_of_section_4_2_are_judged_from_the_numbers():
    claims = report.TRANSLATION_CLAIMS
    verdicts = _verdicts(TEST)
    fixed_drop = np.subtract(TEST["digits-centred", "lrlc-3"], TEST["digits-translated", "lrlc-3"])
    dependent_drop = np.subtract(
        TEST["digits-centred", "lrlc-input-dependent-3"],
        TEST["digits-translated", "lrlc-input-dependent-3"],
    )
    # Fixed LRLC drops 5.33 ± 0.17: more than two standard errors.
    difference, se, verdict = verdicts[claims["fixed drops"]]
    assert (difference, se) == pytest.approx((fixed_drop.mean(), _se(fixed_drop)))
    assert verdict == "holds"
    # Input-dependent LRLC changes by -0.03 ± 0.07: about the same.
    difference, se, verdict = verdicts[claims["input-dependent invariant"]]
    assert (difference, se) == pytest.approx((dependent_drop.mean(), _se(dependent_drop)))
    assert verdict == "holds: no change beyond noise"
    # On the translated data, input-dependent minus fixed, unpaired standard errors.
    difference, se, verdict = verdicts[claims["input-dependent >= fixed"]]
    a = np.array(TEST["digits-translated", "lrlc-input-dependent-3"])
    b = np.array(TEST["digits-translated", "lrlc-3"])
    assert difference == pytest.approx(a.mean() - b.mean())
    assert se == pytest.approx(math.hypot(_se(a), _se(b)))
    assert verdict == "holds"
    # The two drops compared seed by seed.
    difference, se, verdict = verdicts[claims["input-dependent drops less"]]
    assert (difference, se) == pytest.approx(
        ((fixed_drop - dependent_drop).mean(), _se(fixed_drop - dependent_drop))
    )
    assert verdict == "holds"


def test_claims_that_fail_say_so():
    claims = report.TRANSLATION_CLAIMS
    # Swap the roles: the fixed layer keeps its accuracy, the input-dependent one drops.
    test = dict(TEST)
    test["digits-translated", "lrlc-3"] = [95.1, 95.9, 97.1]
    test["digits-translated", "lrlc-input-dependent-3"] = [89.0, 90.0, 90.5]
    verdicts = {claim: v[2] for claim, v in _verdicts(test).items()}
    assert verdicts == {
        claims["fixed drops"]: "within noise",
        claims["input-dependent invariant"]: "does not hold: it drops",
        claims["input-dependent >= fixed"]: "reversed",
        claims["input-dependent drops less"]: "reversed",
    }
    test["digits-translated", "lrlc-input-dependent-3"] = [99.0, 99.5, 99.9]
    verdicts = {claim: v[2] for claim, v in _verdicts(test).items()}
    assert verdicts[claims["input-dependent invariant"]] == "does not hold: it rises"


def test_markdown_prints_the_translation_table_and_verdicts():
    results = report.summarize(_records(TEST), _config())
    text = report.markdown(results)
    assert "| Layer | digits-centred | digits-translated | Drop |" in text
    assert "| LRLC (3rd layer) | 96.00 ± 0.58 (K=2) | 90.67 ± 0.44 (K=2) | +5.33 ± 0.17 |" in text
    assert f"| {report.TRANSLATION_CLAIMS['fixed drops']} | drop | +5.33 ± 0.17 | holds |" in text
    # Section 4.1's claims compare variants of one dataset; only its table is printed.
    assert "| digits-centred | LRLC (3rd layer) > Convolution |" in text
    results = report.summarize(
        [r for r in _records(TEST) if r["variant"] != "conv"],
        experiment.ExperimentConfig(
            studies=experiment.translation_studies(
                data.DataConfig(image_size=10, canvas_size=15), ("lrlc-3",)
            ),
            ranks=(1, 2),
            seeds=SEEDS,
        ),
    )
    assert results["checks"] == [] and "| Dataset | Claim |" not in report.markdown(results)


def test_one_seed_gives_no_verdict():
    config = _config()
    config = experiment.ExperimentConfig(studies=config.studies, ranks=(1, 2), seeds=(0,))
    records = [r for r in _records(TEST) if r["seed"] == 0]
    (comparison,) = report.summarize(records, config)["translation"]
    assert {c["verdict"] for c in comparison["checks"]} == {"one seed: no error bar"}
