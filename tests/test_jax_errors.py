"""Every bad input to lrlc_jax a clear error, nothing silent (spec section 14; issue 14).

`BAD` is lrlc_jax's catalogue: one bad call each, with the exception it must raise and a
pattern its message must match (the argument, the value, what was expected). The tests after
it pin the exact result where an input is unusual but valid: an empty batch under every
strategy (forward and gradients), extreme logits under 'l2' and softmax in every dtype, a NaN
confined to its example, and checkpoints that keep each tensor's stored dtype (float64
without jax_enable_x64: refused, or rounded on an explicit opt-in that warns).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import conformance
import lrlc_jax
import lrlc_numpy
from lrlc_numpy import LRLCConfig

# float64 must be real for the float64 comparisons; the x64-off cases switch it off locally.
jax.config.update("jax_enable_x64", True)

FIXED = LRLCConfig(3, 4, 3, rank=2, input_size=(7, 6))  # output grid (5, 4)
IDEP = LRLCConfig(3, 4, 3, 2, (7, 6), padding="same", combining="full", input_dependent=True)
MIXED = LRLCConfig(3, 4, [3, 5], 2, (7, 6), dilation=[1, 2], padding="same")
PARAMS = lrlc_numpy.init_params(FIXED)
PARAMS_IDEP = lrlc_numpy.init_params(IDEP)
X = np.zeros((2, 7, 6, 3))
KEY = jax.random.key(0)


def _lc():
    return lrlc_numpy.to_locally_connected(PARAMS, FIXED)


def _with(**changes):
    return {**PARAMS, **changes}


J = lrlc_jax
# (id, call, exception, message pattern)
BAD = [
    # configs
    ("forward config dict", lambda: J.forward(X, PARAMS, FIXED.to_dict()), TypeError,
     r"forward: config must be an LRLCConfig, got a dict.*from_dict"),
    ("init config None", lambda: J.init(KEY, None), TypeError, "init: config.*NoneType"),
    ("weights config str", lambda: J.combining_weights(PARAMS, "FIXED"), TypeError,
     "combining_weights: config"),
    ("conversion config", lambda: J.to_locally_connected(PARAMS, 3), TypeError,
     "to_locally_connected: config"),
    ("lc config", lambda: J.locally_connected(X, *_lc(), FIXED.to_dict()), TypeError,
     "locally_connected: config"),
    ("crossover config", lambda: J.lc_crossover({}, 8), TypeError, "lc_crossover: config"),
    ("choose config", lambda: J.choose_strategy(None, 8), TypeError, "choose_strategy: config"),
    ("patches mixed config", lambda: J.extract_patches(X, MIXED), ValueError,
     r"mixed basis.*locally_connected_config\(\)"),
    # x
    ("x None", lambda: J.forward(None, PARAMS, FIXED), TypeError, "x must be an array.*None"),
    ("x str", lambda: J.apply(PARAMS, "image", FIXED), TypeError, "x must be an array, got str"),
    ("x dict", lambda: J.apply(PARAMS, {"x": X}, FIXED), TypeError, "x must be an array.*dict"),
    ("x ragged", lambda: J.apply(PARAMS, [[1.0], [1.0, 2.0]], FIXED), TypeError,
     "x must be an array"),
    ("x rank 3", lambda: J.apply(PARAMS, X[0], FIXED), ValueError, r"rank 4.*\(7, 6, 3\)"),
    ("x rank 5", lambda: J.apply(PARAMS, X[None], FIXED), ValueError, "rank 4"),
    ("x channels", lambda: J.apply(PARAMS, X[..., :2], FIXED), ValueError,
     "2 channels.*in_channels=3"),
    ("x grid", lambda: J.apply(PARAMS, X[:, :6], FIXED), ValueError,
     r"spatial size \(6, 6\).*input_size=\(7, 6\)"),
    ("x int", lambda: J.apply(PARAMS, X.astype(int), FIXED), TypeError,
     "x must have a floating dtype.*int"),
    ("x bool", lambda: J.apply(PARAMS, X > 0, FIXED), TypeError, "floating dtype.*bool"),
    ("x complex", lambda: J.apply(PARAMS, X.astype(complex), FIXED), TypeError,
     "floating dtype.*complex"),
    ("x float8", lambda: J.apply(PARAMS, X.astype(ml_dtypes.float8_e4m3fn), FIXED), TypeError,
     "float16, bfloat16, float32, float64.*float8"),
    ("x for fixed conversion", lambda: J.to_locally_connected(PARAMS, FIXED, X[:, :5]),
     ValueError, "spatial size"),
    ("idep weights without x", lambda: J.combining_weights(PARAMS_IDEP, IDEP), ValueError,
     "combining_weights: an input-dependent layer needs the input x"),
    ("idep conversion without x", lambda: J.to_locally_connected(PARAMS_IDEP, IDEP), ValueError,
     "to_locally_connected: an input-dependent layer needs the input x"),
    # params
    ("params list", lambda: J.apply([PARAMS["basis"]], X, FIXED), TypeError,
     "params must be a mapping.*list"),
    ("params None", lambda: J.apply(None, X, FIXED), TypeError, "params must be a mapping"),
    ("param missing", lambda: J.apply({k: v for k, v in PARAMS.items() if k != "row_bias"}, X,
                                      FIXED), ValueError, r"missing tensors \['row_bias'\]"),
    ("param extra", lambda: J.apply(_with(w=X), X, FIXED), ValueError,
     r"unexpected tensors \['w'\]"),
    ("param shape", lambda: J.apply(_with(row_bias=np.zeros(4)), X, FIXED), ValueError,
     r"row_bias.*\(4,\).*expected \(5,\)"),
    ("param list value", lambda: J.apply(_with(channel_bias=[0.0] * 4), X, FIXED), TypeError,
     "channel_bias.*list, not an array"),
    ("param int", lambda: J.apply(_with(channel_bias=np.zeros(4, int)), X, FIXED), TypeError,
     "channel_bias.*floating dtype"),
    ("mixed params with basis", lambda: J.apply(PARAMS, X, MIXED), ValueError,
     r"missing tensors \['basis.0', 'basis.1'\].*unexpected tensors \['basis'\]"),
    # strategy
    ("strategy unknown", lambda: J.apply(PARAMS, X, FIXED, strategy="fft"), ValueError,
     r"'fft'.*\('auto', 'conv', 'lc'\)"),
    ("strategy None", lambda: J.apply(PARAMS, X, FIXED, strategy=None), ValueError,
     "unknown strategy None"),
    ("lc for idep", lambda: J.apply(PARAMS_IDEP, X, IDEP, strategy="lc"), ValueError,
     "strategy='lc' needs fixed combining weights"),
    ("batch negative", lambda: J.choose_strategy(FIXED, -1), ValueError,
     "batch must be a non-negative int or None, got -1"),
    ("batch float", lambda: J.choose_strategy(FIXED, 2.0), TypeError, "batch.*got 2.0"),
    ("batch bool", lambda: J.lc_crossover(FIXED, True), TypeError, "batch.*got True"),
    ("platform typo", lambda: J.choose_strategy(FIXED, 8, platform="gpus"), ValueError,
     r"platform: got 'gpus'; expected None or one of \('cpu', 'gpu'"),
    # init
    ("init key int", lambda: J.init(0, FIXED), TypeError,
     r"init: key must be one PRNG key \(jax.random.key\(seed\)\), got 0"),
    ("init key batch", lambda: J.init(jax.random.split(KEY, 2), FIXED), TypeError,
     "init: key must be one PRNG key.*shape \\(2,\\)"),
    ("init dtype int", lambda: J.init(KEY, FIXED, dtype=jnp.int32), TypeError,
     "init: dtype must be one of float16, bfloat16, float32, float64, got.*int32"),
    ("init dtype complex", lambda: J.init(KEY, FIXED, dtype=jnp.complex64), TypeError,
     "init: dtype.*complex64"),
    ("init dtype unknown", lambda: J.init(KEY, FIXED, dtype="foo"), TypeError,
     "init: dtype must be one of.*'foo'"),
    ("init dtype None", lambda: J.init(KEY, FIXED, dtype=None), TypeError, "init: dtype"),
    # building blocks
    ("normalize mode", lambda: J.normalize_weights(np.zeros((2, 3)), "l1"), ValueError,
     r"normalize_weights: unknown mode 'l1'; expected one of \('softmax', 'l2', 'none'\)"),
    ("normalize int", lambda: J.normalize_weights(np.zeros((2, 3), int), "l2"), TypeError,
     "normalize_weights: logits must have a floating dtype"),
    ("fixed logits of idep", lambda: J.fixed_logits(PARAMS_IDEP, IDEP), ValueError,
     "fixed_logits: an input-dependent layer"),
    ("fixed logits missing", lambda: J.fixed_logits({}, FIXED), ValueError,
     r"fixed_logits: params has no 'row_logits'"),
    ("fixed logits shape", lambda: J.fixed_logits(_with(col_logits=np.zeros((4, 3))), FIXED),
     ValueError, r"fixed_logits: params\['col_logits'\] has shape \(4, 3\); expected \(4, 2\)"),
    ("g of fixed", lambda: J.g_forward(X, PARAMS, FIXED), ValueError,
     "g_forward: the config is not input-dependent"),
    ("g x grid", lambda: J.g_forward(X[:, :5], PARAMS_IDEP, IDEP), ValueError,
     "g_forward: x has spatial size"),
    ("bias map dtype", lambda: J.bias_map(PARAMS, FIXED, "int8"), TypeError,
     "bias_map: dtype must be one of"),
    ("bias map missing", lambda: J.bias_map({}, FIXED, "float32"), ValueError,
     r"bias_map: params has no 'row_bias'"),
    ("spatial bias shape", lambda: J.spatial_bias_map(_with(row_bias=np.zeros(2)), FIXED),
     ValueError, r"spatial_bias_map: params\['row_bias'\] has shape \(2,\)"),
    ("resize rank", lambda: J.resize_bilinear(np.zeros((3, 3, 2)), (2, 2)), ValueError,
     r"resize_bilinear: a must have rank 4"),
    ("resize size", lambda: J.resize_bilinear(np.zeros((1, 3, 3, 2)), (0, 2)), ValueError,
     "size must be positive"),
    ("resize size type", lambda: J.resize_bilinear(np.zeros((1, 3, 3, 2)), 2.5), TypeError,
     "size"),
    ("depthwise rate", lambda: J.depthwise_conv3x3(X, np.zeros((3, 3, 3)), np.zeros(3), 0),
     ValueError, "rate must be a positive int, got 0"),
    ("depthwise kernel", lambda: J.depthwise_conv3x3(X, np.zeros((3, 3, 2)), np.zeros(3), 1),
     ValueError, r"depthwise_conv3x3: kernel has shape \(3, 3, 2\); expected \(3, 3, 3\)"),
    ("depthwise too small", lambda: J.depthwise_conv3x3(X, np.zeros((3, 3, 3)), np.zeros(3), 4),
     ValueError, "too small for a 3x3 window of rate 4"),
    ("combine weights", lambda: J.combine(np.zeros((2, 5, 4, 2, 4)), np.zeros((5, 4, 3)),
                                          np.zeros((5, 4, 4))), ValueError,
     r"combine: weights has shape \(5, 4, 3\); expected \(5, 4, 2\)"),
    ("combine bias", lambda: J.combine(np.zeros((2, 5, 4, 2, 4)), np.zeros((5, 4, 2)),
                                       np.zeros((4,))), ValueError, r"combine: bias has shape"),
    ("combine rank", lambda: J.combine(np.zeros((2, 5, 4, 8)), np.zeros((5, 4, 2)),
                                       np.zeros((5, 4, 4))), ValueError,
     r"per_member has shape \(2, 5, 4, 8\)"),
    ("banks K", lambda: J.position_banks(np.zeros((5, 4, 3)), PARAMS["basis"]), ValueError,
     "position_banks: weights.*one K"),
    ("responses basis", lambda: J.basis_responses(X, PARAMS["basis"][:1], FIXED), ValueError,
     r"basis_responses: basis has shape \(1, 3, 3, 3, 4\); expected \(2, 3, 3, 3, 4\)"),
    ("responses mixed basis", lambda: J.basis_responses(X, np.zeros((2, 3, 3, 3, 4)), MIXED),
     TypeError, "a mixed basis is a list of 2 arrays"),
    ("stack responses count", lambda: J.stack_responses([np.zeros((2, 7, 6, 1, 4))], MIXED),
     ValueError, "expected a list of 2 responses, one per basis group"),
    ("apply banks", lambda: J.apply_banks(X, np.zeros((20, 27, 5)), FIXED), ValueError,
     r"apply_banks: banks has shape \(20, 27, 5\); expected \(20, 27, 4\)"),
    ("pad config", lambda: J.pad_input(X, 3), TypeError, "pad_input: config"),
    # locally connected
    ("lc kernel list", lambda: J.locally_connected(X, [1.0], _lc()[1], FIXED), ValueError,
     r"kernel has shape \(1,\)"),
    ("lc kernel shape", lambda: J.locally_connected(X, _lc()[0][1:], _lc()[1], FIXED),
     ValueError, r"kernel has shape \(4, 4, 3, 3, 3, 4\); expected \(5, 4, 3, 3, 3, 4\)"),
    ("lc kernel batch", lambda: J.locally_connected(X, np.zeros((3, 5, 4, 3, 3, 3, 4)),
                                                    _lc()[1], FIXED), ValueError,
     r"\(2, 5, 4, 3, 3, 3, 4\) \(one per example\)"),
    ("lc bias shape", lambda: J.locally_connected(X, _lc()[0], _lc()[1][..., :1], FIXED),
     ValueError, r"bias has shape \(5, 4, 1\); expected \(5, 4, 4\)"),
    ("lc kernel int", lambda: J.locally_connected(X, _lc()[0].astype(int), _lc()[1], FIXED),
     TypeError, "locally connected kernel must have a floating dtype"),
    ("lc mixed window", lambda: J.locally_connected(X, np.zeros((7, 6, 3, 3, 3, 4)),
                                                    np.zeros((7, 6, 4)), MIXED), ValueError,
     r"kernel has shape \(7, 6, 3, 3, 3, 4\); expected \(7, 6, 9, 9, 3, 4\)"),
    # neutral params and checkpoints
    ("neutral not mapping", lambda: J.neutral_params([1]), TypeError,
     "neutral_params: params must be a mapping"),
    ("neutral int", lambda: J.neutral_params({"basis": np.zeros(2, int)}), TypeError,
     r"params\['basis'\] must have a floating dtype"),
    ("load params dtype", lambda: J.load_neutral_params(PARAMS, FIXED, dtype="foo"), TypeError,
     "load_neutral_params: dtype must be one of"),
    ("load params config", lambda: J.load_neutral_params(PARAMS, FIXED.to_dict()), TypeError,
     "load_neutral_params: config"),
    ("load params shape", lambda: J.load_neutral_params(_with(row_bias=np.zeros(1)), FIXED),
     ValueError, r"row_bias.*\(1,\)"),
    ("save config", lambda: J.save_checkpoint("x.safetensors", PARAMS, None), TypeError,
     "save_checkpoint: config"),
    ("save params", lambda: J.save_checkpoint("x.safetensors", _with(w=X), FIXED), ValueError,
     r"save_checkpoint: params.*unexpected tensors \['w'\]"),
    ("save onto a directory", lambda: J.save_checkpoint(".", PARAMS, FIXED), IsADirectoryError,
     "onto a directory"),
    ("save into a missing directory", lambda: J.save_checkpoint("no/such/x.safetensors", PARAMS,
                                                                FIXED), FileNotFoundError,
     "no/such"),
    ("load missing file", lambda: J.load_checkpoint("absent.safetensors"), FileNotFoundError,
     "absent.safetensors"),
    ("load a directory", lambda: J.load_checkpoint("."), IsADirectoryError, "directory"),
]  # fmt: skip


def test_the_catalogue_is_large_and_its_ids_unique():
    ids = [entry[0] for entry in BAD]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 80


@pytest.mark.parametrize("what, call, error, match", BAD, ids=[entry[0] for entry in BAD])
def test_bad_input_is_a_clear_error(what, call, error, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative checkpoint paths land in a fresh directory
    with pytest.raises(error, match=match):
        call()


def test_errors_are_raised_under_jit_before_any_work():
    apply = jax.jit(lrlc_jax.apply, static_argnames="config")
    with pytest.raises(ValueError, match="input_size"):
        apply(PARAMS, X[:, :5], config=FIXED)
    with pytest.raises(ValueError, match=r"row_bias.*\(4,\)"):
        apply(_with(row_bias=np.zeros(4)), X, config=FIXED)


# ---------------------------------------------------------------------------------------------
# Unusual but valid inputs: the exact result

EMPTY_CASES = {
    "fixed-conv": (FIXED, "conv"),
    "fixed-lc": (FIXED, "lc"),
    "l2-auto": (dataclasses.replace(FIXED, normalize="l2"), "auto"),
    "rank-one": (dataclasses.replace(FIXED, rank=1), "auto"),
    "mixed-lc": (MIXED, "lc"),
    "mixed-conv": (MIXED, "conv"),
    "input-dependent": (IDEP, "auto"),
}


@pytest.mark.parametrize("config, strategy", EMPTY_CASES.values(), ids=EMPTY_CASES.keys())
def test_an_empty_batch_gives_an_empty_output_and_zero_gradients(config, strategy):
    x, params, _ = conformance.case_data(conformance.Case("empty", config, 1), 0)
    x = x[:0]
    dy = np.zeros((0, *config.output_size, config.out_channels))

    @jax.jit
    def step(params, x, dy):
        y, pullback = jax.vjp(lambda p, xs: lrlc_jax.forward(xs, p, config, strategy=strategy),
                              params, x)  # fmt: skip
        return y, *pullback(dy)

    y, dparams, dx = step(params, x, dy)
    assert y.shape == dy.shape and dx.shape == x.shape
    for name, value in params.items():
        assert dparams[name].shape == value.shape
        assert not np.any(dparams[name]), name
    kernel, bias = lrlc_jax.to_locally_connected(params, config, x)
    want_kernel, want_bias = lrlc_numpy.to_locally_connected(params, config, x)
    assert kernel.shape == want_kernel.shape
    np.testing.assert_array_equal(bias, want_bias)
    assert lrlc_jax.locally_connected(x, kernel, bias, config).shape == dy.shape


@pytest.mark.parametrize(
    "dtype, big",
    [("float64", 1e200), ("float32", 1e20), ("bfloat16", 1e30), ("float16", 6e4)],
)
@pytest.mark.parametrize("normalize", ["l2", "softmax"])
def test_extreme_logits_give_finite_unit_weights_and_gradients(dtype, big, normalize):
    """Logits of +-big: no overflow (l2 scales by max|w~| before squaring); the weights have
    unit norm (l2) or sum 1 (softmax) and the reference's values; gradients are finite."""
    config = dataclasses.replace(FIXED, normalize=normalize)
    params = {name: value.astype(dtype) for name, value in lrlc_numpy.init_params(config).items()}
    signs = np.where(np.arange(5 * 2).reshape(5, 2) % 3 == 0, -1.0, 1.0)
    params["row_logits"] = (big * signs).astype(dtype)
    params["col_logits"] = np.zeros((4, 2), dtype)
    weights = np.asarray(lrlc_jax.combining_weights(params, config), np.float64)
    assert np.all(np.isfinite(weights))
    norms = np.sqrt((weights**2).sum(-1)) if normalize == "l2" else weights.sum(-1)
    np.testing.assert_allclose(norms, 1, rtol=1e-2 if dtype in ("bfloat16", "float16") else 1e-6)
    if dtype in ("float64", "float32"):
        want = lrlc_numpy.combining_weights(params, config)
        np.testing.assert_allclose(weights, want, rtol=1e-6, atol=0)
    x = np.ones((2, 7, 6, 3), dtype)
    grads = jax.grad(lambda p: jnp.sum(lrlc_jax.apply(p, x, config).astype(jnp.float32)))(params)
    for name, grad in grads.items():
        assert np.all(np.isfinite(np.asarray(grad, np.float64))), name
    assert np.any(np.asarray(grads["basis"], np.float64))


