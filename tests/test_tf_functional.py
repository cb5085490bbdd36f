"""lrlc_tf's functional API on bad and edge inputs (spec section 14; issue 14): every public
function raises TypeError or ValueError naming the argument, the value and what was
expected; an empty batch gives an empty output and zero gradients under every strategy;
'l2' normalises extreme logits without overflow; checkpoints keep each tensor's dtype."""

import ml_dtypes
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import conformance  # noqa: E402
import lrlc_numpy as L  # noqa: E402
import lrlc_tf  # noqa: E402
from lrlc_numpy import reference  # noqa: E402
from lrlc_tf import checkpoint, functional  # noqa: E402
from lrlc_tf import positionwise as pw  # noqa: E402

FIXED = L.LRLCConfig(3, 4, 3, rank=2, input_size=(7, 6), padding="same")
IDEP = L.LRLCConfig(
    3, 4, 3, rank=2, input_size=(7, 6), padding="same", combining="full", input_dependent=True
)
MIXED = L.LRLCConfig(3, 4, [3, 5, 3], rank=3, dilation=[1, 2, 1], input_size=(7, 6), padding="same")
X = np.random.default_rng(0).normal(size=(2, 7, 6, 3))
PARAMS = L.init_params(FIXED)
IDEP_PARAMS = L.init_params(IDEP)
LC_KERNEL, LC_BIAS = L.to_locally_connected(PARAMS, FIXED)


def without(params, name):
    return {k: v for k, v in params.items() if k != name}


def replaced(params, name, value):
    return {**params, name: value}


