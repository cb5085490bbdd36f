"""The NumPy reference against the equations: brute force, finite differences, identities."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lrlc_numpy as L
from conformance import Case, case_data, catalogue, random_config
from tests import brute_force

CASES = catalogue()
IDS = [case.name for case in CASES]


def _small(case: Case) -> Case:
    """The case with batch 1, so the loop implementation stays quick."""
    return dataclasses.replace(case, batch=1)


# --- Forward: vectorised reference == per-position loops --------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_matches_brute_force(case):
    x, params, _ = case_data(_small(case), seed=1)
    want = brute_force.lrlc_forward(x, params, case.config)
    np.testing.assert_allclose(L.forward(x, params, case.config), want, rtol=0, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_random_configs_match_brute_force(seed):
    config = random_config(np.random.default_rng(seed))
    x, params, _ = case_data(Case("random", config, batch=1), seed)
    want = brute_force.lrlc_forward(x, params, config)
    np.testing.assert_allclose(L.forward(x, params, config), want, rtol=0, atol=1e-12)


def test_conv2d_matches_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 6, 3))
    kernel = rng.normal(size=(3, 2, 3, 4))
    config = L.LRLCConfig(
        3,
        4,
        (3, 2),
        1,
        (7, 6),
        stride=(2, 1),
        dilation=(1, 2),
        padding="same",
        combining="full",
        spatial_bias=False,
        channel_bias=False,
    )
    params = {"basis": kernel[None], "logits": np.zeros((*config.output_size, 1))}
    want = brute_force.lrlc_forward(x, params, config)  # K = 1, softmax weight 1: a convolution
    got = L.conv2d(x, kernel, stride=(2, 1), padding="same", dilation=(1, 2))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


# --- Padding and resizing against hand-worked values -------------------------------------------


@pytest.mark.parametrize(
    "n, k, s, d, pads, out",
    [
        (8, 3, 2, 1, (0, 1), 4),  # total (4-1)*2 + 3 - 8 = 1: the extra pixel goes at the end
        (7, 3, 2, 1, (1, 1), 4),
        (5, 4, 1, 1, (1, 2), 5),  # even kernel: asymmetric even at stride 1
        (9, 3, 1, 2, (2, 2), 9),  # dilation 2: window extent 5
        (6, 3, 3, 1, (0, 0), 2),  # total = max((2-1)*3 + 3 - 6, 0) = 0
        (4, 5, 1, 1, (2, 2), 4),
    ],
)
def test_same_padding_hand_worked(n, k, s, d, pads, out):
    config = L.LRLCConfig(1, 1, (k, 1), 1, (n, 3), stride=(s, 1), dilation=(d, 1), padding="same")
    assert config.padding_pairs[0] == pads
    assert config.output_size[0] == out == -(-n // s)


def test_resize_matrix_aligned_corners_hand_worked():
    # 3 -> 5: samples at 0, 0.5, 1, 1.5, 2.
    expected = np.array(
        [[1, 0, 0], [0.5, 0.5, 0], [0, 1, 0], [0, 0.5, 0.5], [0, 0, 1]], dtype=float
    )
    np.testing.assert_array_equal(L.resize_matrix(3, 5), expected)
    np.testing.assert_array_equal(L.resize_matrix(1, 4), np.ones((4, 1)))  # broadcast
    np.testing.assert_array_equal(L.resize_matrix(4, 1), [[1, 0, 0, 0]])  # out == 1 -> source 0
    # Rows sum to one, so constants are preserved.
    np.testing.assert_allclose(L.resize_matrix(7, 4).sum(axis=1), 1.0, rtol=0, atol=1e-15)


# --- Gradients: hand-written vjp == central finite differences --------------------------------

# Central differences D(h) have truncation error h^2 |f'''| / 6 + O(h^4) and rounding error
# ~ eps |f| / h. Richardson's (4 D(h) - D(2h)) / 3 cancels the h^2 term, leaving O(h^4 f^(5))
# (~1e-20 times the fifth derivative) and rounding ~ 3 eps |f| / h (~1e-10 for |f| ~ 1e1):
# both far below 1e-6 relative to max(1, |directional derivative|), also for random configs
# with a large third derivative (plain D(h) missed 1e-6 by 4 % on one: seed 288033).
FD_STEP = 1e-5
FD_TOL = 1e-6


def _central(fun, point, direction, h):
    return (fun(point + h * direction) - fun(point - h * direction)) / (2 * h)


def _directional_fd(fun, point, direction):
    fine = _central(fun, point, direction, FD_STEP)
    return (4 * fine - _central(fun, point, direction, 2 * FD_STEP)) / 3


def _relu_pattern(x, params, config):
    """Which of g's ReLU inputs are positive (None for a fixed layer, which has no kink)."""
    if not config.input_dependent:
        return None
    _, cache = L.reference.g_forward(x, params, config)
    return cache["pre_squeeze"] > 0


