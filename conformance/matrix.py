"""The combined conformance matrix: every backend and strategy, one table, one verdict.

    python -m conformance.matrix run [--device cpu gpu] [--output-dir reports]
    python -m conformance.matrix combine reports/conformance-*.json

`run` checks each entry of `PLAN` in a process of its own (a framework's start-up log goes
to `reports/logs/`, not between the results), prints one line per entry as it finishes,
then the matrix and the verdict, and writes `conformance.json` and `conformance.md`.
Rows are backend x strategy x device, columns check x dtype; a cell reads `passed/total`
and the worst relative error, `FAILED n/total`, or `skipped`. Exit status: 0 when every
row passed, 1 on any failure, 3 when nothing ran at all (every check skipped).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .runner import CHECKS

NOTHING_RAN = 3


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row group of the matrix: a backend adapter with its options, in its own process."""

    label: str
    backend: str
    options: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    needs: str = ""  # the module that must be importable, else the entry is skipped

    @property
    def slug(self) -> str:
        return self.label.replace("[", "-").replace("]", "").replace("=", "-").replace(" ", "")


PLAN = (
    Entry("numpy", "numpy"),
    Entry("torch[conv]", "torch", (("strategy", "conv"),), needs="torch"),
    Entry("torch[lc]", "torch", (("strategy", "lc"),), needs="torch"),
    Entry("jax[conv]", "jax", (("strategy", "conv"),), needs="jax"),
    Entry("jax[lc]", "jax", (("strategy", "lc"),), needs="jax"),
    Entry("tf[conv]", "tf", (("strategy", "conv"),), needs="tensorflow"),
    Entry("tf[lc]", "tf", (("strategy", "lc"),), needs="tensorflow"),
    # The Keras layers under each Keras backend (fixed per process by KERAS_BACKEND).
    *(
        Entry(f"keras[{name}]", "keras", env=(("KERAS_BACKEND", name),), needs=module)
        for name, module in (("tensorflow", "tensorflow"), ("jax", "jax"), ("torch", "torch"))
    ),
)


def _command(entry: Entry, json_path: Path, extra: list[str]) -> list[str]:
    options = [arg for key, value in entry.options for arg in ("--option", f"{key}={value}")]
    return [
        sys.executable,
        "-m",
        "conformance",
        "--backend",
        entry.backend,
        *options,
        "--json",
        str(json_path),
        *extra,
    ]