F = functional
# (call, exception type, message fragment): one bad argument each, everything else valid.
BAD_CALLS = {
    "x rank 3": (lambda: F.forward(X[0], PARAMS, FIXED), ValueError, "must have rank 4 (NHWC)"),
    "x channels": (
        lambda: F.forward(X[..., :2], PARAMS, FIXED),
        ValueError,
        "has 2 channels (shape (2, 7, 6, 2), NHWC); expected in_channels=3",
    ),
    "x grid": (
        lambda: F.forward(X[:, :6], PARAMS, FIXED),
        ValueError,
        "spatial size (6, 6)",
    ),
    "x integer": (
        lambda: F.forward(X.astype(np.int32), PARAMS, FIXED),
        TypeError,
        "x must have a floating dtype (float16, bfloat16, float32, float64), got int32",
    ),
    "x float8": (
        lambda: F.forward(X.astype(ml_dtypes.float8_e4m3fn), PARAMS, FIXED),
        TypeError,
        "got float8_e4m3fn",
    ),
    "x a string": (lambda: F.forward("x", PARAMS, FIXED), TypeError, "x must be a tensor"),
    "x a dict": (lambda: F.forward({"x": X}, PARAMS, FIXED), TypeError, "got dict"),
    "x ragged": (lambda: F.forward([[1.0], [1.0, 2.0]], PARAMS, FIXED), TypeError, "got list"),
    "config a dict": (
        lambda: F.forward(X, PARAMS, FIXED.to_dict()),
        TypeError,
        "config must be an LRLCConfig, got a dict",
    ),
    "unknown strategy": (
        lambda: F.forward(X, PARAMS, FIXED, strategy="fast"),
        ValueError,
        "unknown strategy 'fast'; expected one of ('auto', 'conv', 'lc')",
    ),
    "strategy lc, input-dependent": (
        lambda: F.forward(X, IDEP_PARAMS, IDEP, strategy="lc"),
        ValueError,
        "strategy='lc' needs fixed combining weights",
    ),
    "params a list": (
        lambda: F.forward(X, list(PARAMS.values()), FIXED),
        TypeError,
        "params must be a mapping of name -> array, got list",
    ),
    "params missing": (
        lambda: F.forward(X, without(PARAMS, "row_logits"), FIXED),
        ValueError,
        "missing tensors ['row_logits'], unexpected tensors []",
    ),
    "params extra": (
        lambda: F.forward(X, {**PARAMS, "bogus": np.zeros(3)}, FIXED),
        ValueError,
        "unexpected tensors ['bogus']",
    ),
    "params mis-shaped": (
        lambda: F.forward(X, replaced(PARAMS, "basis", PARAMS["basis"][:1]), FIXED),
        ValueError,
        "params['basis'] has shape (1, 3, 3, 3, 4); expected (2, 3, 3, 3, 4)",
    ),
    "params integer": (
        lambda: F.forward(X, replaced(PARAMS, "channel_bias", np.zeros(4, np.int64)), FIXED),
        TypeError,
        "params['channel_bias'] must have a floating dtype",
    ),
    "params a list value": (
        lambda: F.forward(X, replaced(PARAMS, "channel_bias", [0.0] * 4), FIXED),
        TypeError,
        "params['channel_bias'] is a list",
    ),
    "mixed config, plain basis": (
        lambda: F.forward(
            X,
            {**without(L.init_params(MIXED), "basis.0"), "basis": np.zeros((3, 3, 3, 3, 4))},
            MIXED,
        ),
        ValueError,
        "missing tensors ['basis.0']",
    ),
    "combining_weights without x": (
        lambda: F.combining_weights(IDEP_PARAMS, IDEP),
        ValueError,
        "an input-dependent layer needs the input x",
    ),
    "combining_weights, bad x": (
        lambda: F.combining_weights(PARAMS, FIXED, X[..., :1]),
        ValueError,
        "expected in_channels=3",
    ),
    "to_locally_connected without x": (
        lambda: F.to_locally_connected(IDEP_PARAMS, IDEP),
        ValueError,
        "an input-dependent layer needs the input x",
    ),
    "lc kernel shape": (
        lambda: F.locally_connected(X, LC_KERNEL[:, :, :2], LC_BIAS, FIXED),
        ValueError,
        "locally connected kernel has shape (7, 6, 2, 3, 3, 4); expected (7, 6, 3, 3, 3, 4)",
    ),
    "lc kernel batch": (
        lambda: F.locally_connected(X, np.stack([LC_KERNEL] * 3), LC_BIAS, FIXED),
        ValueError,
        "or (2, 7, 6, 3, 3, 3, 4) (one per example)",
    ),
    "lc kernel of a mixed basis's first window": (
        lambda: F.locally_connected(X, np.zeros((7, 6, 3, 3, 3, 4)), None, MIXED),
        ValueError,
        "expected (7, 6, 9, 9, 3, 4)",
    ),
    "lc bias shape": (
        lambda: F.locally_connected(X, LC_KERNEL, LC_BIAS[0], FIXED),
        ValueError,
        "locally connected bias has shape (6, 4); expected (7, 6, 4)",
    ),
    "lc kernel integer": (
        lambda: F.locally_connected(X, LC_KERNEL.astype(np.int32), LC_BIAS, FIXED),
        TypeError,
        "locally connected kernel must have a floating dtype",
    ),
    "lc bias a string": (
        lambda: F.locally_connected(X, LC_KERNEL, "zeros", FIXED),
        TypeError,
        "locally connected bias must be a tensor or array, got str",
    ),
    "normalize_weights mode": (
        lambda: F.normalize_weights(np.ones((2, 3)), "L2"),
        ValueError,
        "normalize_weights: unknown mode 'L2'; expected one of ('softmax', 'l2', 'none')",
    ),
    "normalize_weights scalar": (
        lambda: F.normalize_weights(np.float64(1.0), "l2"),
        ValueError,
        "K axis last",
    ),
    "check_params dtype": (
        lambda: F.check_params(PARAMS, FIXED, "int32"),
        TypeError,
        "check_params: dtype must be one of float16, bfloat16, float32, float64, got 'int32'",
    ),
    "bias_map dtype": (
        lambda: F.bias_map(PARAMS, FIXED, None),
        TypeError,
        "bias_map: dtype must be one of",
    ),
    "bias_map missing bias": (
        lambda: F.bias_map(without(PARAMS, "col_bias"), FIXED, "float64"),
        ValueError,
        "spatial_bias_map: params has no 'col_bias'",
    ),
    "fixed_logits of an input-dependent layer": (
        lambda: F.fixed_logits(IDEP_PARAMS, IDEP),
        ValueError,
        "use g_forward(x, params, config)",
    ),
    "fixed_logits mis-shaped": (
        lambda: F.fixed_logits(replaced(PARAMS, "col_logits", np.zeros((6, 3))), FIXED),
        ValueError,
        "fixed_logits: params['col_logits'] has shape (6, 3); expected (6, 2)",
    ),
    "g_forward of a fixed layer": (
        lambda: F.g_forward(X, PARAMS, FIXED),
        ValueError,
        "a fixed layer has no g",
    ),
    "resize_bilinear size": (
        lambda: F.resize_bilinear(X, (0, 3)),
        ValueError,
        "resize_bilinear: size height must be a positive int, got 0",
    ),
    "resize_bilinear rank": (
        lambda: F.resize_bilinear(X[0], (3, 3)),
        ValueError,
        "resize_bilinear: a has shape (7, 6, 3); expected (B, B, B, B)",
    ),
    "depthwise_conv3x3 too small": (
        lambda: F.depthwise_conv3x3(X, np.zeros((3, 3, 3)), np.zeros(3), 4),
        ValueError,
        "too small for a 3x3 window at dilation 4",
    ),
    "depthwise_conv3x3 kernel": (
        lambda: F.depthwise_conv3x3(X, np.zeros((3, 3, 2)), np.zeros(3), 1),
        ValueError,
        "depthwise_conv3x3: kernel has shape (3, 3, 2); expected (3, 3, 3)",
    ),
    "basis_responses mixed basis not a list": (
        lambda: F.basis_responses(X, np.zeros((3, 3, 3, 3, 4)), MIXED),
        TypeError,
        "a mixed basis is a list of its 3 tensors",
    ),
    "group_basis group": (
        lambda: F.group_basis(PARAMS["basis"], (0, 1)),
        TypeError,
        "group must be a BasisGroup",
    ),
    "stack_responses count": (
        lambda: F.stack_responses([np.zeros((2, 7, 6, 2, 4))], MIXED),
        ValueError,
        "expected a list of 2 responses",
    ),
    "combine weights": (
        lambda: F.combine(np.zeros((2, 7, 6, 2, 4)), np.zeros((7, 6, 3)), None),
        ValueError,
        "combine: weights has shape (7, 6, 3); expected (7, 6, 2)",
    ),
    "combine bias": (
        lambda: F.combine(np.zeros((2, 7, 6, 2, 4)), np.zeros((7, 6, 2)), np.zeros((7, 6))),
        ValueError,
        "combine: bias has shape (7, 6); expected (7, 6, 4)",
    ),
    "position_banks per-example weights": (
        lambda: F.position_banks(np.zeros((2, 7, 6, 2)), PARAMS["basis"]),
        ValueError,
        "position_banks: weights has shape (2, 7, 6, 2); expected (B, B, B)",
    ),
    "apply_banks banks": (
        lambda: pw.apply_banks(X, np.zeros((42, 27, 3)), FIXED),
        ValueError,
        "banks has shape (42, 27, 3); expected (H_out W_out, kh kw C_in, C_out) = (42, 27, 4)",
    ),
    "extract_patches x": (
        lambda: pw.extract_patches(X[..., :1], FIXED),
        ValueError,
        "expected in_channels=3",
    ),
    "save_checkpoint integer tensor": (
        lambda: checkpoint.save_checkpoint(
            "unused.safetensors", replaced(PARAMS, "basis", PARAMS["basis"].astype(int)), FIXED
        ),
        TypeError,
        "params['basis'] must have a floating dtype",
    ),
    "save_checkpoint config": (
        lambda: checkpoint.save_checkpoint("unused.safetensors", PARAMS, FIXED.to_dict()),
        TypeError,
        "save_checkpoint: config must be an LRLCConfig",
    ),
    "load_checkpoint missing file": (
        lambda: checkpoint.load_checkpoint("/nonexistent/lrlc.safetensors"),
        FileNotFoundError,
        "/nonexistent/lrlc.safetensors",
    ),
    "stored_dtype of mixed dtypes": (
        lambda: checkpoint.stored_dtype(
            {"basis": np.zeros(2, np.float16), "channel_bias": np.zeros(2)}
        ),
        ValueError,
        "different dtypes {'basis': 'float16', 'channel_bias': 'float64'}",
    ),
}


