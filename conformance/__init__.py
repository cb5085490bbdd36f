"""The lrlc conformance suite: one catalogue, checked against any backend adapter.

    import conformance
    report = conformance.run(conformance.backends.load("torch"))
    assert report.ok, "\\n".join(map(str, report.failures))

`run` is duck-typed: any object with the adapter interface (see `conformance.backends`)
can check itself, no registration needed. Imports no framework at module level.
"""

from lrlc_numpy import __version__

from . import backends
from .cases import Case, case_data, catalogue, random_config
from .runner import (
    CHECKS,
    DTYPES,
    Failure,
    Report,
    check_case,
    format_matrix,
    gradient_conditioning,
    reduction_length,
    relative_error,
    round_to,
    run,
    tolerance,
    write_json,
)

__all__ = [
    "__version__",
    "CHECKS",
    "DTYPES",
    "Case",
    "Failure",
    "Report",
    "backends",
    "case_data",
    "catalogue",
    "check_case",
    "format_matrix",
    "gradient_conditioning",
    "random_config",
    "reduction_length",
    "relative_error",
    "round_to",
    "run",
    "tolerance",
    "write_json",
]
