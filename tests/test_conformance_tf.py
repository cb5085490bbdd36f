"""The tf backend against the whole conformance catalogue under both evaluation strategies,
on random configs, and the 'auto' strategy's cost rule."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

tf = pytest.importorskip("tensorflow")

import conformance  # noqa: E402
import lrlc_numpy as L  # noqa: E402
import lrlc_tf  # noqa: E402
from conformance import backends  # noqa: E402
from lrlc_tf import costs  # noqa: E402

HAS_GPU = bool(tf.config.list_physical_devices("GPU"))


@pytest.fixture(scope="module")
def tf_backend():
    return backends.load("tf")


@pytest.mark.parametrize("strategy", ["conv", "lc"])
def test_tf_backend_passes_whole_catalogue(strategy):
    """Under 'lc' the catalogue's input-dependent cases run Algorithm 1 (the adapter says so:
    the layer refuses 'lc' for them), so they are checked again rather than skipped."""
    backend = backends.load("tf", strategy=strategy)
    assert backend.name == f"tf[strategy={strategy}]"
    report = conformance.run(backend, devices=["cpu"], dtypes=["float64", "float32"])
    print(conformance.format_matrix([report]))
    assert report.ok, "\n".join(map(str, report.failures))
    cases = conformance.catalogue()
    # lrlc_tf has no mixed basis yet (spec section 16): those cases are skipped, saying why.
    n_mixed = sum(case.config.mixed for case in cases)
    for check, cells in report.matrix[backend.name].items():
        for dtype, by_device in cells.items():
            once = check in ("checkpoint", "init")  # float64 only
            runs = len(cases) if not once or dtype == "float64" else 0
            skipped = n_mixed if runs else 0
            want = {"passed": runs - skipped, "failed": 0, "skipped": skipped}
            assert by_device["cpu"] == want, check
            if skipped:
                reason = report.skipped_reasons[(check, dtype, "cpu")]
                assert "supports_mixed_basis" in reason, check


def test_adapter_reports_what_this_install_offers(tf_backend):
    assert tf_backend.name == "tf"
    assert tf_backend.devices == (("cpu", "gpu") if HAS_GPU else ("cpu",))
    assert ("bfloat16" in tf_backend.dtypes) == HAS_GPU
    assert tf_backend.dtypes[:2] == ("float64", "float32")


def test_adapter_rejects_absent_device(tf_backend):
    case = conformance.catalogue()[0]
    x, params, _ = conformance.case_data(case, 0)
    absent = "tpu"
    with pytest.raises(ValueError, match="tpu"):
        tf_backend.forward(case.config, params, x, device=absent)


# The catalogue's first fixed and first input-dependent config, and every combining mode.
INIT_CONFIGS = {
    c.name: c.config
    for c in [
        next(c for c in conformance.catalogue() if not c.config.input_dependent),
        next(c for c in conformance.catalogue() if c.config.input_dependent),
    ]
}
INIT_CONFIGS.update(
    {
        mode: L.LRLCConfig(3, 4, 3, rank=3, input_size=(6, 5), combining=mode)
        for mode in ("rowcol", "full", "row", "col")
    }
)


@pytest.mark.parametrize("config", INIT_CONFIGS.values(), ids=INIT_CONFIGS)
def test_adapter_init_params_are_the_layers_defaults(tf_backend, config):
    """Neutral names and shapes in float64; constants equal lrlc_numpy's exactly, random
    draws within `initial_value`'s limit; the same seed gives the same draws."""
    got = tf_backend.init_params(config, seed=3)
    want = L.init_params(config)
    assert set(got) == set(want)
    for name, value in got.items():
        assert value.dtype == np.float64 and value.shape == want[name].shape, name
        initial = L.initial_value(name, config)
        if initial.uniform:
            assert 0 < np.abs(value).max() <= initial.limit, name
        else:
            np.testing.assert_array_equal(value, want[name], err_msg=name)
    again = tf_backend.init_params(config, seed=3)
    for name, value in got.items():
        np.testing.assert_array_equal(again[name], value, err_msg=name)
    assert np.any(tf_backend.init_params(config, seed=4)["basis"] != got["basis"])


