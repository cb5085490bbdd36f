"""How a layer is evaluated, across backends: the shared strategy rule (lrlc_numpy.strategy)
that every backend calibrates, each backend's 'auto' choice, the two strategies agreeing,
and the exact rank-1 paths (spec section 4.3)."""

import dataclasses
import math
import warnings

import numpy as np
import pytest

import conformance
import lrlc_numpy
import lrlc_numpy as L
from conformance import backends
from lrlc_numpy import LRLCConfig, param_shapes
from lrlc_numpy.strategy import (
    CostModel,
    choose_strategy,
    combining_parameter_names,
    lc_crossover,
    weights_are_ones,
)

# Each backend's section runs only where its framework is installed (under `nox -s tests`
# every framework must be: tests/test_environment.py).
try:
    import keras
    import tensorflow as tf

    from lrlc_tf import LRLC2D
    from lrlc_tf import functional as tf_functional
except ImportError:
    tf = None
try:
    import jax
    import jax.extend
    import jax.numpy as jnp

    import lrlc_jax

    jax.config.update("jax_enable_x64", True)  # float64 comparisons need real float64
except ImportError:
    jax = None
needs_tf = pytest.mark.skipif(tf is None, reason="TensorFlow is not installed")
needs_jax = pytest.mark.skipif(jax is None, reason="JAX is not installed")

COSTS = CostModel(product=2.0, patch=64.0, bank=2.0, bank_passes=4)


def paper(rank, **kw):
    return LRLCConfig(64, 64, 3, rank, (32, 32), padding="same", **kw)


def test_crossover_is_the_documented_inequality():
    # K (3 B - 4 * 2) > B (3 * 2 + 64 / 64)  <=>  K > 7 B / (3 B - 8)
    for batch in (3, 8, 64, 512):
        assert lc_crossover(paper(1), batch, COSTS) == pytest.approx(7 * batch / (3 * batch - 8))
    assert lc_crossover(paper(1), 2, COSTS) == math.inf  # too small a batch to share banks
    assert lc_crossover(paper(1), None, COSTS) == pytest.approx(7 / 3)  # the large-batch limit


def test_auto_follows_the_crossover_and_explicit_choices_stand():
    assert choose_strategy(paper(2), 64, "auto", COSTS) == "conv"  # 2 <= 2.37
    assert choose_strategy(paper(3), 64, "auto", COSTS) == "lc"
    assert choose_strategy(paper(3), 64, "conv", COSTS) == "conv"
    assert choose_strategy(paper(1), 64, "lc", COSTS) == "lc"
    idep = paper(16, combining="full", input_dependent=True)
    assert choose_strategy(idep, 512, "auto", COSTS) == "conv"


def test_bad_strategies():
    with pytest.raises(ValueError, match="unknown strategy 'fast'.*'auto', 'conv', 'lc'"):
        choose_strategy(paper(2), 64, "fast", COSTS)
    idep = paper(4, combining="full", input_dependent=True)
    with pytest.raises(ValueError, match="strategy='lc' needs fixed combining weights"):
        choose_strategy(idep, 64, "lc", COSTS)


# ---------------------------------------------------------------------------------------------
# Rank 1 with softmax (spec section 4.3)


def test_weights_are_ones_only_for_rank_one_softmax():
    for rank, normalize, expected in [(1, "softmax", True), (1, "l2", False), (1, "none", False),
                                      (2, "softmax", False)]:  # fmt: skip
        config = LRLCConfig(2, 3, 3, rank=rank, input_size=(6, 6), normalize=normalize)
        assert weights_are_ones(config) is expected


def test_combining_parameter_names_are_the_logits_or_g():
    """The contract's parameter table: logits per combining mode, or every g.* tensor."""
    expected = {
        "rowcol": ["col_logits", "row_logits"],
        "row": ["row_logits"],
        "col": ["col_logits"],
        "full": ["logits"],
    }
    for combining, names in expected.items():
        config = LRLCConfig(2, 3, 3, rank=1, input_size=(6, 6), combining=combining)
        assert combining_parameter_names(param_shapes(config)) == names
    config = LRLCConfig(2, 3, 3, rank=1, input_size=(9, 9), combining="full", input_dependent=True)
    shapes = param_shapes(config)
    got = combining_parameter_names(shapes)
    assert got == sorted(n for n in shapes if n.split(".")[0] == "g") and len(got) >= 8