@pytest.mark.parametrize("case", BAD_CALLS.values(), ids=BAD_CALLS)
def test_bad_argument_is_a_clear_error(case):
    call, error, fragment = case
    with pytest.raises(error) as caught:
        call()
    assert fragment in str(caught.value)


def test_unknown_rank_inside_tf_function_is_a_clear_error():
    traced = tf.function(
        lambda x: F.forward(x, PARAMS, FIXED), input_signature=[tf.TensorSpec(None, tf.float64)]
    )
    with pytest.raises(ValueError, match=r"x has unknown rank; expected rank 4 \(NHWC\)"):
        traced.get_concrete_function()


# ---------------------------------------------------------------------------------------------
# Empty batch: an empty output and zero (or empty) gradients, as tf.nn.conv2d gives

EMPTY_CASES = {
    "fixed-conv": (FIXED, "conv"),
    "fixed-lc": (FIXED, "lc"),
    "fixed-auto": (FIXED, "auto"),
    "strided-dilated-lc": (
        L.LRLCConfig(3, 4, 3, rank=2, input_size=(9, 8), stride=2, dilation=2, padding="same"),
        "lc",
    ),
    "idep-conv": (IDEP, "conv"),
    "idep-auto": (IDEP, "auto"),
    "rank1-conv": (L.LRLCConfig(3, 4, 3, rank=1, input_size=(7, 6), padding="same"), "conv"),
    "mixed-conv": (MIXED, "conv"),
    "mixed-lc": (MIXED, "lc"),
}


