"""lrlc_jax.flax: the nnx and linen modules hold the neutral parameters and compute what
lrlc_jax computes; the locally connected kernel moves to and from flax's linen.ConvLocal
layout and gives ConvLocal's output. Skipped where flax is not installed (`lrlc[flax]`)."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conformance
import lrlc_jax
import lrlc_numpy
from lrlc_numpy import LRLCConfig

flax = pytest.importorskip("flax")
optax = pytest.importorskip("optax")
from flax import nnx  # noqa: E402

import lrlc_jax.flax as lrlc_flax  # noqa: E402

FIXED = LRLCConfig(
    3, 4, 3, rank=3, input_size=(8, 7), stride=(2, 1), dilation=(1, 2), padding="same"
)
IDEP = LRLCConfig(
    3, 4, (3, 2), rank=2, input_size=(9, 10), padding=((2, 0), (1, 1)), combining="full",
    input_dependent=True,
)  # fmt: skip
MIXED = LRLCConfig(2, 3, [3, 5], rank=2, input_size=(9, 8), dilation=[1, 2], padding="same")
CONFIGS = pytest.mark.parametrize(
    "config", [FIXED, IDEP, MIXED], ids=["fixed", "input-dependent", "mixed"]
)


def data32(config, batch=2, seed=0):
    x, params, dy = conformance.case_data(conformance.Case("flax", config, batch), seed)
    params = {name: value.astype(np.float32) for name, value in params.items()}
    return x.astype(np.float32), params, dy.astype(np.float32)


def assert_close(got, want, config, batch=2):
    err = conformance.relative_error(got, want)
    tol = conformance.tolerance("float32", config, batch)
    assert err <= tol, f"relative error {err:.3e} > tolerance {tol:.3e}"


def test_importing_lrlc_jax_imports_no_flax():
    code = "import sys, lrlc_jax; assert 'flax' not in sys.modules, 'flax was imported'"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# nnx


@CONFIGS
def test_nnx_parameters_are_the_neutral_dict_and_the_output_is_lrlc_jax(config):
    layer = lrlc_flax.LRLC(config, rngs=nnx.Rngs(params=0))
    assert layer.config == config
    assert dict(jax.tree.map(jnp.shape, layer.neutral_params())) == lrlc_numpy.param_shapes(config)
    state = nnx.state(layer, nnx.Param)
    assert set(state["params"]) == set(lrlc_numpy.param_shapes(config))
    x, params, _ = data32(config)
    layer.load_neutral_params(params)
    y = nnx.jit(lambda module, x: module(x))(layer, x)
    assert_close(y, lrlc_jax.apply(params, x, config), config)
    assert_close(y, lrlc_numpy.forward(x.astype(np.float64), params, config), config)


def test_nnx_trains_with_an_optax_optimizer():
    layer = lrlc_flax.LRLC(FIXED, rngs=nnx.Rngs(params=1))
    optimizer = nnx.Optimizer(layer, optax.sgd(0.1), wrt=nnx.Param)
    x, _, target = data32(FIXED)
    before = layer.neutral_params()

    @nnx.jit
    def step(layer, optimizer, x, target):
        def loss(layer):
            return jnp.mean((layer(x) - target) ** 2)

        value, grads = nnx.value_and_grad(loss)(layer)
        optimizer.update(layer, grads)
        return value, grads

    value, grads = step(layer, optimizer, x, target)
    params = {name: jnp.asarray(v) for name, v in before.items()}
    want_value, want_grads = jax.value_and_grad(
        lambda p: jnp.mean((lrlc_jax.apply(p, x, FIXED) - target) ** 2)
    )(params)
    assert_close(value, want_value, FIXED)
    after = layer.neutral_params()
    for name, want in want_grads.items():
        assert_close(grads["params"][name][...], want, FIXED)
        assert_close(after[name], before[name] - 0.1 * np.asarray(want), FIXED)
    assert step(layer, optimizer, x, target)[0] < value


def test_nnx_checkpoints(tmp_path):
    layer = lrlc_flax.LRLC(MIXED, rngs=nnx.Rngs(params=2))
    path = tmp_path / "layer.safetensors"
    layer.save_checkpoint(path)
    saved, config = lrlc_numpy.load_params(path)
    assert config == MIXED
    copy = lrlc_flax.LRLC.from_checkpoint(path)
    other = lrlc_flax.LRLC.from_lrlc_config(MIXED, rngs=nnx.Rngs(params=3))
    other.load_checkpoint(path)
    for name, value in layer.neutral_params().items():
        np.testing.assert_array_equal(saved[name], value)
        np.testing.assert_array_equal(copy.neutral_params()[name], value)
        np.testing.assert_array_equal(other.neutral_params()[name], value)
    wrong = lrlc_flax.LRLC(FIXED, rngs=nnx.Rngs(params=0))
    with pytest.raises(ValueError, match="differs from this layer's"):
        wrong.load_checkpoint(path)


def test_nnx_bad_arguments_are_clear_errors():
    with pytest.raises(TypeError, match="LRLCConfig"):
        lrlc_flax.LRLC(FIXED.to_dict(), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"strategy.*'fft'"):
        lrlc_flax.LRLC(FIXED, rngs=nnx.Rngs(0), strategy="fft")
    with pytest.raises(TypeError, match="rngs must be an nnx.Rngs"):
        lrlc_flax.LRLC(FIXED, rngs=0)
    layer = lrlc_flax.LRLC(FIXED, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"row_bias.*\(2,\); expected \(4,\)"):
        layer.load_neutral_params({**layer.neutral_params(), "row_bias": np.zeros(2)})


# ---------------------------------------------------------------------------------------------
# linen


@CONFIGS
def test_linen_variables_are_the_neutral_dict(config):
    module = lrlc_flax.LinenLRLC(config)
    x, params, _ = data32(config)
    variables = module.init(jax.random.key(0), x)
    assert set(variables) == {"params"}
    shapes = {name: value.shape for name, value in variables["params"].items()}
    assert shapes == lrlc_numpy.param_shapes(config)
    y = jax.jit(module.apply)({"params": params}, x)
    assert_close(y, lrlc_jax.apply(params, x, config), config)


def test_linen_gradients_are_lrlc_jax_gradients():
    module = lrlc_flax.LinenLRLC(IDEP)
    x, params, dy = data32(IDEP)
    got = jax.grad(lambda p: jnp.sum(module.apply({"params": p}, x) * dy))(params)
    want = jax.grad(lambda p: jnp.sum(lrlc_jax.apply(p, x, IDEP) * dy))(params)
    for name in want:
        assert_close(got[name], want[name], IDEP)


# ---------------------------------------------------------------------------------------------
# linen.ConvLocal's kernel layout

# Strided, dilated, asymmetric explicit padding: every geometry field reaches ConvLocal.
GEOMETRY = LRLCConfig(
    3, 5, (2, 3), rank=2, input_size=(9, 11), stride=(1, 2), dilation=(2, 1),
    padding=((1, 2), (0, 1)),
)  # fmt: skip


@pytest.mark.parametrize("config", [FIXED, GEOMETRY, MIXED], ids=["fixed", "geometry", "mixed"])
def test_converted_kernel_runs_in_conv_local(config):
    """lrlc's conversion, moved to ConvLocal's layout, gives the layer's output through
    ConvLocal; a ConvLocal kernel moved back gives ConvLocal's output through lrlc_jax."""
    x, params, _ = data32(config)
    kernel, bias = lrlc_jax.to_locally_connected(params, config)
    conv_local = lrlc_flax.conv_local(config)
    local = lrlc_flax.to_conv_local(kernel)
    shapes = jax.tree.map(jnp.shape, conv_local.init(jax.random.key(0), x))
    assert shapes == {"params": {"kernel": local.shape, "bias": bias.shape}}
    y = conv_local.apply({"params": {"kernel": local, "bias": bias}}, x)
    assert_close(y, lrlc_jax.apply(params, x, config), config)
    np.testing.assert_array_equal(lrlc_flax.from_conv_local(local, config), kernel)

    theirs = conv_local.init(jax.random.key(1), x)["params"]
    back = lrlc_flax.from_conv_local(theirs["kernel"], config)
    got = lrlc_jax.locally_connected(x, back, theirs["bias"], config)
    assert_close(got, conv_local.apply({"params": theirs}, x), config)


def test_conv_local_layout_errors():
    with pytest.raises(ValueError, match="one kernel for every example"):
        lrlc_flax.to_conv_local(np.zeros((2, 4, 7, 3, 3, 3, 4)))
    with pytest.raises(ValueError, match=r"expected \(4, 7, 27, 4\)"):
        lrlc_flax.from_conv_local(np.zeros((4, 7, 26, 4)), FIXED)
    with pytest.raises(TypeError, match="floating"):
        lrlc_flax.to_conv_local(np.zeros((4, 7, 3, 3, 3, 4), int))