# ---------------------------------------------------------------------------------------------
# Each backend's 'auto' choice and the catalogue's coverage of both strategies


def test_catalogue_exercises_the_locally_connected_form():
    """At the catalogue's batch of 2 'auto' picks Algorithm 1 everywhere, so the conformance
    rows run 'lc' explicitly; torch's rule is the reference point."""
    pytest.importorskip("torch")
    from lrlc_torch import costs as torch_costs

    cases = conformance.catalogue()
    fixed = [c for c in cases if not c.config.input_dependent]
    assert len(fixed) > len(cases) // 2
    assert all(torch_costs.choose_strategy(c.config, c.batch, "lc") == "lc" for c in fixed)
    assert all(torch_costs.choose_strategy(c.config, c.batch, "auto") == "conv" for c in cases)


def _small(rank, **kwargs):
    return LRLCConfig(3, 4, 3, rank, (6, 5), padding="same", **kwargs)


@pytest.mark.parametrize("batch", [1, 2, 8, 64, 512, None])
@pytest.mark.parametrize("rank", [1, 2, 3, 4, 8, 16, 32])
def test_tf_auto_follows_the_documented_cost_rule(batch, rank):
    """'lc' exactly when K (3 B - 3 BANK_COST) > B (3 PRODUCT_COST + 3 PATCH_COST / C_out),
    an unknown batch counting as large; input-dependent layers: 'conv'."""
    pytest.importorskip("tensorflow")
    from lrlc_tf import costs as f

    per_example = 3 * f.PRODUCT_COST + 3 * f.PATCH_COST / _small(rank).out_channels
    if batch is None:
        want = "lc" if 3 * rank > per_example else "conv"
    else:
        cheaper = rank * (3 * batch - 3 * f.BANK_COST) > batch * per_example
        want = "lc" if cheaper else "conv"
    assert f.choose_strategy(_small(rank), batch) == want
    for explicit in ("conv", "lc"):
        assert f.choose_strategy(_small(rank), batch, explicit) == explicit
    dependent = _small(rank, combining="full", input_dependent=True)
    assert f.choose_strategy(dependent, batch) == "conv"


@pytest.mark.parametrize(("batch", "rank"), [(2, 16), (64, 16)])
def test_tf_auto_layer_runs_the_chosen_strategy(batch, rank):
    """The traced graph holds a convolution for Algorithm 1 and none for the LC form."""
    tf = pytest.importorskip("tensorflow")
    import lrlc_tf
    from lrlc_tf import costs

    config = _small(rank)
    layer = lrlc_tf.LRLC2D.from_lrlc_config(config)
    x = tf.zeros((batch, *config.input_size, config.in_channels))
    graph = tf.function(layer).get_concrete_function(x).graph
    has_conv = any(op.type == "Conv2D" for op in graph.get_operations())
    assert has_conv == (costs.choose_strategy(config, batch) == "conv")


# Every fifth fixed case of the catalogue (input-dependent layers have Algorithm 1 only).
FIXED_CASES = [c for c in conformance.catalogue() if not c.config.input_dependent][::5]


@pytest.mark.parametrize("case", FIXED_CASES, ids=[c.name for c in FIXED_CASES])
def test_tf_strategies_agree(case):
    """'conv' and 'lc' give the same outputs and gradients (each within the tolerance of the
    reference, so within twice it of each other)."""
    pytest.importorskip("tensorflow")
    adapter = backends.load("tf", strategy="conv")
    if case.config.mixed and not getattr(adapter, "supports_mixed_basis", False):
        pytest.skip("lrlc_tf has no mixed basis yet (spec section 16)")
    x, params, dy = conformance.case_data(case, 0)
    results = {}
    for strategy in ("conv", "lc"):
        adapter = backends.load("tf", strategy=strategy)
        y = adapter.forward(case.config, params, x, dtype="float32")
        dx, dparams = adapter.vjp(case.config, params, x, dy, dtype="float32")
        results[strategy] = [y, dx, *(dparams[name] for name in sorted(dparams))]
    tol = 2 * conformance.tolerance("float32", case.config, case.batch)
    for conv, lc in zip(results["conv"], results["lc"]):
        assert conformance.relative_error(lc, conv) <= tol