def _smooth_direction(rng, shape, pattern_at):
    """A random direction along which the differences stay on one side of every ReLU kink of
    g: differences across a kink measure neither one-sided derivative, so the check would
    fail a correct gradient. `pattern_at(step)` is the ReLU pattern at the point + step."""
    base = pattern_at(0.0)
    for _ in range(50):
        direction = rng.normal(size=shape)
        if all(
            np.array_equal(pattern_at(sign * 2 * FD_STEP * direction), base) for sign in (1, -1)
        ):
            return direction
    raise AssertionError("no kink-free direction in 50 draws")


def _check_gradients(case, seed):
    config = case.config
    x, params, dy = case_data(case, seed)
    dx, dparams = L.vjp(x, params, config, dy)
    assert set(dparams) == set(params)
    rng = np.random.default_rng(seed + 7)

    def loss_of_x(point):
        return float((L.forward(point, params, config) * dy).sum())

    direction = _smooth_direction(
        rng, x.shape, lambda step: _relu_pattern(x + step, params, config)
    )
    want = _directional_fd(loss_of_x, x, direction)
    got = float((dx * direction).sum())
    assert abs(got - want) <= FD_TOL * max(1.0, abs(want)), ("x", got, want)
    for name, value in params.items():

        def loss_of_param(point, name=name):
            return float((L.forward(x, {**params, name: point}, config) * dy).sum())

        def pattern_at(step, name=name, value=value):
            return _relu_pattern(x, {**params, name: value + step}, config)

        direction = _smooth_direction(rng, value.shape, pattern_at)
        want = _directional_fd(loss_of_param, value, direction)
        got = float((dparams[name] * direction).sum())
        assert abs(got - want) <= FD_TOL * max(1.0, abs(want)), (name, got, want)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_vjp_matches_finite_differences(case):
    _check_gradients(case, seed=3)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_random_configs_vjp_matches_finite_differences(seed):
    _check_gradients(Case("random", random_config(np.random.default_rng(seed))), seed)


def test_l2_gradient_below_the_floor_is_finite_and_linear():
    config = L.LRLCConfig(2, 2, 3, 3, (5, 5), combining="full", normalize="l2")
    x, params, dy = case_data(Case("l2-floor", config), seed=0)
    params["logits"] = np.zeros_like(params["logits"])  # every norm is below the 1e-12 floor
    _, grads = L.vjp(x, params, config, dy)
    assert np.all(np.isfinite(grads["logits"]))
    # Below the floor w = w~ / 1e-6 exactly, so the gradient is dL/dw / 1e-6.
    direction = np.random.default_rng(1).normal(size=params["logits"].shape) * 1e-9
    shifted = {**params, "logits": direction}
    slope = ((L.forward(x, shifted, config) - L.forward(x, params, config)) * dy).sum()
    np.testing.assert_allclose((grads["logits"] * direction).sum(), slope, rtol=1e-6)


# --- Identities from the paper -------------------------------------------------------------