def test_adapter_rejects_unknown_options():
    with pytest.raises(ValueError, match="'fast'"):
        backends.load("tf", strategy="fast")
    with pytest.raises(ValueError, match="colour"):
        backends.load("tf", colour="red")


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from(["float64", "float32"]),
    strategy=st.sampled_from(["conv", "lc"]),
)
def test_random_configs(seed, dtype, strategy):
    config = conformance.random_config(np.random.default_rng(seed))
    case = conformance.Case(f"random-{seed}", config)
    backend = backends.load("tf", strategy=strategy)
    report = conformance.check_case(backend, case, dtype=dtype, seed=seed)
    assert report.ok, "\n".join(map(str, report.failures))


# ---------------------------------------------------------------------------------------------
# The 'auto' strategy


def _config(rank, **kwargs):
    return L.LRLCConfig(3, 4, 3, rank, (6, 5), padding="same", **kwargs)


@pytest.mark.parametrize("batch", [1, 2, 8, 64, 512, None])
@pytest.mark.parametrize("rank", [1, 2, 3, 4, 8, 16, 32])
def test_auto_follows_the_documented_cost_rule(batch, rank):
    """'lc' exactly when K (3 B - 3 BANK_COST) > B (3 PRODUCT_COST + 3 PATCH_COST / C_out),
    an unknown batch counting as large; input-dependent layers: 'conv'."""
    f = costs
    per_example = 3 * f.PRODUCT_COST + 3 * f.PATCH_COST / _config(rank).out_channels
    if batch is None:
        want = "lc" if 3 * rank > per_example else "conv"
    else:
        cheaper = rank * (3 * batch - 3 * f.BANK_COST) > batch * per_example
        want = "lc" if cheaper else "conv"
    assert costs.choose_strategy(_config(rank), batch) == want
    for explicit in ("conv", "lc"):
        assert costs.choose_strategy(_config(rank), batch, explicit) == explicit
    dependent = _config(rank, combining="full", input_dependent=True)
    assert costs.choose_strategy(dependent, batch) == "conv"


@pytest.mark.parametrize(("batch", "rank"), [(2, 16), (64, 16)])
def test_auto_layer_runs_the_chosen_strategy(batch, rank):
    """The traced graph holds a convolution for Algorithm 1 and none for the LC form."""
    config = _config(rank)
    layer = lrlc_tf.LRLC2D.from_lrlc_config(config)
    x = tf.zeros((batch, *config.input_size, config.in_channels))
    graph = tf.function(layer).get_concrete_function(x).graph
    has_conv = any(op.type == "Conv2D" for op in graph.get_operations())
    assert has_conv == (costs.choose_strategy(config, batch) == "conv")


# Every fifth fixed case of the catalogue (input-dependent layers have Algorithm 1 only;
# lrlc_tf has no mixed basis yet).
FIXED_CASES = [
    c for c in conformance.catalogue() if not (c.config.input_dependent or c.config.mixed)
][::5]


@pytest.mark.parametrize("case", FIXED_CASES, ids=[c.name for c in FIXED_CASES])
def test_strategies_agree(case):
    """'conv' and 'lc' give the same outputs and gradients (each within the tolerance of the
    reference, so within twice it of each other)."""
    x, params, dy = conformance.case_data(case, 0)
    results = {}
    for strategy in ("conv", "lc"):
        backend = backends.load("tf", strategy=strategy)
        y = backend.forward(case.config, params, x, dtype="float32")
        dx, dparams = backend.vjp(case.config, params, x, dy, dtype="float32")
        results[strategy] = [y, dx, *(dparams[name] for name in sorted(dparams))]
    tol = 2 * conformance.tolerance("float32", case.config, case.batch)
    for conv, lc in zip(results["conv"], results["lc"]):
        assert conformance.relative_error(lc, conv) <= tol


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="no GPU visible to TensorFlow: GPU conformance not run")
def test_tf_backend_passes_whole_catalogue_on_gpu(tf_backend):
    report = conformance.run(tf_backend, devices=["gpu"])
    print(conformance.format_matrix([report]))
    assert report.ok, "\n".join(map(str, report.failures))
    assert "bfloat16" in tf_backend.dtypes
    # Nothing skipped but the mixed-basis cases (no mixed basis in lrlc_tf yet).
    n_mixed = sum(case.config.mixed for case in conformance.catalogue())
    for key, counts in report.counts.items():
        assert counts["skipped"] == n_mixed, key
        assert "supports_mixed_basis" in report.skipped_reasons[key], key
