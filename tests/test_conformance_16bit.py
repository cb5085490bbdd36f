"""16-bit gradient checks of input-dependent layers and the ReLU kink (spec section 15.4).

The torch adapter offers bfloat16 only on accelerators; here a subclass offers it on the CPU
(torch computes bfloat16 there too), which is enough to check the rule on a real 16-bit
backend: a correct one passes, planted faults are caught, wider dtypes are untouched.
"""

from unittest import mock

import numpy as np
import pytest

import conformance
import lrlc_numpy
from conformance import runner
from conformance.cases import case_data, catalogue

torch = pytest.importorskip("torch")
import lrlc_torch.functional  # noqa: E402
from conformance.backends.torch import Backend as TorchBackend  # noqa: E402

GRADIENT_CHECKS = ("vjp_input", "vjp_params")
IDEP_CASES = [c for c in catalogue() if c.config.input_dependent]
# The case whose bfloat16 gradients failed without the rule before 'conv_init' (spec 15.4).
KINK_CASE = next(c for c in IDEP_CASES if c.name == "explicit-int/idep-full-softmax-bias[sc]")


class CpuBfloat16Backend(TorchBackend):
    """The torch adapter, offering bfloat16 on the CPU as well."""

    def __init__(self, **options):
        super().__init__(**options)
        self.dtypes = (*self.dtypes, "bfloat16")


@pytest.mark.parametrize("strategy", ["auto", "conv"])
def test_torch_bfloat16_passes_input_dependent_cases(strategy):
    report = conformance.run(
        CpuBfloat16Backend(strategy=strategy),
        dtypes=["bfloat16"],
        devices=["cpu"],
        cases=IDEP_CASES,
        checks=("forward", *GRADIENT_CHECKS),
    )
    assert report.ok, "\n".join(map(str, report.failures))
    assert report.total("passed") == 3 * len(IDEP_CASES)


def _reference_vjp_with_flipped_unit(x, params, config, dy, unit):
    """The reference vjp with the ReLU derivative of one squeeze unit flipped (its gradient
    mask reads the sign of the cached pre-activation)."""
    g_forward = lrlc_numpy.reference.g_forward

    def flipped(*args):
        logits, cache = g_forward(*args)
        pre_squeeze = cache["pre_squeeze"].copy()
        pre_squeeze[unit] = -pre_squeeze[unit]
        return logits, {**cache, "pre_squeeze": pre_squeeze}

    with mock.patch.object(lrlc_numpy.reference, "g_forward", flipped):
        return lrlc_numpy.vjp(x, params, config, dy)


def _gradient_error(got, want):
    (got_dx, got_dp), (want_dx, want_dp) = got, want
    errors = [runner.relative_error(got_dx, want_dx)]
    errors += [runner.relative_error(got_dp[name], want_dp[name]) for name in want_dp]
    return max(errors)


def _worst_flip(case, dy_source):
    """(largest gradient change from flipping one kink-band unit, tol, band) for `case`."""
    config = case.config
    x, params, ruled_dy = runner.check_data(case, 0, "bfloat16")
    dy = runner.round_to(case_data(case, 0)[2], "bfloat16") if dy_source == "raw" else ruled_dy
    band = np.argwhere(runner.relu_kink_units(config, x, params, "bfloat16"))
    want = lrlc_numpy.vjp(x, params, config, dy)
    flips = [
        _gradient_error(_reference_vjp_with_flipped_unit(x, params, config, dy, tuple(u)), want)
        for u in band
    ]
    return max(flips, default=0.0), runner.tolerance("bfloat16", config, case.batch), band


def test_without_the_rule_a_rounding_sized_change_fails_the_gradient_check():
    """On the unmodified data some squeeze units lie in the kink band, and flipping the ReLU
    side of one of them, which a correct 16-bit backend may do, moves the gradient by more
    than tol in some catalogue case. With the rule's dy, no flip inside the band changes the
    gradient at all, in any case."""
    failing = []
    for case in IDEP_CASES:
        worst, tol, band = _worst_flip(case, "raw")
        if worst > tol:
            failing.append(case.name)
        ruled, _, _ = _worst_flip(case, "ruled")
        assert ruled == 0.0, case.name
    assert failing, "no catalogue case has a kink flip beyond tol without the rule"


