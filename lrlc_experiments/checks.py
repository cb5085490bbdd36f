"""Argument checks shared by the configs and the command line: each raises TypeError or
ValueError naming the argument, the value received and what was expected."""

from __future__ import annotations

import dataclasses
import math
import numbers


def check_type(name: str, value, expected: type | tuple[type, ...]) -> None:
    """`value` is an instance of `expected` (a bool passes only where bool is expected)."""
    expected = expected if isinstance(expected, tuple) else (expected,)
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        names = " or ".join(t.__name__ for t in expected)
        raise TypeError(f"{name} must be {names}, got {value!r} ({type(value).__name__})")


def check_int(name: str, value, *, minimum: int | None = None) -> None:
    """An integer (not a bool, not a float) no smaller than `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_number(name: str, value, *, positive: bool = False) -> None:
    """A finite real number (not a bool), strictly positive when `positive`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or (positive and value <= 0):
        expected = "a finite number > 0" if positive else "a finite number"
        raise ValueError(f"{name} must be {expected}, got {value}")


def check_mapping(where: str, value) -> dict:
    if not isinstance(value, dict):
        raise TypeError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def build_dataclass(cls, fields: dict, where: str):
    """`cls(**fields)` after checking the keys against the dataclass's fields; any error names
    `where` (a file and key) first."""
    names = [f.name for f in dataclasses.fields(cls)]
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    unknown = sorted(set(fields) - set(names))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected some of {names}")
    missing = [name for name in required if name not in fields]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")
    try:
        return cls(**fields)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{where}: {err}") from None
