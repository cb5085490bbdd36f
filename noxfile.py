"""Sessions: `nox -s tests`, `nox -s conformance [-- --device cpu|gpu|tpu]`, `nox -s lint`,
`nox -s docs` (the API reference), `nox -s bench` and `nox -s reproduce`."""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

nox.options.sessions = ["tests", "conformance", "lint"]
nox.options.reuse_existing_virtualenvs = True
# Sessions use the interpreter nox runs on (no pinned version), so `python -m pip install nox`
# followed by `nox -s ...` works with whatever Python >= 3.10 the machine has.

ROOT = Path(__file__).resolve().parent
# Exact versions for this project's machines; the package metadata keeps the ranges.
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))


def install(session, *requirements):
    session.install(*requirements, *CONSTRAINTS)


@nox.session
def tests(session):
    """The project's whole test suite: every backend and the experiments harness installed."""
    install(session, "-e", ".[all,test,experiments]")
    env = {"LRLC_REQUIRE_ALL_BACKENDS": "1"}
    if session.posargs:
        session.run("pytest", "-q", *session.posargs, env=env)
        return
    # Two processes: XLA's CPU compiler aborted (SIGSEGV, SIGABRT in backend_compile_and_load)
    # in a pytest process that had also loaded TensorFlow and torch, never in one of its own,
    # so the JAX modules run apart (CONTRIBUTING.md).
    jax_modules = [str(path) for path in sorted(Path("tests").glob("test_*.py"))
                   if path.name.startswith(("test_jax", "test_flax"))]  # fmt: skip
    session.run("pytest", "-q", *(f"--ignore={m}" for m in jax_modules), env=env)
    session.run("pytest", "-q", *jax_modules, env=env)
    session.notify("wheel")  # the whole suite: also build the wheel and smoke-test it


@nox.session(reuse_venv=False)
@nox.parametrize("extra", ["", "torch", "jax", "tf"], ids=["base", "torch", "jax", "tf"])
def wheel(session, extra):
    """Build the sdist and the wheel, install the wheel with one extra into a fresh venv and
    smoke-test it from outside the source tree (tests/smoke_wheel.py)."""
    session.install("build")
    dist = Path(session.create_tmp()) / "dist"
    shutil.rmtree(dist, ignore_errors=True)  # only this build's files
    session.run("python", "-m", "build", "--outdir", str(dist), str(ROOT), silent=True)
    (sdist,) = dist.glob("lrlc-*.tar.gz")
    (wheel_file,) = dist.glob("lrlc-*.whl")
    session.log(f"built {sdist.name} and {wheel_file.name}")
    install(session, f"{wheel_file}[{extra}]" if extra else str(wheel_file))
    session.chdir(session.create_tmp())
    session.run("python", str(ROOT / "tests" / "smoke_wheel.py"), extra or "numpy")


@nox.session
def conformance(session):
    """The conformance report: every backend and strategy, each in its own process, then one
    combined matrix (reports/conformance.{md,json}) printed last.

    Pass `-- --device cpu gpu` to choose devices (default: every device found; a requested
    device that is absent is reported as skipped) or `-- --only numpy torch[lc]` for some rows.
    """
    install(session, "-e", ".[all]")
    session.run(
        "python", "-m", "conformance.matrix", "run", "--output-dir", "reports", *session.posargs
    )


@nox.session
def docs(session):
    """The API reference of every public name, as HTML in docs/api/ (built offline from the
    docstrings by pdoc); open docs/api/index.html."""
    install(session, "-e", ".[all,docs]")
    session.run(
        "pdoc",
        "--output-directory",
        "docs/api",
        "lrlc_numpy",
        "lrlc_torch",
        "lrlc_jax",
        "lrlc_tf",
        "conformance",
        env={"TF_CPP_MIN_LOG_LEVEL": "2"},
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
    install(session, "-e", ".[all]")
    session.run("python", "-m", "lrlc_bench", "--output-dir", "reports", *session.posargs)


@nox.session
def reproduce(session):
    """The paper's experiments, quick version on the embedded digits (minutes on a laptop CPU).

    Writes runs/<timestamp>/ with the table, figures and every model's config and seed.
    Pass options to `python -m lrlc_experiments run`, e.g. `-- --preset paper` on a GPU.
    """
    install(session, "-e", ".[experiments]")
    session.run("python", "-m", "lrlc_experiments", "run", *session.posargs)