def test_mixed_basis_counts_algorithm1_work_per_bank():
    """A 3x3 bank and a 5x5 bank of dilation 2 cover a 9x9 window: Algorithm 1 does
    (9 + 25) / 81 window-convolutions of work, not K = 2, so 'auto' waits longer for 'lc'."""
    from lrlc_numpy.strategy import algorithm1_windows, lc_is_cheaper

    mixed = LRLCConfig(64, 64, [3, 5], 2, (32, 32), dilation=[1, 2], padding="same")
    assert algorithm1_windows(mixed) == pytest.approx(34 / 81)
    assert algorithm1_windows(paper(4)) == 4
    for batch in (1, 8, 64, None):
        assert lc_is_cheaper(paper(16), batch, COSTS) == (
            16 > lc_crossover(paper(16), batch, COSTS)
        )
    assert choose_strategy(mixed, 64, "auto", COSTS) == "conv"


@pytest.mark.parametrize("batch", [-1, 2.0, True, "8"])
def test_batch_must_be_a_count_or_unknown(batch):
    with pytest.raises(ValueError, match="batch must be a non-negative int or None"):
        choose_strategy(paper(4), batch, "auto", COSTS)


# ---------------------------------------------------------------------------------------------
# Rank 1 with softmax (spec section 4.3): w = softmax over one member = 1 everywhere, so
# Algorithm 1 is one convolution with C_out outputs plus the bias map, and every combining
# parameter (logits, or the network g) has an exactly zero gradient. Each backend is checked
# against lrlc_numpy in float64 under `conformance.tolerance`, and by its traced program (which
# ops run), not by timing; the other normalisations at rank 1 (whose weights are not 1) and an
# explicit strategy='lc' keep the general path. lrlc_torch's rank-1 tests sit with its other
# strategy tests in tests/test_torch_strategies.py, which share its layer helpers.

# TensorFlow / Keras

TF_BATCH = 2
# Every combining mode, each on a window that takes a different convolution route
# (native 'SAME', explicit padding, a dilated window with stride, 'valid'), biases varied;
# and a mixed basis of one.
TF_RANK_ONE = {
    "rowcol": L.LRLCConfig(3, 4, 3, rank=1, input_size=(7, 6), stride=2, padding="same"),
    "full": L.LRLCConfig(
        2, 3, (2, 3), rank=1, input_size=(6, 7), padding=((2, 0), (1, 1)), combining="full"
    ),
    "row": L.LRLCConfig(
        2, 3, 3, rank=1, input_size=(9, 8), stride=2, dilation=2, padding="same", combining="row"
    ),
    "col": L.LRLCConfig(2, 2, 3, rank=1, input_size=(6, 6), combining="col", spatial_bias=False),
    "idep": L.LRLCConfig(
        3,
        4,
        3,
        rank=1,
        input_size=(9, 8),
        padding="same",
        combining="full",
        input_dependent=True,
        channel_bias=False,
    ),
    # A mixed basis of one (spec section 16): basis.0 on its own dilated, strided geometry.
    "mixed": L.LRLCConfig(
        2, 3, [(3, 2)], rank=1, input_size=(9, 8), stride=2, dilation=[2], padding="same"
    ),
}
# Ops that only the combining weights use: the softmax, and g's depthwise convolutions and
# sigmoid.
TF_WEIGHT_OPS = {"Softmax", "DepthwiseConv2dNative", "Sigmoid"}


def tf_is_combining_param(name):
    return name.endswith("logits") or name.startswith("g.")


def tf_loaded(config, dtype="float64", **kwargs):
    """A built layer holding the conformance data for `config`, with its input x, dy and
    neutral params."""
    x, params, dy = conformance.case_data(conformance.Case("t", config, TF_BATCH), 0)
    layer = LRLC2D.from_lrlc_config(config, dtype=dtype, **kwargs)
    layer.build((None, *config.input_size, config.in_channels))
    layer.load_neutral_params(params)
    return layer, x, params, dy


def tf_forward_graph_ops(layer, x):
    graph = tf.function(layer).get_concrete_function(tf.TensorSpec(x.shape, tf.float64)).graph
    return graph.get_operations()


def tf_forward_and_gradients(layer, x, dy):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    grads = tape.gradient(y, [x, *layer.trainable_variables], output_gradients=tf.constant(dy))
    return y, grads[0], dict(zip((v.name for v in layer.trainable_variables), grads[1:]))


def tf_err(got, want):
    return conformance.relative_error(tf.cast(got, tf.float64).numpy(), want)