def test_l2_keeps_its_floor():
    """Below the floor w = w~ / 1e-6, as the spec writes it (all-zero logits give w = 0)."""
    logits = np.array([[0.0, 0.0], [3e-7, -4e-7], [3.0, 4.0]])
    got = lrlc_jax.normalize_weights(logits, "l2")
    np.testing.assert_allclose(got, [[0, 0], [0.3, -0.4], [0.6, 0.8]], rtol=1e-12)
    grad = jax.grad(lambda w: jnp.sum(lrlc_jax.normalize_weights(w, "l2")[0]))(logits)
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize(
    "config, strategy", [(FIXED, "conv"), (FIXED, "lc"), (IDEP, "auto")], ids=["conv", "lc", "idep"]
)
def test_a_nan_stays_in_its_own_example(config, strategy):
    x, params, _ = conformance.case_data(conformance.Case("nan", config, 2), 0)
    x[0, 3, 2, 1] = np.nan
    y = lrlc_jax.forward(x, params, config, strategy=strategy)
    assert np.isnan(y[0]).any()
    np.testing.assert_allclose(y[1], lrlc_numpy.forward(x[1:], params, config)[0], rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Checkpoints keep every tensor's stored dtype


def _stored_dtypes(path):
    return lrlc_numpy.read_checkpoint(path).stored_dtypes


def test_each_tensor_keeps_its_stored_dtype(tmp_path):
    """A file with float16, bfloat16, float32 and float64 tensors loads as exactly those."""
    path = tmp_path / "mixed-dtypes.safetensors"
    params = lrlc_numpy.init_params(FIXED)
    stored = {
        "basis": "float16",
        "row_logits": "bfloat16",
        "col_logits": "float32",
        "row_bias": "float64",
        "col_bias": "float32",
        "channel_bias": "float64",
    }
    arrays = {
        name: params[name].astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
        for name, dtype in stored.items()
    }
    lrlc_numpy.save_params(path, arrays, FIXED)
    loaded, config = lrlc_jax.load_checkpoint(path)
    assert config == FIXED
    for name, dtype in stored.items():
        assert loaded[name].dtype == jnp.dtype(dtype), name
        np.testing.assert_array_equal(np.asarray(loaded[name]), arrays[name])


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32", "float64"])
def test_a_layer_round_trips_in_its_dtype(tmp_path, dtype):
    """init in `dtype`, save, load: same dtype and bits, and the file stores that dtype."""
    params = lrlc_jax.init(KEY, MIXED, dtype=jnp.dtype(dtype))
    path = tmp_path / "layer.safetensors"
    lrlc_jax.save_checkpoint(path, params, MIXED)
    assert set(_stored_dtypes(path).values()) == {dtype}
    loaded, _ = lrlc_jax.load_checkpoint(path)
    for name, value in params.items():
        assert loaded[name].dtype == value.dtype, name
        np.testing.assert_array_equal(
            np.asarray(loaded[name]).view(np.uint8), np.asarray(value).view(np.uint8)
        )


def test_float64_without_x64_is_refused_or_rounded_on_request(tmp_path):
    path = tmp_path / "wide.safetensors"
    lrlc_numpy.save_params(path, PARAMS, FIXED)
    with jax.enable_x64(False):
        with pytest.raises(ValueError, match=r"float64.*jax_enable_x64.*float64_as_float32=True"):
            lrlc_jax.load_checkpoint(path)
        with pytest.raises(ValueError, match=r"load_neutral_params: tensors \['basis'"):
            lrlc_jax.load_neutral_params(PARAMS, FIXED)
        with pytest.raises(ValueError, match="init: dtype float64 needs jax_enable_x64"):
            lrlc_jax.init(KEY, FIXED, dtype=jnp.float64)
        with pytest.warns(UserWarning, match="rounded to float32"):
            loaded, _ = lrlc_jax.load_checkpoint(path, float64_as_float32=True)
        with pytest.warns(UserWarning, match="rounded to float32"):
            neutral = lrlc_jax.load_neutral_params(PARAMS, FIXED, float64_as_float32=True)
        narrow = lrlc_jax.load_neutral_params(PARAMS, FIXED, dtype=jnp.float32)  # asked for
    for arrays in (loaded, neutral, narrow):
        for name, value in PARAMS.items():
            assert arrays[name].dtype == jnp.float32
            np.testing.assert_array_equal(arrays[name], value.astype(np.float32))
    loaded, _ = lrlc_jax.load_checkpoint(path)  # x64 on: float64 as stored
    assert all(value.dtype == jnp.float64 for value in loaded.values())
