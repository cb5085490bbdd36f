"""lrlc_tf's TensorFlow functions in 1-D and 3-D (spec section 17): the conformance catalogue's
sequences and volumes through the tf adapter under both strategies, then the functional API
itself (forward, gradients, conversion, the pieces of g, tracing with an unknown batch, an
empty batch) and its errors. Reference values come from lrlc_numpy in float64; tolerances
from `conformance.tolerance`."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import conformance  # noqa: E402
import lrlc_numpy as L  # noqa: E402
from conformance.backends import tf as tf_adapter  # noqa: E402
from lrlc_numpy import reference  # noqa: E402
from lrlc_tf import functional as F  # noqa: E402
from lrlc_tf import positionwise as pw  # noqa: E402

BATCH = 2
ND_CASES = [case for case in conformance.catalogue() if case.config.spatial_dims != 2]
_FULL = dict(combining="full")
# Geometry and modes the catalogue has in 2-D only, here in 1-D and 3-D.
CONFIGS = {
    "1d-stride-dilation-same": L.LRLCConfig(
        2, 3, 3, rank=3, input_size=(11,), stride=2, dilation=2, padding="same", **_FULL
    ),
    "1d-explicit-l2": L.LRLCConfig(
        2, 3, 3, rank=2, input_size=(8,), padding=((2, 1),), normalize="l2", **_FULL
    ),
    "1d-idep-stride": L.LRLCConfig(
        2, 3, 3, rank=2, input_size=(12,), stride=2, padding="same", input_dependent=True, **_FULL
    ),
    "1d-mixed": L.LRLCConfig(
        2, 3, [1, 3, 5], rank=3, input_size=(9,), dilation=[1, 2, 1], padding="same", **_FULL
    ),
    "1d-rank1": L.LRLCConfig(1, 2, 3, rank=1, input_size=(7,), padding="same", **_FULL),
    "3d-rowcol-stride": L.LRLCConfig(
        2, 3, (3, 2, 3), rank=2, input_size=(5, 6, 7), stride=(2, 1, 2), padding="same"
    ),
    "3d-dilated-strided-explicit": L.LRLCConfig(
        2,
        2,
        2,
        rank=2,
        input_size=(5, 6, 4),
        stride=(1, 2, 1),
        dilation=(2, 1, 1),
        padding=((1, 0), (0, 1), (1, 1)),
        normalize="none",
        **_FULL,
    ),
    "3d-dilated-strided-same": L.LRLCConfig(
        1, 2, 3, rank=2, input_size=(6, 5, 5), stride=2, dilation=(1, 2, 1), padding="same"
    ),
    "3d-idep": L.LRLCConfig(
        2, 2, 3, rank=2, input_size=(5, 6, 5), padding="same", input_dependent=True, **_FULL
    ),
    "3d-mixed": L.LRLCConfig(
        2, 2, [(1, 3, 3), 3, (3, 1, 1)], rank=3, input_size=(3, 5, 4), padding="same"
    ),
    "3d-rank1": L.LRLCConfig(2, 2, 2, rank=1, input_size=(3, 4, 3), padding="same"),
}
# Each config under each strategy it has (input-dependent layers: Algorithm 1 only).
STRATEGY_CASES = {
    f"{name}-{strategy}": (config, strategy)
    for name, config in CONFIGS.items()
    for strategy in (("conv",) if config.input_dependent else ("conv", "lc"))
}


def data(config, seed=0, batch=BATCH):
    """The conformance data (x, params, dy) of `config`, float64."""
    return conformance.case_data(conformance.Case("nd", config, batch), seed)


def tol(config, batch=BATCH, dtype="float64"):
    return conformance.tolerance(dtype, config, batch)


def error(got, want):
    return conformance.relative_error(np.asarray(got), want)


# ---------------------------------------------------------------------------------------------
# The conformance catalogue's 1-D and 3-D cases


def test_catalogue_has_sequences_and_volumes():
    assert {case.config.spatial_dims for case in ND_CASES} == {1, 3}


@pytest.mark.parametrize("strategy", ["conv", "lc"])
def test_tf_adapter_passes_the_nd_catalogue(strategy):
    report = conformance.run(
        tf_adapter.Backend(strategy=strategy), cases=ND_CASES, dtypes=("float64",)
    )
    assert report.ok, "\n".join(map(str, report.failures))
    # Every check ran on every case: none was skipped as a rank the adapter lacks.
    assert report.total("skipped") == 0
    assert report.total("passed") == len(conformance.CHECKS) * len(ND_CASES)


# ---------------------------------------------------------------------------------------------
# The functional API against lrlc_numpy


@pytest.mark.parametrize("case", STRATEGY_CASES.values(), ids=STRATEGY_CASES)
def test_forward_and_gradients_match_reference(case):
    config, strategy = case
    x, params, dy = data(config)
    want_y = L.forward(x, params, config)
    want_dx, want_dp = L.vjp(x, params, config, dy)
    x_t = tf.constant(x)
    variables = {name: tf.Variable(value) for name, value in params.items()}
    with tf.GradientTape() as tape:
        tape.watch(x_t)
        y = F.forward(x_t, variables, config, strategy=strategy)
    grads = tape.gradient(
        y,
        [x_t, *variables.values()],
        output_gradients=tf.constant(dy),
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )
    limit = tol(config) * conformance.gradient_conditioning(config, x, params)
    assert y.shape == want_y.shape
    assert error(y, want_y) <= tol(config)
    assert error(grads[0], want_dx) <= limit
    for name, grad in zip(variables, grads[1:]):
        assert error(grad, want_dp[name]) <= limit, name


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS)
def test_locally_connected_form_matches_reference(config):
    x, params, _ = data(config)
    x_arg = x if config.input_dependent else None
    kernel, bias = F.to_locally_connected(params, config, x_arg)
    want_kernel, want_bias = L.to_locally_connected(params, config, x_arg)
    assert kernel.shape == want_kernel.shape
    assert error(kernel, want_kernel) <= tol(config)
    assert error(bias, want_bias) <= tol(config)
    y = F.locally_connected(x, want_kernel, want_bias, config)
    assert error(y, L.locally_connected(x, want_kernel, want_bias, config)) <= tol(config)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS)
def test_combining_weights_match_reference(config):
    x, params, _ = data(config)
    x_arg = x if config.input_dependent else None
    got = F.combining_weights(params, config, x_arg)
    want = L.combining_weights(params, config, x_arg)
    assert got.shape == want.shape
    assert error(got, want) <= tol(config)


# An input-dependent layer per rank, whose tolerance bounds each step of its network g.
G_CONFIGS = {1: CONFIGS["1d-idep-stride"], 3: CONFIGS["3d-idep"]}
RESIZES = {
    "1d-up": ((2, 4, 3), (7,)),
    "1d-down": ((2, 9, 3), (4,)),
    "1d-broadcast": ((2, 1, 3), (5,)),
    "3d": ((2, 3, 4, 5, 2), (5, 2, 6)),
    "3d-broadcast": ((1, 1, 1, 1, 2), (3, 2, 4)),
}


@pytest.mark.parametrize("case", RESIZES.values(), ids=RESIZES)
def test_resize_linear_matches_reference(case):
    """Linear (1-D) and trilinear (3-D) resizes with aligned corners, a size-1 grid
    broadcasting."""
    shape, size = case
    a = np.random.default_rng(1).normal(size=shape)
    got = F.resize_linear(a, size)
    want = reference.resize_linear(a, size)
    assert got.shape == want.shape
    # The bound of a whole input-dependent layer of this rank, of which the resize is a step.
    assert error(got, want) <= tol(G_CONFIGS[len(size)])


@pytest.mark.parametrize("grid,rate", [((9,), 1), ((11,), 4), ((5, 6, 5), 1), ((7, 5, 9), 2)])
def test_depthwise_conv3x3_and_gradient_match_reference(grid, rate):
    """g's dilated branches: 3 taps on a height-1 grid in 1-D, 27 summed over depth in 3-D."""
    rng = np.random.default_rng(2)
    channels = 3
    a = rng.normal(size=(2, *grid, channels))
    kernel = rng.normal(size=(3,) * len(grid) + (channels,))
    bias = rng.normal(size=channels)
    want = reference.depthwise_conv3x3(a, kernel, bias, rate)
    dout = rng.normal(size=want.shape)
    want_da, want_dkernel, want_dbias = reference.depthwise_conv3x3_vjp(dout, a, kernel, rate)
    tensors = [tf.constant(v) for v in (a, kernel, bias)]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        got = F.depthwise_conv3x3(*tensors, rate)
    grads = tape.gradient(got, tensors, output_gradients=tf.constant(dout))
    assert got.shape == want.shape
    for value, expected in zip([got, *grads], [want, want_da, want_dkernel, want_dbias]):
        assert error(value, expected) <= tol(G_CONFIGS[len(grid)])