@needs_tf
@pytest.mark.parametrize("strategy", ["auto", "conv"])
@pytest.mark.parametrize("config", TF_RANK_ONE.values(), ids=TF_RANK_ONE)
def test_tf_rank_one_softmax_is_one_convolution_with_c_out_outputs(config, strategy):
    assert tf_functional.weights_are_ones(config)
    layer, x, _, _ = tf_loaded(config, strategy=strategy)
    ops = tf_forward_graph_ops(layer, x)
    convolutions = [op for op in ops if op.type.startswith("Conv2D")]
    assert len(convolutions) == 1
    assert convolutions[0].outputs[0].shape[-1] == config.out_channels
    assert not TF_WEIGHT_OPS & {op.type for op in ops}


@needs_tf
@pytest.mark.parametrize("strategy", ["auto", "conv"])
@pytest.mark.parametrize("config", TF_RANK_ONE.values(), ids=TF_RANK_ONE)
def test_tf_rank_one_softmax_matches_the_reference(config, strategy):
    layer, x, params, dy = tf_loaded(config, strategy=strategy)
    y, dx, dparams = tf_forward_and_gradients(layer, x, dy)
    want_dx, want_dparams = L.vjp(x, params, config, dy)
    tol = conformance.tolerance("float64", config, TF_BATCH)
    assert tf_err(y, L.forward(x, params, config)) <= tol
    assert tf_err(dx, want_dx) <= tol
    assert set(dparams) == set(want_dparams)
    for name, grad in dparams.items():
        assert grad is not None, name
        assert grad.dtype == tf.float64 and tuple(grad.shape) == params[name].shape, name
        assert tf_err(grad, want_dparams[name]) <= tol, name
        if tf_is_combining_param(name):  # exact zeros, as the softmax's Jacobian at p = 1 gives
            assert not np.any(grad.numpy()), name


@needs_tf
@pytest.mark.parametrize("normalize", ["l2", "none"])
def test_tf_rank_one_without_softmax_takes_the_general_path(normalize):
    """'l2' gives w = sign(w~) and 'none' w = w~: not 1, so the weights must be evaluated."""
    config = L.LRLCConfig(3, 4, 3, rank=1, input_size=(7, 6), padding="same", normalize=normalize)
    assert not tf_functional.weights_are_ones(config)
    layer, x, params, dy = tf_loaded(config)
    # The data's weights differ from 1 somewhere, so a convolution alone would fail below.
    assert np.any(L.combining_weights(params, config) != 1)
    y, dx, dparams = tf_forward_and_gradients(layer, x, dy)
    want_dx, want_dparams = L.vjp(x, params, config, dy)
    tol = conformance.tolerance("float64", config, TF_BATCH)
    gradient_tol = tol * conformance.gradient_conditioning(config, x, params)
    assert tf_err(y, L.forward(x, params, config)) <= tol
    assert tf_err(dx, want_dx) <= gradient_tol
    for name, grad in dparams.items():
        assert tf_err(grad, want_dparams[name]) <= gradient_tol, name


@needs_tf
def test_tf_explicit_lc_strategy_at_rank_one_keeps_the_locally_connected_form():
    config = TF_RANK_ONE["rowcol"]
    layer, x, params, dy = tf_loaded(config, strategy="lc")
    assert not any(op.type.startswith("Conv2D") for op in tf_forward_graph_ops(layer, x))
    y, dx, dparams = tf_forward_and_gradients(layer, x, dy)
    want_dx, want_dparams = L.vjp(x, params, config, dy)
    tol = conformance.tolerance("float64", config, TF_BATCH)
    assert tf_err(y, L.forward(x, params, config)) <= tol
    assert tf_err(dx, want_dx) <= tol
    for name, grad in dparams.items():
        assert tf_err(grad, want_dparams[name]) <= tol, name


