"""Sessions: `nox -s tests`, `nox -s conformance [-- --device cpu|gpu|tpu]`, `nox -s lint`."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "conformance", "lint"]
nox.options.reuse_existing_virtualenvs = True
# Sessions use the interpreter nox runs on (no pinned version), so `python -m pip install nox`
# followed by `nox -s ...` works with whatever Python >= 3.10 the machine has.

BACKENDS = ("numpy", "torch", "jax", "tf")
EXTRAS = {"numpy": ".", "torch": ".[torch]", "jax": ".[jax]", "tf": ".[tf]"}
STRATEGIES = {"torch": ("conv", "lc"), "jax": ("conv", "lc"), "tf": ("conv", "lc")}


@nox.session
def tests(session):
    """The project's whole test suite: every backend and the experiments harness installed."""
    session.install("-e", ".[all,test,experiments]")
    session.run("pytest", "-q", *session.posargs, env={"LRLC_REQUIRE_ALL_BACKENDS": "1"})


@nox.session
@nox.parametrize("backend", BACKENDS)
def conformance(session, backend):
    """The conformance report for one backend; its venv installs only that backend.

    Backends with two evaluation strategies are checked under each ('conv' is Algorithm 1,
    'lc' the locally connected form). Pass `-- --device cpu gpu` to choose devices; by
    default every device found is used, and requested devices that are absent are reported
    as skipped.
    """
    session.install("-e", EXTRAS[backend])
    for strategy in STRATEGIES.get(backend, (None,)):
        options = [] if strategy is None else ["--option", f"strategy={strategy}"]
        suffix = "" if strategy is None else f"-{strategy}"
        session.run(
            "python",
            "-m",
            "conformance",
            "--backend",
            backend,
            *options,
            "--json",
            f"reports/conformance-{backend}{suffix}.json",
            *session.posargs,
        )


@nox.session
def lint(session):
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def bench(session):
    """The CPU benchmark of issue 7 (minutes, so not a default session): prints the tables and
    the targets verdict, writes reports/bench-cpu.{md,json}. Arguments after `--` go to
    `python -m lrlc_bench` (e.g. `-- --full`, or `-- --device gpu` on a GPU machine)."""
    session.install("-e", ".[all]")
    session.run("python", "-m", "lrlc_bench", "--output-dir", "reports", *session.posargs)


@nox.session
def reproduce(session):
    """The paper's experiments, quick version on the embedded digits (minutes on a laptop CPU).

    Writes runs/<timestamp>/ with the table, figures and every model's config and seed.
    Pass options to `python -m lrlc_experiments run`, e.g. `-- --preset paper` on a GPU.
    """
    session.install("-e", ".[experiments]")
    session.run("python", "-m", "lrlc_experiments", "run", *session.posargs)
