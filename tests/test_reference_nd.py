"""The NumPy reference in 1-D and 3-D (spec section 17): forward against the naive n-D
layer of tests/brute_force_nd.py, the hand-written vjp against central differences, the
locally connected form, initialisation and the config's n-D rules."""

import math

import numpy as np
import pytest

import conformance
import lrlc_numpy as L
from lrlc_numpy import reference as R
from tests import brute_force, brute_force_nd

CONFIGS = {
    "1d-full": L.LRLCConfig(2, 3, 3, rank=3, input_size=(9,), combining="full"),
    "1d-strided-same": L.LRLCConfig(
        2, 2, 4, rank=2, input_size=(10,), stride=3, padding="same", combining="full"
    ),
    "1d-dilated-explicit": L.LRLCConfig(
        1, 2, 3, rank=2, input_size=(9,), dilation=2, padding=((2, 1),), combining="full",
        normalize="l2",
    ),
    "1d-input-dependent": L.LRLCConfig(
        2, 2, 3, rank=2, input_size=(11,), padding="same", combining="full", input_dependent=True
    ),
    "1d-mixed": L.LRLCConfig(
        2, 2, [1, 3, 5], rank=3, input_size=(8,), dilation=[1, 2, 1], padding="same",
        combining="full",
    ),
    "3d-rowcol": L.LRLCConfig(2, 2, 2, rank=2, input_size=(3, 4, 3)),
    "3d-full-strided": L.LRLCConfig(
        1, 2, (1, 2, 3), rank=2, input_size=(3, 5, 4), stride=(1, 2, 1), padding="same",
        combining="full", normalize="none",
    ),
    "3d-padded-no-spatial-bias": L.LRLCConfig(
        2, 1, 2, rank=3, input_size=(2, 3, 3), padding=(1, 0, 1), spatial_bias=False
    ),
    "3d-input-dependent": L.LRLCConfig(
        1, 2, 3, rank=2, input_size=(5, 4, 6), padding="same", combining="full",
        input_dependent=True,
    ),
    "3d-mixed": L.LRLCConfig(
        1, 2, [(1, 3, 3), 3], rank=2, input_size=(3, 4, 4), padding="same"
    ),
}  # fmt: skip