def gradients(fn, x, variables):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    grads = tape.gradient(
        y,
        [x, *variables],
        output_gradients=tf.ones_like(y),
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )
    return y, grads[0], grads[1:]


@pytest.mark.parametrize("case", EMPTY_CASES.values(), ids=EMPTY_CASES)
def test_empty_batch_gives_empty_output_and_zero_gradients(case):
    config, strategy = case
    params = {name: tf.Variable(v) for name, v in L.init_params(config).items()}
    x = np.zeros((0, *config.input_size, config.in_channels))
    y, dx, dparams = gradients(
        lambda x: F.forward(x, params, config, strategy=strategy), x, params.values()
    )
    assert y.shape == (0, *config.output_size, config.out_channels)
    assert dx.shape == x.shape
    for (name, value), grad in zip(params.items(), dparams):
        assert grad.shape == value.shape, name
        np.testing.assert_array_equal(grad.numpy(), 0, err_msg=name)


@pytest.mark.parametrize("per_example", [False, True], ids=["shared", "per-example"])
def test_empty_batch_through_locally_connected(per_example):
    kernel = tf.Variable(np.zeros((0, *LC_KERNEL.shape)) if per_example else LC_KERNEL)
    bias = tf.Variable(LC_BIAS)
    x = np.zeros((0, 7, 6, 3))
    y, dx, (dkernel, dbias) = gradients(
        lambda x: F.locally_connected(x, kernel, bias, FIXED), x, [kernel, bias]
    )
    assert y.shape == (0, 7, 6, 4) and dx.shape == x.shape
    assert dkernel.shape == kernel.shape and dbias.shape == bias.shape
    assert not np.any(dkernel.numpy()) and not np.any(dbias.numpy())


@pytest.mark.parametrize("layer_class", ["LocallyConnected2D", "LRLC2D"])
def test_empty_batch_through_the_layers(layer_class):
    if layer_class == "LRLC2D":
        layer = lrlc_tf.LRLC2D.from_lrlc_config(FIXED, strategy="lc", dtype="float64")
    else:
        layer = lrlc_tf.LocallyConnected2D.from_lrlc_config(FIXED, dtype="float64")
    layer.build((None, 7, 6, 3))
    y, dx, grads = gradients(layer, np.zeros((0, 7, 6, 3)), layer.trainable_variables)
    assert y.shape == (0, 7, 6, 4) and dx.shape == (0, 7, 6, 3)
    for variable, grad in zip(layer.trainable_variables, grads):
        np.testing.assert_array_equal(grad.numpy(), 0, err_msg=variable.name)


# ---------------------------------------------------------------------------------------------
# 'l2' without overflow (spec section 6)