def run_entry(entry: Entry, output_dir: Path, extra: list[str]) -> dict:
    """Run one entry in a subprocess; its report as a dict (with `label` and `log`)."""
    json_path = output_dir / f"conformance-{entry.slug}.json"
    log_path = output_dir / "logs" / f"conformance-{entry.slug}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.unlink(missing_ok=True)
    if entry.needs and importlib.util.find_spec(entry.needs) is None:
        return {"label": entry.label, "missing": entry.needs, "reports": [], "seconds": 0.0}
    env = {**os.environ, **dict(entry.env), "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    with open(log_path, "w") as log:
        status = subprocess.run(
            _command(entry, json_path, extra), stdout=log, stderr=subprocess.STDOUT, env=env
        ).returncode
    seconds = time.perf_counter() - start
    reports = json.loads(json_path.read_text()) if json_path.exists() else []
    return {
        "label": entry.label,
        "reports": reports,
        "seconds": round(seconds, 1),
        "status": status,
        "log": str(log_path),
    }


def _dtype_order(dtype: str) -> int:
    order = ("float64", "float32", "bfloat16", "float16")
    return order.index(dtype) if dtype in order else len(order)


def rows(results: list[dict]) -> tuple[list[tuple], list[tuple[str, str]]]:
    """(rows, columns): each row (label, device, {(check, dtype): cell}), columns sorted."""
    columns = set()
    table = []
    for result in results:
        by_device: dict = {}
        for report in result["reports"]:
            errors = report.get("max_relative_error", {})
            for check, per_dtype in report.get("matrix", {}).items():
                for dtype, per_device in per_dtype.items():
                    for device, counts in per_device.items():
                        columns.add((check, dtype))
                        cell = dict(counts, error=errors.get(f"{check}/{dtype}/{device}"))
                        by_device.setdefault(device, {})[(check, dtype)] = cell
        for device in sorted(by_device):
            table.append((result["label"], device, by_device[device]))
    check_rank = {check: i for i, check in enumerate(CHECKS)}
    ordered = sorted(
        columns, key=lambda c: (check_rank.get(c[0], len(CHECKS)), c[0], _dtype_order(c[1]))
    )
    return table, ordered


def cell_text(cell: dict | None) -> str:
    if cell is None:
        return ""
    total = cell["passed"] + cell["failed"] + cell["skipped"]
    if cell["failed"]:
        return f"FAILED {cell['failed']}/{total}"
    if not cell["passed"]:
        return "skipped"
    error = "" if cell["error"] is None else f" {cell['error']:.0e}" if cell["error"] else " 0"
    return f"{cell['passed']}/{total}{error}"


def verdict(results: list[dict]) -> tuple[int, str]:
    """(exit status, one line) for the whole matrix."""
    reports = [r for result in results for r in result["reports"]]
    failed = sum(len(r.get("failures", [])) for r in reports)
    broken = [r["label"] for r in results if r.get("status") not in (0, None) and not r["reports"]]
    passed = sum(
        counts["passed"]
        for r in reports
        for per_dtype in r.get("matrix", {}).values()
        for per_device in per_dtype.values()
        for counts in per_device.values()
    )
    missing = [f"{r['label']} ({r['missing']} not installed)" for r in results if "missing" in r]
    note = f"; not run: {', '.join(missing)}" if missing else ""
    if broken:
        return 1, f"FAILED: {', '.join(broken)} produced no report (see its log){note}"
    if failed:
        return 1, f"FAILED: {failed} failing checks in {len(reports)} reports{note}"
    if not passed:
        return NOTHING_RAN, f"NOTHING RAN: every check was skipped{note}"
    return 0, f"PASSED: {passed} checks passed, 0 failed, in {len(reports)} reports{note}"


def markdown(results: list[dict]) -> str:
    table, columns = rows(results)
    header = ["backend", "device", *(f"{check} {dtype}" for check, dtype in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for label, device, cells in table:
        texts = [cell_text(cells.get(column)) for column in columns]
        lines.append("| " + " | ".join([label, device, *texts]) + " |")
    lines.append("")
    lines.append("Cells: passed/total and the worst relative error; tolerances in spec 15.4.")
    seconds = ", ".join(f"{r['label']} {r['seconds']:.0f} s" for r in results if r["reports"])
    if seconds:
        lines.append(f"Time per entry: {seconds}.")
    lines.append("")
    lines.append(verdict(results)[1])
    return "\n".join(lines)


def write(results: list[dict], output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    status, line = verdict(results)
    summary = {"verdict": line, "exit_status": status, "entries": results}
    (output_dir / "conformance.json").write_text(json.dumps(summary, indent=2) + "\n")
    (output_dir / "conformance.md").write_text(markdown(results) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance.matrix", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run every entry of the plan, then combine")
    run_parser.add_argument("--output-dir", default="reports", type=Path)
    run_parser.add_argument(
        "--only", nargs="+", default=None, metavar="LABEL", help="run these entries only"
    )
    combine_parser = commands.add_parser("combine", help="combine existing JSON reports")
    combine_parser.add_argument("reports", nargs="+", type=Path)
    combine_parser.add_argument("--output-dir", default="reports", type=Path)
    args, extra = parser.parse_known_args(argv)

    if args.command == "combine":
        results = []
        for path in args.reports:
            try:
                reports = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as err:
                parser.exit(2, f"conformance.matrix: cannot read report {path}: {err}\n")
            label = reports[0]["backend"] if reports else path.stem
            results.append({"label": label, "reports": reports, "seconds": 0.0})
    else:
        if extra and extra[0] == "--":
            extra = extra[1:]
        plan = PLAN
        if args.only:
            known = {entry.label for entry in PLAN}
            unknown = sorted(set(args.only) - known)
            if unknown:
                parser.exit(
                    2,
                    f"conformance.matrix: unknown entries {unknown}; "
                    f"expected some of {sorted(known)}\n",
                )
            plan = tuple(entry for entry in PLAN if entry.label in args.only)
        results = []
        for entry in plan:
            result = run_entry(entry, args.output_dir, extra)
            results.append(result)
            if "missing" in result:
                print(f"{entry.label:<14} not run: {result['missing']} is not installed")
                continue
            outcome = {0: "ok", NOTHING_RAN: "nothing ran"}.get(result["status"], "FAILED")
            print(
                f"{entry.label:<14} {outcome} in {result['seconds']:.0f} s"
                + ("" if outcome == "ok" else f" (log: {result['log']})"),
                flush=True,
            )
            for report in result["reports"]:
                for failure in report.get("failures", [])[:5]:
                    print(f"    {failure['check']} on {failure['case']}: {failure['message']}")
    write(results, args.output_dir)
    print()
    print(markdown(results))
    print(
        f"\nwrote {args.output_dir / 'conformance.md'} and {args.output_dir / 'conformance.json'}"
    )
    return verdict(results)[0]


if __name__ == "__main__":
    sys.exit(main())
