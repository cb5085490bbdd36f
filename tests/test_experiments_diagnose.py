"""lrlc_experiments.diagnose (issue 13): the evidence on input-dependent vs fixed LRLC, on a
tiny configuration; and the training hook it records curves with."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lrlc_experiments import data, diagnose, experiment
from lrlc_experiments.models import ModelConfig, build_model
from lrlc_experiments.training import TrainingConfig, train

pytest.importorskip("lrlc_torch")
pytest.importorskip("sklearn", reason="the digits need scikit-learn")


@pytest.fixture(autouse=True)
def one_thread():
    """The networks are tiny: more threads only contend on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny_base():
    digits = data.DataConfig(image_size=6, canvas_size=9, test_fraction=0.5, max_train=40)
    return experiment.ExperimentConfig(
        studies=experiment.translation_studies(digits, diagnose.VARIANTS),
        ranks=(2,),
        seeds=(0,),
        training=TrainingConfig(epochs=2, batch_size=32, warmup_epochs=1),
        width=4,
    )


def test_diagnosis_records_curves_spreads_and_every_learning_rate(tmp_path):
    config = diagnose.DiagnosisConfig(_tiny_base(), rank=2, learning_rates=(0.01, 0.02))
    results = diagnose.diagnose(config, tmp_path, device=torch.device("cpu"), progress=False)
    runs = results["runs"]
    # conv at the preset's rate; each LRLC variant at both rates; two datasets.
    assert len(runs) == 2 * (1 + 2 + 2)
    assert {r["dataset"] for r in runs} == {"digits-centred", "digits-translated"}
    for run in runs:
        assert len(run["curve"]["loss"]) == len(run["curve"]["val_accuracy"]) == 2
        if run["variant"] == "conv":
            assert run["before"]["weights"] is None and run["before"]["g"] == {}
        if run["variant"] == "lrlc-3":
            # 'conv_init': every position starts with uniform weights 1/K, the same everywhere.
            assert run["before"]["weights"] == pytest.approx(
                {"across_positions": 0.0, "across_images": 0.0, "largest": 0.5}
            )
            assert run["before"]["g"] == {}
        if run["variant"] == "lrlc-input-dependent-3":
            assert set(run["before"]["g"]) >= {"g.reduce", "g.project"}
            assert run["after"]["weights"]["across_images"] >= 0
    assert json.loads((tmp_path / "diagnosis.json").read_text())["rank"] == 2
    text = (tmp_path / "diagnosis.md").read_text()
    for fragment in ("| digits-translated | lrlc-input-dependent-3 |", "lr 0.02", "| g.project |"):
        assert fragment in text


def test_diagnosis_config_is_checked():
    with pytest.raises(ValueError, match="DiagnosisConfig.rank must be >= 2, got 1"):
        diagnose.DiagnosisConfig(rank=1)
    with pytest.raises(ValueError, match=r"learning_rates\[1\] must be a finite number > 0"):
        diagnose.DiagnosisConfig(learning_rates=(0.01, float("inf")))
    plain = experiment.ExperimentConfig(
        studies=(experiment.Study(data.DataConfig(), ("conv",)),), seeds=(0,)
    )
    with pytest.raises(ValueError, match="has no translation experiment"):
        diagnose.DiagnosisConfig(plain)


def test_after_epoch_hook_sees_every_epoch_and_leaves_training_unchanged():
    rng = np.random.default_rng(0)

    def split(n=24):
        images = rng.uniform(size=(n, 1, 8, 8)).astype(np.float32)
        return data.Split(images, rng.integers(0, 3, n))

    dataset = data.Dataset("random", split(), split(), split(), num_classes=3)
    config = TrainingConfig(epochs=3, batch_size=8, warmup_epochs=1)
    model = ModelConfig("lrlc-input-dependent-3", 1, (8, 8), 3, rank=2, width=4)
    seen = []

    def evaluate(epoch, network, loss):
        seen.append((epoch, loss))
        network.eval()
        network(torch.from_numpy(dataset.val.images))

    cpu = torch.device("cpu")
    watched = train(
        build_model(model, 0), dataset, config, seed=1, device=cpu, after_epoch=evaluate
    )
    plain = train(build_model(model, 0), dataset, config, seed=1, device=cpu)
    assert watched == plain
    assert seen == list(zip((1, 2, 3), plain["losses"]))
