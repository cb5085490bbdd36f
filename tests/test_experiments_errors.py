"""Bad inputs to lrlc_experiments (issue 14): every one ends with an error naming the option,
key or file and what was expected; the command line prints one line and exits 2, before any
training starts. Also: the command line without the [experiments] extra (issue 16)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from lrlc_experiments import experiment
from lrlc_experiments.training import TrainingConfig, select_device

pytest.importorskip("lrlc_torch")


def cli(argv, capsys) -> tuple[int, str]:
    """(exit status, stderr) of `python -m lrlc_experiments ARGV`, run in this process."""
    from lrlc_experiments.__main__ import main

    try:
        status = main(argv)
    except SystemExit as exit:  # argparse's errors
        status = exit.code
    return status, capsys.readouterr().err


def assert_one_line_error(status, err, fragment):
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error: " in lines[0] and fragment in lines[0], lines[0]


# ---------------------------------------------------------------------------------------------
# Command-line values: refused, never reinterpreted


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--lr", "inf"], "argument --lr: expected a finite number > 0, got 'inf'"),
        (["--lr", "nan"], "argument --lr: expected a finite number > 0, got 'nan'"),
        (["--lr", "0"], "argument --lr: expected a finite number > 0, got '0'"),
        (["--lr", "-0.01"], "argument --lr: expected a finite number > 0, got '-0.01'"),
        (["--lr", "fast"], "argument --lr: expected a finite number > 0, got 'fast'"),
        (["--device", "tpu"], "argument --device: device must be 'auto', 'cpu', 'cuda'"),
        (["--device", "foo"], "got 'foo'"),
        (["--device", "cuda:x"], "got 'cuda:x'"),
        (["--epochs", "0"], "argument --epochs: expected an integer >= 1, got '0'"),
        (["--epochs", "-3"], "argument --epochs: expected an integer >= 1, got '-3'"),
        (["--epochs", "1.5"], "argument --epochs: expected an integer >= 1, got '1.5'"),
        (["--seeds", "0"], "argument --seeds: expected an integer >= 1, got '0'"),
        (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1"),
        (["--width", "0"], "argument --width: expected an integer >= 1"),
        (["--ranks", "2", "0"], "argument --ranks: expected an integer >= 1, got '0'"),
        (["--threads", "0"], "argument --threads: expected an integer >= 1"),
        (["--image-size", "0"], "argument --image-size: expected an integer >= 1"),
        (["--translate-canvas", "-1"], "argument --translate-canvas: expected an integer >= 1"),
        (["--max-train", "0"], "argument --max-train: expected an integer >= 1"),
        (["--warmup-epochs", "-1"], "argument --warmup-epochs: expected an integer >= 0"),
        (["--variants", "lrlc-9"], "argument --variants: invalid choice: 'lrlc-9'"),
        (["--preset", "paper", "--config", "c.json"], "not allowed with argument --preset"),
    ],
)
def test_run_option_out_of_range_is_one_line_exit_2(argv, fragment, capsys, tmp_path):
    status, err = cli(["run", "--out", str(tmp_path / "run"), *argv], capsys)
    assert_one_line_error(status, err, fragment)
    assert not (tmp_path / "run").exists()


def test_rerun_option_out_of_range_is_one_line_exit_2(capsys, tmp_path):
    status, err = cli(["rerun", str(tmp_path), "--device", "tpu"], capsys)
    assert_one_line_error(status, err, "argument --device")


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks the message without a GPU"
)
def test_absent_cuda_device_is_refused():
    with pytest.raises(ValueError, match="'cuda:0' requested but no CUDA device"):
        select_device("cuda:0")


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--data-dir", "x"], "--data-dir is read only with --dataset mnist"),
        (["--dataset", "digits", "--data-dir", "x"], "--data-dir is read only with --dataset"),
        (["--dataset", "mnist"], "--dataset mnist needs --data-dir DIR"),
        (["--epochs", "2", "--warmup-epochs", "3"], "--warmup-epochs 3 exceeds the 2 epochs"),
        (["--image-size", "20"], "canvas_size=15 is smaller than the 20×20 digits"),
        (["--ranks", "1"], "'lrlc-input-dependent-3' needs a rank >= 2"),
        (["--ranks", "2", "2"], "ExperimentConfig.ranks lists a value twice: [2, 2]"),
    ],
)
def test_inconsistent_run_options_are_one_line_exit_2(argv, fragment, capsys, tmp_path):
    status, err = cli(["run", "--out", str(tmp_path / "run"), *argv], capsys)
    assert_one_line_error(status, err, fragment)
    assert not (tmp_path / "run").exists()


def test_out_directory_that_holds_files_is_refused(capsys, tmp_path):
    (tmp_path / "results.md").write_text("an earlier run")
    status, err = cli(["run", "--out", str(tmp_path)], capsys)
    assert_one_line_error(status, err, f"--out {tmp_path}: exists and is not an empty directory")


def _parse(argv):
    from lrlc_experiments.__main__ import _parser

    return _parser().parse_args(["run", *argv])


def test_epochs_shorter_than_the_presets_warmup_clamp_it_and_say_so(capsys):
    from lrlc_experiments.__main__ import experiment_from_args

    config = experiment_from_args(_parse(["--epochs", "1", "--seeds", "1"]))
    assert (config.training.epochs, config.training.warmup_epochs) == (1, 1)
    assert config.seeds == (0,)
    err = capsys.readouterr().err
    assert "--epochs 1 is shorter than the 4-epoch warm-up of preset 'quick'" in err
    assert "warm-up clamped to 1 epochs" in err
    # An explicit warm-up is taken as given, and a warm-up that fits is left alone.
    config = experiment_from_args(_parse(["--epochs", "1", "--warmup-epochs", "0"]))
    assert config.training.warmup_epochs == 0
    config = experiment_from_args(_parse(["--epochs", "5"]))
    assert config.training.warmup_epochs == 4
    assert capsys.readouterr().err == ""


def test_translate_canvas_resizes_the_presets_canvas_or_builds_the_pair(tmp_path):
    from lrlc_experiments.__main__ import experiment_from_args

    config = experiment_from_args(_parse(["--translate-canvas", "18"]))
    canvases = {s.data.label: s.data.canvas_size for s in config.studies}
    assert canvases == {"digits": None, "digits-centred": 18, "digits-translated": 18}
    argv = ["--dataset", "mnist", "--data-dir", str(tmp_path), "--translate-canvas", "42"]
    config = experiment_from_args(_parse(argv))
    assert [(s.data.label, s.data.canvas_size) for s in config.studies] == [
        ("mnist-centred", 42),
        ("mnist-translated", 42),
    ]
    assert config.studies[0].variants == ("conv", "lrlc-3", "lrlc-input-dependent-3")


# ---------------------------------------------------------------------------------------------
# Config files (--config) and model directories (rerun)


def _write(path, text):
    path.write_text(text)
    return path


def test_config_with_invalid_json_names_the_file(capsys, tmp_path):
    path = _write(tmp_path / "config.json", '{"studies": [')
    status, err = cli(["run", "--config", str(path), "--out", str(tmp_path / "run")], capsys)
    assert_one_line_error(status, err, f"{path}: invalid JSON")


def test_missing_config_file_is_named(capsys, tmp_path):
    path = tmp_path / "nowhere.json"
    status, err = cli(["run", "--config", str(path)], capsys)
    assert_one_line_error(status, err, f"{path} not found")


def _quick_config_dict():
    return experiment.PRESETS["quick"].to_dict()


@pytest.mark.parametrize(
    "edit, error, fragment",
    [
        (lambda c: c.pop("studies"), ValueError, "missing key 'studies'"),
        (lambda c: c.update(extra=1), ValueError, "unknown key(s) ['extra']"),
        (lambda c: c["training"].update(lr=1), ValueError, "training: unknown key(s) ['lr']"),
        (lambda c: c["training"].update(peak_lr=math.inf), ValueError, "finite number > 0"),
        (lambda c: c["training"].update(epochs="40"), TypeError, "epochs must be an integer"),
        (lambda c: c["studies"][0].pop("variants"), ValueError, "missing key(s) ['variants']"),
        (lambda c: c["studies"][1]["data"].update(size=3), ValueError, "studies[1].data"),
        (lambda c: c.update(seeds=[0, -1]), ValueError, "seeds[1] must be >= 0, got -1"),
        (lambda c: c.update(seeds=[]), ValueError, "ExperimentConfig.seeds is empty"),
        (lambda c: c.update(ranks="124"), TypeError, "ranks must be tuple or list"),
        (lambda c: c.update(width=0), ValueError, "ExperimentConfig.width must be >= 1"),
        (lambda c: c.update(studies={}), TypeError, "studies must be list"),
        (lambda c: c["studies"][0].update(variants=[]), ValueError, "variants of 'digits'"),
    ],
)
def test_bad_config_is_named_with_its_key(edit, error, fragment, capsys, tmp_path):
    config = _quick_config_dict()
    edit(config)
    path = _write(tmp_path / "config.json", json.dumps(config))
    with pytest.raises(error) as info:
        experiment.load_config(path)
    assert str(path) in str(info.value) and fragment in str(info.value)
    status, err = cli(["run", "--config", str(path), "--out", str(tmp_path / "run")], capsys)
    assert_one_line_error(status, err, fragment)


def test_config_round_trips_through_its_file(tmp_path):
    config = experiment.PRESETS["quick"]
    path = _write(tmp_path / "config.json", json.dumps(config.to_dict()))
    assert experiment.load_config(path) == config


def test_translate_canvas_without_a_canvas_study_is_refused(capsys, tmp_path):
    config = _quick_config_dict()
    config["studies"] = config["studies"][:1]
    path = _write(tmp_path / "config.json", json.dumps(config))
    argv = ["run", "--config", str(path), "--translate-canvas", "20"]
    status, err = cli(argv, capsys)
    assert_one_line_error(status, err, f"--translate-canvas: the {path} has no study on a canvas")


def _model_dir(tmp_path, spec):
    directory = tmp_path / "seed0"
    directory.mkdir()
    (directory / "model.json").write_text(json.dumps(spec))
    (directory / "metrics.json").write_text(
        json.dumps({"train_accuracy": 1.0, "val_accuracy": 1.0, "test_accuracy": 1.0})
    )
    return directory


def _spec():
    return {
        "data": {"name": "digits", "image_size": 8},
        "model": {"variant": "conv", "in_channels": 1, "input_size": [8, 8], "num_classes": 10},
        "training": {"epochs": 1, "batch_size": 64, "peak_lr": 0.01, "warmup_epochs": 0},
        "seed": 0,
    }


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda s: s.pop("model"), "model.json: expected the keys"),
        (lambda s: s.pop("model"), "missing ['model']"),
        (lambda s: s.update(weights=1), "unknown ['weights']"),
        (lambda s: s.update(seed=-2), "seed must be >= 0, got -2"),
        (lambda s: s["model"].update(variant="lrlc-9"), "unknown model variant 'lrlc-9'"),
        (lambda s: s["model"].update(input_size=[8]), "input_size must be (height, width)"),
        (lambda s: s["model"].update(width=2.5), "ModelConfig.width must be an integer"),
        (lambda s: s["training"].update(peak_lr=0), "TrainingConfig.peak_lr must be"),
    ],
)
def test_rerun_on_a_bad_model_json_names_it(edit, fragment, capsys, tmp_path):
    spec = _spec()
    edit(spec)
    directory = _model_dir(tmp_path, spec)
    status, err = cli(["rerun", str(directory), "--no-progress"], capsys)
    assert_one_line_error(status, err, fragment)
    assert str(directory / "model.json") in err


def test_rerun_on_a_bad_metrics_json_names_it_before_training(capsys, tmp_path):
    directory = _model_dir(tmp_path, _spec())
    (directory / "metrics.json").write_text("[1, 2")
    status, err = cli(["rerun", str(directory), "--no-progress"], capsys)
    assert_one_line_error(status, err, f"{directory / 'metrics.json'}: invalid JSON")
    (directory / "metrics.json").write_text(json.dumps({"test_accuracy": 1.0}))
    status, err = cli(["rerun", str(directory), "--no-progress"], capsys)
    assert_one_line_error(status, err, "expected numbers under ['train_accuracy', 'val_accuracy']")


def test_rerun_outside_a_model_directory_is_named(capsys, tmp_path):
    status, err = cli(["rerun", str(tmp_path)], capsys)
    assert_one_line_error(status, err, f"{tmp_path / 'model.json'} not found")


# ---------------------------------------------------------------------------------------------
# Data files through the command line: named, and before any training


def _idx_header(*shape):
    import struct

    return struct.pack(">HBB", 0, 0x08, len(shape)) + struct.pack(f">{len(shape)}I", *shape)


def _write_mnist(root, train=(5, 28, 28), test=(5, 28, 28)):
    for prefix, shape in (("train", train), ("t10k", test)):
        (root / f"{prefix}-images-idx3-ubyte").write_bytes(
            _idx_header(*shape) + bytes(math.prod(shape))
        )
        (root / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx_header(shape[0]) + bytes(shape[0]))


@pytest.mark.parametrize(
    "files, fragment",
    [
        ({"test": (5, 27, 27)}, "t10k-images-idx3-ubyte holds 27×27 images but"),
        ({"train": (0, 28, 28)}, "train-images-idx3-ubyte: IDX file holds 0 images"),
    ],
)
def test_bad_mnist_files_stop_the_run_before_training(files, fragment, capsys, tmp_path):
    _write_mnist(tmp_path, **files)
    out = tmp_path / "run"
    argv = ["run", "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(out)]
    status, err = cli(argv, capsys)
    assert_one_line_error(status, err, fragment)
    assert not out.exists()


def test_mnist_header_overflowing_int64_through_the_command_line(capsys, tmp_path):
    _write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(_idx_header(2**32 - 1, 2**32 - 1, 2**32 - 1) + bytes(10))
    argv = ["run", "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")]
    status, err = cli(argv, capsys)
    assert_one_line_error(status, err, f"{path}: malformed IDX file")


# ---------------------------------------------------------------------------------------------
# Library-level checks


@pytest.mark.parametrize(
    "fields, error, fragment",
    [
        ({"peak_lr": math.inf}, ValueError, "peak_lr must be a finite number > 0, got inf"),
        ({"peak_lr": math.nan}, ValueError, "peak_lr must be a finite number > 0, got nan"),
        ({"peak_lr": -1.0}, ValueError, "peak_lr must be a finite number > 0"),
        ({"peak_lr": "0.01"}, TypeError, "peak_lr must be a number"),
        ({"epochs": True}, TypeError, "TrainingConfig.epochs must be an integer"),
        ({"epochs": 0}, ValueError, "TrainingConfig.epochs must be >= 1, got 0"),
        ({"warmup_epochs": -1}, ValueError, "warmup_epochs must be >= 0, got -1"),
    ],
)
def test_training_config_names_each_bad_field(fields, error, fragment):
    with pytest.raises(error, match=None) as info:
        TrainingConfig(**fields)
    assert fragment in str(info.value)


@pytest.mark.parametrize("device", ["tpu", "foo", "cuda:", "cuda:-1", "CPU", ""])
def test_select_device_refuses_unknown_names(device):
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        select_device(device)


# ---------------------------------------------------------------------------------------------
# Without the [experiments] extra (issue 16)


def test_command_line_without_the_extra_names_it():
    """Only the torch extra: tqdm, scikit-learn and matplotlib cannot be imported."""
    blocked = ("tqdm", "sklearn", "matplotlib")
    code = (
        "import runpy, sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "sys.argv = ['lrlc_experiments', 'run']\n"
        "runpy.run_module('lrlc_experiments', run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "missing modules: sklearn, matplotlib, tqdm" in lines[0]
    assert "pip install '.[experiments]'" in lines[0] and "lrlc[experiments]" in lines[0]
    assert done.stdout == ""


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--rank", "1"], "argument --rank: expected an integer >= 2, got '1'"),
        (["--lrs", "0.01", "inf"], "argument --lrs: expected a finite number > 0, got 'inf'"),
        (["--seeds", "0"], "argument --seeds: expected an integer >= 1, got '0'"),
    ],
)
def test_diagnose_option_out_of_range_is_one_line_exit_2(argv, fragment, capsys, tmp_path):
    status, err = cli(["diagnose", "--out", str(tmp_path / "d"), *argv], capsys)
    assert_one_line_error(status, err, fragment)
    assert not (tmp_path / "d").exists()
