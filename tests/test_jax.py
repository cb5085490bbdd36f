"""lrlc_jax beyond the conformance catalogue: initialisation, jit, vmap, the locally connected
form against JAX's own unshared convolution, exact resizing, errors, checkpoints, and a
data-parallel training step sharded over two host CPU devices."""

import dataclasses
import functools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from scipy import stats

import conformance
import lrlc_jax
import lrlc_numpy
from lrlc_numpy import LRLCConfig

# float64 must be real for the float64 comparisons (the conformance adapter does the same).
jax.config.update("jax_enable_x64", True)

ROOT = Path(__file__).resolve().parent.parent
DNUMS = ("NHWC", "HWIO", "NHWC")
EPS64 = float(np.finfo(np.float64).eps)

# Stride, dilation and TF 'same' padding that is asymmetric on the strided axis (0 top, 1 bottom).
FIXED = LRLCConfig(
    3, 4, 3, rank=3, input_size=(8, 7), stride=(2, 1), dilation=(1, 2), padding="same"
)
# Input-dependent with explicit asymmetric padding; g has three dilated branches (r = 1, 2, 4).
IDEP = LRLCConfig(
    3, 4, (3, 2), rank=3, input_size=(9, 10), padding=((2, 0), (1, 1)), combining="full",
    normalize="l2", input_dependent=True,
)  # fmt: skip
CONFIGS = pytest.mark.parametrize("config", [FIXED, IDEP], ids=["fixed", "input-dependent"])

# Compiled once per config: eager JAX compiles every primitive on first use, which is slower.
apply_jit = jax.jit(lrlc_jax.apply, static_argnames="config")
to_locally_connected_jit = jax.jit(lrlc_jax.to_locally_connected, static_argnames="config")
locally_connected_jit = jax.jit(lrlc_jax.locally_connected, static_argnames="config")


def data(config, seed=0, batch=2):
    """(x, params, dy) in float64 with logits and biases away from their initial values."""
    return conformance.case_data(conformance.Case("test", config, batch), seed)


def assert_close(got, want, config, batch=2, dtype="float64"):
    """Relative error (as the conformance suite measures it) within the stated tolerance rule."""
    err = conformance.relative_error(got, want)
    tol = conformance.tolerance(dtype, config, batch)
    assert err <= tol, f"relative error {err:.3e} > tolerance {tol:.3e}"


# ---------------------------------------------------------------------------------------------
# Initialisation


@CONFIGS
def test_init_names_shapes_and_dtypes(config):
    params = lrlc_jax.init(jax.random.key(0), config)
    assert {name: p.shape for name, p in params.items()} == lrlc_numpy.param_shapes(config)
    assert all(p.dtype == jnp.float32 for p in params.values())
    again = lrlc_jax.init(jax.random.key(0), config, dtype=jnp.float64)
    assert all(p.dtype == jnp.float64 for p in again.values())
    same = lrlc_jax.init(jax.random.key(0), config)
    assert all(np.array_equal(same[name], params[name]) for name in params)
    other = lrlc_jax.init(jax.random.key(1), config)
    assert not np.array_equal(other["basis"], params["basis"])


def test_init_distributions_match_the_reference():
    """Same distribution per tensor as lrlc_numpy.init_params: exactly initial_value's constant
    where the reference has one (the 'conv_init' logits, zero biases), else a two-sample
    Kolmogorov-Smirnov test at level 1e-3 on 20 draws (keys and seeds are fixed, so the
    outcome is deterministic)."""
    configs = [FIXED, dataclasses.replace(IDEP, in_channels=8, out_channels=8, rank=4)]
    for config in configs:
        ours = [lrlc_jax.init(jax.random.key(seed), config) for seed in range(20)]
        theirs = [lrlc_numpy.init_params(config, seed=seed) for seed in range(20)]
        for name in lrlc_numpy.param_shapes(config):
            a = np.concatenate([np.ravel(p[name]) for p in ours])
            b = np.concatenate([np.ravel(p[name]) for p in theirs])
            rule = lrlc_numpy.initial_value(name, config)
            if not rule.uniform:
                assert np.all(a == np.float32(rule.value)), f"{name} should start at {rule.value}"
                assert np.all(b == rule.value), f"{name}: the reference starts elsewhere"
                continue
            pvalue = stats.ks_2samp(a, b).pvalue
            assert pvalue > 1e-3, f"{name}: KS p-value {pvalue:.2e} against the reference"


def test_initial_softmax_layer_is_the_mean_filter_convolution():
    """Constant logits and zero biases: every position gets the same mean basis filter (spec
    section 10)."""
    params = lrlc_jax.init(jax.random.key(3), FIXED, dtype=jnp.float64)
    x, _, _ = data(FIXED)
    mean_filter = np.asarray(params["basis"]).mean(axis=0)
    want = lrlc_numpy.conv2d(
        x, mean_filter, stride=FIXED.stride, padding=FIXED.padding, dilation=FIXED.dilation
    )
    assert_close(apply_jit(params, x, config=FIXED), want, FIXED)