@pytest.mark.parametrize(
    ("dtype", "big"), [("float32", 1e20), ("float32", 5e37), ("float64", 1e200)]
)
def test_l2_of_extreme_logits_is_unit_norm_with_finite_gradients(dtype, big):
    direction = np.array([[2.0, -2.0, 1.0], [3.0, 0.0, -4.0]])
    logits = tf.Variable(tf.constant(direction * big, dtype))
    with tf.GradientTape() as tape:
        weights = F.normalize_weights(logits, "l2")
    grad = tape.gradient(
        weights, logits, output_gradients=tf.constant([[1.0, 2.0, 3.0]] * 2, dtype)
    )
    want = direction / np.linalg.norm(direction, axis=-1, keepdims=True)
    np.testing.assert_allclose(weights.numpy(), want, rtol=1e-6)
    assert np.all(np.isfinite(grad.numpy()))
    # d(w~/|w~|) is (dw - w <w, dw>) / |w~|: that at big = 1, divided by big.
    with tf.GradientTape() as tape:
        unit = tf.Variable(tf.constant(direction, dtype))
        unscaled = F.normalize_weights(unit, "l2")
    expected = tape.gradient(
        unscaled, unit, output_gradients=tf.constant([[1.0, 2.0, 3.0]] * 2, dtype)
    )
    # Near float32's top, 1/big is below its smallest normal number: there zero is right.
    tiny = np.finfo(dtype).tiny
    np.testing.assert_allclose(grad.numpy(), expected.numpy() / big, rtol=1e-5, atol=10 * tiny)


def test_l2_matches_the_reference_around_the_floor():
    """Above the floor w~/|w~|; below it w~/1e-6 and the gradient dw/1e-6; zero gives 0."""
    logits = np.array([[3.0, 4.0], [3e-7, 4e-7], [1e-7, 0.0], [0.0, 0.0], [-1e-300, 1e-300]])
    dweights = np.array([[1.0, -2.0]] * 5)
    variable = tf.Variable(logits)
    with tf.GradientTape() as tape:
        weights = F.normalize_weights(variable, "l2")
    grad = tape.gradient(weights, variable, output_gradients=tf.constant(dweights))
    np.testing.assert_allclose(
        weights.numpy(), reference.normalize_weights(logits, "l2"), rtol=1e-15
    )
    np.testing.assert_allclose(
        grad.numpy(),
        reference.normalize_weights_vjp(dweights, logits, weights.numpy(), "l2"),
        rtol=1e-12,
    )


def test_l2_layer_with_huge_logits_keeps_its_basis_gradient():
    """The failure of issue 14: with overflowing norms w was 0 and the basis got no gradient."""
    config = L.LRLCConfig(3, 4, 3, rank=2, input_size=(7, 6), normalize="l2", combining="full")
    params = {
        name: tf.Variable(tf.cast(v, tf.float32)) for name, v in L.init_params(config).items()
    }
    params["logits"].assign(tf.fill(params["logits"].shape, 1e20))
    y, _, grads = gradients(
        lambda x: F.forward(x, params, config), X.astype(np.float32), params.values()
    )
    basis_grad = dict(zip(params, grads))["basis"].numpy()
    assert np.all(np.isfinite(y.numpy())) and np.any(basis_grad)
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)


# ---------------------------------------------------------------------------------------------
# Checkpoints keep every tensor's dtype (spec section 13)


def test_checkpoint_keeps_each_tensors_dtype(tmp_path):
    """A float16 basis among float64 tensors, and bfloat16 ones, come back as they were."""
    path = tmp_path / "mixed.safetensors"
    tensors = {name: tf.constant(value) for name, value in PARAMS.items()}
    tensors["basis"] = tf.cast(tensors["basis"], tf.float16)
    tensors["row_logits"] = tf.cast(tensors["row_logits"], tf.bfloat16)
    tensors["col_bias"] = tf.constant(np.linspace(-1, 1, 6), tf.bfloat16)
    checkpoint.save_checkpoint(path, tensors, FIXED)
    params, config = checkpoint.load_checkpoint(path)
    assert config == FIXED
    for name, tensor in tensors.items():
        loaded = tf.convert_to_tensor(params[name])
        assert loaded.dtype == tensor.dtype, name
        np.testing.assert_array_equal(
            tf.bitcast(loaded, tf.uint16 if tensor.dtype.size == 2 else tf.uint64).numpy(),
            tf.bitcast(tensor, tf.uint16 if tensor.dtype.size == 2 else tf.uint64).numpy(),
            err_msg=name,
        )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_sixteen_bit_checkpoint_round_trips_in_its_dtype(tmp_path, dtype):
    path = tmp_path / f"{dtype}.safetensors"
    tensors = {name: tf.cast(value, dtype) for name, value in L.init_params(MIXED).items()}
    checkpoint.save_checkpoint(path, tensors, MIXED)
    params, config = checkpoint.load_checkpoint(path)
    assert config == MIXED and checkpoint.stored_dtype(params) == dtype
    for name, tensor in tensors.items():
        np.testing.assert_array_equal(
            tf.cast(params[name], tf.float32).numpy(), tf.cast(tensor, tf.float32).numpy()
        )
    y = F.forward(tf.cast(X, dtype), params, MIXED)
    assert y.dtype == dtype


