"""Smoke test of an installed lrlc wheel: `python smoke_wheel.py BACKEND` (numpy, torch, jax
or tf), run from outside the source tree by `nox -s wheel`.

Checks that the packages come from the installed wheel, share one version, and that the
backend computes one conformance case correctly through its public API.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from pathlib import Path

PACKAGES = {"numpy": "lrlc_numpy", "torch": "lrlc_torch", "jax": "lrlc_jax", "tf": "lrlc_tf"}


def main(backend: str) -> int:
    if backend not in PACKAGES:
        print(f"smoke_wheel: unknown backend {backend!r}; expected one of {sorted(PACKAGES)}")
        return 2
    version = importlib.metadata.version("lrlc")
    for name in ("lrlc_numpy", "conformance", PACKAGES[backend]):
        module = importlib.import_module(name)
        location = Path(module.__file__).resolve()
        assert "site-packages" in location.parts, f"{name} imported from {location}"
        if name != "conformance":
            assert module.__version__ == version, (name, module.__version__, version)
    import conformance

    case = conformance.catalogue()[0]
    report = conformance.check_case(conformance.backends.load(backend), case, seed=0)
    assert report.ok, "\n".join(map(str, report.failures))
    print(f"lrlc {version} wheel, {backend}: {report.total('passed')} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "numpy"))
