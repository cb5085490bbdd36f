"""The torch backend against the whole conformance catalogue, and on random configs."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import conformance
from conformance import backends


@pytest.fixture(scope="module")
def torch_backend():
    return backends.load("torch")


def test_torch_backend_passes_whole_catalogue(torch_backend):
    report = conformance.run(torch_backend, devices=["cpu"], dtypes=["float64", "float32"])
    print(conformance.format_matrix([report]))
    assert report.ok, "\n".join(map(str, report.failures))
    n_cases = len(conformance.catalogue())
    for check, cells in report.matrix["torch"].items():
        for dtype, by_device in cells.items():
            runs = n_cases if check != "checkpoint" or dtype == "float64" else 0
            assert by_device["cpu"] == {"passed": runs, "failed": 0, "skipped": 0}, check


def test_adapter_reports_what_this_install_offers(torch_backend):
    has_cuda = torch.cuda.is_available()
    assert torch_backend.devices == (("cpu", "gpu") if has_cuda else ("cpu",))
    assert ("bfloat16" in torch_backend.dtypes) == has_cuda
    assert torch_backend.dtypes[:2] == ("float64", "float32")


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(["float64", "float32"]))
def test_random_configs(torch_backend, seed, dtype):
    config = conformance.random_config(np.random.default_rng(seed))
    case = conformance.Case(f"random-{seed}", config)
    report = conformance.check_case(torch_backend, case, dtype=dtype, seed=seed)
    assert report.ok, "\n".join(map(str, report.failures))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: GPU conformance not run")
def test_torch_backend_passes_whole_catalogue_on_gpu(torch_backend):
    report = conformance.run(torch_backend, devices=["gpu"])
    print(conformance.format_matrix([report]))
    assert report.ok, "\n".join(map(str, report.failures))
    assert report.total("skipped") == 0 and "bfloat16" in torch_backend.dtypes
