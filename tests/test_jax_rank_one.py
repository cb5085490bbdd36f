"""lrlc_jax at rank 1 with softmax: the combining weights are identically 1 (spec section 4.3),
so `apply` runs one convolution plus the bias map, never evaluates the weights, and every
logit (or parameter of the network g) gets an exact zero gradient. Checked against the NumPy
reference, and by the traced program (which ops run), not by timing."""

import dataclasses

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import conformance
import lrlc_jax
import lrlc_numpy
from lrlc_numpy import LRLCConfig
from lrlc_numpy.strategy import combining_parameter_names

# float64 must be real for the float64 comparisons (the conformance adapter does the same).
jax.config.update("jax_enable_x64", True)

# Every combining mode, with stride, dilation, asymmetric and wide padding between them, and a
# mixed basis of one; the input-dependent layer's grid (9 x 10) activates g's dilated
# branches r = 1, 2 and 4.
FIXED = {
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
INPUT_DEPENDENT = LRLCConfig(
    3, 4, (3, 2), rank=1, input_size=(9, 10), padding=((2, 0), (1, 1)), combining="full",
    input_dependent=True,
)  # fmt: skip
CONFIGS = {**FIXED, "input-dependent": INPUT_DEPENDENT}
ALL = pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())


def _combining_names(config):
    """The parameters that enter the layer only through its combining weights."""
    return combining_parameter_names(lrlc_numpy.param_shapes(config))


def _data(config, batch=2):
    """(x, params, dy) in float64, logits and biases away from their initial values."""
    return conformance.case_data(conformance.Case("rank-one", config, batch), seed=0)


def _output_and_gradients(params, x, dy, config, strategy):
    y, pullback = jax.vjp(lambda p, xs: lrlc_jax.apply(p, xs, config, strategy=strategy), params, x)
    return y, *pullback(dy)


_step = jax.jit(_output_and_gradients, static_argnums=(3, 4))


def _assert_matches_reference(config, x, params, dy, outputs):
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


@ALL
@pytest.mark.parametrize("strategy", ["auto", "conv"])
def test_matches_the_reference_with_exact_zero_logit_gradients(config, strategy):
    x, params, dy = _data(config)
    outputs = _step(params, x, dy, config, strategy)
    _assert_matches_reference(config, x, params, dy, outputs)
    dparams = outputs[1]
    for name, param in params.items():
        assert dparams[name].shape == param.shape and dparams[name].dtype == jnp.float64, name
    for name in _combining_names(config):
        assert not np.any(dparams[name]), f"{name}: gradient should be exactly zero"


@pytest.mark.parametrize("config", [FIXED["rowcol"], INPUT_DEPENDENT], ids=["fixed", "idep"])
def test_gradients_are_exact_zeros_eagerly_and_in_float32(config):
    """jax.grad outside jit, on float32 parameters: zeros of each parameter's own shape and
    dtype."""
    x, params, dy = _data(config)
    params32 = {name: jnp.asarray(value, jnp.float32) for name, value in params.items()}
    x32, dy32 = jnp.asarray(x, jnp.float32), jnp.asarray(dy, jnp.float32)
    grads = jax.grad(lambda p: jnp.sum(lrlc_jax.apply(p, x32, config) * dy32))(params32)
    for name in _combining_names(config):
        assert grads[name].shape == params32[name].shape
        assert grads[name].dtype == jnp.float32
        assert not np.any(grads[name]), f"{name}: gradient should be exactly zero"
    assert np.any(grads["basis"])


def _primitives(config, strategy="auto", dtype=jnp.float64):
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


@ALL
@pytest.mark.parametrize("strategy", ["auto", "conv"])
def test_softmax_at_rank_one_is_one_convolution(config, strategy):
    """No softmax (exp), no network g (its sigmoid), no combination; one convolution."""
    ops = _primitives(config, strategy)
    assert ops.count("conv_general_dilated") == 1
    assert "exp" not in ops and "logistic" not in ops and "dot_general" not in ops, ops


@ALL
def test_l2_at_rank_one_takes_the_general_path(config):
    """w = w~ / |w~| is not identically 1: the weights are computed (and g runs) and the
    result still matches the reference."""
    l2 = dataclasses.replace(config, normalize="l2")
    ops = _primitives(l2)
    assert "sqrt" in ops or "rsqrt" in ops
    assert ("logistic" in ops) == l2.input_dependent
    x, params, dy = _data(l2)
    _assert_matches_reference(l2, x, params, dy, _step(params, x, dy, l2, "auto"))


@pytest.mark.parametrize("config", FIXED.values(), ids=FIXED.keys())
def test_explicit_lc_strategy_is_kept(config):
    """strategy='lc' at rank 1 still runs the locally connected form, and agrees."""
    ops = _primitives(config, "lc")
    assert "conv_general_dilated" not in ops and "exp" in ops
    x, params, dy = _data(config)
    _assert_matches_reference(config, x, params, dy, _step(params, x, dy, config, "lc"))


def test_input_is_still_checked():
    params = lrlc_jax.init(jax.random.key(0), INPUT_DEPENDENT)
    h, w = INPUT_DEPENDENT.input_size
    with pytest.raises(ValueError, match="channels"):
        lrlc_jax.apply(params, jnp.zeros((2, h, w, 5)), INPUT_DEPENDENT)
    with pytest.raises(ValueError, match="input_size"):
        lrlc_jax.apply(params, jnp.zeros((2, h + 1, w, 3)), INPUT_DEPENDENT)
    with pytest.raises(TypeError, match="floating"):
        lrlc_jax.apply(params, jnp.zeros((2, h, w, 3), jnp.int32), INPUT_DEPENDENT)
