"""Command line: `python -m conformance --backend numpy torch --device cpu --json out.json`.

Prints the matrix backend x check x dtype x device and every failure; exits 1 on failure.
"""

from __future__ import annotations

import argparse
import sys

from . import backends, format_matrix, run, write_json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance", description=__doc__)
    parser.add_argument("--backend", nargs="+", default=["numpy"], choices=backends.NAMES)
    parser.add_argument(
        "--device",
        nargs="+",
        default=None,
        choices=("cpu", "gpu", "tpu"),
        help="devices to run on (default: every device the backend finds); requested "
        "devices that are absent are reported as skipped",
    )
    parser.add_argument(
        "--dtype", nargs="+", default=None, help="default: all the backend supports"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="adapter option, e.g. strategy=lc (repeatable; passed to every backend given)",
    )
    parser.add_argument("--json", default=None, help="also write the report as JSON here")
    args = parser.parse_args(argv)

    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--option expects KEY=VALUE, got {item!r}")
        options[key] = value
    reports = []
    for name in args.backend:
        adapter = backends.load(name, **options)
        print(
            f"{name}: devices found {list(adapter.devices)}, dtypes {list(adapter.dtypes)}",
            flush=True,
        )
        report = run(adapter, dtypes=args.dtype, devices=args.device, seed=args.seed)
        reports.append(report)
        for failure in report.failures:
            print(failure)
        print(
            f"{name}: {'OK' if report.ok else 'FAILED'} in {report.seconds:.1f} s "
            f"({report.total('passed')} passed, {report.total('failed')} failed, "
            f"{report.total('skipped')} skipped)",
            flush=True,
        )
    print()
    print(format_matrix(reports))
    if args.json:
        write_json(reports, args.json)
        print(f"\nwrote {args.json}")
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