@pytest.mark.parametrize("combining", ["rowcol", "row", "col", "full"])
@pytest.mark.parametrize("normalize", ["softmax", "l2", "none"])
def test_init_logits_are_conv_init_constants(combining, normalize):
    """The logits start at lrlc_numpy.initial_value's 'conv_init' constants, so every
    normalisation starts as the convolution with kernel sum_k w_k F^(k), w_k = 1/K for
    softmax and 1/sqrt(K) for l2 and none (spec section 10)."""
    config = dataclasses.replace(FIXED, combining=combining, normalize=normalize)
    params = lrlc_jax.init(jax.random.key(4), config, dtype=jnp.float64)
    for name in ("row_logits", "col_logits", "logits"):
        if name in params:
            value = lrlc_numpy.initial_value(name, config).value
            np.testing.assert_array_equal(params[name], np.full(params[name].shape, value))
    weight = 1 / config.rank if normalize == "softmax" else 1 / np.sqrt(config.rank)
    np.testing.assert_allclose(
        lrlc_jax.combining_weights(params, config), weight, rtol=4 * EPS64, atol=0
    )
    x, _, _ = data(config)
    kernel = weight * np.asarray(params["basis"]).sum(axis=0)
    want = lrlc_numpy.conv2d(
        x, kernel, stride=config.stride, padding=config.padding, dilation=config.dilation
    )
    assert_close(apply_jit(params, x, config=config), want, config)


# ---------------------------------------------------------------------------------------------
# Transformations: jit, grad, vmap


def _loss(params, x, dy, config):
    return jnp.sum(lrlc_jax.apply(params, x, config) * dy)


def _output_and_gradients(params, x, dy, config):
    y, pullback = jax.vjp(lambda p, xs: lrlc_jax.apply(p, xs, config), params, x)
    return y, *pullback(dy)


@CONFIGS
def test_jit_equals_eager_and_the_reference(config):
    x, params, dy = data(config)
    eager = _output_and_gradients(params, x, dy, config)
    jitted = jax.jit(_output_and_gradients, static_argnums=3)(params, x, dy, config)
    want_y = lrlc_numpy.forward(x, params, config)
    want_dx, want_dparams = lrlc_numpy.vjp(x, params, config, dy)
    (y, dparams, dx), (y_jit, dparams_jit, dx_jit) = eager, jitted
    assert_close(y_jit, y, config)
    assert_close(y, want_y, config)
    assert_close(dx_jit, dx, config)
    assert_close(dx, want_dx, config)
    for name, want in want_dparams.items():
        assert_close(dparams_jit[name], dparams[name], config)
        assert_close(dparams[name], want, config)


@CONFIGS
def test_forward_takes_the_reference_argument_order(config):
    """`forward(x, params, config)` is the reference's order; `apply(params, x, config)` (the
    init/apply idiom) is the same function."""
    x, params, _ = data(config)
    forward_jit = jax.jit(lrlc_jax.forward, static_argnames=("config", "strategy"))
    y = forward_jit(x, params, config=config, strategy="conv")
    np.testing.assert_array_equal(y, apply_jit(params, x, config=config))
    assert_close(y, lrlc_numpy.forward(x, params, config), config)


def test_jit_traces_once_per_shape():
    traces = []

    @functools.partial(jax.jit, static_argnames="config")
    def counted(params, x, config):
        traces.append(config)
        return lrlc_jax.apply(params, x, config)

    for seed in range(3):
        x, params, _ = data(FIXED, seed)
        counted(params, x, config=dataclasses.replace(FIXED))  # equal, not identical, configs
    assert len(traces) == 1
    counted(params, x[:1], config=FIXED)
    assert len(traces) == 2


@CONFIGS
def test_vmap_over_parameter_sets_equals_a_loop(config):
    x, _, dy = data(config)
    param_sets = [data(config, seed)[1] for seed in range(3)]
    stacked = jax.tree.map(lambda *arrays: jnp.stack(arrays), *param_sets)
    layer = functools.partial(lrlc_jax.apply, config=config)
    ys = jax.jit(jax.vmap(layer, in_axes=(0, None)))(stacked, x)
    loss = functools.partial(_loss, config=config)
    grads = jax.jit(jax.vmap(jax.grad(loss), in_axes=(0, None, None)))(stacked, x, dy)
    for i, params in enumerate(param_sets):
        assert_close(ys[i], apply_jit(params, x, config=config), config)
        assert_close(ys[i], lrlc_numpy.forward(x, params, config), config)
        _, want = lrlc_numpy.vjp(x, params, config, dy)
        for name in want:
            assert_close(grads[name][i], want[name], config)


# ---------------------------------------------------------------------------------------------
# Evaluation strategies: Algorithm 1 ('conv') and the locally connected form ('lc')

# A fixed layer with every geometry feature the patches must honour: non-square kernel,
# stride, dilation, asymmetric explicit padding; 'col' weights broadcast along rows.
GEOMETRY = LRLCConfig(
    3, 5, (2, 3), rank=4, input_size=(9, 11), stride=(1, 2), dilation=(2, 1),
    padding=((1, 2), (0, 1)), combining="col", normalize="l2",
)  # fmt: skip


