"""lrlc_tf at rank 1 with softmax: w = softmax over one member = 1 everywhere (spec section
4.3), so Algorithm 1 is one convolution with C_out outputs plus the bias map, and every
combining parameter (logits, or the network g) has an exactly zero gradient. Checked
against lrlc_numpy in float64 under `conformance.tolerance`; the other normalisations at
rank 1 (whose weights are not 1) and an explicit strategy='lc' keep the general path."""

import warnings

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import keras  # noqa: E402

import conformance  # noqa: E402
import lrlc_numpy as L  # noqa: E402
from lrlc_tf import LRLC2D, functional  # noqa: E402

BATCH = 2
# Every combining mode, each on a window that takes a different convolution route
# (native 'SAME', explicit padding, a dilated window with stride, 'valid'), biases varied;
# and a mixed basis of one.
RANK_ONE = {
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
WEIGHT_OPS = {"Softmax", "DepthwiseConv2dNative", "Sigmoid"}


def is_combining_param(name):
    return name.endswith("logits") or name.startswith("g.")


def loaded(config, dtype="float64", **kwargs):
    """A built layer holding the conformance data for `config`, with its input x, dy and
    neutral params."""
    x, params, dy = conformance.case_data(conformance.Case("t", config, BATCH), 0)
    layer = LRLC2D.from_lrlc_config(config, dtype=dtype, **kwargs)
    layer.build((None, *config.input_size, config.in_channels))
    layer.load_neutral_params(params)
    return layer, x, params, dy


def forward_graph_ops(layer, x):
    graph = tf.function(layer).get_concrete_function(tf.TensorSpec(x.shape, tf.float64)).graph
    return graph.get_operations()


def forward_and_gradients(layer, x, dy):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    grads = tape.gradient(y, [x, *layer.trainable_variables], output_gradients=tf.constant(dy))
    return y, grads[0], dict(zip((v.name for v in layer.trainable_variables), grads[1:]))


def err(got, want):
    return conformance.relative_error(tf.cast(got, tf.float64).numpy(), want)


@pytest.mark.parametrize("strategy", ["auto", "conv"])
@pytest.mark.parametrize("config", RANK_ONE.values(), ids=RANK_ONE)
def test_rank_one_softmax_is_one_convolution_with_c_out_outputs(config, strategy):
    assert functional.weights_are_ones(config)
    layer, x, _, _ = loaded(config, strategy=strategy)
    ops = forward_graph_ops(layer, x)
    convolutions = [op for op in ops if op.type.startswith("Conv2D")]
    assert len(convolutions) == 1
    assert convolutions[0].outputs[0].shape[-1] == config.out_channels
    assert not WEIGHT_OPS & {op.type for op in ops}


@pytest.mark.parametrize("strategy", ["auto", "conv"])
@pytest.mark.parametrize("config", RANK_ONE.values(), ids=RANK_ONE)
def test_rank_one_softmax_matches_the_reference(config, strategy):
    layer, x, params, dy = loaded(config, strategy=strategy)
    y, dx, dparams = forward_and_gradients(layer, x, dy)
    want_dx, want_dparams = L.vjp(x, params, config, dy)
    tol = conformance.tolerance("float64", config, BATCH)
    assert err(y, L.forward(x, params, config)) <= tol
    assert err(dx, want_dx) <= tol
    assert set(dparams) == set(want_dparams)
    for name, grad in dparams.items():
        assert grad is not None, name
        assert grad.dtype == tf.float64 and tuple(grad.shape) == params[name].shape, name
        assert err(grad, want_dparams[name]) <= tol, name
        if is_combining_param(name):  # exact zeros, as the softmax's Jacobian at p = 1 gives
            assert not np.any(grad.numpy()), name


@pytest.mark.parametrize("normalize", ["l2", "none"])
def test_rank_one_without_softmax_takes_the_general_path(normalize):
    """'l2' gives w = sign(w~) and 'none' w = w~: not 1, so the weights must be evaluated."""
    config = L.LRLCConfig(3, 4, 3, rank=1, input_size=(7, 6), padding="same", normalize=normalize)
    assert not functional.weights_are_ones(config)
    layer, x, params, dy = loaded(config)
    # The data's weights differ from 1 somewhere, so a convolution alone would fail below.
    assert np.any(L.combining_weights(params, config) != 1)
    y, dx, dparams = forward_and_gradients(layer, x, dy)
    want_dx, want_dparams = L.vjp(x, params, config, dy)
    tol = conformance.tolerance("float64", config, BATCH)
    gradient_tol = tol * conformance.gradient_conditioning(config, x, params)
    assert err(y, L.forward(x, params, config)) <= tol
    assert err(dx, want_dx) <= gradient_tol
    for name, grad in dparams.items():
        assert err(grad, want_dparams[name]) <= gradient_tol, name


def test_explicit_lc_strategy_at_rank_one_keeps_the_locally_connected_form():
    config = RANK_ONE["rowcol"]
    layer, x, params, dy = loaded(config, strategy="lc")
    assert not any(op.type.startswith("Conv2D") for op in forward_graph_ops(layer, x))
    y, dx, dparams = forward_and_gradients(layer, x, dy)
    want_dx, want_dparams = L.vjp(x, params, config, dy)
    tol = conformance.tolerance("float64", config, BATCH)
    assert err(y, L.forward(x, params, config)) <= tol
    assert err(dx, want_dx) <= tol
    for name, grad in dparams.items():
        assert err(grad, want_dparams[name]) <= tol, name


@pytest.mark.parametrize(
    ("policy", "jit_compile"),
    [("float32", False), ("mixed_float16", True)],
    ids=["plain", "mixed-xla"],
)
def test_rank_one_model_trains_with_a_gradient_for_every_variable(policy, jit_compile):
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
            if is_combining_param(v.name):
                np.testing.assert_array_equal(v.numpy(), old, err_msg=v.name)
            else:
                assert np.any(v.numpy() != old), v.name
