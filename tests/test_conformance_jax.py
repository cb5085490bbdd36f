"""The JAX backend against the whole conformance catalogue, and on random configs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import conformance
from conformance import backends

jax = pytest.importorskip("jax")

ACCELERATORS = tuple(p for p in ("gpu", "tpu") if p in backends.load("jax").devices)


@pytest.fixture(scope="module")
def jax_backend():
    return backends.load("jax")


def test_jax_backend_passes_whole_catalogue(jax_backend):
    report = conformance.run(jax_backend, devices=["cpu"], dtypes=["float64", "float32"])
    print(conformance.format_matrix([report]))
    assert report.ok, "\n".join(map(str, report.failures))
    n_cases = len(conformance.catalogue())
    for check, cells in report.matrix["jax"].items():
        for dtype, by_device in cells.items():
            runs = n_cases if check != "checkpoint" or dtype == "float64" else 0
            assert by_device["cpu"] == {"passed": runs, "failed": 0, "skipped": 0}, check


def test_adapter_reports_what_this_install_offers(jax_backend):
    platforms = {device.platform for device in jax.devices()}
    accelerated = bool(platforms & {"gpu", "cuda", "rocm", "tpu"})
    assert jax_backend.devices[0] == "cpu" and (len(jax_backend.devices) > 1) == accelerated
    assert jax_backend.dtypes[:2] == ("float64", "float32")
    assert ("bfloat16" in jax_backend.dtypes) == accelerated
    # float64 must be real: the adapter enables x64.
    assert jax.numpy.zeros(1, "float64").dtype == np.float64


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(["float64", "float32"]))
def test_random_configs(jax_backend, seed, dtype):
    config = conformance.random_config(np.random.default_rng(seed))
    case = conformance.Case(f"random-{seed}", config)
    report = conformance.check_case(jax_backend, case, dtype=dtype, seed=seed)
    assert report.ok, "\n".join(map(str, report.failures))


@pytest.mark.gpu
@pytest.mark.skipif(not ACCELERATORS, reason="no GPU or TPU: accelerator conformance not run")
def test_jax_backend_passes_whole_catalogue_on_accelerators(jax_backend):
    report = conformance.run(jax_backend, devices=list(ACCELERATORS))
    print(conformance.format_matrix([report]))
    assert report.ok, "\n".join(map(str, report.failures))
    assert report.total("skipped") == 0 and "bfloat16" in jax_backend.dtypes