@pytest.mark.parametrize("config", [FIXED, GEOMETRY], ids=["fixed", "geometry"])
def test_strategies_agree_with_each_other_and_the_reference(config):
    """Output, input gradient and every parameter gradient, under jit and vmap over
    parameter sets."""
    x, _, dy = data(config)
    param_sets = [data(config, seed)[1] for seed in range(2)]
    stacked = jax.tree.map(lambda *arrays: jnp.stack(arrays), *param_sets)
    results = {}
    for strategy in ("conv", "lc"):

        def step(params, x, dy, strategy=strategy):
            y, pullback = jax.vjp(
                lambda p, xs: lrlc_jax.apply(p, xs, config, strategy=strategy), params, x
            )
            return y, *pullback(dy)

        results[strategy] = jax.jit(jax.vmap(step, in_axes=(0, None, None)))(stacked, x, dy)
    for i, params in enumerate(param_sets):
        want_dx, want_dparams = lrlc_numpy.vjp(x, params, config, dy)
        for y, dparams, dx in results.values():
            assert_close(y[i], lrlc_numpy.forward(x, params, config), config)
            assert_close(dx[i], want_dx, config)
            for name, want in want_dparams.items():
                assert_close(dparams[name][i], want, config)
        conv, lc = results["conv"], results["lc"]
        assert_close(lc[0][i], conv[0][i], config)


def _crossover_by_rule(config, batch):
    """lc_crossover's documented inequality, restated: K (3 B - 4 BANK_COST) >
    B (3 PRODUCT_COST + PATCH_COST / C_out)."""
    costs = lrlc_jax.costs
    cost = batch * (3 * costs.PRODUCT_COST + costs.PATCH_COST / config.out_channels)
    return config.rank * (3 * batch - 4 * costs.BANK_COST) > cost


@pytest.mark.parametrize("batch", [1, 2, 3, 16, 64, 512])
def test_auto_follows_the_cost_rule(batch):
    """'auto' picks 'lc' exactly when the documented inequality holds, never for an
    input-dependent layer, and `apply` evaluates by the strategy `choose_strategy` names
    (same traced program as asking for it explicitly)."""
    for rank in (1, 2, 3, 4, 16):
        config = LRLCConfig(8, 8, 3, rank, (6, 6), padding="same")
        chosen = lrlc_jax.choose_strategy(config, batch)
        assert chosen == ("lc" if _crossover_by_rule(config, batch) else "conv")
        idep = dataclasses.replace(config, combining="full", input_dependent=True)
        assert lrlc_jax.choose_strategy(idep, batch) == "conv"
    config = LRLCConfig(8, 8, 3, 16, (6, 6), padding="same")
    params = lrlc_jax.init(jax.random.key(0), config)
    x = jnp.zeros((batch, 6, 6, 8), jnp.float32)

    def program(strategy):
        return str(
            jax.make_jaxpr(lambda p, x: lrlc_jax.apply(p, x, config, strategy=strategy))(params, x)
        )

    chosen = lrlc_jax.choose_strategy(config, batch)
    other = "conv" if chosen == "lc" else "lc"
    assert program("auto") == program(chosen) != program(other)


def test_auto_picks_lc_for_the_paper_layer_at_high_rank():
    """The documented consequence of the rule for the paper's layer at batch 64."""
    paper = [LRLCConfig(64, 64, 3, rank, (32, 32), padding="same") for rank in (1, 2, 4, 16)]
    assert [lrlc_jax.choose_strategy(c, 64) for c in paper] == ["conv", "conv", "lc", "lc"]


@pytest.mark.parametrize("batch, size, channels, rank", [(8, 16, 16, 4), (16, 16, 32, 2)])
def test_algorithm1_step_plans_within_1_2_of_the_k_cout_convolution_step(
    batch, size, channels, rank
):
    """Target 5b of issue 17, by XLA's plan of the compiled step (lrlc_bench's measure): the
    ordered backward writes dz only after z's last reader, so z and dz's two copies are never
    live together (they were: 1.5 x at every rank; docs/performance.md, 'JAX', target 5)."""
    from lrlc_bench.backends.jax import memory_plan

    config = LRLCConfig(channels, channels, 3, rank, (size, size), padding="same")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, size, size, channels)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, channels, rank * channels)).astype(np.float32)

    def step(apply, params, dy):
        def run(params, x, dy):
            y, pullback = jax.vjp(apply, params, x)
            return y, pullback(dy)

        return memory_plan(jax.jit(run), params, x, dy)["peak_bytes"]

    conv = step(
        lambda k, x: lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=DNUMS),
        kernel,
        np.ones((batch, size, size, rank * channels), np.float32),
    )
    lrlc = step(
        lambda p, x: lrlc_jax.apply(p, x, config, strategy="conv"),
        lrlc_jax.init(jax.random.key(0), config),
        np.ones((batch, size, size, channels), np.float32),
    )
    assert lrlc <= 1.2 * conv, f"Algorithm 1's step plans {lrlc / conv:.2f} x the convolution's"


