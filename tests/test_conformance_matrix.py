"""The combined conformance matrix (conformance.matrix): cells, verdicts and exit codes."""

from __future__ import annotations

import json
import sys

import pytest

from conformance import matrix


def _report(backend, counts, errors=None, failures=()):
    """A report dict as `python -m conformance --json` writes it."""
    grid = {}
    for (check, dtype, device), (passed, failed, skipped) in counts.items():
        cell = {"passed": passed, "failed": failed, "skipped": skipped}
        grid.setdefault(check, {}).setdefault(dtype, {})[device] = cell
    return {
        "backend": backend,
        "matrix": grid,
        "max_relative_error": errors or {},
        "failures": list(failures),
    }


def test_cells_read_passed_total_and_worst_error():
    report = _report(
        "torch[strategy=lc]",
        {("forward", "float64", "cpu"): (96, 0, 0), ("vjp_input", "float32", "cpu"): (90, 6, 0)},
        {"forward/float64/cpu": 1.2e-14},
        failures=[{"check": "vjp_input", "case": "c", "message": "m"}],
    )
    text = matrix.markdown([{"label": "torch[lc]", "reports": [report], "seconds": 2.0}])
    row = next(line for line in text.splitlines() if line.startswith("| torch[lc]"))
    assert "96/96 1e-14" in row and "FAILED 6/96" in row
    assert text.splitlines()[-1].startswith("FAILED: 1 failing checks")


def test_one_row_per_device_and_columns_in_check_order():
    report = _report(
        "jax",
        {
            ("vjp_params", "float32", "gpu"): (1, 0, 0),
            ("forward", "float32", "cpu"): (1, 0, 0),
            ("forward", "float64", "cpu"): (1, 0, 0),
        },
    )
    table, columns = matrix.rows([{"label": "jax[conv]", "reports": [report], "seconds": 1}])
    assert [(label, device) for label, device, _ in table] == [
        ("jax[conv]", "cpu"),
        ("jax[conv]", "gpu"),
    ]
    assert columns == [("forward", "float64"), ("forward", "float32"), ("vjp_params", "float32")]


def test_verdicts_distinguish_pass_fail_and_nothing_ran():
    passed = _report("numpy", {("forward", "float64", "cpu"): (3, 0, 0)})
    skipped = _report("numpy", {("forward", "float64", "gpu"): (0, 0, 3)})
    failed = _report(
        "numpy", {("forward", "float64", "cpu"): (2, 1, 0)}, failures=[{"check": "forward"}]
    )
    assert matrix.verdict([{"label": "a", "reports": [passed]}])[0] == 0
    assert matrix.verdict([{"label": "a", "reports": [skipped]}]) == (
        matrix.NOTHING_RAN,
        "NOTHING RAN: every check was skipped",
    )
    assert matrix.verdict([{"label": "a", "reports": [failed]}])[0] == 1
    crashed = {"label": "tf[lc]", "reports": [], "status": 1}
    status, line = matrix.verdict([{"label": "a", "reports": [passed]}, crashed])
    assert status == 1 and "tf[lc] produced no report" in line


def test_run_writes_the_combined_reports(tmp_path, capsys):
    status = matrix.main(["run", "--only", "numpy", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0
    assert out.rstrip().splitlines()[-1].startswith("wrote ")
    summary = json.loads((tmp_path / "conformance.json").read_text())
    assert summary["exit_status"] == 0 and summary["verdict"].startswith("PASSED")
    assert "| numpy | cpu |" in (tmp_path / "conformance.md").read_text()
    assert (tmp_path / "logs" / "conformance-numpy.log").exists()


def test_run_with_an_absent_device_says_nothing_ran(tmp_path):
    args = ["run", "--only", "numpy", "--output-dir", str(tmp_path), "--device", "tpu"]
    assert matrix.main(args) == matrix.NOTHING_RAN


def test_unknown_entry_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        matrix.main(["run", "--only", "nump", "--output-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "unknown entries ['nump']" in capsys.readouterr().err


def test_entries_run_with_this_interpreter():
    command = matrix._command(matrix.PLAN[1], matrix.Path("r.json"), ["--device", "cpu"])
    assert command[0] == sys.executable
    assert command[-2:] == ["--device", "cpu"] and "strategy=conv" in command