@pytest.mark.parametrize("combining", L.COMBINING_MODES)
def test_rank_one_is_convolution_plus_spatial_bias(combining):
    """Sec. 3.2.1: K = 1 (softmax) is a convolution followed by the spatially varying bias."""
    config = L.LRLCConfig(3, 4, 3, 1, (7, 6), stride=2, padding="same", combining=combining)
    x, params, _ = case_data(Case("k1", config), seed=2)
    spatial = {
        "rowcol": lambda p: p["row_bias"][:, None] + p["col_bias"][None, :],
        "row": lambda p: p["row_bias"][:, None],
        "col": lambda p: p["col_bias"][None, :],
        "full": lambda p: p["spatial_bias"],
    }[combining](params)
    conv = L.conv2d(x, params["basis"][0], stride=2, padding="same")
    want = conv + spatial[None, :, :, None] + params["channel_bias"]
    np.testing.assert_allclose(L.forward(x, params, config), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("combining", L.COMBINING_MODES)
def test_constant_logits_are_convolution_with_mean_filter(combining):
    """Softmax of constant logits is 1/K everywhere: a convolution with the mean basis filter."""
    config = L.LRLCConfig(2, 3, 3, 5, (6, 8), dilation=2, padding="same", combining=combining)
    params = L.init_params(config, seed=4)
    for name in params:
        if "logits" in name:
            params[name] = np.full_like(params[name], 0.7)
    x = np.random.default_rng(0).normal(size=(2, 6, 8, 2))
    want = L.conv2d(x, params["basis"].mean(axis=0), dilation=2, padding="same")
    np.testing.assert_allclose(L.forward(x, params, config), want, rtol=0, atol=1e-12)


def test_initialisation_starts_as_mean_filter_convolution():
    config = L.LRLCConfig(3, 5, 3, 4, (8, 8))
    params = L.init_params(config, seed=0)
    limit = np.sqrt(6 / (3 * 3 * 3))
    assert np.abs(params["basis"]).max() <= limit
    assert np.abs(params["basis"]).max() > 0.9 * limit  # uses the whole range
    for name in ("row_bias", "col_bias", "channel_bias"):
        assert not params[name].any()
    x = np.random.default_rng(1).normal(size=(1, 8, 8, 3))
    want = L.conv2d(x, params["basis"].mean(axis=0))
    np.testing.assert_allclose(L.forward(x, params, config), want, rtol=0, atol=1e-12)


# The authors' 'conv_init' (spec section 10): w~ = 1/sqrt(K) at every position, which 'rowcol'
# splits evenly over its row and column tables. Softmax then gives 1/K, 'l2' and 'none' 1/sqrt(K).
INITIAL_WEIGHT = {"softmax": lambda k: 1 / k, "l2": lambda k: k**-0.5, "none": lambda k: k**-0.5}


@pytest.mark.parametrize("normalize", sorted(INITIAL_WEIGHT))
@pytest.mark.parametrize("combining", ["rowcol", "row", "col", "full"])
def test_initialisation_is_a_convolution_in_every_mode(combining, normalize):
    rank = 4
    config = L.LRLCConfig(3, 5, 3, rank, (8, 7), combining=combining, normalize=normalize)
    params = L.init_params(config, seed=2)
    share = 0.5 if combining == "rowcol" else 1.0
    for name in ("row_logits", "col_logits", "logits"):
        if name in params:
            np.testing.assert_array_equal(params[name], share / np.sqrt(rank))
    weights = L.combining_weights(params, config)
    np.testing.assert_allclose(weights, INITIAL_WEIGHT[normalize](rank), rtol=1e-15)
    x = np.random.default_rng(3).normal(size=(2, 8, 7, 3))
    kernel = INITIAL_WEIGHT[normalize](rank) * params["basis"].sum(axis=0)
    np.testing.assert_allclose(L.forward(x, params, config), L.conv2d(x, kernel), atol=1e-12)
    # Alive: the basis gets a gradient, and the logits' gradient is of ordinary size.
    _, grads = L.vjp(x, params, config, np.ones((2, 6, 5, 5)))
    assert np.abs(grads["basis"]).max() > 1e-3
    logit_grads = [grads[n] for n in ("row_logits", "col_logits", "logits") if n in grads]
    assert max(np.abs(g).max() for g in logit_grads) < 1e3


def test_glorot_fans_follow_keras_for_the_depthwise_kernels():
    # The authors' depthwise kernels are (3, 3, K, 1) in Keras: fan_in 9 K, fan_out 9.
    config = L.LRLCConfig(2, 3, 3, 5, (9, 9), combining="full", input_dependent=True)
    rule = L.initial_value("g.dilated1.kernel", config)
    assert rule.uniform and rule.limit == pytest.approx(np.sqrt(6 / (9 * 5 + 9)))
    rule = L.initial_value("g.squeeze.kernel", config)  # dense ((n + 2) K, 3 K); 9x9: r = 1, 2, 4
    assert rule.limit == pytest.approx(np.sqrt(6 / (5 * 5 + 3 * 5)))
    assert L.glorot_fans((3, 3, 5, 1)) == (45, 9)
    assert L.glorot_fans((7, 2)) == (7, 2)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_locally_connected_form_reproduces_forward(case):
    x, params, _ = case_data(case, seed=5)
    config = case.config
    kernel, bias = L.to_locally_connected(params, config, x if config.input_dependent else None)
    out_h, out_w = config.output_size
    per_position = (out_h, out_w, *config.kernel_size, config.in_channels, config.out_channels)
    assert kernel.shape == ((case.batch,) if config.input_dependent else ()) + per_position
    np.testing.assert_allclose(
        L.locally_connected(x, kernel, bias, config),
        L.forward(x, params, config),
        rtol=0,
        atol=1e-12,
    )


def test_input_dependent_weights_differ_per_example():
    config = L.LRLCConfig(2, 2, 3, 3, (9, 9), combining="full", input_dependent=True)
    x, params, _ = case_data(Case("idep", config, batch=2), seed=0)
    weights = L.combining_weights(params, config, x)
    assert weights.shape == (2, 7, 7, 3)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-12)
    assert np.abs(weights[0] - weights[1]).max() > 1e-3


def test_float32_inputs_compute_in_float32():
    case = CASES[0]
    x, params, dy = case_data(case, seed=0)
    x32 = x.astype(np.float32)
    y = L.forward(x32, params, case.config)
    dx, grads = L.vjp(x32, params, case.config, dy)
    assert y.dtype == dx.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())


# --- Checkpoints -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", [CASES[0], CASES[-1]], ids=[CASES[0].name, CASES[-1].name])
def test_checkpoint_round_trip_is_bit_exact(tmp_path, case, dtype):
    _, params, _ = case_data(case, seed=0)
    params = {k: v.astype(dtype) for k, v in params.items()}
    L.save_params(tmp_path / "p.safetensors", params, case.config)
    loaded, config = L.load_params(tmp_path / "p.safetensors")
    assert config == case.config
    assert set(loaded) == set(params)
    for name in params:
        assert loaded[name].dtype == dtype
        np.testing.assert_array_equal(loaded[name], params[name])
