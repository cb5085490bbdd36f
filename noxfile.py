"""Sessions: `nox -s tests`, `nox -s conformance [-- --device cpu|gpu|tpu]`, `nox -s lint`."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "conformance", "lint"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
BACKENDS = ("numpy", "torch", "jax", "tf")
EXTRAS = {"numpy": ".", "torch": ".[torch]", "jax": ".[jax]", "tf": ".[tf]"}


@nox.session(python=PYTHON)
def tests(session):
    """The project's whole test suite, every backend installed."""
    session.install("-e", ".[all,test]")
    session.run("pytest", "-q", *session.posargs, env={"LRLC_REQUIRE_ALL_BACKENDS": "1"})


@nox.session(python=PYTHON)
@nox.parametrize("backend", BACKENDS)
def conformance(session, backend):
    """The conformance report for one backend; its venv installs only that backend.

    Pass `-- --device cpu gpu` to choose devices; by default every device found is used
    and absent ones requested explicitly are reported as skipped.
    """
    session.install("-e", EXTRAS[backend])
    session.run(
        "python",
        "-m",
        "conformance",
        "--backend",
        backend,
        "--json",
        f"reports/conformance-{backend}.json",
        *session.posargs,
    )


@nox.session(python=PYTHON)
def lint(session):
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
