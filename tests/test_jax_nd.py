"""lrlc_jax in 1-D and 3-D (spec section 17): forward and gradients against lrlc_numpy in
float64 for both strategies, the locally connected layer against JAX's own unshared
convolution, the initial layer against a plain convolution, checkpoints, the flax modules
and the errors. Tolerances are the conformance rule's (`conformance.tolerance`)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jax import lax

import conformance
import lrlc_jax
import lrlc_numpy
from conformance.backends.jax import Backend
from lrlc_numpy import LRLCConfig
from lrlc_numpy.strategy import LC_MAX_BANK_ELEMENTS

# float64 must be real for the comparisons with the reference.
jax.config.update("jax_enable_x64", True)

_FULL = dict(combining="full")
_IDEP = dict(combining="full", input_dependent=True)
# (name, config): every combining mode each rank allows ('full' in 1-D; 'rowcol' and 'full'
# in 3-D), every normalisation, strides, dilations, each padding form, input-dependent
# layers (g with rates 1, 2 and 4 on the 1-D grid of 11, 1 and 2 on the 3-D grid of
# 5 x 6 x 5) and mixed bases.
CONFIGS = {
    "1d/same-stride2-softmax": LRLCConfig(
        2, 3, 4, rank=3, input_size=(11,), stride=2, padding="same", **_FULL
    ),
    "1d/valid-dilation2-l2": LRLCConfig(
        2, 3, 3, rank=2, input_size=(10,), dilation=2, normalize="l2", **_FULL
    ),
    "1d/pairs-none-nobias": LRLCConfig(
        2, 3, 3, rank=2, input_size=(8,), padding=((2, 0),), normalize="none",
        spatial_bias=False, channel_bias=False, **_FULL,
    ),
    "1d/int-padding-idep": LRLCConfig(
        2, 3, 3, rank=2, input_size=(11,), padding=1, dilation=2, **_IDEP
    ),
    "1d/mixed": LRLCConfig(
        2, 3, [3, 1, 5], rank=3, input_size=(9,), dilation=[2, 1, 1], padding="same", **_FULL
    ),
    "3d/rowcol-same-stride-softmax": LRLCConfig(
        2, 3, (2, 3, 3), rank=2, input_size=(4, 6, 5), stride=(1, 2, 2), padding="same"
    ),
    "3d/rowcol-pairs-l2": LRLCConfig(
        2, 3, 3, rank=3, input_size=(3, 5, 4), padding=((1, 0), (0, 1), (1, 1)),
        normalize="l2", channel_bias=False,
    ),
    "3d/full-dilation-none": LRLCConfig(
        2, 3, 2, rank=2, input_size=(3, 5, 4), dilation=(1, 2, 1), padding=(0, 1, 0),
        normalize="none", **_FULL,
    ),
    "3d/idep-l2": LRLCConfig(
        2, 3, 3, rank=2, input_size=(5, 6, 5), padding="same", normalize="l2", **_IDEP
    ),
    "3d/mixed-rowcol": LRLCConfig(
        2, 3, [(1, 3, 3), 3], rank=2, input_size=(3, 5, 4), padding="same", spatial_bias=False
    ),
    "3d/mixed-idep": LRLCConfig(
        2, 3, [(1, 3, 3), 3], rank=2, input_size=(5, 5, 5), padding="same", **_IDEP
    ),
}  # fmt: skip
BY_NAME = pytest.mark.parametrize("name", list(CONFIGS))
FIXED_NAMES = [name for name, config in CONFIGS.items() if not config.input_dependent]


def strategies(config):
    """'lc' evaluates fixed layers only; input-dependent ones run Algorithm 1."""
    return ("conv",) if config.input_dependent else ("conv", "lc")


CASES = pytest.mark.parametrize(
    "name, strategy",
    [(name, strategy) for name, config in CONFIGS.items() for strategy in strategies(config)],
)


def data(config, batch=2, seed=0):
    """(x, params, dy) in float64, logits and biases away from their initial constants."""
    return conformance.case_data(conformance.Case("jax-nd", config, batch), seed)


def assert_close(got, want, config, batch=2, dtype="float64", conditioning=1.0):
    """Relative error within the conformance rule; `conditioning` is the rule's gradient
    factor (`conformance.gradient_conditioning`), 1 for outputs."""
    err = conformance.relative_error(np.asarray(got), np.asarray(want))
    tol = conformance.tolerance(dtype, config, batch) * conditioning
    assert err <= tol, f"relative error {err:.3e} > tolerance {tol:.3e}"


# One compiled function per config: eager JAX compiles every primitive on first use.
@functools.partial(jax.jit, static_argnames=("config", "strategy"))
def output_and_gradients(params, x, dy, config, strategy):
    def layer(p, xs):
        return lrlc_jax.forward(xs, p, config, strategy=strategy)

    y, pullback = jax.vjp(layer, params, x)
    dparams, dx = pullback(dy)
    return y, dx, dparams


# ---------------------------------------------------------------------------------------------
# Forward and gradients against the reference


@CASES
def test_forward_and_gradients_match_the_reference(name, strategy):
    config = CONFIGS[name]
    x, params, dy = data(config)
    y, dx, dparams = output_and_gradients(params, x, dy, config, strategy)
    assert y.shape == (2, *config.output_size, config.out_channels)
    assert_close(y, lrlc_numpy.forward(x, params, config), config)
    want_dx, want_dparams = lrlc_numpy.vjp(x, params, config, dy)
    conditioning = conformance.gradient_conditioning(config, x, params)
    assert_close(dx, want_dx, config, conditioning=conditioning)
    assert set(dparams) == set(want_dparams)
    for param in want_dparams:
        assert_close(dparams[param], want_dparams[param], config, conditioning=conditioning)


@BY_NAME
def test_combining_weights_and_bias_map_match_the_reference(name):
    config = CONFIGS[name]
    x, params, _ = data(config)
    given = x if config.input_dependent else None
    want = lrlc_numpy.combining_weights(params, config, given)
    assert want.shape[-config.spatial_dims - 1 :] == (*config.output_size, config.rank)
    assert_close(lrlc_jax.combining_weights(params, config, given), want, config)
    want_bias = lrlc_numpy.reference.bias_map(params, config, np.float64)
    assert_close(lrlc_jax.bias_map(params, config, jnp.float64), want_bias, config)


def test_3d_rowcol_tables_run_along_their_own_axes():
    """Each 'rowcol' table varies w~ and the bias along its own axis only: depth along the
    first grid axis, row the second, col the third (spec section 17.2), built by hand."""
    config = CONFIGS["3d/rowcol-pairs-l2"]
    _, params, _ = data(config)
    logits = lrlc_jax.fixed_logits(params, config)
    depth, row, col = params["depth_logits"], params["row_logits"], params["col_logits"]
    want = np.empty((*config.output_size, config.rank))
    for i, j, m in np.ndindex(*config.output_size):
        want[i, j, m] = depth[i] + row[j] + col[m]
    np.testing.assert_array_equal(logits, want)
    bias = lrlc_jax.spatial_bias_map(params, config)
    d, r, c = params["depth_bias"], params["row_bias"], params["col_bias"]
    np.testing.assert_array_equal(bias, d[:, None, None] + r[None, :, None] + c[None, None, :])


@pytest.mark.parametrize("name", ["1d/int-padding-idep", "3d/idep-l2"])
def test_g_forward_matches_the_reference(name):
    config = CONFIGS[name]
    assert len(config.g_dilations) >= 2  # several dilated branches, not only rate 1
    x, params, _ = data(config)
    want, _ = lrlc_numpy.reference.g_forward(x, params, config)
    assert_close(lrlc_jax.g_forward(x, params, config), want, config)


@pytest.mark.parametrize(
    "shape, size", [((2, 5, 3), (9,)), ((1, 3, 5, 4, 2), (5, 2, 7)), ((1, 4, 1, 3, 2), (2, 3, 1))]
)
def test_resize_linear_matches_the_reference(shape, size):
    a = np.random.default_rng(0).normal(size=shape)
    want = lrlc_numpy.reference.resize_linear(a, size)
    got = lrlc_jax.resize_linear(a, size)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=8 * np.finfo(np.float64).eps)


def test_depthwise_3d_is_a_grouped_dilated_convolution():
    """The 27 shifted multiply-adds equal lax's depthwise (grouped) 3-D convolution."""
    rng = np.random.default_rng(1)
    a, kernel, bias = (
        rng.normal(size=(2, 6, 5, 7, 3)),
        rng.normal(size=(3, 3, 3, 3)),
        rng.normal(size=3),
    )
    got = lrlc_jax.depthwise_conv3x3(a, kernel, bias, 2)
    want = lax.conv_general_dilated(
        a, kernel[..., None, :], (1, 1, 1), "VALID", rhs_dilation=(2, 2, 2),
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"), feature_group_count=3,
    ) + bias  # fmt: skip
    assert got.shape == (2, 2, 1, 3, 3)
    np.testing.assert_allclose(got, want, rtol=0, atol=64 * np.finfo(np.float64).eps)