@pytest.mark.parametrize(
    ("policy", "jit_compile"),
    [("float32", False), ("mixed_float16", True)],
    ids=["plain", "mixed-xla"],
)
@needs_tf
def test_tf_rank_one_model_trains_with_a_gradient_for_every_variable(policy, jit_compile):
    """One fit step warns of no missing gradient; Adam leaves the combining parameters
    exactly where they were (their gradients are exact zeros) and moves the rest."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 8, 8, 2)).astype("float32")
    y = rng.normal(size=(8, 8, 8, 3)).astype("float32")
    fixed = LRLC2D(4, 3, 1, input_size=(8, 8), padding="same", dtype=policy)
    idep = LRLC2D(
        3,
        3,
        1,
        input_size=(8, 8),
        padding="same",
        combining="full",
        input_dependent=True,
        dtype=policy,
    )
    model = keras.Sequential([keras.Input((8, 8, 2)), fixed, idep])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", jit_compile=jit_compile)
    before = {f"{layer.name}/{v.name}": v.numpy() for layer in (fixed, idep) for v in layer.weights}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "Gradients do not exist" in m], messages
    for layer in (fixed, idep):
        for v in layer.weights:
            old = before[f"{layer.name}/{v.name}"]
            if tf_is_combining_param(v.name):
                np.testing.assert_array_equal(v.numpy(), old, err_msg=v.name)
            else:
                assert np.any(v.numpy() != old), v.name


# JAX

# Every combining mode, with stride, dilation, asymmetric and wide padding between them, and a
# mixed basis of one; the input-dependent layer's grid (9 x 10) activates g's dilated
# branches r = 1, 2 and 4.
JAX_FIXED = {
    "rowcol": LRLCConfig(
        3, 4, 3, rank=1, input_size=(8, 7), stride=(2, 1), dilation=(1, 2), padding="same"
    ),
    "full": LRLCConfig(2, 3, (2, 3), rank=1, input_size=(6, 7), padding=((1, 2), (0, 1)),
                       combining="full"),
    "row": LRLCConfig(3, 2, (1, 2), rank=1, input_size=(5, 6), padding=((1, 1), (2, 0)),
                      combining="row", channel_bias=False),
    "col": LRLCConfig(2, 4, 3, rank=1, input_size=(7, 5), stride=2, combining="col",
                      spatial_bias=False),
    # A mixed basis of one (spec section 16): basis.0 on its own dilated, strided geometry.
    "mixed": LRLCConfig(2, 3, [(3, 2)], rank=1, input_size=(9, 8), stride=2, dilation=[2],
                        padding="same"),
}  # fmt: skip
JAX_INPUT_DEPENDENT = LRLCConfig(
    3, 4, (3, 2), rank=1, input_size=(9, 10), padding=((2, 0), (1, 1)), combining="full",
    input_dependent=True,
)  # fmt: skip
JAX_CONFIGS = {**JAX_FIXED, "input-dependent": JAX_INPUT_DEPENDENT}
JAX_ALL = pytest.mark.parametrize("config", JAX_CONFIGS.values(), ids=JAX_CONFIGS.keys())


def _jax_combining_names(config):
    """The parameters that enter the layer only through its combining weights."""
    return combining_parameter_names(lrlc_numpy.param_shapes(config))


def _jax_data(config, batch=2):
    """(x, params, dy) in float64, logits and biases away from their initial values."""
    return conformance.case_data(conformance.Case("rank-one", config, batch), seed=0)


def _jax_output_and_gradients(params, x, dy, config, strategy):
    y, pullback = jax.vjp(lambda p, xs: lrlc_jax.apply(p, xs, config, strategy=strategy), params, x)
    return y, *pullback(dy)


_jax_step = None if jax is None else jax.jit(_jax_output_and_gradients, static_argnums=(3, 4))


def _jax_assert_matches_reference(config, x, params, dy, outputs):
    """Output and every gradient within the conformance suite's tolerance rule (float64),
    gradients widened by its conditioning factor (1 except for 'l2')."""
    y, dparams, dx = outputs
    tol = conformance.tolerance("float64", config, x.shape[0])
    gradient_tol = tol * conformance.gradient_conditioning(config, x, params)
    want_dx, want_dparams = lrlc_numpy.vjp(x, params, config, dy)
    assert conformance.relative_error(y, lrlc_numpy.forward(x, params, config)) <= tol
    assert conformance.relative_error(dx, want_dx) <= gradient_tol
    assert set(dparams) == set(want_dparams)
    for name, want in want_dparams.items():
        assert conformance.relative_error(dparams[name], want) <= gradient_tol, name


@needs_jax
@JAX_ALL
@pytest.mark.parametrize("strategy", ["auto", "conv"])
def test_jax_matches_the_reference_with_exact_zero_logit_gradients(config, strategy):
    x, params, dy = _jax_data(config)
    outputs = _jax_step(params, x, dy, config, strategy)
    _jax_assert_matches_reference(config, x, params, dy, outputs)
    dparams = outputs[1]
    for name, param in params.items():
        assert dparams[name].shape == param.shape and dparams[name].dtype == jnp.float64, name
    for name in _jax_combining_names(config):
        assert not np.any(dparams[name]), f"{name}: gradient should be exactly zero"


@needs_jax
@pytest.mark.parametrize(
    "config", [JAX_FIXED["rowcol"], JAX_INPUT_DEPENDENT], ids=["fixed", "idep"]
)
def test_jax_gradients_are_exact_zeros_eagerly_and_in_float32(config):
    """jax.grad outside jit, on float32 parameters: zeros of each parameter's own shape and
    dtype."""
    x, params, dy = _jax_data(config)
    params32 = {name: jnp.asarray(value, jnp.float32) for name, value in params.items()}
    x32, dy32 = jnp.asarray(x, jnp.float32), jnp.asarray(dy, jnp.float32)
    grads = jax.grad(lambda p: jnp.sum(lrlc_jax.apply(p, x32, config) * dy32))(params32)
    for name in _jax_combining_names(config):
        assert grads[name].shape == params32[name].shape
        assert grads[name].dtype == jnp.float32
        assert not np.any(grads[name]), f"{name}: gradient should be exactly zero"
    assert np.any(grads["basis"])


def _jax_primitives(config, strategy="auto", dtype=jnp.float64):
    """Names of the primitives in apply's traced program, nested calls included."""
    params = lrlc_jax.init(jax.random.key(0), config, dtype)
    x = jnp.zeros((2, *config.input_size, config.in_channels), dtype)
    closed = jax.make_jaxpr(lambda p, xs: lrlc_jax.apply(p, xs, config, strategy=strategy))(
        params, x
    )
    names = []

    def visit(jaxpr):
        for equation in jaxpr.eqns:
            names.append(equation.primitive.name)
            for sub in jax.extend.core.jaxprs_in_params(equation.params):
                visit(sub)

    visit(closed.jaxpr)
    return names


