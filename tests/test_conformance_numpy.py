"""The conformance runner itself, on the reference backend."""

import json

import numpy as np
import pytest

import conformance
from conformance import backends


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
