"""The tf backend against the whole conformance catalogue, and on random configs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

tf = pytest.importorskip("tensorflow")

import conformance  # noqa: E402
from conformance import backends  # noqa: E402

HAS_GPU = bool(tf.config.list_physical_devices("GPU"))


@pytest.fixture(scope="module")
def tf_backend():
    return backends.load("tf")


def test_tf_backend_passes_whole_catalogue(tf_backend):
    report = conformance.run(tf_backend, devices=["cpu"], dtypes=["float64", "float32"])
    print(conformance.format_matrix([report]))
    assert report.ok, "\n".join(map(str, report.failures))
    n_cases = len(conformance.catalogue())
    for check, cells in report.matrix["tf"].items():
        for dtype, by_device in cells.items():
            runs = n_cases if check != "checkpoint" or dtype == "float64" else 0
            assert by_device["cpu"] == {"passed": runs, "failed": 0, "skipped": 0}, check


def test_adapter_reports_what_this_install_offers(tf_backend):
    assert tf_backend.devices == (("cpu", "gpu") if HAS_GPU else ("cpu",))
    assert ("bfloat16" in tf_backend.dtypes) == HAS_GPU
    assert tf_backend.dtypes[:2] == ("float64", "float32")


def test_adapter_rejects_absent_device(tf_backend):
    case = conformance.catalogue()[0]
    x, params, _ = conformance.case_data(case, 0)
    absent = "tpu"
    with pytest.raises(ValueError, match="tpu"):
        tf_backend.forward(case.config, params, x, device=absent)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(["float64", "float32"]))
def test_random_configs(tf_backend, seed, dtype):
    config = conformance.random_config(np.random.default_rng(seed))
    case = conformance.Case(f"random-{seed}", config)
    report = conformance.check_case(tf_backend, case, dtype=dtype, seed=seed)
    assert report.ok, "\n".join(map(str, report.failures))


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="no GPU visible to TensorFlow: GPU conformance not run")
def test_tf_backend_passes_whole_catalogue_on_gpu(tf_backend):
    report = conformance.run(tf_backend, devices=["gpu"])
    print(conformance.format_matrix([report]))
    assert report.ok, "\n".join(map(str, report.failures))
    assert report.total("skipped") == 0 and "bfloat16" in tf_backend.dtypes
