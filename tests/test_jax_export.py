"""jax.export with a symbolic batch (issue 15): fixed and input-dependent layers under the
default strategy export once, serialise, and run at other batch sizes with lrlc_jax's values
and gradients. The strategy rule does not branch on a symbolic batch: it takes its documented
default for an unknown batch (`lrlc_numpy.strategy.lc_crossover`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import conformance
import lrlc_jax
from lrlc_numpy import LRLCConfig

# 'auto' picks 'lc' for this layer at an unknown (large) batch and 'conv' at batch 1: the
# exported program must not depend on the batch it is called with.
FIXED = LRLCConfig(8, 8, 3, 16, (6, 6), padding="same")
IDEP = LRLCConfig(3, 4, 3, 2, (7, 6), padding="same", combining="full", input_dependent=True)
CONFIGS = pytest.mark.parametrize("config", [FIXED, IDEP], ids=["fixed", "input-dependent"])


def _specs(tree):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def _close(got, want, config, batch):
    err = conformance.relative_error(got, want)
    tol = conformance.tolerance("float32", config, batch)
    assert err <= tol, f"relative error {err:.3e} > tolerance {tol:.3e}"


@CONFIGS
def test_export_with_a_symbolic_batch_serialise_and_call_at_two_sizes(config):
    params = lrlc_jax.init(jax.random.key(0), config)
    (batch,) = export.symbolic_shape("b")
    x_spec = jax.ShapeDtypeStruct((batch, *config.input_size, config.in_channels), jnp.float32)
    exported = export.export(jax.jit(lambda p, x: lrlc_jax.apply(p, x, config)))(
        _specs(params), x_spec
    )
    restored = export.deserialize(exported.serialize(vjp_order=1))
    assert str(restored.in_avals[-1].shape[0]) == "b"  # x, after the parameter leaves
    for size in (1, 5):
        rng = np.random.default_rng(size)
        x = rng.normal(size=(size, *config.input_size, config.in_channels)).astype(np.float32)
        y = restored.call(params, x)
        assert y.shape == (size, *config.output_size, config.out_channels)
        _close(y, lrlc_jax.apply(params, x, config), config, size)
        # The serialised program carries its VJP, so it trains.
        dy = rng.normal(size=y.shape).astype(np.float32)
        got = jax.grad(lambda p, x, dy: jnp.sum(restored.call(p, x) * dy))(params, x, dy)
        want = jax.grad(lambda p, x, dy: jnp.sum(lrlc_jax.apply(p, x, config) * dy))(params, x, dy)
        for name in want:
            _close(got[name], want[name], config, size)


def test_the_rule_takes_its_unknown_batch_default_for_a_symbolic_batch():
    (batch,) = export.symbolic_shape("b")
    for config in (FIXED, IDEP):
        assert lrlc_jax.choose_strategy(config, batch) == lrlc_jax.choose_strategy(config, None)
        assert lrlc_jax.lc_crossover(config, batch) == lrlc_jax.lc_crossover(config, None)
    assert lrlc_jax.choose_strategy(FIXED, None) == "lc"
    assert lrlc_jax.choose_strategy(FIXED, 1) == "conv"


def test_export_of_the_conversion_with_a_symbolic_batch():
    """An input-dependent layer's per-example locally connected kernel, exported."""
    params = lrlc_jax.init(jax.random.key(1), IDEP)
    (batch,) = export.symbolic_shape("b")
    x_spec = jax.ShapeDtypeStruct((batch, *IDEP.input_size, IDEP.in_channels), jnp.float32)

    def converted(p, x):
        return lrlc_jax.locally_connected(x, *lrlc_jax.to_locally_connected(p, IDEP, x), IDEP)

    exported = export.export(jax.jit(converted))(_specs(params), x_spec)
    x = np.random.default_rng(0).normal(size=(3, *IDEP.input_size, 3)).astype(np.float32)
    _close(exported.call(params, x), lrlc_jax.apply(params, x, IDEP), IDEP, 3)