def _data(config, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    params = {name: rng.standard_normal(shape) for name, shape in L.param_shapes(config).items()}
    x = rng.standard_normal((batch, *config.input_size, config.in_channels))
    return x, params


def _tol(config, batch=2):
    return conformance.tolerance("float64", config, batch)


@pytest.mark.parametrize("name", CONFIGS)
def test_forward_matches_the_naive_layer(name):
    config = CONFIGS[name]
    x, params = _data(config)
    want = brute_force_nd.lrlc_forward(x, params, config)
    got = L.forward(x, params, config)
    assert got.shape == (2, *config.output_size, config.out_channels)
    assert conformance.relative_error(got, want) <= _tol(config)


@pytest.mark.parametrize(
    "config",
    [
        L.LRLCConfig(2, 2, 3, rank=2, input_size=(5, 6), padding="same"),
        L.LRLCConfig(1, 2, (2, 3), rank=3, input_size=(6, 5), stride=2, combining="row"),
        L.LRLCConfig(2, 1, 3, rank=2, input_size=(7, 7), combining="full", input_dependent=True),
    ],
    ids=["rowcol", "row", "input-dependent"],
)
def test_the_naive_nd_layer_agrees_with_the_2d_loops(config):
    """The n-D loops read in 2-D as the 2-D loops do: the check of the checker."""
    x, params = _data(config)
    got = brute_force_nd.lrlc_forward(x, params, config)
    assert conformance.relative_error(got, brute_force.lrlc_forward(x, params, config)) <= _tol(
        config
    )


def _numeric_vjp(x, params, config, dy, step=1e-6):
    """Central differences of <dy, forward> in x and in every parameter."""

    def loss(x_, params_):
        return float((L.forward(x_, params_, config) * dy).sum())

    def grad(array, evaluate):
        out = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + step
            up = evaluate()
            array[index] = saved - step
            down = evaluate()
            array[index] = saved
            out[index] = (up - down) / (2 * step)
        return out

    dx = grad(x, lambda: loss(x, params))
    dparams = {name: grad(value, lambda: loss(x, params)) for name, value in params.items()}
    return dx, dparams


@pytest.mark.parametrize("name", ["1d-strided-same", "1d-input-dependent", "1d-mixed",
                                  "3d-rowcol", "3d-input-dependent", "3d-mixed"])  # fmt: skip
def test_vjp_matches_central_differences(name):
    """Central differences with step h in float64 err by about h^2 f''' + eps f / h, ~1e-9
    relative for these O(1) functions; 1e-6 leaves three orders of margin, far below the
    size of any real mistake (a dropped or misplaced term is O(1))."""
    config = CONFIGS[name]
    x, params = _data(config, batch=1, seed=3)
    dy = np.random.default_rng(4).standard_normal((1, *config.output_size, config.out_channels))
    dx, dparams = L.vjp(x, params, config, dy)
    want_dx, want_dparams = _numeric_vjp(x, params, config, dy)
    assert conformance.relative_error(dx, want_dx) <= 1e-6
    assert set(dparams) == set(want_dparams)
    for pname, value in dparams.items():
        assert conformance.relative_error(value, want_dparams[pname]) <= 1e-6, pname


@pytest.mark.parametrize("name", CONFIGS)
def test_the_locally_connected_form_computes_the_layer(name):
    config = CONFIGS[name]
    x, params = _data(config)
    kernel, bias = L.to_locally_connected(params, config, x if config.input_dependent else None)
    want_kernel, want_bias = L.lc_shapes(config)
    lead = (2,) if config.input_dependent else ()
    assert kernel.shape == (*lead, *want_kernel) and bias.shape == want_bias
    got = L.locally_connected(x, kernel, bias, config)
    assert conformance.relative_error(got, L.forward(x, params, config)) <= _tol(config)


def test_a_1d_layer_is_a_2d_layer_with_one_row():
    """Fixed 'full' layers: (L,) with kernel k equals (1, L) with kernel (1, k)."""
    one = L.LRLCConfig(2, 3, 3, rank=2, input_size=(8,), stride=2, padding="same",
                       combining="full")  # fmt: skip
    two = L.LRLCConfig(2, 3, (1, 3), rank=2, input_size=(1, 8), stride=(1, 2), padding="same",
                       combining="full")  # fmt: skip
    x, params = _data(one)
    as_2d = {name: value.reshape(L.param_shapes(two)[name]) for name, value in params.items()}
    got = L.forward(x, params, one)
    want = L.forward(x[:, None], as_2d, two)[:, 0]
    assert conformance.relative_error(got, want) <= _tol(one)


def test_a_3d_layer_with_one_plane_is_the_2d_layer():
    """'rowcol' in 3-D with a single depth position adds depth_logits[0] (a constant over
    the plane) and depth_bias[0]; moving them into the 2-D tables gives the 2-D layer."""
    three = L.LRLCConfig(2, 2, (1, 3, 3), rank=3, input_size=(1, 6, 5), padding="same")
    two = L.LRLCConfig(2, 2, 3, rank=3, input_size=(6, 5), padding="same")
    x, params = _data(three)
    as_2d = {
        "basis": params["basis"][:, 0],
        "row_logits": params["row_logits"] + params["depth_logits"][0],
        "col_logits": params["col_logits"],
        "row_bias": params["row_bias"] + params["depth_bias"][0],
        "col_bias": params["col_bias"],
        "channel_bias": params["channel_bias"],
    }
    got = L.forward(x, params, three)[:, 0]
    assert conformance.relative_error(got, L.forward(x[:, 0], as_2d, two)) <= _tol(two)


def test_initial_values_follow_the_window_volume_and_the_axis_count():
    config = L.LRLCConfig(4, 2, (3, 1, 2), rank=4, input_size=(4, 4, 4))
    basis = L.initial_value("basis", config)
    assert basis.uniform and math.isclose(basis.limit, math.sqrt(6.0 / (3 * 1 * 2 * 4)))
    for table in ("depth_logits", "row_logits", "col_logits"):
        assert math.isclose(L.initial_value(table, config).value, 1 / (3 * math.sqrt(4)))
    params = L.init_params(config)
    logits = sum(R._axis_table(params[f"{a}_logits"], a, config) for a in ("depth", "row", "col"))
    np.testing.assert_allclose(logits, 1 / math.sqrt(4))  # 'conv_init': 1/sqrt(K) everywhere
    dependent = L.LRLCConfig(2, 2, 3, rank=2, input_size=(5,), combining="full",
                             input_dependent=True)  # fmt: skip
    depthwise = L.initial_value("g.dilated1.kernel", dependent)
    assert math.isclose(depthwise.limit, math.sqrt(6.0 / (3 * 2 + 3)))


def test_checkpoints_round_trip_in_1d_and_3d(tmp_path):
    for config in (CONFIGS["1d-mixed"], CONFIGS["3d-input-dependent"]):
        _, params = _data(config)
        path = tmp_path / f"{config.spatial_dims}.lrlc"
        L.save_checkpoint(path, params, config)
        loaded = L.read_checkpoint(path)
        assert loaded.config == config
        for name, value in params.items():
            np.testing.assert_array_equal(loaded.params[name], value)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(input_size=(9,)), ValueError, "only combining mode is 'full'"),
        (dict(input_size=(4, 4, 4), combining="col"), ValueError, "2-D layers only"),
        (dict(input_size=(9,), combining="full", padding=(1, 2)), ValueError, "1 (before, after)"),
        (dict(input_size=(4, 4, 4, 4)), TypeError, "1, 2 or 3 ints"),
        (dict(input_size=(4, 4, 4), kernel_size=(3, 3)), TypeError, "a triple of ints"),
        (dict(input_size=(9,), combining="full", stride=(1, 1)), TypeError, "a 1-tuple"),
        (dict(input_size=(4, 5, 6), kernel_size=[3, (1, 3)]), TypeError, "kernel_size[1]"),
        (dict(input_size=(2, 9, 9)), ValueError, "empty output grid"),
    ],
    ids=[
        "1d-rowcol",
        "3d-col",
        "1d-pair-padding",
        "4d",
        "3d-pair-kernel",
        "1d-pair-stride",
        "3d-mixed-pair",
        "3d-empty",
    ],  # fmt: skip
)
def test_configs_outside_the_rules_are_refused(kwargs, error, words):
    fields = dict(in_channels=2, out_channels=2, kernel_size=3, rank=2) | kwargs
    with pytest.raises(error, match=None) as info:
        L.LRLCConfig(**fields)
    assert words in str(info.value)