@pytest.mark.parametrize("name", ["1d/same-stride2-softmax", "3d/rowcol-same-stride-softmax"])
def test_algorithm1_keeps_its_custom_backward(name):
    """'conv' runs Algorithm 1's custom_vjp in n-D as in 2-D: reverse mode only, so jax.jvp
    raises; 'lc' has JAX's own derivatives and its jvp is the vjp's transpose."""
    config = CONFIGS[name]
    x, params, dy = data(config)
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda xs: lrlc_jax.forward(xs, params, config, strategy="conv"), (x,), (x,))
    _, tangent = jax.jvp(lambda xs: lrlc_jax.forward(xs, params, config, strategy="lc"), (x,), (x,))
    _, dx, _ = output_and_gradients(params, x, dy, config, "conv")
    assert_close(np.vdot(tangent, dy), np.vdot(x, dx), config)


@pytest.mark.parametrize("name", ["1d/same-stride2-softmax", "3d/rowcol-pairs-l2"])
def test_jit_and_vmap_over_examples(name):
    config = CONFIGS[name]
    x, params, _ = data(config, batch=3)
    batched = jax.jit(lrlc_jax.apply, static_argnames="config")(params, x, config=config)
    one_at_a_time = jax.vmap(lambda xs: lrlc_jax.apply(params, xs[None], config)[0])(x)
    assert_close(one_at_a_time, batched, config, batch=3)