def test_conformance_tolerance_of_the_checked_forward():
    """The checks change no value: the checked forward still matches the reference."""
    config = MIXED
    x, params, _ = conformance.case_data(conformance.Case("t", config, 2), 0)
    got = F.forward(x, params, config).numpy()
    assert conformance.relative_error(got, L.forward(x, params, config)) <= conformance.tolerance(
        "float64", config, 2
    )


# ---------------------------------------------------------------------------------------------
# Unknown batch (issue 15): traced with batch None, no reshape writes the batch statically and
# 'auto' decides from the config alone (`choose_strategy`'s limit for an unknown batch)

# 'auto' takes 'lc' for an unknown batch here, 'conv' for a known batch of 2.
AUTO_LC = L.LRLCConfig(3, 64, 3, rank=4, input_size=(6, 5), padding="same")
UNKNOWN_BATCH_CASES = {
    **{f"fixed-{s}": (FIXED, s) for s in ("conv", "lc", "auto")},
    **{f"idep-{s}": (IDEP, s) for s in ("conv", "auto")},
    **{f"mixed-{s}": (MIXED, s) for s in ("conv", "lc")},
    "auto-takes-lc": (AUTO_LC, "auto"),
}
# Under XLA (one compilation per batch size) a case of each path: lc, g, groups, 'auto'.
XLA_CASES = ("fixed-lc", "idep-auto", "mixed-conv", "auto-takes-lc")
TRACED = [
    pytest.param(case, jit, id=f"{name}-{'xla' if jit else 'graph'}")
    for name, case in UNKNOWN_BATCH_CASES.items()
    for jit in ((False, True) if name in XLA_CASES else (False,))
]


