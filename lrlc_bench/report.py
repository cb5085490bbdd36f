"""From raw measurements to ratios, the issue's targets, and markdown.

Everything here works on the JSON-ready result dict that `lrlc_bench.__main__` assembles,
so a saved result can be re-reported without re-measuring.
"""

from __future__ import annotations

from .settings import MEMORY_OPS, OP_LABELS, OPS

MODE_LABELS = {"forward": "forward", "train": "fwd+bwd"}


def add_ratios(times: list[dict]) -> None:
    """Set each record's `ratio_to_conv`: its median over the plain convolution's median in
    the same mode, measured in the same process in the same rank block."""
    conv = {(r["rank"], r["mode"]): r["median_s"] for r in times if r["op"] == "conv"}
    for record in times:
        record["ratio_to_conv"] = record["median_s"] / conv[record["rank"], record["mode"]]


def _medians(results: dict) -> dict:
    """{(backend, op, rank, mode): median seconds} over every backend that ran."""
    return {
        (name, r["op"], r["rank"], r["mode"]): r["median_s"]
        for name, backend in results["backends"].items()
        if backend["status"] == "ok"
        for r in backend["times"]
    }


def _memory(results: dict) -> dict:
    """{(backend, op, rank): peak bytes of one training step}."""
    return {
        (name, m["op"], m["rank"]): m["peak_bytes"]
        for name, backend in results["backends"].items()
        if backend["status"] == "ok"
        for m in backend.get("memory", [])
        if m.get("status") == "ok"
    }


def _ratio_checks(values: dict, numerator, denominator, limit: float) -> list[dict]:
    """One check per (backend, rank) where both figures exist: numerator / denominator."""
    checks = []
    for key, top in values.items():
        name, op, rank = key[:3]
        if (op, *key[3:]) != numerator:
            continue
        bottom = values.get((name, denominator[0], rank, *denominator[1:]))
        if bottom:
            value = top / bottom
            checks.append(
                {
                    "backend": name,
                    "rank": rank,
                    "value": value,
                    "limit": limit,
                    "met": value <= limit,
                }
            )
    return checks


def _spread_checks(medians: dict, limit: float) -> list[dict]:
    """Each backend's time over the fastest backend's, for every LRLC configuration
    (op, rank, mode) that at least two backends measured."""
    configurations: dict[tuple, dict[str, float]] = {}
    for (name, op, rank, mode), seconds in medians.items():
        if op in ("lrlc", "lrlc_lc", "lrlc_input_dependent", "lc"):
            configurations.setdefault((op, rank, mode), {})[name] = seconds
    checks = []
    for (op, rank, mode), by_backend in configurations.items():
        if len(by_backend) < 2:
            continue
        fastest = min(by_backend.values())
        for name, seconds in by_backend.items():
            value = seconds / fastest
            checks.append(
                {
                    "backend": name,
                    "rank": rank,
                    "op": op,
                    "mode": mode,
                    "value": value,
                    "limit": limit,
                    "met": value <= limit,
                }
            )
    return checks


def _chosen_strategy_checks(results: dict, medians: dict, rank: int, limit: float):
    """Target 2: the fixed layer under the strategy the backend picks automatically, over the
    K·C_out convolution, at `rank`. Returns (checks, backends without a second strategy)."""
    checks, missing = [], []
    for name, backend in results["backends"].items():
        if backend["status"] != "ok":
            continue
        choice = backend.get("auto_strategy")
        if not choice:
            missing.append(name)
            continue
        if str(rank) not in choice:
            continue
        strategy = choice[str(rank)]
        op = "lrlc_lc" if strategy == "lc" else "lrlc"
        chosen = medians.get((name, op, rank, "train"))
        floor = medians.get((name, "conv_k", rank, "train"))
        if chosen and floor:
            value = chosen / floor
            checks.append(
                {
                    "backend": name,
                    "rank": rank,
                    "strategy": strategy,
                    "value": value,
                    "limit": limit,
                    "met": value <= limit,
                }
            )
    return checks, missing


