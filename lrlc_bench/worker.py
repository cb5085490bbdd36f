"""One measurement job in its own process: `python -m lrlc_bench.worker REQUEST.json RESULT.json`.

The request names a task ('time': every timing of one backend; 'memory': the peak memory of
one training step), the backend and the settings. The result is JSON; a backend that cannot
run here (framework not installed, device absent) is reported as unavailable; any other
error ends the process with a traceback, which the parent reports as a failure.
"""

from __future__ import annotations

import json
import os
import sys

from . import backends
from .measure import time_backend, train_peak_memory
from .settings import Settings


def run(request: dict) -> dict:
    settings = Settings.from_dict(request["settings"])
    try:
        backend = backends.load(request["backend"], settings)
    except ModuleNotFoundError as error:
        if error.name not in backends.FRAMEWORKS[request["backend"]]:
            raise  # a broken lrlc package is a failure, not a missing install
        return {"status": "unavailable", "error": f"{type(error).__name__}: {error}"}
    except backends.Unavailable as error:
        return {"status": "unavailable", "error": str(error)}
    if request["task"] == "time":
        load_before = os.getloadavg()
        times = time_backend(backend, settings)
        return {
            "status": "ok",
            "environment": backend.environment(),
            "load_average": {"before": load_before, "after": os.getloadavg()},
            "times": times,
            # Which strategy the backend's 'auto' picks for the fixed layer at each rank
            # (absent where Algorithm 1 is the only one).
            "auto_strategy": {str(rank): backend.chosen_strategy(rank) for rank in settings.ranks}
            if backend.strategies
            else None,
        }
    if request["task"] == "memory":
        return {
            "status": "ok",
            **train_peak_memory(backend, settings, request["op"], request["rank"]),
        }
    raise ValueError(f"unknown task {request['task']!r}; expected 'time' or 'memory'")


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python -m lrlc_bench.worker REQUEST.json RESULT.json")
    with open(argv[0]) as handle:
        request = json.load(handle)
    result = run(request)
    with open(argv[1], "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main(sys.argv[1:])