@needs_jax
@JAX_ALL
@pytest.mark.parametrize("strategy", ["auto", "conv"])
def test_jax_softmax_at_rank_one_is_one_convolution(config, strategy):
    """No softmax (exp), no network g (its sigmoid), no combination; one convolution."""
    ops = _jax_primitives(config, strategy)
    assert ops.count("conv_general_dilated") == 1
    assert "exp" not in ops and "logistic" not in ops and "dot_general" not in ops, ops


@needs_jax
@JAX_ALL
def test_jax_l2_at_rank_one_takes_the_general_path(config):
    """w = w~ / |w~| is not identically 1: the weights are computed (and g runs) and the
    result still matches the reference."""
    l2 = dataclasses.replace(config, normalize="l2")
    ops = _jax_primitives(l2)
    assert "sqrt" in ops or "rsqrt" in ops
    assert ("logistic" in ops) == l2.input_dependent
    x, params, dy = _jax_data(l2)
    _jax_assert_matches_reference(l2, x, params, dy, _jax_step(params, x, dy, l2, "auto"))


@needs_jax
@pytest.mark.parametrize("config", JAX_FIXED.values(), ids=JAX_FIXED.keys())
def test_jax_explicit_lc_strategy_is_kept(config):
    """strategy='lc' at rank 1 still runs the locally connected form, and agrees."""
    ops = _jax_primitives(config, "lc")
    assert "conv_general_dilated" not in ops and "exp" in ops
    x, params, dy = _jax_data(config)
    _jax_assert_matches_reference(config, x, params, dy, _jax_step(params, x, dy, config, "lc"))


@needs_jax
def test_jax_input_is_still_checked():
    params = lrlc_jax.init(jax.random.key(0), JAX_INPUT_DEPENDENT)
    h, w = JAX_INPUT_DEPENDENT.input_size
    with pytest.raises(ValueError, match="channels"):
        lrlc_jax.apply(params, jnp.zeros((2, h, w, 5)), JAX_INPUT_DEPENDENT)
    with pytest.raises(ValueError, match="input_size"):
        lrlc_jax.apply(params, jnp.zeros((2, h + 1, w, 3)), JAX_INPUT_DEPENDENT)
    with pytest.raises(TypeError, match="floating"):
        lrlc_jax.apply(params, jnp.zeros((2, h, w, 3), jnp.int32), JAX_INPUT_DEPENDENT)