def test_auto_keeps_volume_banks_within_the_limit():
    """Spec section 17.6: at a rank where the locally connected form is cheaper, 'auto'
    takes it on a small volume but not where its banks exceed LC_MAX_BANK_ELEMENTS."""
    costs = lrlc_jax.costs.COSTS
    for size, want in (((8, 8, 8), "lc"), ((64, 64, 64), "conv")):
        config = LRLCConfig(16, 16, 3, rank=64, input_size=size, padding="same")
        assert lrlc_numpy.strategy.lc_is_cheaper(config, 64, costs)
        too_big = lrlc_numpy.strategy.lc_bank_elements(config) > LC_MAX_BANK_ELEMENTS
        assert too_big == (want == "conv")
        assert lrlc_jax.choose_strategy(config, 64, platform="cpu") == want


# ---------------------------------------------------------------------------------------------
# The locally connected layer and the conversion


def unshared_convolution(x, kernel, bias, config):
    """lrlc's locally connected layer through `jax.lax.conv_general_dilated_local`, whose filter
    layout differs from lrlc's (*out, *window, C_in, C_out): with rhs_spec = "WIO" / "DHWIO",
    JAX fuses the input channel and the window into one I axis ordered "C" + the window's
    spatial letters, i.e. (C_in, *window) with the channel outermost, so lrlc's kernel is
    moved to (*out, C_in, *window, C_out) and its (C_in, *window) axes flattened in that
    (row-major) order. A per-example kernel (B, ...) runs one example at a time."""
    n = config.spatial_dims
    window = config.locally_connected_config()
    spatial = "DHW"[-n:]
    dimension_numbers = (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")
    lead = kernel.ndim - (2 * n + 2)
    out_axes = list(range(lead, lead + n))
    window_axes = list(range(lead + n, lead + 2 * n))
    c_in_axis, c_out_axis = lead + 2 * n, lead + 2 * n + 1
    order = [*range(lead), *out_axes, c_in_axis, *window_axes, c_out_axis]
    moved = jnp.transpose(kernel, order)
    rhs = moved.reshape(*moved.shape[: lead + n], -1, moved.shape[-1])

    def one(xs, filters):
        return lax.conv_general_dilated_local(
            xs,
            filters,
            window_strides=window.stride,
            padding=window.padding_pairs,
            filter_shape=window.kernel_size,
            rhs_dilation=window.dilation,
            dimension_numbers=dimension_numbers,
            precision=lax.Precision.HIGHEST,
        )

    if lead == 0:
        return one(x, rhs) + bias
    return jnp.concatenate([one(x[b : b + 1], rhs[b]) for b in range(x.shape[0])]) + bias


@BY_NAME
def test_locally_connected_matches_jax_unshared_convolution(name):
    """The acceptance criterion of the 1-D/3-D issue, on a random kernel (one per example for
    an input-dependent layer) and every geometry of CONFIGS."""
    config = CONFIGS[name]
    x, _, _ = data(config)
    kernel_shape, bias_shape = lrlc_numpy.lc_shapes(config)
    if config.input_dependent:
        kernel_shape = (x.shape[0], *kernel_shape)
    rng = np.random.default_rng(7)
    kernel, bias = rng.normal(size=kernel_shape), rng.normal(size=bias_shape)
    got = lrlc_jax.locally_connected(x, kernel, bias, config)
    want = unshared_convolution(x, jnp.asarray(kernel), bias, config)
    assert got.shape == want.shape == (2, *config.output_size, config.out_channels)
    assert_close(got, want, config)


@BY_NAME
def test_conversion_matches_the_reference_and_reproduces_the_layer(name):
    config = CONFIGS[name]
    x, params, _ = data(config)
    given = x if config.input_dependent else None
    kernel, bias = lrlc_jax.to_locally_connected(params, config, given)
    want_kernel, want_bias = lrlc_numpy.to_locally_connected(params, config, given)
    assert kernel.shape == want_kernel.shape and bias.shape == want_bias.shape
    assert_close(kernel, want_kernel, config)
    assert_close(bias, want_bias, config)
    layer = lrlc_jax.forward(x, params, config)
    assert_close(unshared_convolution(x, kernel, bias, config), layer, config)


@pytest.mark.parametrize("name", ["1d/same-stride2-softmax", "3d/full-dilation-none"])
def test_initial_layer_is_the_mean_filter_convolution(name):
    """Every fixed layer starts as a convolution (spec section 17.4): with the initial,
    position-independent logits the layer is x * mean_k F^(k), here lax's own n-D
    convolution (for 'none' the weights are the constant logits, so the filter is their sum)."""
    config = CONFIGS[name]
    params = lrlc_jax.init(jax.random.key(3), config, dtype=jnp.float64)
    x, _, _ = data(config)
    logit = lrlc_numpy.initial_value("logits", config).value
    weight = 1 / config.rank if config.normalize == "softmax" else logit
    n = config.spatial_dims
    spatial = "DHW"[-n:]
    want = lax.conv_general_dilated(
        x, weight * params["basis"].sum(axis=0), config.stride, config.padding_pairs,
        rhs_dilation=config.dilation, dimension_numbers=(f"N{spatial}C", f"{spatial}IO",
                                                         f"N{spatial}C"),
        precision=lax.Precision.HIGHEST,
    )  # fmt: skip
    for strategy in ("conv", "lc"):
        assert_close(lrlc_jax.forward(x, params, config, strategy=strategy), want, config)


# ---------------------------------------------------------------------------------------------
# Initialisation, checkpoints, conformance


@BY_NAME
def test_init_names_shapes_and_constants(name):
    config = CONFIGS[name]
    params = lrlc_jax.init(jax.random.key(0), config, dtype=jnp.float64)
    assert {k: v.shape for k, v in params.items()} == lrlc_numpy.param_shapes(config)
    for param, value in params.items():
        rule = lrlc_numpy.initial_value(param, config)
        if rule.uniform:
            assert float(jnp.abs(value).max()) <= rule.limit
            assert float(jnp.std(value)) > 0
        else:
            np.testing.assert_array_equal(value, np.full(value.shape, rule.value))


@BY_NAME
def test_checkpoint_round_trip(tmp_path, name):
    """Written by lrlc_jax, read by lrlc_jax and by the reference: same config, the same
    tensors bit for bit, and the same layer after loading."""
    config = CONFIGS[name]
    x, params, _ = data(config)
    params = {k: jnp.asarray(v) for k, v in params.items()}
    path = tmp_path / "layer.safetensors"
    lrlc_jax.save_checkpoint(path, params, config)
    loaded, loaded_config = lrlc_jax.load_checkpoint(path)
    assert loaded_config == config
    assert set(loaded) == set(params)
    for param in params:
        assert loaded[param].dtype == jnp.float64
        np.testing.assert_array_equal(loaded[param], params[param])
    ref_params, ref_config = lrlc_numpy.load_checkpoint(path)
    assert ref_config == config
    for param in params:
        np.testing.assert_array_equal(ref_params[param], params[param])
    np.testing.assert_array_equal(
        lrlc_jax.forward(x, loaded, config), lrlc_jax.forward(x, params, config)
    )


def test_conformance_runner_passes_on_these_configs():
    """Every check of the conformance suite (output, gradients, conversion, locally connected
    forward, checkpoint, initial values) through the adapter, in float64 and float32."""
    cases = [conformance.Case(name, config) for name, config in CONFIGS.items()]
    for strategy in ("conv", "lc"):
        report = conformance.run(
            Backend(strategy), cases=cases, dtypes=("float64", "float32"), devices=("cpu",)
        )
        assert report.ok, "\n".join(map(str, report.failures))
        assert report.total("skipped") == 0
        assert report.total("passed") > 0


@st.composite
def nd_configs(draw):
    """A valid 1-D or 3-D config on small shapes, field by field so that a failure shrinks
    (to 1-D, one channel, rank 1, a window of 1, no stride...)."""
    n = draw(st.sampled_from([1, 3]))

    def ints(low, high):  # one int per spatial axis
        return st.tuples(*[st.integers(low, high)] * n)

    padding = draw(
        st.one_of(
            st.sampled_from(["valid", "same"]),
            st.integers(0, 2),
            st.tuples(*[st.tuples(st.integers(0, 2), st.integers(0, 2))] * n),
        )
    )
    combining = "full" if n == 1 else draw(st.sampled_from(["rowcol", "full"]))
    try:
        return LRLCConfig(
            in_channels=draw(st.integers(1, 3)),
            out_channels=draw(st.integers(1, 3)),
            kernel_size=draw(ints(1, 3)),
            rank=draw(st.integers(1, 4)),
            input_size=draw(ints(3, 9 if n == 1 else 5)),
            stride=draw(ints(1, 2)),
            dilation=draw(ints(1, 2)),
            padding=padding,
            combining=combining,
            normalize=draw(st.sampled_from(["softmax", "l2", "none"])),
            spatial_bias=draw(st.booleans()),
            channel_bias=draw(st.booleans()),
            input_dependent=combining == "full" and draw(st.booleans()),
        )
    except ValueError:  # an empty output grid
        assume(False)


@settings(max_examples=8, deadline=None)
@given(config=nd_configs(), strategy=st.sampled_from(["auto", "conv", "lc"]))
def test_random_nd_configs_pass_the_conformance_checks(config, strategy):
    report = conformance.check_case(
        Backend(strategy), conformance.Case("hypothesis-nd", config), dtype="float64"
    )
    assert report.ok, "\n".join(map(str, report.failures))


# ---------------------------------------------------------------------------------------------
# The flax modules


@pytest.mark.parametrize("name", ["1d/valid-dilation2-l2", "3d/rowcol-pairs-l2", "3d/idep-l2"])
def test_flax_modules_in_1d_and_3d(tmp_path, name):
    """nnx and linen modules hold the neutral n-D parameters and compute lrlc_jax.forward;
    the nnx module's checkpoint is lrlc_jax's."""
    pytest.importorskip("flax")
    from flax import nnx

    import lrlc_jax.flax as lrlc_flax

    config = CONFIGS[name]
    x, params, _ = data(config)
    layer = lrlc_flax.LRLC(config, rngs=nnx.Rngs(0), dtype=jnp.float64)
    shapes = {k: v.shape for k, v in layer.neutral_params().items()}
    assert shapes == lrlc_numpy.param_shapes(config)
    layer.load_neutral_params(params)
    assert_close(layer(x), lrlc_numpy.forward(x, params, config), config)
    path = tmp_path / "nnx.safetensors"
    layer.save_checkpoint(path)
    again = lrlc_flax.LRLC.from_checkpoint(path)
    np.testing.assert_array_equal(again(x), layer(x))

    linen = lrlc_flax.LinenLRLC(config, param_dtype=jnp.float64)
    variables = linen.init(jax.random.key(0), x)
    assert {k: v.shape for k, v in variables["params"].items()} == shapes
    assert_close(linen.apply({"params": params}, x), lrlc_numpy.forward(x, params, config), config)


@pytest.mark.parametrize("name", ["1d/mixed", "3d/rowcol-same-stride-softmax", "3d/mixed-rowcol"])
def test_flax_conv_local_layout_in_1d_and_3d(name):
    """to_conv_local gives linen.ConvLocal the converted kernel, ConvLocal then computes the
    layer, and from_conv_local undoes it."""
    pytest.importorskip("flax")
    import lrlc_jax.flax as lrlc_flax

    config = CONFIGS[name]
    x, params, _ = data(config)
    kernel, bias = lrlc_jax.to_locally_connected(params, config)
    native = lrlc_flax.to_conv_local(kernel)
    np.testing.assert_array_equal(lrlc_flax.from_conv_local(native, config), kernel)
    module = lrlc_flax.conv_local(config, param_dtype=jnp.float64, precision="highest")
    shapes = jax.tree.map(jnp.shape, module.init(jax.random.key(0), x))["params"]
    assert shapes == {"kernel": native.shape, "bias": bias.shape}
    got = module.apply({"params": {"kernel": native, "bias": bias}}, x)
    assert_close(got, lrlc_numpy.forward(x, params, config), config)


# ---------------------------------------------------------------------------------------------
# Errors


ONE_D, THREE_D = CONFIGS["1d/same-stride2-softmax"], CONFIGS["3d/rowcol-pairs-l2"]


def _params(config):
    return data(config)[1]


BAD_INPUTS = [
    ("1-D x of rank 4", lambda: lrlc_jax.apply(_params(ONE_D), np.zeros((2, 11, 1, 2)), ONE_D),
     ValueError, r"x must have rank 3 \(NLC\), got shape \(2, 11, 1, 2\)"),
    ("3-D x of rank 4", lambda: lrlc_jax.apply(_params(THREE_D), np.zeros((2, 3, 5, 2)), THREE_D),
     ValueError, r"x must have rank 5 \(NDHWC\), got shape \(2, 3, 5, 2\)"),
    ("3-D channels", lambda: lrlc_jax.apply(_params(THREE_D), np.zeros((2, 3, 5, 4, 3)),
                                            THREE_D),
     ValueError, r"x has 3 channels .*NDHWC.*expected in_channels=2"),
    ("1-D grid", lambda: lrlc_jax.apply(_params(ONE_D), np.zeros((2, 10, 2)), ONE_D),
     ValueError, r"spatial size \(10,\).*input_size=\(11,\)"),
    ("3-D params of a 2-D layer", lambda: lrlc_jax.apply(
        _params(LRLCConfig(2, 3, 3, rank=3, input_size=(5, 4))), np.zeros((2, 3, 5, 4, 2)),
        THREE_D), ValueError, r"missing tensors \['depth_bias', 'depth_logits'\]"),
    ("3-D basis shape", lambda: lrlc_jax.apply(
        {**_params(THREE_D), "basis": np.zeros((3, 3, 3, 2, 3))}, np.zeros((2, 3, 5, 4, 2)),
        THREE_D), ValueError, r"params\['basis'\] has shape \(3, 3, 3, 2, 3\); expected "
     r"\(3, 3, 3, 3, 2, 3\)"),
    ("lc of input-dependent 3-D", lambda: lrlc_jax.forward(
        np.zeros((2, 5, 6, 5, 2)), _params(CONFIGS["3d/idep-l2"]), CONFIGS["3d/idep-l2"],
        strategy="lc"), ValueError, "strategy='lc' needs fixed combining weights"),
    ("3-D lc kernel", lambda: lrlc_jax.locally_connected(
        np.zeros((2, 3, 5, 4, 2)), np.zeros((2, 4, 4, 3, 3, 2, 3)), np.zeros((2, 4, 4, 3)),
        THREE_D), ValueError, r"kernel has shape \(2, 4, 4, 3, 3, 2, 3\); expected "
     r"\(2, 4, 4, 3, 3, 3, 2, 3\)"),
    ("resize_linear rank", lambda: lrlc_jax.resize_linear(np.zeros((2, 3)), 2), ValueError,
     r"resize_linear: a has shape \(2, 3\); expected \(B, \*grid, C\)"),
    ("resize_linear size", lambda: lrlc_jax.resize_linear(np.zeros((1, 3, 4, 5, 2)), (2, 2)),
     TypeError, r"size must be an int or a triple"),
    ("3-D depthwise kernel", lambda: lrlc_jax.depthwise_conv3x3(
        np.zeros((1, 5, 5, 5, 2)), np.zeros((3, 3, 2)), np.zeros(2), 1), ValueError,
     r"kernel has shape \(3, 3, 2\); expected \(3, 3, 3, 2\)"),
    ("3-D depthwise too small", lambda: lrlc_jax.depthwise_conv3x3(
        np.zeros((1, 5, 4, 5, 2)), np.zeros((3, 3, 3, 2)), np.zeros(2), 2), ValueError,
     r"grid \(5, 4, 5\) is too small for a 3x3 window of rate 2"),
    ("combine ranks", lambda: lrlc_jax.combine(
        np.zeros((2, 3, 5, 4, 2, 3)), np.zeros((3, 5, 4, 2)), np.zeros((5, 4, 3))), ValueError,
     r"per_member has shape \(2, 3, 5, 4, 2, 3\); expected .* rank 5 for bias \(5, 4, 3\)"),
    ("position banks rank", lambda: lrlc_jax.position_banks(
        np.zeros((5, 2)), np.zeros((2, 3, 3, 3, 3, 2, 3, 1))), ValueError,
     "position_banks: weights .* 1, 2 or 3 spatial axes"),
]  # fmt: skip


@pytest.mark.parametrize("what, call, error, match", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_a_clear_error(what, call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_to_conv_local_refuses_a_per_example_kernel():
    pytest.importorskip("flax")
    import lrlc_jax.flax as lrlc_flax

    with pytest.raises(ValueError, match=r"rank 4, 6 or 8 .*no per-example kernel"):
        lrlc_flax.to_conv_local(np.zeros((2, 5, 3, 2, 3)))
