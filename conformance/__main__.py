"""Command line: `python -m conformance --backend numpy torch --device cpu --json out.json`.

Prints the matrix backend x check x dtype x device and every failure. Exit status: 0 when
every backend passed, 1 on any failure, 3 when a backend ran nothing (every check skipped,
say for --device gpu without a GPU), 2 for a bad command line (one line on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys

from . import backends, format_matrix, run, write_json
from .cases import catalogue
from .runner import DTYPES

FAILED = 1
USAGE = 2
NOTHING_RAN = 3
DEVICES = ("cpu", "gpu", "tpu")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line prints one line, not the usage, and exits 2."""

    def error(self, message):
        self.exit(USAGE, f"{self.prog}: error: {message}\n")


def _seed(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if seed < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return seed


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m conformance", description=__doc__)
    parser.add_argument("--backend", nargs="+", default=["numpy"], choices=backends.NAMES)
    parser.add_argument(
        "--device",
        nargs="+",
        default=None,
        choices=DEVICES,
        help="devices to run on (default: every device the backend finds); requested "
        "devices that are absent are reported as skipped",
    )
    parser.add_argument(
        "--dtype",
        nargs="+",
        default=None,
        choices=DTYPES,
        help="default: all the backend supports; one it lacks is reported as skipped",
    )
    parser.add_argument("--seed", type=_seed, default=0, help="a non-negative integer")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="adapter option, e.g. strategy=lc (repeatable; passed to every backend given)",
    )
    parser.add_argument("--json", default=None, help="also write the report as JSON here")
    return parser


def _arguments(parser, argv):
    """Parse and check the command line before anything runs; every error exits 2."""
    args = parser.parse_args(argv)
    for flag in ("backend", "device", "dtype"):
        values = getattr(args, flag) or []
        repeated = sorted({value for value in values if values.count(value) > 1})
        if repeated:
            parser.error(f"argument --{flag}: {', '.join(repeated)} given more than once")
    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            parser.error(f"argument --option: expected KEY=VALUE, got {item!r}")
        if key in options:
            parser.error(f"argument --option: {key!r} given more than once")
        options[key] = value
    args.options = options
    if args.json is not None and not args.json:
        parser.error("argument --json: expected a file path, got ''")
    if args.json and os.path.isdir(args.json):
        parser.error(f"argument --json: expected a file path, got the directory {args.json!r}")
    return args


def _cases():
    """The catalogue, or the cases named in LRLC_CONFORMANCE_CASES (comma-separated), which
    the test suite uses to run one row in a process of its own."""
    names = os.environ.get("LRLC_CONFORMANCE_CASES")
    if not names:
        return None
    wanted = names.split(",")
    cases = [case for case in catalogue() if case.name in wanted]
    if len(cases) != len(set(wanted)):
        unknown = sorted(set(wanted) - {case.name for case in cases})
        raise SystemExit(
            f"python -m conformance: unknown cases in LRLC_CONFORMANCE_CASES: {unknown}"
        )
    return cases


def main(argv=None) -> int:
    parser = _parser()
    args = _arguments(parser, argv)
    adapters = []
    for name in args.backend:  # every adapter built, so every bad option named, before any run
        try:
            adapters.append(backends.load(name, **args.options))
        except (TypeError, ValueError) as err:
            parser.error(f"argument --option: {err}")
        except ImportError as err:
            parser.error(f"argument --backend: {name!r} cannot be imported ({err})")
    reports = []
    for name, adapter in zip(args.backend, adapters):
        print(
            f"{name}: devices found {list(adapter.devices)}, dtypes {list(adapter.dtypes)}",
            flush=True,
        )
        report = run(
            adapter, dtypes=args.dtype, devices=args.device, seed=args.seed, cases=_cases()
        )
        reports.append(report)
        for failure in report.failures:
            print(failure)
        passed, failed = report.total("passed"), report.total("failed")
        verdict = "OK" if report.ok else "FAILED" if failed else "NOTHING RAN"
        print(
            f"{name}: {verdict} in {report.seconds:.1f} s ({passed} passed, {failed} failed, "
            f"{report.total('skipped')} skipped)",
            flush=True,
        )
    print()
    print(format_matrix(reports))
    if args.json:
        write_json(reports, args.json)
        print(f"\nwrote {args.json}")
    if any(report.failures for report in reports):
        return FAILED
    idle = [name for name, report in zip(args.backend, reports) if not report.total("passed")]
    if idle:
        print(f"\nnothing ran for {', '.join(idle)}: every check was skipped (see the matrix)")
        return NOTHING_RAN
    return 0


if __name__ == "__main__":
    sys.exit(main())