def _torch_pre_squeeze(case, x, params):
    """g's squeeze pre-activation as torch computes it in bfloat16 (NHWC, float64)."""
    seen = []

    def relu(a):
        seen.append(a.detach().movedim(1, -1).to(torch.float64).numpy())
        return a.clamp_min(0)

    with mock.patch.object(torch, "relu", relu):
        CpuBfloat16Backend().forward(case.config, params, x, dtype="bfloat16")
    (pre_squeeze,) = seen
    return pre_squeeze


@pytest.mark.parametrize("case", IDEP_CASES[::4] + [KINK_CASE], ids=lambda case: case.name)
def test_band_holds_every_unit_torch_puts_on_the_other_side(case):
    """The rule's premise on a real 16-bit backend: wherever torch's bfloat16 ReLU input has
    another sign than the reference's, the unit is in the band."""
    x, params, _ = runner.check_data(case, 0, "bfloat16")
    _, cache = lrlc_numpy.reference.g_forward(x, params, case.config)
    other_side = (_torch_pre_squeeze(case, x, params) > 0) != (cache["pre_squeeze"] > 0)
    band = runner.relu_kink_units(case.config, x, params, "bfloat16")
    assert not (other_side & ~band).any()


# Planted bugs in torch's g, to show the bfloat16 checks still catch faults there.
class _ReluWithoutMask(torch.autograd.Function):
    """ReLU forward, but the backward passes the gradient of negative units too."""

    @staticmethod
    def forward(ctx, a):
        return a.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        return grad


_pointwise = lrlc_torch.functional._pointwise


def _squeeze_bias_dropped(a, params, name):
    if name == "g.squeeze":
        params = {**params, "g.squeeze.bias": torch.zeros_like(params["g.squeeze.bias"])}
    return _pointwise(a, params, name)


FAULTS = {
    "relu_is_identity": (torch, "relu", lambda a: a),
    "relu_gradient_without_mask": (torch, "relu", _ReluWithoutMask.apply),
    "squeeze_bias_dropped": (lrlc_torch.functional, "_pointwise", _squeeze_bias_dropped),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_bfloat16_gradient_checks_catch_faults_in_g(fault):
    module, attribute, replacement = FAULTS[fault]
    with mock.patch.object(module, attribute, replacement):
        report = conformance.run(
            CpuBfloat16Backend(),
            dtypes=["bfloat16"],
            devices=["cpu"],
            cases=IDEP_CASES,
            checks=GRADIENT_CHECKS,
        )
    caught = {(failure.check, failure.case) for failure in report.failures}
    assert {check for check, _ in caught} == set(GRADIENT_CHECKS)
    # Not by luck on one case: most input-dependent cases notice it.
    assert len({case for _, case in caught}) > len(IDEP_CASES) // 2


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
def test_rule_changes_only_16bit_gradient_data_of_input_dependent_layers(dtype):
    for case in catalogue():
        x, params, dy = runner.check_data(case, 0, dtype)
        raw_x, raw_params, raw_dy = case_data(case, 0)
        assert np.array_equal(x, runner.round_to(raw_x, dtype))
        assert params.keys() == raw_params.keys()
        for name, value in raw_params.items():
            assert np.array_equal(params[name], runner.round_to(value, dtype))
        if dtype == "bfloat16" and case.config.input_dependent:
            kink = runner.relu_kink_units(case.config, x, params, dtype).any(axis=-1)
            assert not dy[kink].any()
            assert np.array_equal(dy[~kink], runner.round_to(raw_dy, dtype)[~kink])
            assert not kink.all()  # the gradient checks keep positions to test
        else:
            assert np.array_equal(dy, runner.round_to(raw_dy, dtype))
