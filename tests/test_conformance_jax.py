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
    cases = conformance.catalogue()
    # lrlc_jax has no mixed basis yet (spec section 16): those cases are skipped, saying why.
    n_mixed = sum(case.config.mixed for case in cases)
    for check, cells in report.matrix["jax"].items():
        for dtype, by_device in cells.items():
            once = check in ("checkpoint", "init")  # float64 only
            runs = len(cases) if not once or dtype == "float64" else 0
            skipped = n_mixed if runs else 0
            want = {"passed": runs - skipped, "failed": 0, "skipped": skipped}
            assert by_device["cpu"] == want, check
            if skipped:
                reason = report.skipped_reasons[(check, dtype, "cpu")]
                assert "supports_mixed_basis" in reason, check


def test_adapter_reports_what_this_install_offers(jax_backend):
    platforms = {device.platform for device in jax.devices()}
    accelerated = bool(platforms & {"gpu", "cuda", "rocm", "tpu"})
    assert jax_backend.devices[0] == "cpu" and (len(jax_backend.devices) > 1) == accelerated
    assert jax_backend.dtypes[:2] == ("float64", "float32")
    assert ("bfloat16" in jax_backend.dtypes) == accelerated
    # float64 must be real: the adapter enables x64.
    assert jax.numpy.zeros(1, "float64").dtype == np.float64


# Strategy 'lc' differs from Algorithm 1 in how windows are cut (kernel size, stride,
# dilation, padding) and in forming banks from the weights (their (H_out, W_out, K) layout
# and its broadcast in 'row' and 'col' modes); the weights themselves, the biases and
# everything input-dependent are shared code that the full catalogue run above covers.
# So 'lc' runs every fixed case of the geometry groups (all but the first group of the
# catalogue) plus the first group's fixed 'row' and 'col' cases and its case without
# biases: 27 of the 96 single-basis cases, instead of doubling the slowest test (one XLA
# compilation per case and dtype). lrlc_jax has no mixed basis yet (spec section 16).
LC_BASE_CASES = ("fixed-row-softmax-bias[sc]", "fixed-col-l2-bias[sc]", "fixed-rowcol-none-bias[]")


def lc_cases():
    return [
        case
        for case in conformance.catalogue()
        if not case.config.input_dependent
        and not case.config.mixed
        and ("/" in case.name or case.name in LC_BASE_CASES)
    ]


def test_lc_strategy_passes_the_fixed_geometry_cases():
    backend = backends.load("jax", strategy="lc")
    assert backend.name == "jax[strategy=lc]"
    cases = lc_cases()
    geometries = {(c.config.kernel_size, c.config.stride, c.config.dilation) for c in cases}
    assert len(cases) == 27 and len(geometries) == 6
    report = conformance.run(backend, devices=["cpu"], dtypes=["float64", "float32"], cases=cases)
    print(conformance.format_matrix([report]))
    assert report.ok, "\n".join(map(str, report.failures))
    assert report.total("passed") > 0 and report.total("skipped") == 0


@pytest.mark.parametrize(
    "combining, input_dependent",
    [("rowcol", False), ("full", False), ("full", True)],
    ids=["rowcol", "full", "input-dependent"],
)
def test_adapter_init_params_is_lrlc_jax_init(combining, input_dependent):
    """init_params is lrlc_jax.init under the neutral names as float64 NumPy arrays: the
    deterministic tensors equal lrlc_numpy.init_params's, the random ones lie within
    initial_value's limit, and the seed picks the draw."""
    import lrlc_jax
    import lrlc_numpy

    config = lrlc_numpy.LRLCConfig(
        3, 4, 3, rank=3, input_size=(9, 10), combining=combining, input_dependent=input_dependent
    )
    backend = backends.load("jax")
    params = backend.init_params(config, seed=5)
    reference = lrlc_numpy.init_params(config, seed=5)
    assert {name: p.shape for name, p in params.items()} == lrlc_numpy.param_shapes(config)
    for name, value in params.items():
        assert type(value) is np.ndarray and value.dtype == np.float64, name
        rule = lrlc_numpy.initial_value(name, config)
        if rule.uniform:
            assert np.all(np.abs(value) <= rule.limit) and np.unique(value).size > 1, name
        else:
            np.testing.assert_array_equal(value, reference[name], err_msg=name)
    direct = lrlc_jax.init(jax.random.key(5), config, dtype=jax.numpy.float64)
    for name, value in direct.items():
        np.testing.assert_array_equal(params[name], value)
    assert not np.array_equal(backend.init_params(config, seed=6)["basis"], params["basis"])
    assert np.array_equal(
        backend.init_params(config)["basis"], backend.init_params(config)["basis"]
    )


def test_adapter_options():
    assert backends.load("jax", strategy="conv").name == "jax[strategy=conv]"
    assert backends.load("jax", strategy="auto").name == "jax"
    with pytest.raises(ValueError, match="unknown strategy 'fast'"):
        backends.load("jax", strategy="fast")
    with pytest.raises(ValueError, match=r"unknown options \['threads'\]"):
        backends.load("jax", threads=2)


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from(["float64", "float32"]),
    strategy=st.sampled_from(["auto", "lc"]),
)
def test_random_configs(seed, dtype, strategy):
    """Random configs under 'auto' (Algorithm 1 at these batch sizes) or 'lc' (which the
    adapter applies to fixed layers only)."""
    config = conformance.random_config(np.random.default_rng(seed))
    case = conformance.Case(f"random-{seed}", config)
    backend = backends.load("jax", strategy=strategy)
    report = conformance.check_case(backend, case, dtype=dtype, seed=seed)
    assert report.ok, "\n".join(map(str, report.failures))


@pytest.mark.gpu
@pytest.mark.skipif(not ACCELERATORS, reason="no GPU or TPU: accelerator conformance not run")
def test_jax_backend_passes_whole_catalogue_on_accelerators(jax_backend):
    report = conformance.run(jax_backend, devices=list(ACCELERATORS))
    print(conformance.format_matrix([report]))
    assert report.ok, "\n".join(map(str, report.failures))
    assert report.total("skipped") == 0 and "bfloat16" in jax_backend.dtypes