# ---------------------------------------------------------------------------------------------
# Combining weights and the locally connected form


@CONFIGS
def test_combining_weights_match_the_reference(config):
    x, params, _ = data(config)
    got = jax.jit(lrlc_jax.combining_weights, static_argnames="config")(params, config, x)
    assert_close(got, lrlc_numpy.combining_weights(params, config, x), config)


@CONFIGS
def test_conversion_reproduces_the_layer(config):
    x, params, _ = data(config)
    kernel, bias = to_locally_connected_jit(params, config=config, x=x)
    batch = (x.shape[0],) if config.input_dependent else ()
    kh, kw = config.kernel_size
    assert kernel.shape == (*batch, *config.output_size, kh, kw, 3, 4)
    y = locally_connected_jit(x, kernel, bias, config=config)
    assert_close(y, apply_jit(params, x, config=config), config)


def _jax_local_layout(kernel):
    """Canonical (H_out, W_out, kh, kw, C_in, C_out) -> the layout documented for
    lax.conv_general_dilated_local with HWIO: (H_out, W_out, C_in * kh * kw, C_out), the
    fused input axis ordered (c, u, v). Written with loops, independently of lrlc_jax."""
    out_h, out_w, kh, kw, c_in, c_out = kernel.shape
    local = np.empty((out_h, out_w, c_in * kh * kw, c_out))
    for c in range(c_in):
        for u in range(kh):
            for v in range(kw):
                local[:, :, (c * kh + u) * kw + v, :] = kernel[:, :, u, v, c, :]
    return local