def traced_step(fn, config, variables, jit_compile):
    """fn(x) and the gradients of sum(fn(x) * dy), traced once with the batch unknown."""
    spec = tf.TensorSpec((None, *config.input_size, config.in_channels), tf.float64)
    out_spec = tf.TensorSpec((None, *config.output_size, config.out_channels), tf.float64)

    @tf.function(input_signature=[spec, out_spec], jit_compile=jit_compile)
    def step(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return y, tape.gradient(y, [x, *variables], output_gradients=dy)

    return step


@pytest.mark.parametrize(("case", "jit_compile"), TRACED)
def test_unknown_batch_traces_once_and_runs_every_batch(case, jit_compile):
    config, strategy = case
    x, params, dy = conformance.case_data(conformance.Case("t", config, 3), 0)
    variables = {name: tf.Variable(value) for name, value in params.items()}
    step = traced_step(
        lambda x: F.forward(x, variables, config, strategy=strategy),
        config,
        list(variables.values()),
        jit_compile,
    )
    tol = conformance.tolerance("float64", config, 3)
    for batch in (3, 1, 0):  # a full batch, a short last one, an empty one
        y, (dx, *dparams) = step(x[:batch], dy[:batch])
        if batch == 0:
            assert y.shape == (0, *config.output_size, config.out_channels)
            continue
        want_dx, want = L.vjp(x[:batch], params, config, dy[:batch])
        gradient_tol = tol * conformance.gradient_conditioning(config, x[:batch], params)
        assert conformance.relative_error(y.numpy(), L.forward(x[:batch], params, config)) <= tol
        assert conformance.relative_error(dx.numpy(), want_dx) <= gradient_tol
        for name, grad in zip(variables, dparams):
            assert conformance.relative_error(grad.numpy(), want[name]) <= gradient_tol, name
    assert len(step._list_all_concrete_functions()) == 1


def test_auto_decides_an_unknown_batch_by_the_documented_limit():
    """With the batch unknown 'auto' is `choose_strategy(config, None)`, read off the config:
    the traced graph has no convolution for AUTO_LC, whose known batch of 2 takes 'conv'."""
    assert lrlc_tf.costs.choose_strategy(AUTO_LC, None) == "lc"
    assert lrlc_tf.costs.choose_strategy(AUTO_LC, 2) == "conv"
    params = L.init_params(AUTO_LC)

    def ops(batch):
        spec = tf.TensorSpec((batch, *AUTO_LC.input_size, 3), tf.float64)
        traced = tf.function(lambda x: F.forward(x, params, AUTO_LC))
        return {op.type for op in traced.get_concrete_function(spec).graph.get_operations()}

    assert not any(op.startswith("Conv2D") for op in ops(None))
    assert any(op.startswith("Conv2D") for op in ops(2))


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("per_example", [False, True], ids=["shared", "per-example"])
def test_locally_connected_with_an_unknown_batch(per_example, jit_compile):
    kernel = np.stack([LC_KERNEL] * 3) if per_example else LC_KERNEL
    kernel_shape = (None, *LC_KERNEL.shape) if per_example else LC_KERNEL.shape
    kernel_spec = tf.TensorSpec(kernel_shape, tf.float64)

    @tf.function(
        input_signature=[tf.TensorSpec((None, 7, 6, 3), tf.float64), kernel_spec],
        jit_compile=jit_compile,
    )
    def apply(x, kernel):
        return F.locally_connected(x, kernel, LC_BIAS, FIXED)

    for batch in (3, 1):
        got = apply(X[:1].repeat(batch, axis=0), kernel[:batch] if per_example else kernel)
        want = L.locally_connected(
            X[:1].repeat(batch, axis=0), kernel[:batch] if per_example else kernel, LC_BIAS, FIXED
        )
        assert got.shape == want.shape
        assert conformance.relative_error(got.numpy(), want) <= conformance.tolerance(
            "float64", FIXED, batch
        )


@pytest.mark.parametrize("layer_class", ["LocallyConnected2D", "LRLC2D-lc", "LRLC2D-auto"])
def test_fit_with_a_short_last_batch(layer_class):
    """model.fit on 10 samples in batches of 4 (the last has 2), traced with batch None."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    if layer_class == "LocallyConnected2D":
        layer = lrlc_tf.LocallyConnected2D.from_lrlc_config(FIXED)
    else:
        config = AUTO_LC if layer_class.endswith("auto") else FIXED
        layer = lrlc_tf.LRLC2D.from_lrlc_config(config, strategy=layer_class.split("-")[1])
    h, w = layer.config.input_size
    model = keras.Sequential([keras.Input((h, w, 3)), layer])
    model.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(0)
    out_h, out_w = layer.config.output_size
    history = model.fit(
        rng.normal(size=(10, h, w, 3)).astype("float32"),
        rng.normal(size=(10, out_h, out_w, layer.config.out_channels)).astype("float32"),
        batch_size=4,
        epochs=2,
        verbose=0,
    )
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][1] < history.history["loss"][0]


@pytest.mark.parametrize("name", ["lc", "input-dependent"])
def test_export_and_tflite_with_an_unknown_batch(tmp_path, name):
    """model.export() and the TFLite converter trace with batch None; both serve any batch."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    if name == "lc":
        layer = lrlc_tf.LRLC2D.from_lrlc_config(AUTO_LC, strategy="lc")
    else:
        layer = lrlc_tf.LRLC2D.from_lrlc_config(IDEP)
    h, w = layer.config.input_size
    model = keras.Sequential([keras.Input((h, w, 3)), layer])
    model.export(tmp_path, verbose=False)
    exported = tf.saved_model.load(str(tmp_path))  # kept: .serve needs its variables
    interpreter = tf.lite.Interpreter(
        model_content=tf.lite.TFLiteConverter.from_saved_model(str(tmp_path)).convert()
    )
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    for batch in (5, 2):
        x = np.random.default_rng(batch).normal(size=(batch, h, w, 3)).astype("float32")
        want = model(x).numpy()
        np.testing.assert_allclose(exported.serve(x).numpy(), want, rtol=1e-5, atol=1e-5)
        interpreter.resize_tensor_input(source["index"], x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], x)
        interpreter.invoke()
        np.testing.assert_allclose(
            interpreter.get_tensor(target["index"]), want, rtol=1e-5, atol=1e-5
        )