@pytest.mark.parametrize("name", ["1d-idep-stride", "3d-rowcol-stride", "3d-idep"])
def test_traced_with_unknown_batch_matches_reference(name):
    config = CONFIGS[name]
    x, params, _ = data(config, batch=3)
    spec = tf.TensorSpec((None, *config.input_size, config.in_channels), tf.float64)
    traced = tf.function(lambda x: F.forward(x, params, config), input_signature=[spec])
    assert error(traced(x), L.forward(x, params, config)) <= tol(config, batch=3)


@pytest.mark.parametrize("name", ["1d-idep-stride", "3d-idep", "3d-rowcol-stride"])
def test_empty_batch_gives_empty_output_and_zero_gradients(name):
    config = CONFIGS[name]
    _, params, _ = data(config)
    x = tf.zeros((0, *config.input_size, config.in_channels), tf.float64)
    variables = {n: tf.Variable(v) for n, v in params.items()}
    with tf.GradientTape() as tape:
        y = F.forward(x, variables, config, strategy="conv")
        loss = tf.reduce_sum(y)
    assert tuple(y.shape) == (0, *config.output_size, config.out_channels)
    grads = tape.gradient(
        loss, list(variables.values()), unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
    # A sum over no examples: TensorFlow's kernels must not return uninitialised memory.
    for name, grad in zip(variables, grads):
        assert not np.any(grad.numpy()), name


def test_apply_banks_gradient_matches_reference_in_3d():
    # The locally connected kernel's own custom gradient, on a window wider than the stride.
    config = L.LRLCConfig(2, 3, 3, rank=1, input_size=(5, 4, 6), stride=(2, 1, 2), padding=1)
    rng = np.random.default_rng(3)
    kernel_shape, bias_shape = L.lc_shapes(config)
    x = rng.normal(size=(2, *config.input_size, 2))
    kernel = rng.normal(size=kernel_shape)
    dy = rng.normal(size=(2, *config.output_size, 3))
    banks = kernel.reshape(np.prod(config.output_size), -1, 3)
    tensors = [tf.constant(x), tf.constant(banks)]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        y = pw.apply_banks(*tensors, config)
    dx, dbanks = tape.gradient(y, tensors, output_gradients=tf.constant(dy))
    zero_bias = np.zeros(bias_shape)
    assert error(y, L.locally_connected(x, kernel, zero_bias, config)) <= tol(config)
    # The locally connected output is linear in x and in the kernel: each gradient is a
    # product the reference evaluates as a forward pass of basis vectors.
    want_dx = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        basis = np.zeros_like(x)
        basis[index] = 1.0
        want_dx[index] = np.sum(L.locally_connected(basis, kernel, zero_bias, config) * dy)
    assert error(dx, want_dx) <= tol(config)
    patches = pw.extract_patches(x, config).numpy()  # (B, *out, window C_in)
    want_dbanks = np.einsum(
        "bpd,bpo->pdo", patches.reshape(2, banks.shape[0], -1), dy.reshape(2, banks.shape[0], 3)
    )
    assert error(dbanks, want_dbanks) <= tol(config)


# ---------------------------------------------------------------------------------------------
# Errors (spec section 14)

SEQ = CONFIGS["1d-explicit-l2"]
VOL = CONFIGS["3d-rowcol-stride"]
SEQ_DATA, VOL_DATA = data(SEQ), data(VOL)

BAD_CALLS = {
    "3-D config, 2-D input": (
        lambda: F.forward(np.zeros((2, 5, 6, 2)), VOL_DATA[1], VOL),
        ValueError,
        "x must have rank 5 (NDHWC), got shape (2, 5, 6, 2)",
    ),
    "1-D config, wrong length": (
        lambda: F.forward(np.zeros((2, 9, 2)), SEQ_DATA[1], SEQ),
        ValueError,
        "x has spatial size (9,) (shape (2, 9, 2), NLC); the layer was built for input_size=(8,)",
    ),
    "input-dependent params for a fixed 3-D layer": (
        lambda: F.forward(VOL_DATA[0], data(CONFIGS["3d-idep"])[1], VOL),
        ValueError,
        "missing tensors ['col_bias', 'col_logits', 'depth_bias', 'depth_logits', 'row_bias', "
        "'row_logits']",
    ),
    "resize_linear size length": (
        lambda: F.resize_linear(np.zeros((1, 3, 4, 5, 2)), (2, 2)),
        ValueError,
        "resize_linear: size must be 3 ints (a's grid has 3 axes), got (2, 2)",
    ),
    "resize_linear rank": (
        lambda: F.resize_linear(np.zeros((1, 2, 3, 4, 5, 2)), (2, 2, 2, 2)),
        ValueError,
        "expected (B, *grid, C) with 1, 2 or 3 grid axes",
    ),
    "resize_linear zero size": (
        lambda: F.resize_linear(np.zeros((1, 4, 2)), (0,)),
        ValueError,
        "resize_linear: size length must be a positive int, got 0",
    ),
    "depthwise_conv3x3 3-D kernel": (
        lambda: F.depthwise_conv3x3(np.zeros((1, 5, 5, 5, 2)), np.zeros((3, 3, 2)), np.zeros(2), 1),
        ValueError,
        "depthwise_conv3x3: kernel has shape (3, 3, 2); expected (3, 3, 3, 2)",
    ),
    "depthwise_conv3x3 short sequence": (
        lambda: F.depthwise_conv3x3(np.zeros((1, 4, 2)), np.zeros((3, 2)), np.zeros(2), 2),
        ValueError,
        "too small for a 3x3 window at dilation 2",
    ),
    "apply_banks 1-D banks": (
        lambda: pw.apply_banks(SEQ_DATA[0], np.zeros((9, 6, 2)), SEQ),
        ValueError,
        "banks has shape (9, 6, 2); expected (L_out, k C_in, C_out) = (9, 6, 3)",
    ),
    "locally_connected 2-D kernel for a 1-D layer": (
        lambda: F.locally_connected(SEQ_DATA[0], np.zeros((9, 1, 3, 1, 2, 3)), None, SEQ),
        ValueError,
        "locally connected kernel has shape (9, 1, 3, 1, 2, 3); expected (9, 3, 2, 3)",
    ),
    "combine responses rank": (
        lambda: F.combine(np.zeros((2, 3, 3, 3, 3, 2, 4)), np.zeros((3, 3, 3, 3, 2)), None),
        ValueError,
        "combine: responses has shape (2, 3, 3, 3, 3, 2, 4); expected (B, *out, K, C_out)",
    ),
}


@pytest.mark.parametrize("case", BAD_CALLS.values(), ids=BAD_CALLS)
def test_bad_argument_is_a_clear_error(case):
    call, exception, fragment = case
    with pytest.raises(exception) as caught:
        call()
    assert fragment in str(caught.value)