def _jax_unshared_conv(x, kernel, config):
    return lax.conv_general_dilated_local(
        x,
        _jax_local_layout(kernel),
        window_strides=config.stride,
        padding=config.padding_pairs,
        filter_shape=config.kernel_size,
        rhs_dilation=config.dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


@CONFIGS
def test_locally_connected_matches_jax_unshared_convolution(config):
    """Shared kernels against lax.conv_general_dilated_local directly; per-example kernels
    (JAX's op takes one kernel) against it example by example."""
    x, params, _ = data(config)
    rng = np.random.default_rng(0)
    kh, kw = config.kernel_size
    shape = (*config.output_size, kh, kw, config.in_channels, config.out_channels)
    bias = rng.normal(size=(*config.output_size, config.out_channels))
    shared = rng.normal(size=shape)
    want = _jax_unshared_conv(x, shared, config) + bias
    assert_close(locally_connected_jit(x, shared, bias, config=config), want, config)
    per_example = rng.normal(size=(x.shape[0], *shape))
    got = locally_connected_jit(x, per_example, bias, config=config)
    for b in range(x.shape[0]):
        want = _jax_unshared_conv(x[b : b + 1], per_example[b], config)[0] + bias
        assert_close(got[b], want, config)


def test_locally_connected_with_one_filter_everywhere_is_a_convolution():
    x, _, _ = data(FIXED)
    conv_kernel = np.random.default_rng(1).normal(size=(3, 3, 3, 4))
    kernel = np.broadcast_to(conv_kernel, (*FIXED.output_size, *conv_kernel.shape))
    bias = np.zeros((*FIXED.output_size, 4))
    want = lax.conv_general_dilated(
        x,
        conv_kernel,
        window_strides=FIXED.stride,
        padding=FIXED.padding_pairs,
        rhs_dilation=FIXED.dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    assert_close(locally_connected_jit(x, kernel, bias, config=FIXED), want, FIXED)


# ---------------------------------------------------------------------------------------------
# Mixed basis (spec section 16): one kernel size and dilation per basis

# Groups that are not contiguous (bases 0 and 2 share a 3x3 window), stride 2, 'rowcol'.
MIXED = LRLCConfig(
    2, 3, [3, 5, (3, 3)], rank=3, input_size=(9, 8), stride=2, dilation=[1, 2, 1],
    padding="same",
)  # fmt: skip
# Input-dependent, non-square windows, a dilation given per axis.
MIXED_IDEP = LRLCConfig(
    2, 3, [(3, 2), 4], rank=2, input_size=(9, 8), dilation=[1, (2, 1)], padding="same",
    combining="full", normalize="l2", input_dependent=True,
)  # fmt: skip
MIXED_CONFIGS = pytest.mark.parametrize(
    "config", [MIXED, MIXED_IDEP], ids=["mixed", "mixed-input-dependent"]
)


@MIXED_CONFIGS
def test_mixed_basis_init_has_one_tensor_per_basis(config):
    params = lrlc_jax.init(jax.random.key(0), config)
    assert [name for name in params if name.startswith("basis")] == list(config.basis_names)
    assert {name: p.shape for name, p in params.items()} == lrlc_numpy.param_shapes(config)


@MIXED_CONFIGS
def test_mixed_basis_strategies_match_the_reference(config):
    """Algorithm 1 by groups (and for a fixed layer the locally connected form on the union
    window): output, input gradient and every parameter gradient, jitted."""
    x, params, dy = data(config)
    want_dx, want_dparams = lrlc_numpy.vjp(x, params, config, dy)
    strategies = ("conv",) if config.input_dependent else ("conv", "lc")
    for strategy in strategies:

        def step(params, x, dy, strategy=strategy):
            y, pullback = jax.vjp(
                lambda p, xs: lrlc_jax.forward(xs, p, config, strategy=strategy), params, x
            )
            return y, *pullback(dy)

        y, dparams, dx = jax.jit(step)(params, x, dy)
        assert_close(y, lrlc_numpy.forward(x, params, config), config)
        assert_close(dx, want_dx, config)
        assert set(dparams) == set(want_dparams)
        for name, want in want_dparams.items():
            assert_close(dparams[name], want, config)


@MIXED_CONFIGS
def test_mixed_basis_converts_on_the_union_window(config):
    """The kernel has `locally_connected_config()`'s window, each basis embedded at its own
    taps (`embedded_basis` equals the reference's exactly), and reproduces the layer."""
    x, params, _ = data(config)
    window = config.locally_connected_config()
    np.testing.assert_array_equal(
        lrlc_jax.embedded_basis(params, config), lrlc_numpy.embedded_basis(params, config)
    )
    kernel, bias = to_locally_connected_jit(params, config=config, x=x)
    batch = (x.shape[0],) if config.input_dependent else ()
    assert kernel.shape == (*batch, *lrlc_numpy.lc_shapes(config)[0])
    assert kernel.shape[-4:-2] == window.kernel_size
    want_kernel, want_bias = lrlc_numpy.to_locally_connected(params, config, x)
    assert_close(kernel, want_kernel, config)
    assert_close(bias, want_bias, config)
    y = locally_connected_jit(x, kernel, bias, config=config)
    assert_close(y, apply_jit(params, x, config=config), config)


def test_mixed_basis_checkpoint_round_trip(tmp_path):
    params = lrlc_jax.init(jax.random.key(0), MIXED)
    path = tmp_path / "mixed.safetensors"
    lrlc_jax.save_checkpoint(path, params, MIXED)
    loaded, config = lrlc_jax.load_checkpoint(path)
    assert config == MIXED and config.mixed
    assert set(loaded) == set(params)
    for name, value in params.items():
        np.testing.assert_array_equal(loaded[name], value)


# ---------------------------------------------------------------------------------------------
# Aligned-corner bilinear resize (g's branches)

RESIZES = pytest.mark.parametrize(
    "shape, size", [((2, 5, 4, 3), (9, 7)), ((1, 7, 6, 2), (3, 2)), ((2, 1, 1, 3), (4, 5))]
)


@RESIZES
def test_resize_matches_the_reference(shape, size):
    """Each output is a convex combination of at most four inputs: error <= 4 eps max|a|."""
    a = np.random.default_rng(0).normal(size=shape)
    got = np.asarray(lrlc_jax.resize_bilinear(a, size))
    np.testing.assert_allclose(got, lrlc_numpy.resize_bilinear(a, size), rtol=0, atol=4 * EPS64)


@RESIZES
def test_resize_matches_torch_align_corners(shape, size):
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(1).normal(size=shape)
    want = torch.nn.functional.interpolate(
        torch.from_numpy(a).permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=True
    )
    got = np.asarray(lrlc_jax.resize_bilinear(a, size))
    np.testing.assert_allclose(got, want.permute(0, 2, 3, 1).numpy(), rtol=0, atol=4 * EPS64)


def test_resize_keeps_grid_points_exactly():
    """Upsampling n -> 2n - 1 with aligned corners puts every input on an even output point."""
    a = np.random.default_rng(2).normal(size=(2, 4, 5, 3)).astype(np.float32)
    got = np.asarray(lrlc_jax.resize_bilinear(a, (7, 9)))
    np.testing.assert_array_equal(got[:, ::2, ::2], a)


# ---------------------------------------------------------------------------------------------
# Bad input


def _bad_inputs():
    x, params, _ = data(FIXED)
    xi, params_i, _ = data(IDEP)
    kernel, bias = lrlc_numpy.to_locally_connected(params, FIXED)
    missing = {k: v for k, v in params.items() if k != "channel_bias"}
    misshaped = {**params, "row_bias": params["row_bias"][:-1]}
    int_bias = {**params, "channel_bias": np.ones(4, int)}
    apply, lc = lrlc_jax.apply, lrlc_jax.locally_connected
    return [
        ("rank", lambda: apply(params, x[0], FIXED), ValueError, r"rank 4.*\(8, 7, 3\)"),
        ("channels", lambda: apply(params, x[..., :2], FIXED), ValueError, "2 channels"),
        ("grid", lambda: apply(params, x[:, :5], FIXED), ValueError, r"input_size=\(8, 7\)"),
        ("int x", lambda: apply(params, x.astype(int), FIXED), TypeError, "floating"),
        ("missing", lambda: apply(missing, x, FIXED), ValueError, "missing.*channel_bias"),
        ("extra", lambda: apply({**params, "w": x}, x, FIXED), ValueError, "unexpected.*'w'"),
        ("shape", lambda: apply(misshaped, x, FIXED), ValueError, r"row_bias.*\(3,\)"),
        ("int param", lambda: apply(int_bias, x, FIXED), TypeError, "channel_bias.*floating"),
        ("config", lambda: apply(params, x, FIXED.to_dict()), TypeError, "LRLCConfig"),
        ("mode", lambda: lrlc_jax.LRLCConfig(3, 4, 3, 2, (8, 8), combining="diag"), ValueError,
         "diag"),
        ("no x", lambda: lrlc_jax.combining_weights(params_i, IDEP), ValueError,
         "input-dependent.*needs the input x"),
        ("no x conversion", lambda: lrlc_jax.to_locally_connected(params_i, IDEP), ValueError,
         "needs the input"),
        ("wrong x", lambda: lrlc_jax.to_locally_connected(params, FIXED, xi), ValueError,
         "spatial size"),
        ("lc kernel", lambda: lc(x, kernel[1:], bias, FIXED), ValueError, "kernel has shape"),
        ("lc bias", lambda: lc(x, kernel, bias[..., :1], FIXED), ValueError, "bias has shape"),
        ("lc int", lambda: lc(x, kernel.astype(int), bias, FIXED), TypeError, "kernel.*floating"),
        ("init dtype", lambda: lrlc_jax.init(jax.random.key(0), FIXED, dtype=jnp.int32), TypeError,
         "int32"),
        ("under jit", lambda: apply_jit(params, x[:, :5], config=FIXED), ValueError, "input_size"),
        ("strategy", lambda: apply(params, x, FIXED, strategy="fft"), ValueError,
         r"'fft'.*\('auto', 'conv', 'lc'\)"),
        ("lc input-dependent", lambda: apply(params_i, xi, IDEP, strategy="lc"), ValueError,
         "strategy='lc' needs fixed combining weights"),
    ]  # fmt: skip


BAD_INPUTS = _bad_inputs()


@pytest.mark.parametrize("what, call, error, match", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_a_clear_error(what, call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# Neutral checkpoints


@CONFIGS
def test_checkpoint_round_trip(tmp_path, config):
    params = lrlc_jax.init(jax.random.key(0), config)
    path = tmp_path / "layer.safetensors"
    lrlc_jax.save_checkpoint(path, params, config)
    neutral, neutral_config = lrlc_numpy.load_params(path)
    loaded, loaded_config = lrlc_jax.load_checkpoint(path)
    assert neutral_config == config and loaded_config == config
    for name, value in params.items():
        np.testing.assert_array_equal(neutral[name], value)
        assert isinstance(loaded[name], jax.Array) and loaded[name].dtype == jnp.float32
        np.testing.assert_array_equal(loaded[name], value)
    x, _, _ = data(config)
    x = x.astype(np.float32)
    np.testing.assert_array_equal(
        apply_jit(loaded, x, config=config), apply_jit(params, x, config=config)
    )


def test_checkpoint_errors(tmp_path):
    from safetensors.numpy import save_file

    params = lrlc_jax.init(jax.random.key(0), FIXED)
    with pytest.raises(ValueError, match="row_bias"):
        lrlc_jax.save_checkpoint(
            tmp_path / "bad.safetensors", {**params, "row_bias": jnp.ones(2)}, FIXED
        )
    partial = {name: np.asarray(v) for name, v in params.items() if name != "basis"}
    save_file(
        partial, str(tmp_path / "partial.safetensors"), metadata={"lrlc_config": FIXED.to_json()}
    )
    with pytest.raises(ValueError, match="missing tensors.*basis"):
        lrlc_jax.load_checkpoint(tmp_path / "partial.safetensors")
    save_file({"basis": np.asarray(params["basis"])}, str(tmp_path / "bare.safetensors"))
    with pytest.raises(ValueError, match="lrlc_config"):
        lrlc_jax.load_checkpoint(tmp_path / "bare.safetensors")


def test_deprecated_checkpoint_names_warn_and_still_work(tmp_path):
    """save_params/load_params are the old names of save_checkpoint/load_checkpoint: each warns
    with a DeprecationWarning naming its replacement and does what it did."""
    params = lrlc_jax.init(jax.random.key(0), FIXED)
    path = tmp_path / "old.safetensors"
    with pytest.warns(DeprecationWarning, match=r"save_params is deprecated.*save_checkpoint"):
        lrlc_jax.save_params(path, params, FIXED)
    with pytest.warns(DeprecationWarning, match=r"load_params is deprecated.*load_checkpoint"):
        loaded, config = lrlc_jax.load_params(path)
    assert config == FIXED
    for name, value in params.items():
        assert isinstance(loaded[name], jax.Array)
        np.testing.assert_array_equal(loaded[name], value)
    assert lrlc_jax.save_params.__name__ == "save_params"
    assert lrlc_jax.load_params.__wrapped__ is lrlc_jax.load_checkpoint


@CONFIGS
def test_neutral_params_round_trip(config):
    """neutral_params gives NumPy arrays under the neutral names; load_neutral_params takes
    them back as JAX arrays, each in its own dtype or in the dtype asked for."""
    params = lrlc_jax.init(jax.random.key(0), config)
    neutral = lrlc_jax.neutral_params(params)
    assert {n: v.shape for n, v in neutral.items()} == lrlc_numpy.param_shapes(config)
    assert all(type(v) is np.ndarray and v.dtype == np.float32 for v in neutral.values())
    loaded = lrlc_jax.load_neutral_params(neutral, config)
    for name, value in params.items():
        assert isinstance(loaded[name], jax.Array) and loaded[name].dtype == jnp.float32
        np.testing.assert_array_equal(loaded[name], value)
    wide = lrlc_jax.load_neutral_params(neutral, config, dtype=jnp.float64)
    assert all(v.dtype == jnp.float64 for v in wide.values())
    mixed = {**neutral, "basis": neutral["basis"].astype(np.float64)}
    kept = lrlc_jax.load_neutral_params(mixed, config)
    assert kept["basis"].dtype == jnp.float64 and kept["channel_bias"].dtype == jnp.float32


def test_load_neutral_params_rejects_bad_params():
    neutral = lrlc_jax.neutral_params(lrlc_jax.init(jax.random.key(0), FIXED))
    load = lrlc_jax.load_neutral_params
    with pytest.raises(ValueError, match="missing.*channel_bias"):
        load({n: v for n, v in neutral.items() if n != "channel_bias"}, FIXED)
    with pytest.raises(ValueError, match=r"unexpected.*'w'"):
        load({**neutral, "w": neutral["basis"]}, FIXED)
    with pytest.raises(ValueError, match=r"row_bias.*\(3,\)"):
        load({**neutral, "row_bias": neutral["row_bias"][:-1]}, FIXED)
    with pytest.raises(TypeError, match="channel_bias.*floating"):
        load({**neutral, "channel_bias": np.ones(4, int)}, FIXED)
    with pytest.raises(TypeError, match="LRLCConfig"):
        load(neutral, FIXED.to_dict())
    with pytest.raises(TypeError, match="int32"):
        load(neutral, FIXED, dtype=jnp.int32)
    with pytest.raises(TypeError, match="mapping"):
        lrlc_jax.neutral_params([neutral["basis"]])


# ---------------------------------------------------------------------------------------------
# Data parallelism over two host CPU devices (in a subprocess: the device count is fixed when
# JAX initialises)

TWO_LAYERS = (FIXED, dataclasses.replace(IDEP, in_channels=4, out_channels=2, input_size=(4, 7)))

SHARDED_STEP = textwrap.dedent(
    """
    import sys
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    jax.config.update("jax_enable_x64", True)
    import lrlc_jax
    from lrlc_numpy import LRLCConfig

    configs = [LRLCConfig.from_json(text) for text in sys.argv[2:]]
    inputs = np.load(sys.argv[1] + ".in.npz")
    params = [{}, {}]
    for key in inputs.files:
        if "|" in key:
            layer, name = key.split("|")
            params[int(layer)][name] = inputs[key]

    def loss(params, x, target):
        h = jax.nn.relu(lrlc_jax.apply(params[0], x, configs[0]))
        return jnp.mean((lrlc_jax.apply(params[1], h, configs[1]) - target) ** 2)

    @jax.jit
    def train_step(params, x, target):
        value, grads = jax.value_and_grad(loss)(params, x, target)
        return value, grads, jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)

    mesh = jax.make_mesh((2,), ("data",))
    by_example = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())
    x_sharded = jax.device_put(inputs["x"], by_example)
    results = {
        "sharded": train_step(
            jax.device_put(params, replicated), x_sharded, jax.device_put(inputs["t"], by_example)
        ),
        "single": train_step(*jax.device_put((params, inputs["x"], inputs["t"]), jax.devices()[0])),
    }
    out = {
        "devices": len(jax.devices()),
        "shard_rows": [shard.data.shape[0] for shard in x_sharded.addressable_shards],
        "sharded_loss_devices": len(results["sharded"][0].sharding.device_set),
    }
    for how, (value, grads, updated) in results.items():
        out[f"{how}|loss"] = value
        for i in range(2):
            for name in grads[i]:
                out[f"{how}|grad|{i}|{name}"] = grads[i][name]
                out[f"{how}|new|{i}|{name}"] = updated[i][name]
    np.savez(sys.argv[1] + ".out.npz", **out)
    """
)


def _reference_step(params, x, target):
    """Loss and gradients of relu-chained layers from lrlc_numpy's forward and vjp."""
    y0 = lrlc_numpy.forward(x, params[0], TWO_LAYERS[0])
    h = np.maximum(y0, 0)
    y1 = lrlc_numpy.forward(h, params[1], TWO_LAYERS[1])
    loss = np.mean((y1 - target) ** 2)
    dh, grads1 = lrlc_numpy.vjp(h, params[1], TWO_LAYERS[1], 2 * (y1 - target) / y1.size)
    _, grads0 = lrlc_numpy.vjp(x, params[0], TWO_LAYERS[0], dh * (y0 > 0))
    return loss, [grads0, grads1]


def test_data_parallel_step_on_two_host_devices_matches_one_device(tmp_path):
    batch = 4
    x, params0, _ = data(TWO_LAYERS[0], 0, batch)
    _, params1, target = data(TWO_LAYERS[1], 1, batch)
    params = [params0, params1]
    stem = str(tmp_path / "step")
    arrays = {f"{i}|{name}": v for i, p in enumerate(params) for name, v in p.items()}
    np.savez(stem + ".in.npz", x=x, t=target, **arrays)
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    configs = [config.to_json() for config in TWO_LAYERS]
    run = subprocess.run(
        [sys.executable, "-c", SHARDED_STEP, stem, *configs],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = np.load(stem + ".out.npz")
    assert int(out["devices"]) == 2
    assert list(out["shard_rows"]) == [batch // 2, batch // 2]  # the batch really is split
    assert int(out["sharded_loss_devices"]) == 2

    # Tolerance of the longer chain: both layers' reductions, float64.
    tol_config = max(TWO_LAYERS, key=lambda c: conformance.reduction_length(c, batch))
    want_loss, want_grads = _reference_step(params, x, target)
    assert_close(out["sharded|loss"], out["single|loss"], tol_config, batch)
    assert_close(out["single|loss"], want_loss, tol_config, batch)
    for i, config in enumerate(TWO_LAYERS):
        for name in lrlc_numpy.param_shapes(config):
            sharded, single = out[f"sharded|grad|{i}|{name}"], out[f"single|grad|{i}|{name}"]
            assert_close(sharded, single, tol_config, batch)
            assert_close(single, want_grads[i][name], tol_config, batch)
            new = out[f"sharded|new|{i}|{name}"]
            assert_close(new, out[f"single|new|{i}|{name}"], tol_config, batch)
            assert_close(new, params[i][name] - 0.1 * want_grads[i][name], tol_config, batch)


# ---------------------------------------------------------------------------------------------
# Accelerators (skipped where JAX finds none)

ACCELERATORS = [d for d in jax.devices() if d.platform != "cpu"]


@pytest.mark.gpu
@pytest.mark.skipif(not ACCELERATORS, reason="no GPU or TPU visible to JAX")
@CONFIGS
def test_accelerator_matches_cpu(config):
    x, params, _ = data(config)
    x, params = x.astype(np.float32), {k: v.astype(np.float32) for k, v in params.items()}
    with jax.default_matmul_precision("highest"):
        on_device = apply_jit(*jax.device_put((params, x), ACCELERATORS[0]), config=config)
    assert on_device.devices() == {ACCELERATORS[0]}
    cpu = jax.devices("cpu")[0]
    on_cpu = apply_jit(*jax.device_put((params, x), cpu), config=config)
    assert_close(on_device, on_cpu, config, dtype="float32")


def test_padding_wider_than_the_kernel_in_float32():
    """Regression (found by test_conformance_jax.py::test_random_configs, seed 6698501): XLA's
    CPU float32 input gradient of a convolution whose padding exceeds the kernel's reach was
    wrong in its last column (error 1.5 against tol 4.4e-5); lrlc_jax pads such inputs itself."""
    import conformance
    from conformance import backends

    seed = 6698501
    config = conformance.random_config(np.random.default_rng(seed))
    assert config.kernel_size == (1, 2) and config.padding_pairs == ((1, 1), (2, 0))
    case = conformance.Case(f"random-{seed}", config)
    for strategy in ("conv", "lc"):
        report = conformance.check_case(
            backends.load("jax", strategy=strategy), case, dtype="float32", seed=seed
        )
        assert report.ok, "\n".join(map(str, report.failures))


def test_cost_rule_takes_the_platform():
    """GPUs have their own constants (fitted to an H100 run): the paper layer at batch 512
    crosses at K ~ 4 there and at ~ 2.3 with the CPU's; the default is JAX's default backend."""
    paper = LRLCConfig(64, 64, 3, 4, (32, 32), padding="same")
    for platform, costs in (("cpu", lrlc_jax.costs.COSTS), ("gpu", lrlc_jax.costs.GPU_COSTS)):
        want = 512 * (3 * costs.product + costs.patch / 64) / (3 * 512 - 4 * costs.bank)
        assert lrlc_jax.lc_crossover(paper, 512, platform) == pytest.approx(want)
    assert lrlc_jax.choose_strategy(paper, 512, platform="gpu") == "conv"
    assert lrlc_jax.choose_strategy(paper, 512, platform="cpu") == "lc"
    default = lrlc_jax.choose_strategy(paper, 512)
    assert default == lrlc_jax.choose_strategy(paper, 512, platform=jax.default_backend())
