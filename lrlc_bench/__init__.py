"""lrlc_bench: the benchmark harness of issue 7 (`python -m lrlc_bench`, `nox -s bench`).

For each backend, in its own process, it times forward and forward+backward of the
framework's plain convolution (C_in -> C_out), the convolution with K*C_out outputs that
Algorithm 1 runs, the fixed and the input-dependent LRLC layer, and (forward only) the
locally connected layer converted from the fixed one; every figure is also a ratio to the
plain convolution timed in the same process. Peak memory of a training step is measured in
a fresh process per configuration (`lrlc_bench.measure` documents how). The issue's
targets are evaluated from the measurements (`lrlc_bench.report.evaluate_targets`).
"""

from .report import add_ratios, evaluate_targets, markdown
from .settings import OPS, Settings

__all__ = ["OPS", "Settings", "add_ratios", "evaluate_targets", "markdown"]