@pytest.mark.parametrize("name", ["1d-mixed", "3d-full-strided", "3d-input-dependent"])
def test_configs_round_trip_through_json(name):
    config = CONFIGS[name]
    assert L.LRLCConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    "shape, words",
    [((2, 9, 2, 1), "rank 3 (NLC)"), ((2, 9, 3), "3 channels"), ((2, 8, 2), "spatial size (8,)")],
)
def test_1d_inputs_are_checked_against_the_layer(shape, words):
    config = CONFIGS["1d-full"]
    _, params = _data(config)
    with pytest.raises(ValueError) as info:
        L.forward(np.zeros(shape), params, config)
    assert words in str(info.value)


def test_3d_inputs_name_the_channels_first_layout():
    config = CONFIGS["3d-rowcol"]
    with pytest.raises(ValueError, match=r"rank 5 \(NCDHW\)"):
        L.check_input_shape((2, 2, 3, 4), config, layout="NCDHW")
    L.check_input_shape((2, 2, 3, 4, 3), config, layout="NCDHW")  # accepted


def test_auto_leaves_the_locally_connected_form_when_its_banks_outgrow_the_cap():
    from lrlc_numpy import strategy

    small = L.LRLCConfig(8, 8, 3, rank=16, input_size=(8, 8, 8), padding="same")
    big = L.LRLCConfig(64, 64, 3, rank=16, input_size=(32, 32, 32), padding="same")
    assert strategy.lc_bank_elements(small) <= strategy.LC_MAX_BANK_ELEMENTS
    assert strategy.lc_bank_elements(big) == 32**3 * 27 * 64 * 64
    costs = strategy.CostModel(product=1.0, patch=1.0, bank=0.0, bank_passes=1)
    assert strategy.choose_strategy(small, 64, "auto", costs) == "lc"
    assert strategy.choose_strategy(big, 64, "auto", costs) == "conv"
    assert strategy.choose_strategy(big, 64, "lc", costs) == "lc"  # asked for: honoured