def _verdict(target_id: str, text: str, checks: list[dict], missing=()) -> dict:
    """'missed' if any check is; else 'not implemented yet' if a backend lacks what the
    target needs (`missing`); else 'not measured' without checks; else 'met'."""
    target = {"id": target_id, "target": text, "checks": checks, "missing": list(missing)}
    misses = [c for c in checks if not c["met"]]
    if checks:
        worst = max(checks, key=lambda c: c["value"] / c["limit"])
        target.update(
            misses=len(misses), worst=worst, over_limit=worst["value"] / worst["limit"] - 1
        )
    if misses:
        return {**target, "status": "missed"}
    if missing:
        return {**target, "status": "not implemented yet"}
    return {**target, "status": "met" if checks else "not measured"}


def evaluate_targets(results: dict) -> list[dict]:
    """The issue's targets, each 'met', 'missed' (with the worst case), 'not measured' or
    'not implemented yet'. A target is met only when every one of its checks is."""
    medians, memory = _medians(results), _memory(results)
    return [
        _verdict(
            "1",
            "fixed LRLC by Alg. 1: fwd+bwd ≤ 1.15 × conv K·C_out fwd+bwd, every K",
            _ratio_checks(medians, ("lrlc", "train"), ("conv_k", "train"), 1.15),
        ),
        _verdict(
            "2",
            "second strategy (LC form), chosen by a cost rule: at K = 16 the chosen "
            "strategy's fwd+bwd ≤ 1/3 × conv K·C_out fwd+bwd",
            *_chosen_strategy_checks(results, medians, 16, 1 / 3),
        ),
        _verdict(
            "3",
            "converted LC forward ≤ 2 × conv C_out forward",
            _ratio_checks(medians, ("lc", "forward"), ("conv", "forward"), 2.0),
        ),
        _verdict(
            "4",
            "input-dep. LRLC fwd+bwd ≤ 1.3 × fixed LRLC by Alg. 1 fwd+bwd, same K",
            _ratio_checks(medians, ("lrlc_input_dependent", "train"), ("lrlc", "train"), 1.3),
        ),
        _verdict(
            "5a",
            "each backend within 1.5 × of the fastest on every LRLC configuration",
            _spread_checks(medians, 1.5),
        ),
        _verdict(
            "5b",
            "peak memory of a fixed LRLC (Alg. 1) training step ≤ 1.2 × the conv K·C_out step's",
            _ratio_checks(memory, ("lrlc",), ("conv_k",), 1.2),
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Markdown


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.0f} MiB"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _describe(check: dict) -> str:
    where = f"{check['backend']} K={check['rank']}"
    if "op" in check:
        where += f" {OP_LABELS[check['op']]} {MODE_LABELS[check['mode']]}"
    if "strategy" in check:
        where += f", strategy {check['strategy']!r}"
    return f"{check['value']:.2f} ({where})"


def targets_markdown(targets: list[dict]) -> list[str]:
    rows = []
    for t in targets:
        if t["status"] == "missed":
            verdict = (
                f"**missed** in {t['misses']} of {len(t['checks'])} cases, worst "
                f"{_describe(t['worst'])}: {t['over_limit']:.0%} over the limit"
            )
        elif t["status"] == "met":
            verdict = (
                f"met in all {len(t['checks'])} cases "
                f"(closest {_describe(t['worst'])}, limit {t['worst']['limit']:.3g})"
            )
        else:
            verdict = t["status"]
        if t["missing"]:
            if t["status"] != "not implemented yet":
                verdict += "; not implemented yet"
            verdict += f" in {', '.join(t['missing'])}"
            if t["status"] == "not implemented yet" and t["checks"]:
                verdict += "; measured: " + ", ".join(map(_describe, t["checks"]))
        rows.append([t["id"], t["target"], verdict])
    return _table(["#", "target", "verdict"], rows)


def _context(results: dict) -> list[str]:
    """Machine, versions, thread settings and load: what a reader needs to weigh the numbers."""
    m = results["machine"]
    lines = [f"- Machine: {m['cpu_model']}, {m['cpu_count']} CPUs; Python {m['python']}."]
    if results.get("source"):
        lines.append(f"- Code: git {results['source']}, run {results['date']}.")
    for name, backend in results["backends"].items():
        if backend["status"] != "ok":
            lines.append(f"- {name}: {backend['status']} ({backend['error']})")
            continue
        env = backend["environment"]
        versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        threads = ", ".join(f"{k}={v!r}" for k, v in env["threads"].items())
        extra = f", jit_compile={env['jit_compile']}" if "jit_compile" in env else ""
        if "device_name" in env:
            extra += f"; device {env['device_name']}"
        if "float32" in env:
            extra += f"; float32: {env['float32']}"
        if "lrlc_path" in env:
            extra += f"; lrlc_torch path: {env['lrlc_path']}"
        if "compile" in env:
            extra += f"; {env['compile']}"
        load = backend["load_average"]
        firsts = [r["first_s"] for r in backend["times"] if r.get("first_s") is not None]
        if firsts:
            extra += (
                f"; first calls (compiles included) {_ms(sum(firsts))} in all, the longest "
                f"{_ms(max(firsts))}"
            )
        lines.append(
            f"- {name}: {versions}; threads {threads}{extra}; 1-min load average "
            f"{load['before'][0]:.1f} → {load['after'][0]:.1f} while timing."
        )
    return lines


def _memory_methods(backends: dict) -> str:
    """Each memory method with the backends that used it, e.g. 'A (torch, jax); B (tf)'."""
    users: dict[str, list[str]] = {}
    for name, backend in backends.items():
        for method in dict.fromkeys(
            m["method"] for m in backend.get("memory", []) if "method" in m
        ):
            users.setdefault(method, []).append(name)
    return "; ".join(f"{method} ({', '.join(names)})" for method, names in users.items())


def markdown(results: dict) -> str:
    """The timing table, the memory table and the targets, as one markdown text."""
    s = results["settings"]
    lines = [
        f"Device {s['device']}, batch {s['batch']}, {'×'.join(map(str, s['input_size']))} "
        f"input, {s['in_channels']} → {s['out_channels']} channels, "
        f"{'×'.join([str(s['kernel_size'])] * len(s['input_size']))} kernel, padding "
        f"'{s['padding']}', float32. Median of ≥ "
        f"{s['min_runs']} runs (more until {s['budget_s']} s) after {s['warmup']} warm-up; "
        "in brackets, the ratio to the plain convolution measured in the same process.",
        "",
    ]
    rows = []
    ok = {n: b for n, b in results["backends"].items() if b["status"] == "ok"}
    cells = {(name, r["op"], r["rank"], r["mode"]): r for name, b in ok.items() for r in b["times"]}
    for rank in s["ranks"]:
        for mode in MODE_LABELS:
            for name, backend in ok.items():
                auto = (backend.get("auto_strategy") or {}).get(str(rank), "—")
                row = [name, str(rank), MODE_LABELS[mode]]
                for op in OPS:
                    record = cells.get((name, op, rank, mode))
                    if record is None:
                        row.append("—")
                    elif op == "conv":
                        row.append(_ms(record["median_s"]))
                    else:
                        row.append(f"{_ms(record['median_s'])} ({record['ratio_to_conv']:.2f}×)")
                rows.append([*row, auto])
    header = ["backend", "K", "pass", *(OP_LABELS[op] for op in OPS), "auto picks"]
    lines += _table(header, rows)
    memory_rows = []
    for rank in s["ranks"]:
        for name, backend in ok.items():
            peaks = {
                m["op"]: m["peak_bytes"]
                for m in backend.get("memory", [])
                if m["rank"] == rank and m["status"] == "ok"
            }
            if not peaks:
                continue
            row = [name, str(rank)]
            row += [_mib(peaks[op]) if op in peaks else "—" for op in MEMORY_OPS]
            if peaks.get("conv_k") and "lrlc" in peaks:
                row.append(f"{peaks['lrlc'] / peaks['conv_k']:.2f}")
            else:
                row.append("—")
            memory_rows.append(row)
    if memory_rows:
        header = ["backend", "K", *(OP_LABELS[op] for op in MEMORY_OPS), "Alg. 1 / conv K·C_out"]
        lines += [
            "",
            "Peak memory of one training step (fwd+bwd) above the memory held before it:",
            "",
            *_table(header, memory_rows),
            "",
            "Measured by: " + _memory_methods(ok) + ".",
        ]
    lines += ["", *_context(results)]
    lines += ["", "Targets (issue 7):", "", *targets_markdown(results["targets"])]
    return "\n".join(lines) + "\n"
