"""Run the catalogue against one backend adapter and collect a report.

Every comparison is against `lrlc_numpy` evaluated in float64 on the *same* inputs the
backend saw (rounded to the backend's dtype first), so the measured error is the
backend's arithmetic error only. The tolerance rule is spec section 15.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

import lrlc_numpy

from .cases import Case, case_data, catalogue

CHECKS = (
    "forward",
    "vjp_input",
    "vjp_params",
    "conversion",
    "lc_forward",
    "checkpoint",
    "init",
)
# Checks of files and initial values, which take no dtype or device: run in float64 on CPU.
_ONCE_PER_CASE = ("checkpoint", "init")

# Until every backend has a mixed basis (spec section 16), its cases run only for adapters
# that declare `supports_mixed_basis = True`, and are reported as skipped for the others.
MIXED_GATE = "supports_mixed_basis"
# Likewise 1-D and 3-D cases (spec section 17) run for adapters whose `spatial_dims` names
# their rank; an adapter without the attribute runs 2-D layers only.
SPATIAL_GATE = "spatial_dims"

_EPS = {
    "float64": float(np.finfo(np.float64).eps),
    "float32": float(np.finfo(np.float32).eps),
    "float16": float(np.finfo(np.float16).eps),
    "bfloat16": 2.0**-7,
}
# The dtypes the suite knows a tolerance for (spec section 15.4).
DTYPES = tuple(_EPS)


def _check_dtype(dtype, where: str) -> None:
    if not (isinstance(dtype, str) and dtype in DTYPES):
        raise ValueError(f"{where}: unknown dtype {dtype!r}; expected one of {DTYPES}")


def _check_seed(seed, where: str) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"{where}: seed must be a non-negative int, got {seed!r}")
    if seed < 0:
        raise ValueError(f"{where}: seed must be a non-negative int, got {seed!r}")


def _names(values, what: str, where: str) -> tuple:
    """A list of names as a tuple; a bare string would be read letter by letter, so it is
    refused, as is anything but a list or tuple of strings."""
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise TypeError(f"{where}: {what} must be a list of names, got {values!r}")
    if not all(isinstance(value, str) for value in values):
        raise TypeError(f"{where}: {what} must be a list of names, got {values!r}")
    return tuple(values)


# ---------------------------------------------------------------------------------------------
# Tolerance rule (spec section 15)


def reduction_length(config, batch: int) -> int:
    """Length n of the longest chain of sums an output or gradient element accumulates.

    The forward pass sums kh*kw*C_in*K products per output (kh*kw*C_out*K for dx; for a
    mixed basis, the sum of every basis's kh*kw times C); parameter gradients sum over up to
    B*H*W positions (the larger of the input and output grids) times the widest channel
    count (C_out, or 6K inside the input-dependent network). In n-D (spec section 17.5)
    kh*kw is the window's volume and H*W the grid's.
    """
    taps = sum(math.prod(kernel) for kernel in config.kernel_sizes)
    grid = max(np.prod(config.input_size), np.prod(config.output_size))
    window = taps * max(config.in_channels, config.out_channels)
    positions = batch * int(grid) * max(config.out_channels, 6 * config.rank)
    return window + positions


def rounding_stages(config) -> int:
    """Number of chained operations whose results are stored in the working dtype."""
    return 12 if config.input_dependent else 4


def _is_16bit(dtype: str) -> bool:
    return dtype not in ("float64", "float32")


def tolerance(dtype: str, config, batch: int) -> float:
    """Allowed max|got - want| / max(1, max|want|).

    float32/float64 accumulate in the working dtype: rounding errors of a length-n sum grow
    like eps * sqrt(n), so tol = 8 eps sqrt(n). 16-bit types accumulate in float32 on
    every framework, so their error is the rounding of each stored intermediate:
    tol = 8 eps sqrt(stages).
    """
    _check_dtype(dtype, "tolerance")
    eps = _EPS[dtype]
    if not _is_16bit(dtype):
        return 8.0 * eps * math.sqrt(reduction_length(config, batch))
    return 8.0 * eps * math.sqrt(rounding_stages(config))


def gradient_conditioning(config, x, params) -> float:
    """Factor >= 1 by which gradient tolerances grow where the math is ill-conditioned.

    The 'l2' normalisation w = w~ / |w~| has a Jacobian of size 1 / |w~|: its gradient is a
    difference of terms of size |dL/dw| / |w~| whose result may be far smaller (exactly 0
    for K = 1), so any implementation's rounding error scales with 1 / |w~|. The factor is
    1 / (smallest logit-vector norm of the case), floored at 1; softmax and 'none' have none.
    """
    if config.normalize != "l2":
        return 1.0
    if config.input_dependent:
        logits, _ = lrlc_numpy.reference.g_forward(x, params, config)
    else:
        logits = lrlc_numpy.reference.fixed_logits(params, config)
    smallest = float(np.sqrt((np.asarray(logits) ** 2).sum(axis=-1)).min())
    return max(1.0, 1.0 / max(smallest, 1e-300))


def round_to(array, dtype: str) -> np.ndarray:
    """`array` rounded to `dtype` (round to nearest even) and returned as float64."""
    _check_dtype(dtype, "round_to")
    array = np.asarray(array, dtype=np.float64)
    if dtype == "bfloat16":
        bits = array.astype(np.float32).view(np.uint32).astype(np.uint64)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.astype(np.uint32).view(np.float32).astype(np.float64)
    return array.astype(dtype).astype(np.float64)


def relative_error(got, want) -> float:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise ValueError(f"shape {got.shape} differs from the reference's {want.shape}")
    if not np.all(np.isfinite(got)):
        return math.inf
    return float(
        np.max(np.abs(got - want), initial=0.0) / max(1.0, np.max(np.abs(want), initial=0.0))
    )


# Half-width of the band around the ReLU's kink, in units of eps * rho (spec section 15.4).
KINK_BAND = 4.0


def relu_kink_units(config, x, params, dtype: str) -> np.ndarray:
    """Squeeze units (B, H_out, W_out, 3K) of g whose pre-activation sits at the ReLU's kink.

    A unit's pre-activation z is a sum of products; in a 16-bit dtype its rounding error
    grows like eps * rho, with rho the root of z evaluated on squared inputs and parameters
    (the sum of squares of its terms, averaging steps keeping their weights). Within
    |z| < KINK_BAND * eps * rho a correct backend may land on the other side of 0, where the
    ReLU's derivative jumps (spec section 15.4).
    """
    g_forward = lrlc_numpy.reference.g_forward
    _, cache = g_forward(x, params, config)
    _, squared = g_forward(x**2, {name: value**2 for name, value in params.items()}, config)
    rho = np.sqrt(squared["pre_squeeze"])
    return np.abs(cache["pre_squeeze"]) < KINK_BAND * _EPS[dtype] * rho


# ---------------------------------------------------------------------------------------------
# Report


@dataclasses.dataclass
class Failure:
    backend: str
    check: str
    case: str
    dtype: str
    device: str
    seed: int
    error: float | None
    tolerance: float | None
    message: str

    def __str__(self) -> str:
        measured = (
            "" if self.error is None else f" max error {self.error:.3e} > tol {self.tolerance:.3e};"
        )
        return (
            f"[{self.backend}] {self.check} FAILED on {self.case} "
            f"(dtype={self.dtype}, device={self.device}, seed={self.seed}):"
            f"{measured} {self.message}"
        )


@dataclasses.dataclass
class Report:
    backend: str
    failures: list[Failure] = dataclasses.field(default_factory=list)
    # (check, dtype, device) -> Counter(passed=..., failed=..., skipped=...)
    counts: dict = dataclasses.field(default_factory=dict)
    skipped_reasons: dict = dataclasses.field(default_factory=dict)
    max_error: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures and self.total("passed") > 0

    def total(self, outcome: str) -> int:
        return sum(c[outcome] for c in self.counts.values())

    @property
    def matrix(self) -> dict:
        """{backend: {check: {dtype: {device: {passed, failed, skipped}}}}}."""
        out: dict = {}
        for (check, dtype, device), counter in sorted(self.counts.items()):
            cell = {k: counter[k] for k in ("passed", "failed", "skipped")}
            out.setdefault(self.backend, {}).setdefault(check, {}).setdefault(dtype, {})[device] = (
                cell
            )
        return out

    def record(self, check, dtype, device, outcome, error=None, count=1):
        self.counts.setdefault((check, dtype, device), Counter())[outcome] += count
        if error is not None:
            key = (check, dtype, device)
            self.max_error[key] = max(self.max_error.get(key, 0.0), error)

    def skip(self, check, dtype, device, why, count=1):
        self.record(check, dtype, device, "skipped", count=count)
        reasons = self.skipped_reasons.get((check, dtype, device), "")
        if why not in reasons.split("; "):
            self.skipped_reasons[(check, dtype, device)] = f"{reasons}; {why}" if reasons else why

    def to_json(self) -> dict:
        return {
            "backend": self.backend,
            "ok": self.ok,
            "seconds": round(self.seconds, 2),
            "matrix": self.matrix[self.backend] if self.counts else {},
            "max_relative_error": {
                "/".join(key): value for key, value in sorted(self.max_error.items())
            },
            "skipped": {"/".join(key): why for key, why in sorted(self.skipped_reasons.items())},
            "failures": [dataclasses.asdict(f) for f in self.failures],
        }


def format_matrix(reports) -> str:
    """A markdown table: backend x check x dtype x device with pass/fail/skip counts."""
    lines = [
        "| backend | check | dtype | device | passed | failed | skipped | max rel. error |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for report in reports:
        for (check, dtype, device), c in sorted(report.counts.items()):
            err = report.max_error.get((check, dtype, device))
            err_text = "" if err is None else f"{err:.1e}"
            lines.append(
                f"| {report.backend} | {check} | {dtype} | {device} | {c['passed']} "
                f"| {c['failed']} | {c['skipped']} | {err_text} |"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Checks


class _NotApplicable(Exception):
    """The adapter cannot run this check in the requested dtype or device."""


class _CheckFailed(Exception):
    def __init__(self, error, tol, message):
        super().__init__(message)
        self.error, self.tol, self.message = error, tol, message


def _compare(label, got, want, tol):
    try:
        err = relative_error(got, want)
    except ValueError as exc:
        raise _CheckFailed(None, tol, f"{label}: {exc}") from None
    if not err <= tol:
        raise _CheckFailed(err, tol, f"{label} differs from the reference")
    return err


def check_data(case: Case, seed: int, dtype: str):
    """(x, params, dy) that both sides see: `case_data` rounded to `dtype`. For 16-bit dtypes
    and input-dependent layers, dy is 0 at every output position that holds one of the
    `relu_kink_units`: a unit feeds the output at its own position only, so then no gradient
    reaches a unit whose ReLU side is decided by rounding (spec section 15.4)."""
    x, params, dy = case_data(case, seed)
    x = round_to(x, dtype)
    params = {name: round_to(value, dtype) for name, value in params.items()}
    dy = round_to(dy, dtype)
    if _is_16bit(dtype) and case.config.input_dependent:
        dy[relu_kink_units(case.config, x, params, dtype).any(axis=-1)] = 0.0
    return x, params, dy


def _check_forward(backend, case, x, params, dy, dtype, device, tol):
    want = lrlc_numpy.forward(x, params, case.config)
    got = backend.forward(case.config, params, x, dtype=dtype, device=device)
    return _compare("output", got, want, tol)


def _check_vjp(backend, case, x, params, dy, dtype, device, tol, part):
    if not dy.any():
        raise _NotApplicable("every output position holds a squeeze unit at the ReLU's kink")
    want_dx, want_dp = lrlc_numpy.vjp(x, params, case.config, dy)
    got_dx, got_dp = backend.vjp(case.config, params, x, dy, dtype=dtype, device=device)
    if part == "input":
        return _compare("dL/dx", got_dx, want_dx, tol)
    if set(got_dp) != set(want_dp):
        raise _CheckFailed(
            None,
            tol,
            f"gradient names {sorted(got_dp)} differ from the neutral names {sorted(want_dp)}",
        )
    return max(_compare(f"dL/d[{name}]", got_dp[name], want_dp[name], tol) for name in want_dp)


def _call(method, *args, dtype, device):
    """Call a conversion method of the adapter. The contract's signatures for these two take
    no dtype/device; adapters may add them, and then get the case's dtype and device."""
    accepted = inspect.signature(method).parameters
    if "dtype" in accepted and "device" in accepted:
        return method(*args, dtype=dtype, device=device)
    if (dtype, device) != ("float64", "cpu"):
        raise _NotApplicable(f"the adapter's {method.__name__} takes no dtype/device arguments")
    return method(*args)


def _check_conversion(backend, case, x, params, dy, dtype, device, tol):
    x_arg = x if case.config.input_dependent else None
    want_k, want_b = lrlc_numpy.to_locally_connected(params, case.config, x_arg)
    got_k, got_b = _call(
        backend.to_locally_connected, case.config, params, x_arg, dtype=dtype, device=device
    )
    return max(_compare("kernel", got_k, want_k, tol), _compare("bias", got_b, want_b, tol))


def _check_lc_forward(backend, case, x, params, dy, dtype, device, tol):
    x_arg = x if case.config.input_dependent else None
    kernel, bias = lrlc_numpy.to_locally_connected(params, case.config, x_arg)
    kernel, bias = round_to(kernel, dtype), round_to(bias, dtype)
    want = lrlc_numpy.locally_connected(x, kernel, bias, case.config)
    got = _call(backend.lc_forward, kernel, bias, x, case.config, dtype=dtype, device=device)
    return _compare("locally connected output", got, want, tol)


def _check_checkpoint(backend, case, x, params, dy, dtype, device, tol):
    """Both directions through the file, exact: backend writes -> reference reads, and back."""
    with tempfile.TemporaryDirectory() as tmp:
        written = Path(tmp) / "from_backend.safetensors"
        backend.save_checkpoint(written, case.config, params)
        loaded, config = lrlc_numpy.load_params(written)
        _same_checkpoint("backend -> reference", loaded, config, params, case.config)
        reference_file = Path(tmp) / "from_reference.safetensors"
        lrlc_numpy.save_params(reference_file, params, case.config)
        loaded, config = backend.load_checkpoint(reference_file)
        _same_checkpoint("reference -> backend", loaded, config, params, case.config)
    return 0.0


def _same_checkpoint(direction, loaded, config, params, want_config):
    if config != want_config:
        raise _CheckFailed(None, 0.0, f"{direction}: config {config} != {want_config}")
    if set(loaded) != set(params):
        raise _CheckFailed(None, 0.0, f"{direction}: names {sorted(loaded)} != {sorted(params)}")
    for name, value in params.items():
        got = np.asarray(loaded[name])
        if got.shape != value.shape or not np.array_equal(got.astype(np.float64), value):
            raise _CheckFailed(None, 0.0, f"{direction}: tensor {name!r} is not bit-exact")


# Uniform initial values (spec section 15.3, `init`): the largest |value| of n draws from
# U(-a, a) stays below a (1 - delta) with probability (1 - delta / 2)^n; delta makes that
# INIT_FALSE_ALARM for each side of each tensor.
INIT_FALSE_ALARM = 1e-9
# A backend may build its default layer in float32: a constant is then exact once rounded to
# float32, and the uniform draws and the normalised weights carry that rounding.
_FLOAT32_EPS = 2.0**-23
INIT_WEIGHTS_TOL = 8 * _FLOAT32_EPS


def init_span(n: int) -> float:
    """delta: n uniform draws must reach beyond a (1 - delta) on each side. At delta >= 1
    (n < 30) even a draw of one sign is likelier than the false alarm: no requirement."""
    return 2.0 * (1.0 - INIT_FALSE_ALARM ** (1.0 / n))


def _uniform_problem(value, limit):
    """Why `value` does not look like draws from U(-limit, limit), or None."""
    bound = limit * (1 + 2 * _FLOAT32_EPS)
    if np.max(np.abs(value)) > bound:
        return f"max |value| {np.max(np.abs(value)):.6g} exceeds the limit {limit:.6g}"
    if value.size > 1 and value.min() == value.max():
        return f"every value is {value.min():.6g}; expected uniform draws"
    reach = limit * (1 - init_span(value.size))
    if reach > 0 and (value.max() < reach or value.min() > -reach):
        return (
            f"values span [{value.min():.6g}, {value.max():.6g}]; {value.size} draws from "
            f"U(-{limit:.6g}, {limit:.6g}) reach beyond +-{reach:.6g} (false alarm "
            f"{INIT_FALSE_ALARM:g} per side)"
        )
    return None


def _check_init(backend, case, x, params, dy, dtype, device, tol, *, seed):
    """The backend's default initial parameters against `lrlc_numpy.initial_value`."""
    config = case.config
    got = backend.init_params(config, seed=seed)
    shapes = lrlc_numpy.param_shapes(config)
    if set(got) != set(shapes):
        raise _CheckFailed(
            None, 0.0, f"initial names {sorted(got)} differ from the neutral names {sorted(shapes)}"
        )
    for name, shape in shapes.items():
        value = np.asarray(got[name], dtype=np.float64)
        if value.shape != shape:
            raise _CheckFailed(None, 0.0, f"initial {name!r} has shape {value.shape}; want {shape}")
        rule = lrlc_numpy.initial_value(name, config)
        if rule.uniform:
            problem = _uniform_problem(value, rule.limit)
            if problem:
                raise _CheckFailed(None, 0.0, f"initial {name!r}: {problem}")
        elif not any(np.all(value == exact) for exact in (rule.value, np.float32(rule.value))):
            raise _CheckFailed(
                None,
                0.0,
                f"initial {name!r} holds values in [{value.min():.17g}, {value.max():.17g}]; "
                f"expected the constant {rule.value!r} (or it rounded to float32)",
            )
    if config.input_dependent:  # the weights come from g's random kernels
        return 0.0
    want = lrlc_numpy.combining_weights(lrlc_numpy.init_params(config), config)
    got_weights = lrlc_numpy.combining_weights(got, config)
    return _compare("initial combining weights", got_weights, want, INIT_WEIGHTS_TOL)


_CHECK_FUNCTIONS = {
    "forward": _check_forward,
    "vjp_input": lambda *a: _check_vjp(*a, part="input"),
    "vjp_params": lambda *a: _check_vjp(*a, part="params"),
    "conversion": _check_conversion,
    "lc_forward": _check_lc_forward,
    "checkpoint": _check_checkpoint,
    "init": _check_init,
}

_OPTIONAL_METHODS = {"checkpoint": "save_checkpoint", "init": "init_params"}


def check_case(
    backend,
    case: Case,
    *,
    dtype="float64",
    device="cpu",
    seed=0,
    checks=CHECKS,
    report: Report | None = None,
) -> Report:
    """Run `checks` for one case, dtype and device, adding outcomes to `report`."""
    if not isinstance(case, Case):
        raise TypeError(f"check_case: case must be a conformance.Case, got {type(case).__name__}")
    _check_dtype(dtype, "check_case")
    _check_seed(seed, "check_case")
    _check_checks(checks, "check_case")
    if not isinstance(device, str):
        raise TypeError(f"check_case: device must be a name such as 'cpu', got {device!r}")
    report = report or Report(getattr(backend, "name", type(backend).__name__))
    unsupported = _unsupported(backend, case.config)
    if unsupported:
        for check in _applicable(checks, dtype, device):
            report.skip(check, dtype, device, unsupported)
        return report
    x, params, dy = check_data(case, seed, dtype)
    base_tol = tolerance(dtype, case.config, case.batch)
    gradient_tol = base_tol * gradient_conditioning(case.config, x, params)
    for check in _applicable(checks, dtype, device):
        tol = gradient_tol if check.startswith("vjp") else base_tol
        method = _OPTIONAL_METHODS.get(check)
        if method and not hasattr(backend, method):
            report.skip(check, dtype, device, f"adapter has no {method}")
            continue
        extra = {"seed": seed} if check == "init" else {}
        try:
            try:
                err = _CHECK_FUNCTIONS[check](
                    backend, case, x, params, dy, dtype, device, tol, **extra
                )
            except (_CheckFailed, _NotApplicable):
                raise
            except Exception as exc:  # the backend crashed: a failure, with its exception
                tail = traceback.format_exception_only(type(exc), exc)[-1].strip()
                raise _CheckFailed(None, tol, f"raised {tail}") from exc
        except _NotApplicable as why:
            report.skip(check, dtype, device, str(why))
        except _CheckFailed as fail:
            report.record(check, dtype, device, "failed")
            report.failures.append(
                Failure(
                    report.backend,
                    check,
                    case.describe(),
                    dtype,
                    device,
                    seed,
                    fail.error,
                    fail.tol,
                    fail.message,
                )
            )
        else:
            report.record(check, dtype, device, "passed", err)
    return report


def _check_checks(checks, where: str) -> None:
    unknown = [check for check in _names(checks, "checks", where) if check not in CHECKS]
    if unknown:
        raise ValueError(f"{where}: unknown checks {unknown}; expected some of {CHECKS}")


def _applicable(checks, dtype, device):
    """Checkpoint files and initial values are dtype- and device-independent: checked once,
    in float64 on CPU."""
    once = (dtype, device) == ("float64", "cpu")
    return [c for c in checks if c not in _ONCE_PER_CASE or once]


def _unsupported(backend, config) -> str | None:
    """Why `backend` does not run `config` (a gate it does not open), or None."""
    if config.mixed and not getattr(backend, MIXED_GATE, False):
        return f"mixed basis: the adapter does not set {MIXED_GATE}"
    if config.spatial_dims not in getattr(backend, SPATIAL_GATE, (2,)):
        return f"{config.spatial_dims}-D layer: not in the adapter's {SPATIAL_GATE}"
    return None


def run(backend, *, dtypes=None, devices=None, seed=0, cases=None, checks=CHECKS) -> Report:
    """Run the whole catalogue (or `cases`) against `backend` on each dtype and device.

    Requested devices or dtypes the backend does not offer are counted as skipped, never
    as passed.
    """
    _check_seed(seed, "run")
    _check_checks(checks, "run")
    dtypes = tuple(backend.dtypes) if dtypes is None else _names(dtypes, "dtypes", "run")
    for dtype in dtypes:
        _check_dtype(dtype, "run")
    devices = tuple(backend.devices) if devices is None else _names(devices, "devices", "run")
    cases = catalogue() if cases is None else cases
    if not isinstance(cases, (list, tuple)) or not all(isinstance(c, Case) for c in cases):
        raise TypeError(f"run: cases must be a list of conformance.Case, got {type(cases)}")
    start = time.perf_counter()
    report = Report(getattr(backend, "name", type(backend).__name__))
    for device in devices:
        for dtype in dtypes:
            available = device in backend.devices and dtype in backend.dtypes
            if not available:
                why = (
                    f"device {device!r} not found"
                    if device not in backend.devices
                    else f"dtype {dtype} not supported"
                )
                for check in _applicable(checks, dtype, device):
                    report.skip(check, dtype, device, why, count=len(cases))
                continue
            for case in cases:
                check_case(
                    backend,
                    case,
                    dtype=dtype,
                    device=device,
                    seed=seed,
                    checks=checks,
                    report=report,
                )
    report.seconds = time.perf_counter() - start
    return report


def write_json(reports, path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps([r.to_json() for r in reports], indent=2) + "\n")
