"""The conformance suite must catch every planted fault (and pass the unfaulted reference)."""

import pytest

import conformance
from conformance.faults import FAULTS, FaultyBackend

# The check expected to notice each fault (others may notice it too).
EXPECTED_CHECK = {
    "softmax_over_wrong_axis": "forward",
    "softmax_gradient_without_jacobian": "vjp_params",
    "l2_norm_without_sqrt": "forward",
    "same_padding_off_by_one": "forward",
    "row_and_column_logits_swapped": "forward",
    "kernel_height_and_width_swapped": "forward",
    "dilation_ignored": "forward",
    "channel_bias_dropped": "forward",
    "spatial_bias_dropped": "forward",
    "resize_without_aligned_corners": "forward",
    "conversion_kernel_taps_transposed": "conversion",
    "lc_bias_dropped": "lc_forward",
    "checkpoint_loses_precision": "checkpoint",
    "basis_gradient_from_first_example_only": "vjp_params",
    "mixed_padding_of_largest_basis": "forward",
    "mixed_dilation_of_basis_0": "forward",
    "mixed_responses_in_group_order": "forward",
    "conversion_window_centred": "conversion",
    "init_logits_zero": "init",
    "init_depthwise_fans_without_rank": "init",
    "depth_and_row_taps_swapped": "forward",
    "depth_bias_dropped": "forward",
}
MIXED_FAULTS = (
    "mixed_padding_of_largest_basis",
    "mixed_dilation_of_basis_0",
    "mixed_responses_in_group_order",
    "conversion_window_centred",
)


def test_every_fault_has_an_expectation():
    assert set(EXPECTED_CHECK) == set(FAULTS)
    assert len(FAULTS) >= 8


def test_unfaulted_reference_passes():
    report = conformance.run(conformance.backends.load("numpy"), dtypes=["float64"])
    assert report.ok, "\n".join(map(str, report.failures[:5]))


@pytest.mark.parametrize("fault", FAULTS)
def test_fault_is_caught(fault):
    report = conformance.run(FaultyBackend(fault), dtypes=["float64"])
    assert not report.ok
    caught_by = {failure.check for failure in report.failures}
    assert EXPECTED_CHECK[fault] in caught_by, caught_by
    # A failure record names the case, dtype and device and is readable on its own.
    text = str(report.failures[0])
    assert "FAILED" in text and "dtype=float64" in text and "device=cpu" in text


@pytest.mark.parametrize("fault", MIXED_FAULTS)
def test_mixed_fault_is_caught_by_mixed_cases_only(fault):
    """A plain basis has one padding, one dilation and one group: only mixed cases can see
    these faults, so the catalogue needs them."""
    report = conformance.run(FaultyBackend(fault), dtypes=["float64"])
    failed_cases = {failure.case.split(":")[0] for failure in report.failures}
    mixed = {case.name for case in conformance.catalogue() if case.config.mixed}
    assert failed_cases and failed_cases <= mixed


@pytest.mark.parametrize("fault", ["depth_and_row_taps_swapped", "depth_bias_dropped"])
def test_3d_fault_is_caught_by_3d_cases_only(fault):
    """Only a volume has a depth axis: the catalogue needs its 3-D cases to see these."""
    report = conformance.run(FaultyBackend(fault), dtypes=["float64"])
    failed_cases = {failure.case.split(":")[0] for failure in report.failures}
    volumes = {case.name for case in conformance.catalogue() if case.config.spatial_dims == 3}
    assert failed_cases and failed_cases <= volumes


@pytest.mark.parametrize("fault", ["init_logits_zero", "init_depthwise_fans_without_rank"])
def test_init_fault_is_caught_by_the_init_check_only(fault):
    report = conformance.run(FaultyBackend(fault), dtypes=["float64"])
    assert {failure.check for failure in report.failures} == {"init"}
