"""The conformance runner itself (catalogue, matrix, tolerances, gates), on the reference."""

import json
import types

import numpy as np
import pytest

import conformance
import lrlc_numpy
from conformance import backends, runner


def test_catalogue_covers_every_mode_and_geometry():
    cases = conformance.catalogue()
    configs = [case.config for case in cases]
    modes = {
        (c.combining, c.normalize, c.spatial_bias, c.channel_bias, c.input_dependent)
        for c in configs
    }
    # 4 combining x 3 normalisations x 2 x 2 biases fixed, plus 'full' input-dependent.
    assert len(modes) == 4 * 3 * 4 + 3 * 4
    assert any(c.input_size[0] != c.input_size[1] for c in configs)
    assert any(c.stride != (1, 1) and c.padding == "same" for c in configs)
    assert any(c.dilation == (2, 2) for c in configs)
    assert {1} <= {c.rank for c in configs} and max(c.rank for c in configs) >= 8
    assert any(isinstance(c.padding, tuple) and c.padding[0][0] != c.padding[0][1] for c in configs)
    assert any(c.input_dependent and len(c.g_dilations) == 4 for c in configs)


def test_numpy_backend_passes_whole_catalogue(tmp_path):
    report = conformance.run(backends.load("numpy"))
    assert report.ok, "\n".join(map(str, report.failures[:5]))
    matrix = report.matrix["numpy"]
    n_cases = len(conformance.catalogue())
    assert matrix["forward"]["float64"]["cpu"] == {"passed": n_cases, "failed": 0, "skipped": 0}
    assert matrix["checkpoint"]["float64"]["cpu"]["passed"] == n_cases
    conformance.write_json([report], tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data[0]["ok"] is True and data[0]["matrix"]["vjp_params"]["float32"]["cpu"]["passed"]


def test_absent_device_is_skipped_not_passed():
    report = conformance.run(backends.load("numpy"), devices=["cpu", "gpu"], dtypes=["float64"])
    cell = report.matrix["numpy"]["forward"]["float64"]["gpu"]
    assert cell == {"passed": 0, "failed": 0, "skipped": len(conformance.catalogue())}
    assert "not found" in report.skipped_reasons[("forward", "float64", "gpu")]
    assert "| numpy | forward | float64 | gpu | 0 | 0 |" in conformance.format_matrix([report])


def test_a_report_with_nothing_run_is_not_ok():
    report = conformance.run(backends.load("numpy"), devices=["tpu"])
    assert not report.ok


def test_unknown_backend_name():
    try:
        backends.load("mxnet")
    except ValueError as err:
        assert "mxnet" in str(err) and "numpy" in str(err)
    else:
        raise AssertionError("expected ValueError")


def test_tolerance_follows_the_stated_rule():
    case = conformance.catalogue()[0]
    n = conformance.reduction_length(case.config, case.batch)
    eps32 = float(np.finfo(np.float32).eps)
    assert conformance.tolerance("float32", case.config, case.batch) == 8 * eps32 * np.sqrt(n)
    assert conformance.tolerance("float64", case.config, case.batch) < 1e-11


def test_round_to_bfloat16_keeps_eight_significant_bits():
    values = np.array([1.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, -3.14159, 1e-3])
    rounded = conformance.round_to(values, "bfloat16")
    assert rounded[0] == 1.0
    assert rounded[1] == 1.0  # halfway: ties to even
    assert rounded[2] == 1.0 + 2**-6  # halfway between 1+2^-7 and 1+2^-6: even mantissa wins
    assert np.all(np.abs(rounded - values) <= np.abs(values) * 2**-8)


def test_adapter_with_the_contract_signatures_only():
    """The contract's to_locally_connected/lc_forward take no dtype/device: such an adapter is
    checked in float64 on CPU and its other dtypes are skipped for those checks, not failed."""
    from conformance.backends.numpy import Backend

    class ContractOnly(Backend):
        name = "contract-only"

        def to_locally_connected(self, config, params, x=None):
            return super().to_locally_connected(config, params, x)

        def lc_forward(self, kernel, bias, x, config):
            return super().lc_forward(kernel, bias, x, config)

    report = conformance.run(ContractOnly())
    assert report.ok
    matrix = report.matrix["contract-only"]
    n_cases = len(conformance.catalogue())
    assert matrix["conversion"]["float64"]["cpu"]["passed"] == n_cases
    assert matrix["conversion"]["float32"]["cpu"] == {"passed": 0, "failed": 0, "skipped": n_cases}
    assert matrix["forward"]["float32"]["cpu"]["passed"] == n_cases


def test_l2_gradient_tolerance_grows_with_ill_conditioning():
    """Rank-1 'l2' with a logit near zero: w = sign(w~), whose gradient is a cancellation of
    size eps |dL/dw| / |w~|; the rule scales gradient tolerances by 1 / min |w~|."""
    from lrlc_numpy import LRLCConfig

    config = LRLCConfig(2, 2, 3, 1, (5, 5), combining="full", normalize="l2")
    x, params, _ = conformance.case_data(conformance.Case("l2", config), seed=0)
    params["logits"] = np.full_like(params["logits"], 0.5)
    assert conformance.gradient_conditioning(config, x, params) == 2.0
    params["logits"][1, 2, 0] = -1e-3
    assert conformance.gradient_conditioning(config, x, params) == pytest.approx(1e3)
    params["logits"][1, 2, 0] = 3.0
    assert conformance.gradient_conditioning(config, x, params) == 2.0  # min norm is still 0.5
    softmax = LRLCConfig(2, 2, 3, 1, (5, 5), combining="full")
    assert conformance.gradient_conditioning(softmax, x, params) == 1.0


def test_catalogue_covers_mixed_bases():
    """The 2-D mixed cases (the 1-D and 3-D ones: test_catalogue_covers_sequences_and_volumes)."""
    mixed = [
        case.config
        for case in conformance.catalogue()
        if case.config.mixed and case.config.spatial_dims == 2
    ]
    assert {(c.combining, c.normalize) for c in mixed if not c.input_dependent} == {
        (m, n) for m in lrlc_numpy.COMBINING_MODES for n in lrlc_numpy.NORMALIZATIONS
    }
    assert {c.normalize for c in mixed if c.input_dependent} == set(lrlc_numpy.NORMALIZATIONS)
    assert all(c.padding == "same" for c in mixed)
    kernels = {kernel for c in mixed for kernel in c.kernel_sizes}
    assert {(1, 1), (2, 2), (3, 3), (5, 5)} <= kernels  # odd and even windows
    assert any(kh != kw for kh, kw in kernels)
    assert any(c.stride == (2, 2) for c in mixed)
    assert any(h % 2 != w % 2 for h, w in (c.input_size for c in mixed))
    assert {1, 2, 3} <= {c.rank for c in mixed}
    assert any(len(c.basis_groups) < c.rank for c in mixed)  # a group of several bases
    assert any(
        any(g.members != tuple(range(g.members[0], g.members[-1] + 1)) for g in c.basis_groups)
        for c in mixed
    )  # ... that is not contiguous


def test_mixed_cases_are_skipped_for_adapters_without_the_gate():
    from conformance.backends.numpy import Backend

    class NoMixedBasis(Backend):
        name = "no-mixed"
        supports_mixed_basis = False

    cases = conformance.catalogue()
    n_mixed = sum(case.config.mixed for case in cases)
    report = conformance.run(NoMixedBasis(), dtypes=["float64"])
    assert report.ok and n_mixed > 0
    for check in conformance.CHECKS:
        cell = report.matrix["no-mixed"][check]["float64"]["cpu"]
        assert cell == {"passed": len(cases) - n_mixed, "failed": 0, "skipped": n_mixed}, check
        assert "supports_mixed_basis" in report.skipped_reasons[(check, "float64", "cpu")]


def test_init_check_is_skipped_for_adapters_without_init_params():
    from conformance.backends.numpy import Backend

    inner = Backend()
    adapter = types.SimpleNamespace(
        name="no-init",
        dtypes=("float64",),
        devices=("cpu",),
        supports_mixed_basis=True,
        spatial_dims=(1, 2, 3),
        forward=inner.forward,
        vjp=inner.vjp,
        to_locally_connected=inner.to_locally_connected,
        lc_forward=inner.lc_forward,
    )
    report = conformance.run(adapter)
    n_cases = len(conformance.catalogue())
    assert report.ok
    assert report.matrix["no-init"]["init"]["float64"]["cpu"]["skipped"] == n_cases
    assert report.skipped_reasons[("init", "float64", "cpu")] == "adapter has no init_params"


def test_init_check_accepts_a_layer_built_in_float32():
    """A backend's default layer may hold float32 values: its constants are then exact once
    rounded to float32, and its draws and weights carry that rounding."""
    from conformance.backends.numpy import Backend

    class Float32Init(Backend):
        name = "float32-init"

        def init_params(self, config, *, seed=0):
            params = super().init_params(config, seed=seed)
            return {k: v.astype(np.float32).astype(np.float64) for k, v in params.items()}

    report = conformance.run(Float32Init(), dtypes=["float64"], checks=("init",))
    assert report.ok, "\n".join(map(str, report.failures[:3]))
    assert report.matrix["float32-init"]["init"]["float64"]["cpu"]["passed"] == len(
        conformance.catalogue()
    )


def test_init_span_rule():
    """n draws from U(-a, a) all stay below a (1 - delta) with probability (1 - delta/2)^n;
    delta sets that to INIT_FALSE_ALARM, and below n = 30 no span is required."""
    for n in (30, 45, 324, 10_000):
        delta = runner.init_span(n)
        assert 0 < delta < 1
        assert (1 - delta / 2) ** n == pytest.approx(runner.INIT_FALSE_ALARM)
    assert runner.init_span(29) >= 1 and runner.init_span(2) >= 1
    assert runner.init_span(324) == pytest.approx(0.1239, abs=1e-4)
    rng = np.random.default_rng(0)
    assert runner._uniform_problem(rng.uniform(-1, 1, 324), 1.0) is None
    assert "span" in runner._uniform_problem(rng.uniform(-0.8, 0.8, 324), 1.0)
    assert "exceeds" in runner._uniform_problem(rng.uniform(-1.5, 1.5, 324), 1.0)
    assert "every value" in runner._uniform_problem(np.full(9, 0.1), 1.0)
    assert runner._uniform_problem(np.array([-0.9, -0.1, -0.5]), 1.0) is None  # n < 30


def test_catalogue_covers_sequences_and_volumes():
    """Spec section 17: in 1-D and 3-D, every normalisation fixed and input-dependent, each
    mode the rank allows, strides, dilations, every padding form and mixed bases."""
    for n, modes in ((1, {"full"}), (3, {"rowcol", "full"})):
        configs = [c.config for c in conformance.catalogue() if c.config.spatial_dims == n]
        assert {c.combining for c in configs} == modes
        for dependent in (False, True):
            normalisations = {c.normalize for c in configs if c.input_dependent == dependent}
            assert normalisations >= (
                {"softmax", "l2"} if dependent else set(lrlc_numpy.NORMALIZATIONS)
            )
        assert any(max(c.stride) > 1 for c in configs)
        assert any(max(c.dilations[0]) > 1 for c in configs)
        assert {"valid", "same"} <= {c.padding for c in configs}
        assert any(isinstance(c.padding, tuple) and c.padding[0][0] != c.padding[0][1]
                   for c in configs)  # fmt: skip
        assert any(c.mixed for c in configs) and any(c.mixed and c.input_dependent for c in configs)
        assert any(not c.spatial_bias for c in configs)
        assert any(c.input_dependent and c.g_dilations for c in configs)
