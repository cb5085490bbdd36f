"""The NumPy reference for low-rank locally connected layers: forward and hand-written backward.

Each function cites the spec section (spec/SPEC.md) and paper equation it implements.
Layouts are canonical: data NHWC `x[b, i, j, c]`, kernels HWIO, the basis
`basis[k, u, v, c_in, c_out]` (a mixed basis: one `basis.k[u, v, c_in, c_out]` per basis,
each with its own window; spec section 16). Computation happens in the floating dtype of `x`.

Every function is generic in the number n of spatial axes (spec section 17): data
(B, *grid, C), the basis (K, *kernel, C_in, C_out). The einsum subscripts are built from
`_GRID` and `_TAPS`, so the 2-D ones read exactly as the equations: "bijuvc,kuvco->bijko".
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Mapping

import numpy as np

from .config import (
    NORMALIZATIONS,
    SPATIAL_DIMS,
    LRLCConfig,
    _normalize_padding,
    _pair,
    check_config,
    check_input_shape,
    check_lc_shapes,
    check_params,
    lc_shapes,
    output_size,
    param_shapes,
    resolve_padding,
)
from .initializers import initial_value

# ---------------------------------------------------------------------------------------------
# Input checks (spec section 14)

# The reference materialises eq. 1's patches, the per-position banks and the parameters; it
# refuses an array of more elements than this with a ValueError naming it, before numpy's
# "array is too big" or MemoryError (spec section 14).
MAX_ELEMENTS = 2**31


def _check_size(shape, what: str) -> None:
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise ValueError(
            f"{what} would have shape {tuple(shape)}, {count} elements; the NumPy reference "
            f"materialises at most lrlc_numpy.reference.MAX_ELEMENTS = {MAX_ELEMENTS}"
        )


def as_floating(array, name: str) -> np.ndarray:
    """`array` as a NumPy array, which must have a floating dtype (never silently cast).
    Array-likes (nested lists of floats) are converted; the message names `name`."""
    if isinstance(array, Mapping):
        raise TypeError(f"{name} must be an array, got a {type(array).__name__}")
    given = "" if isinstance(array, np.ndarray) else f" (converted from a {type(array).__name__})"
    try:
        array = np.asarray(array)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} is not an array ({err})") from None
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"{name} must have a floating dtype, got {array.dtype}{given}")
    return array


def check_input(x, config: LRLCConfig, *, name: str = "x") -> np.ndarray:
    """`x` as an array after checking rank, dtype, channels and grid against `config`."""
    check_config(config, "check_input")
    x = as_floating(x, name)
    check_input_shape(x.shape, config, name=name)
    return x


def _floating_params(params, config: LRLCConfig, dtype=None) -> dict[str, np.ndarray]:
    """`params` as floating arrays (array-likes converted, each named in an error) with the
    names and shapes `config` needs, cast to `dtype` unless it is None."""
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of name -> array, got {type(params).__name__}")
    arrays = {name: as_floating(value, f"params[{name!r}]") for name, value in params.items()}
    check_params(arrays, config)
    if dtype is None:
        return arrays
    return {name: value.astype(dtype, copy=False) for name, value in arrays.items()}


def _floating_dtype(dtype, where: str) -> np.dtype:
    """`dtype` as a NumPy floating dtype; anything else is a TypeError naming `where`."""
    try:
        resolved = None if dtype is None else np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or not np.issubdtype(resolved, np.floating):
        raise TypeError(
            f"{where}: dtype must be a NumPy floating dtype (float16, float32, float64), "
            f"got {dtype!r}"
        )
    return resolved


def _named_params(params, names, config: LRLCConfig, where: str) -> dict[str, np.ndarray]:
    """The tensors `names` of `params` (a building block reads only its own) as floating
    arrays of the shapes `config` gives them; errors name `where` and the tensor."""
    check_config(config, where)
    if not isinstance(params, Mapping):
        raise TypeError(f"{where}: params must be a mapping of name -> array, got {type(params)}")
    shapes = param_shapes(config)
    out = {}
    for name in names:
        if name not in params:
            raise ValueError(f"{where}: params has no {name!r}; it needs {sorted(names)}")
        out[name] = as_floating(params[name], f"{where}: params[{name!r}]")
        if out[name].shape != shapes[name]:
            raise ValueError(
                f"{where}: params[{name!r}] has shape {out[name].shape}; expected {shapes[name]}"
            )
    return out


def _contract(where: str, subscripts: str, **operands) -> np.ndarray:
    """np.einsum(subscripts, *operands) after checking that each operand is a floating array
    with one axis per letter of its subscript (a leading '...': any number more) and that
    every letter has one size: never broadcast. Errors name `where` and the operands."""
    sizes = {}
    arrays = []
    for (name, array), letters in zip(operands.items(), subscripts.split("->")[0].split(",")):
        array = as_floating(array, f"{where}: {name}")
        axes = letters.replace("...", "")
        if array.ndim < len(axes) or ("..." not in letters and array.ndim != len(axes)):
            raise ValueError(
                f"{where}: {name} has shape {array.shape}; expected axes ({', '.join(letters)})"
            )
        for letter, size in zip(axes, array.shape[array.ndim - len(axes) :]):
            seen, first = sizes.setdefault(letter, (size, f"{name} {array.shape}"))
            if seen != size:
                raise ValueError(
                    f"{where}: axis {letter!r} has size {size} in {name} {array.shape} but "
                    f"{seen} in {first}"
                )
        arrays.append(array)
    return np.einsum(subscripts, *arrays, optimize=True)


# ---------------------------------------------------------------------------------------------
# Windows: padding, patch extraction and its adjoint (spec section 3)


def _tap_span(tap, n_out, n_in, stride, dilation, before):
    """On one axis, the outputs i whose filter tap `tap` reads inside the input, and the
    input positions they read: i * stride + tap * dilation - before (spec section 3).
    Returns (output slice, input slice), or None when the tap reads padding only."""
    offset = tap * dilation - before
    first = max(0, -(offset // stride))  # ceil(-offset / stride)
    last = min(n_out - 1, (n_in - 1 - offset) // stride)
    if last < first:
        return None
    start = first * stride + offset
    return slice(first, last + 1), slice(start, start + (last - first) * stride + 1, stride)


# Subscript letters of the output grid's axes and of the window's taps, n = 1, 2, 3.
_GRID, _TAPS = "ijl", "uvt"


def _letters(n: int) -> tuple[str, str]:
    """The einsum letters (grid, taps) of n spatial axes: ('ij', 'uv') in 2-D."""
    return _GRID[:n], _TAPS[:n]


def _window_slices(out_size, kernel_size, stride, dilation, padding_pairs, input_size):
    """For each kernel tap t (one index per axis) that reads some of the input:
    (t, out_slices, in_slices), the outputs whose tap lies inside the input and the strided
    slices of the input they read. The padding is never materialised, so its size costs
    nothing."""
    spans = [
        [(u, _tap_span(u, n_out, n_in, s, d, pads[0])) for u in range(k)]
        for n_out, k, n_in, s, d, pads in zip(
            out_size, kernel_size, input_size, stride, dilation, padding_pairs
        )
    ]
    for taps in itertools.product(*spans):
        if all(span is not None for _, span in taps):
            yield (
                tuple(u for u, _ in taps),
                tuple(span[0] for _, span in taps),
                tuple(span[1] for _, span in taps),
            )


def extract_patches(x, kernel_size, stride, dilation, padding_pairs):
    """patches[b, i, j, u, v, c] = xpad[b, i*s_h + u*d_h, j*s_w + v*d_w, c] (spec eq. 1):
    x at row i*s_h + u*d_h - top and column j*s_w + v*d_w - left, 0 outside x. In n-D,
    (B, *grid, C) gives (B, *out, *kernel, C), the same rule on every axis."""
    grid = x.shape[1:-1]
    out = output_size(grid, padding_pairs, kernel_size, stride, dilation)
    shape = (x.shape[0], *out, *kernel_size, x.shape[-1])
    _check_size(shape, "the patches of eq. 1")
    patches = np.zeros(shape, dtype=x.dtype)
    every = slice(None)
    for tap, out_slices, in_slices in _window_slices(
        out, kernel_size, stride, dilation, padding_pairs, grid
    ):
        patches[(every, *out_slices, *tap, every)] = x[(every, *in_slices, every)]
    return patches


def extract_patches_vjp(dpatches, input_shape, kernel_size, stride, dilation, padding_pairs):
    """Adjoint of `extract_patches`: scatter-add patch gradients back onto the input."""
    dx = np.zeros(input_shape, dtype=dpatches.dtype)
    n = len(input_shape) - 2
    every = slice(None)
    for tap, out_slices, in_slices in _window_slices(
        dpatches.shape[1 : 1 + n], kernel_size, stride, dilation, padding_pairs, input_shape[1:-1]
    ):
        dx[(every, *in_slices, every)] += dpatches[(every, *out_slices, *tap, every)]
    return dx


def conv2d(x, kernel, *, stride=1, padding="valid", dilation=1):
    """Plain 2-D convolution (paper eq. 1), NHWC input, HWIO kernel, no bias.

    `padding` takes every form LRLCConfig accepts ('same' is TensorFlow's rule).
    """
    x, kernel = as_floating(x, "conv2d: x"), as_floating(kernel, "conv2d: kernel")
    if x.ndim != 4 or kernel.ndim != 4:
        raise ValueError(
            f"conv2d expects x of rank 4 (NHWC) and kernel of rank 4 (HWIO), "
            f"got shapes {x.shape} and {kernel.shape}"
        )
    if kernel.shape[2] != x.shape[3]:
        raise ValueError(f"conv2d: kernel has {kernel.shape[2]} input channels, x has {x.shape[3]}")
    if min(kernel.shape[:2]) < 1:
        raise ValueError(f"conv2d: kernel has an empty window, shape {kernel.shape} (HWIO)")
    stride, dilation = _pair("stride", stride, "conv2d"), _pair("dilation", dilation, "conv2d")
    padding = _normalize_padding(padding, "conv2d")
    pads = resolve_padding(padding, x.shape[1:3], kernel.shape[:2], stride, dilation)
    out = output_size(x.shape[1:3], pads, kernel.shape[:2], stride, dilation)
    if min(out) < 1:
        raise ValueError(
            f"conv2d: input grid {x.shape[1:3]} with kernel {kernel.shape[:2]}, stride {stride}, "
            f"dilation {dilation} and padding {padding!r} gives an empty output grid {out}"
        )
    patches = extract_patches(x, kernel.shape[:2], stride, dilation, pads)
    return np.einsum("bijuvc,uvco->bijo", patches, kernel, optimize=True)


def group_patches(x, config: LRLCConfig) -> list[np.ndarray]:
    """Eq. 1's patches for each of `config.basis_groups` (one group unless the basis is
    mixed), each with that group's kernel size, dilation and padding (spec section 16.3)."""
    x = check_input(x, config)
    return [
        extract_patches(x, group.kernel_size, config.stride, group.dilation, group.padding_pairs)
        for group in config.basis_groups
    ]


# ---------------------------------------------------------------------------------------------
# Combining weights (eqs. 3, 4 and 6; spec sections 5-6)


def _axis_table(table, axis: str, config: LRLCConfig) -> np.ndarray:
    """The per-axis table `table` (out_a, ...) laid along `axis` of the output grid, size 1
    on the other grid axes, so that tables of different axes add by broadcasting."""
    shape = [1] * config.spatial_dims + list(table.shape[1:])
    shape[config.axis_index(axis)] = table.shape[0]
    return table.reshape(shape)


def _sum_of_tables(params, suffix: str, config: LRLCConfig, trailing: tuple) -> np.ndarray:
    """sum_a params[f'{a}_{suffix}'] over `config.axis_tables`, each along its own axis,
    broadcast to (*out, *trailing): eq. 3 ('rowcol', one table per axis) and eq. 5."""
    total = None
    for axis in config.axis_tables:
        table = _axis_table(params[f"{axis}_{suffix}"], axis, config)
        total = table if total is None else total + table
    return np.broadcast_to(total, (*config.output_size, *trailing))


def _table_sums(dmap, suffix: str, config: LRLCConfig) -> dict[str, np.ndarray]:
    """Adjoint of `_sum_of_tables`: each table's gradient sums `dmap` (*out, ...) over the
    other grid axes."""
    n = config.spatial_dims
    grads = {}
    for axis in config.axis_tables:
        others = tuple(a for a in range(n) if a != config.axis_index(axis))
        grads[f"{axis}_{suffix}"] = dmap.sum(axis=others)
    return grads


def fixed_logits(params, config: LRLCConfig) -> np.ndarray:
    """Unnormalised combining weights w~[i, j, k] of a fixed layer (eq. 3 and its variants):
    'rowcol' w~ = alpha_i + beta_j (in 3-D plus a depth table), 'row' and 'col' one table
    broadcast, 'full' the logits themselves."""
    if config.combining == "full":
        return params["logits"]
    return _sum_of_tables(params, "logits", config, (config.rank,))


def fixed_logits_vjp(dlogits, config: LRLCConfig) -> dict[str, np.ndarray]:
    """Adjoint of `fixed_logits`; `dlogits` may carry a leading batch axis (summed)."""
    n = config.spatial_dims
    dlogits = dlogits.reshape(-1, *dlogits.shape[-(n + 1) :]).sum(axis=0)
    if config.combining == "full":
        return {"logits": dlogits}
    return _table_sums(dlogits, "logits", config)


L2_FLOOR = 1e-12


def _check_mode(mode, where: str) -> None:
    if not (isinstance(mode, str) and mode in NORMALIZATIONS):
        raise ValueError(
            f"{where}: unknown normalisation {mode!r}; expected one of {NORMALIZATIONS}"
        )


def _wide(array) -> np.ndarray:
    """`array` in its working dtype: at least float32 (16-bit normalisations lose the l2
    floor and the sums' precision; spec sections 6 and 15.4)."""
    return array.astype(np.promote_types(array.dtype, np.float32), copy=False)


def _l2_terms(logits):
    """The parts of 'l2' (spec section 6), in at least float32 so that the 1e-12 floor does
    not underflow in 16-bit dtypes: the widened logits, where the floor applies (the sum of
    squares taken as written; if it overflows to inf, it is above the floor), and elsewhere
    w~ = scale * unit with scale = max_k |w~|, length = |unit| in [1, sqrt K], so no square
    overflows, as hypot scales. Floored entries get scale and length 1 (unused)."""
    wide = _wide(logits)
    with np.errstate(over="ignore"):
        floored = (wide**2).sum(axis=-1, keepdims=True) <= L2_FLOOR
    scale = np.where(floored, 1.0, np.abs(wide).max(axis=-1, keepdims=True)).astype(wide.dtype)
    with np.errstate(invalid="ignore"):  # an infinite logit: inf / inf, NaN weights
        unit = wide / scale
    length = np.where(floored, 1.0, np.sqrt((unit**2).sum(axis=-1, keepdims=True)))
    return wide, floored, scale, unit, length.astype(wide.dtype)


def normalize_weights(logits, mode: str) -> np.ndarray:
    """Normalise over the last axis K (eq. 4 for 'softmax'; spec section 6), in at least
    float32; the result has the logits' dtype."""
    _check_mode(mode, "normalize_weights")
    logits = as_floating(logits, "normalize_weights: logits")
    if mode == "softmax":
        wide = _wide(logits)
        with np.errstate(over="ignore"):  # a difference beyond the range: -inf, exp 0
            shifted = np.exp(wide - wide.max(axis=-1, keepdims=True))
        weights = shifted / shifted.sum(axis=-1, keepdims=True)
    elif mode == "l2":  # w = w~ / sqrt(max(sum_k w~^2, 1e-12)), without overflow
        wide, floored, _, unit, length = _l2_terms(logits)
        # Each branch divides only its own entries, so neither can overflow on the other's.
        below = np.where(floored, wide, 0) / np.sqrt(wide.dtype.type(L2_FLOOR))
        weights = np.where(floored, below, unit / length)
    else:
        return logits
    return weights.astype(logits.dtype, copy=False)


def normalize_weights_vjp(dweights, logits, weights, mode: str) -> np.ndarray:
    """Gradient of `normalize_weights` with respect to the logits, in at least float32."""
    _check_mode(mode, "normalize_weights_vjp")
    if mode == "softmax":  # dw~ = w * (dw - <w, dw>)
        wide, dweights = _wide(weights), _wide(dweights)
        dlogits = wide * (dweights - (wide * dweights).sum(axis=-1, keepdims=True))
    elif mode == "l2":
        # Above the floor dw~ = (dw - w <w, dw>) / |w~|, |w~| = scale * length, divided by
        # the scale last so it cannot overflow; below it the norm is the constant 1e-6.
        wide, floored, scale, unit, length = _l2_terms(logits)
        unit_weights = unit / length
        dweights = dweights.astype(wide.dtype, copy=False)
        radial = (unit_weights * dweights).sum(axis=-1, keepdims=True)
        with np.errstate(invalid="ignore"):  # NaN or infinite logits: NaN, as in the forward
            tangent = (dweights - unit_weights * radial) / length / scale
        below = np.where(floored, dweights, 0) / np.sqrt(wide.dtype.type(L2_FLOOR))
        dlogits = np.where(floored, below, tangent)
    else:
        return dweights
    return dlogits.astype(logits.dtype, copy=False)


def combining_weights(params, config: LRLCConfig, x=None) -> np.ndarray:
    """Normalised combining weights w (eq. 4): (H_out, W_out, K), or (B, H_out, W_out, K)
    for an input-dependent layer, whose weights are predicted from `x` (eq. 6); (*out, K)
    and (B, *out, K) in n-D."""
    check_config(config, "combining_weights")
    if config.input_dependent:
        if x is None:
            raise ValueError("combining_weights: an input-dependent layer needs the input x")
        x = check_input(x, config)
        params = _floating_params(params, config, x.dtype)
        logits, _ = g_forward(x, params, config)
    else:
        if x is not None:  # not needed, but a wrong input is still an error
            check_input(x, config)
        logits = fixed_logits(_floating_params(params, config), config)
    return normalize_weights(logits, config.normalize)


# ---------------------------------------------------------------------------------------------
# The input-dependent network g (eq. 6; spec section 8)


def resize_matrix(n_in: int, n_out: int, dtype=np.float64) -> np.ndarray:
    """R (n_out, n_in) of 1-D linear interpolation with aligned corners.

    Output o samples source coordinate o * (n_in - 1) / (n_out - 1) (0 when n_out == 1),
    so a size-1 input broadcasts.
    """
    for name, value in (("n_in", n_in), ("n_out", n_out)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise TypeError(f"resize_matrix: {name} must be an int, got {value!r}")
        if value < 1:
            raise ValueError(f"resize_matrix: {name} must be >= 1, got {value!r}")
    dtype = _floating_dtype(dtype, "resize_matrix")
    matrix = np.zeros((n_out, n_in), dtype=dtype)
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    for o in range(n_out):
        src = o * scale
        lo = min(int(np.floor(src)), n_in - 1)
        hi = min(lo + 1, n_in - 1)
        frac = src - lo
        matrix[o, lo] += 1.0 - frac
        matrix[o, hi] += frac
    return matrix


def resize_linear(a, size) -> np.ndarray:
    """Separable linear resize of (B, *grid, C) `a` to the grid `size` with aligned corners:
    one `resize_matrix` per axis (linear in 1-D, bilinear in 2-D, trilinear in 3-D)."""
    a = as_floating(a, "resize_linear: a")
    n = a.ndim - 2
    if n not in SPATIAL_DIMS:
        raise ValueError(
            f"resize_linear: a must be (B, *grid, C) with 1 to 3 grid axes, got shape {a.shape}"
        )
    size = _pair("size", size, "resize_linear", n)
    for axis, n_out in enumerate(size, start=1):
        matrix = resize_matrix(a.shape[axis], n_out, a.dtype)
        a = np.moveaxis(np.tensordot(matrix, a, axes=(1, axis)), 0, axis)
    return a


def resize_linear_vjp(dout, input_size) -> np.ndarray:
    """Adjoint of `resize_linear` back onto the grid `input_size`."""
    for axis, n_in in enumerate(input_size, start=1):
        matrix = resize_matrix(n_in, dout.shape[axis], dout.dtype)
        dout = np.moveaxis(np.tensordot(matrix.T, dout, axes=(1, axis)), 0, axis)
    return dout


def resize_bilinear(a, size) -> np.ndarray:
    """Bilinear resize of NHWC `a` to `size` with aligned corners (separable: R_h a R_w^T);
    the 2-D case of `resize_linear`."""
    a = as_floating(a, "resize_bilinear: a")
    if a.ndim != 4:
        raise ValueError(f"resize_bilinear: a must have rank 4 (NHWC), got shape {a.shape}")
    return resize_linear(a, _pair("size", size, "resize_bilinear"))


def _depthwise_taps(grid, rate: int):
    """(tap, in_slices) of g's 3^n window with dilation `rate`, 'valid', over `grid`."""
    n = len(grid)
    out_size = tuple(size - 2 * rate for size in grid)
    for tap, _, in_slices in _window_slices(
        out_size, (3,) * n, (1,) * n, (rate,) * n, ((0, 0),) * n, grid
    ):
        yield tap, in_slices


def depthwise_conv3x3(a, kernel, bias, rate: int) -> np.ndarray:
    """Depthwise 3x3 convolution with dilation `rate`, 'valid' padding, plus bias (3^n
    taps in n-D: `kernel` is (3,) * n + (K,))."""
    grid = a.shape[1:-1]
    out = np.zeros((a.shape[0], *(size - 2 * rate for size in grid), a.shape[-1]), a.dtype)
    every = slice(None)
    for tap, in_slices in _depthwise_taps(grid, rate):
        out += a[(every, *in_slices, every)] * kernel[tap]
    return out + bias


def depthwise_conv3x3_vjp(dout, a, kernel, rate: int):
    """Gradients (da, dkernel, dbias) of `depthwise_conv3x3`."""
    grid = a.shape[1:-1]
    da = np.zeros_like(a)
    dkernel = np.zeros_like(kernel)
    every = slice(None)
    summed = tuple(range(len(grid) + 1))  # batch and grid axes
    for tap, in_slices in _depthwise_taps(grid, rate):
        da[(every, *in_slices, every)] += dout * kernel[tap]
        dkernel[tap] = (dout * a[(every, *in_slices, every)]).sum(axis=summed)
    return da, dkernel, dout.sum(axis=summed)


def _sigmoid(a):
    return 0.5 * (1.0 + np.tanh(0.5 * a))  # overflow-free form of 1 / (1 + exp(-a))


def g_forward(x, params, config: LRLCConfig):
    """Predict logits w~ (B, H_out, W_out, K) from the input (eq. 6); returns (logits, cache).
    In n-D (spec section 17.3) the pool averages every grid axis and logits are (B, *out, K)."""
    out_size = config.output_size
    low = x @ params["g.reduce.kernel"] + params["g.reduce.bias"]  # 1x1 convolution
    pool = low.mean(axis=tuple(range(1, low.ndim - 1)), keepdims=True)
    branches = [low, pool]
    for r in config.g_dilations:
        branches.append(
            depthwise_conv3x3(low, params[f"g.dilated{r}.kernel"], params[f"g.dilated{r}.bias"], r)
        )
    cat = np.concatenate([resize_linear(b, out_size) for b in branches], axis=-1)
    pre_squeeze = cat @ params["g.squeeze.kernel"] + params["g.squeeze.bias"]
    squeeze = np.maximum(pre_squeeze, 0)
    excite = _sigmoid(squeeze @ params["g.excite.kernel"] + params["g.excite.bias"])
    logits = excite @ params["g.project.kernel"] + params["g.project.bias"]
    cache = {
        "low": low,
        "branches": branches,
        "cat": cat,
        "pre_squeeze": pre_squeeze,
        "squeeze": squeeze,
        "excite": excite,
    }
    return logits, cache


def _dense_vjp(dout, inputs, kernel):
    """Gradients (dinputs, dkernel, dbias) of inputs @ kernel + bias over leading axes."""
    flat_in = inputs.reshape(-1, inputs.shape[-1])
    flat_out = dout.reshape(-1, dout.shape[-1])
    return dout @ kernel.T, flat_in.T @ flat_out, flat_out.sum(axis=0)


def g_vjp(dlogits, x, params, config: LRLCConfig, cache) -> tuple[np.ndarray, dict]:
    """Backward through g: gradient for x and for every g.* parameter."""
    grads = {}
    dexcite, grads["g.project.kernel"], grads["g.project.bias"] = _dense_vjp(
        dlogits, cache["excite"], params["g.project.kernel"]
    )
    excite = cache["excite"]
    dpre_excite = dexcite * excite * (1.0 - excite)
    dsqueeze, grads["g.excite.kernel"], grads["g.excite.bias"] = _dense_vjp(
        dpre_excite, cache["squeeze"], params["g.excite.kernel"]
    )
    dpre_squeeze = dsqueeze * (cache["pre_squeeze"] > 0)
    dcat, grads["g.squeeze.kernel"], grads["g.squeeze.bias"] = _dense_vjp(
        dpre_squeeze, cache["cat"], params["g.squeeze.kernel"]
    )
    k = config.rank
    branches = cache["branches"]
    dbranches = [
        resize_linear_vjp(dcat[..., n * k : (n + 1) * k], branch.shape[1:-1])
        for n, branch in enumerate(branches)
    ]
    low = cache["low"]
    dlow = dbranches[0] + dbranches[1] / math.prod(low.shape[1:-1])  # mean pool
    for r, dbranch in zip(config.g_dilations, dbranches[2:]):
        da, grads[f"g.dilated{r}.kernel"], grads[f"g.dilated{r}.bias"] = depthwise_conv3x3_vjp(
            dbranch, low, params[f"g.dilated{r}.kernel"], r
        )
        dlow = dlow + da
    dx, grads["g.reduce.kernel"], grads["g.reduce.bias"] = _dense_vjp(
        dlow, x, params["g.reduce.kernel"]
    )
    return dx, grads


# ---------------------------------------------------------------------------------------------
# Biases (eq. 5; spec section 7)


def spatial_bias_map(params, config: LRLCConfig):
    """The spatial part of eq. 5 on the output grid (H_out, W_out) ((*out) in n-D), or None."""
    if not config.spatial_bias:
        return None
    if config.combining == "full":
        return params["spatial_bias"]
    return _sum_of_tables(params, "bias", config, ())


def bias_vjp(dy, config: LRLCConfig) -> dict[str, np.ndarray]:
    grads = {}
    if config.channel_bias:
        grads["channel_bias"] = dy.sum(axis=tuple(range(dy.ndim - 1)))
    if config.spatial_bias:
        dmap = dy.sum(axis=(0, dy.ndim - 1))
        if config.combining == "full":
            grads["spatial_bias"] = dmap
        else:
            grads.update(_table_sums(dmap, "bias", config))
    return grads


BIAS_NAMES = ("depth_bias", "row_bias", "col_bias", "spatial_bias", "channel_bias")


def bias_map(params, config: LRLCConfig, dtype) -> np.ndarray:
    """B[i, j, c] of eq. 5 as an (H_out, W_out, C_out) array ((*out, C_out) in n-D; zeros
    when both are off)."""
    dtype = _floating_dtype(dtype, "bias_map")
    names = [name for name in param_shapes(config) if name in BIAS_NAMES]
    params = _named_params(params, names, config, "bias_map")
    bias = np.zeros((*config.output_size, config.out_channels), dtype=dtype)
    spatial = spatial_bias_map(params, config)
    if spatial is not None:
        bias = bias + spatial[..., None]
    if config.channel_bias:
        bias = bias + params["channel_bias"]
    return bias


# ---------------------------------------------------------------------------------------------
# The layer (Algorithm 1; eqs. 2-6; spec section 4)


def basis_members(params, config: LRLCConfig) -> list[np.ndarray]:
    """The K filter banks F^(k) (k_h, k_w, C_in, C_out): `basis[k]`, or `basis.k` when mixed."""
    params = _named_params(params, config.basis_names, config, "basis_members")
    if config.mixed:
        return [params[name] for name in config.basis_names]
    return list(params["basis"])


def group_basis(members, group) -> np.ndarray:
    """The bases of one group stacked (|group|, k_h, k_w, C_in, C_out), (|group|, *kernel,
    C_in, C_out) in n-D."""
    return np.stack([members[k] for k in group.members])


def basis_responses(patches, basis) -> np.ndarray:
    """Algorithm 1's K C_out-output convolution: z[b, i, j, k, o] = (I * F^(k))[b, i, j, o]
    ((B, *out, K, C_out) in n-D)."""
    grid, taps = _letters(np.ndim(basis) - 3)
    subscripts = f"b{grid}{taps}c,k{taps}co->b{grid}ko"
    return _contract("basis_responses", subscripts, patches=patches, basis=basis)


def stack_responses(responses, config: LRLCConfig) -> np.ndarray:
    """z (B, H_out, W_out, K, C_out) from each group's `basis_responses`, the K axis in
    basis order (a mixed basis's groups need not be contiguous; spec section 16.3)."""
    check_config(config, "stack_responses")
    groups = config.basis_groups
    if not isinstance(responses, (list, tuple)):
        raise TypeError(f"stack_responses: responses must be a list, got {type(responses)}")
    if len(responses) != len(groups):
        raise ValueError(
            f"stack_responses: got {len(responses)} responses; expected one per basis group, "
            f"{len(groups)}"
        )
    responses = [
        as_floating(r, f"stack_responses: responses[{n}]") for n, r in enumerate(responses)
    ]
    grid = "H_out, W_out" if config.spatial_dims == 2 else "*out"
    for n, (group, response) in enumerate(zip(groups, responses)):
        if response.ndim != config.spatial_dims + 3 or response.shape[-2] != len(group.members):
            raise ValueError(
                f"stack_responses: responses[{n}] has shape {response.shape}; expected "
                f"(B, {grid}, {len(group.members)}, C_out) for bases {group.members}"
            )
    if len(responses) == 1:
        return responses[0]
    first = responses[0]
    z = np.empty((*first.shape[:-2], config.rank, first.shape[-1]), dtype=first.dtype)
    for group, response in zip(config.basis_groups, responses):
        z[..., list(group.members), :] = response
    return z


def combine(per_member, weights, bias) -> np.ndarray:
    """Algorithm 1's last step: y[b, i, j, o] = sum_k w[b, i, j, k] z[b, i, j, k, o] + B."""
    grid, _ = _letters(np.ndim(per_member) - 3)
    subscripts = f"b{grid}ko,b{grid}k->b{grid}o"
    y = _contract("combine", subscripts, per_member=per_member, weights=weights)
    bias = as_floating(bias, "combine: bias")
    if bias.shape != y.shape[1:]:
        raise ValueError(f"combine: bias has shape {bias.shape}; expected {y.shape[1:]}")
    return y + bias


def position_banks(weights, basis) -> np.ndarray:
    """Per-position filter banks (eq. 2): F^(i, j) = sum_k w[..., i, j, k] F^(k)."""
    weights = as_floating(weights, "position_banks: weights")
    basis = as_floating(basis, "position_banks: basis")
    _check_size((*weights.shape[:-1], *basis.shape[1:]), "position_banks: the filter banks")
    grid, taps = _letters(basis.ndim - 3)
    subscripts = f"...{grid}k,k{taps}co->...{grid}{taps}co"
    return _contract("position_banks", subscripts, weights=weights, basis=basis)


def _checked(x, params, config: LRLCConfig, where: str):
    """(x, params) checked against `config` (spec section 14), params cast to x's dtype."""
    check_config(config, where)
    x = check_input(x, config)
    return x, _floating_params(params, config, x.dtype)


def _forward_parts(x, params, config: LRLCConfig):
    """Algorithm 1 on checked arrays, keeping what the backward pass needs."""
    patches = group_patches(x, config)
    members = basis_members(params, config)
    per_member = stack_responses(
        [
            basis_responses(windows, group_basis(members, group))
            for group, windows in zip(config.basis_groups, patches)
        ],
        config,
    )
    cache = None
    if config.input_dependent:
        logits, cache = g_forward(x, params, config)
    else:
        logits = fixed_logits(params, config)
    weights = normalize_weights(logits, config.normalize)
    # Fixed weights are shared by every example; give them the batch axis explicitly.
    weights = np.broadcast_to(weights, (x.shape[0], *config.output_size, config.rank))
    return patches, per_member, logits, weights, cache


def forward(x, params, config: LRLCConfig) -> np.ndarray:
    """y[b, i, j, o] = sum_k w[i, j, k] (I * F^(k))[b, i, j, o] + B[i, j, o] (Alg. 1, eqs. 2-5).

    `x` is NHWC of size `config.input_size`; returns (B, H_out, W_out, C_out). In n-D
    (spec section 17) `x` is (B, *grid, C_in) and the result (B, *out, C_out).
    """
    x, params = _checked(x, params, config, "forward")
    _, per_member, _, weights, _ = _forward_parts(x, params, config)
    return combine(per_member, weights, bias_map(params, config, x.dtype))


def vjp(x, params, config: LRLCConfig, dy) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Vector-Jacobian product of `forward`: (dL/dx, {name: dL/dparam}) given dL/dy.

    Written out by hand (spec section 12), step by step in reverse order of `forward`.
    """
    x, params = _checked(x, params, config, "vjp")
    dy = as_floating(dy, "dy")
    expected = (x.shape[0], *config.output_size, config.out_channels)
    if dy.shape != expected:
        raise ValueError(f"dy has shape {dy.shape}; expected the output shape {expected}")
    dy = dy.astype(x.dtype, copy=False)
    patches, per_member, logits, weights, cache = _forward_parts(x, params, config)
    grads = bias_vjp(dy, config)
    grid, taps = _letters(config.spatial_dims)
    # y = sum_k w_k z_k: the weights see dy . z_k, each member's output sees w_k dy.
    dweights = np.einsum(f"b{grid}o,b{grid}ko->b{grid}k", dy, per_member, optimize=True)
    dper_member = np.einsum(f"b{grid}o,b{grid}k->b{grid}ko", dy, weights, optimize=True)
    # Per group's convolution: its bases' gradients, and its patch gradients scattered onto x.
    members = basis_members(params, config)
    dmembers = [None] * config.rank
    dx = np.zeros_like(x)
    for group, windows in zip(config.basis_groups, patches):
        dz = dper_member[..., list(group.members), :]
        dbasis = np.einsum(f"b{grid}{taps}c,b{grid}ko->k{taps}co", windows, dz, optimize=True)
        for k, dmember in zip(group.members, dbasis):
            dmembers[k] = dmember
        dpatches = np.einsum(
            f"b{grid}ko,k{taps}co->b{grid}{taps}c", dz, group_basis(members, group), optimize=True
        )
        dx += extract_patches_vjp(
            dpatches, x.shape, group.kernel_size, config.stride, group.dilation, group.padding_pairs
        )
    if config.mixed:
        grads.update(zip(config.basis_names, dmembers))
    else:
        grads["basis"] = np.stack(dmembers)
    dlogits = normalize_weights_vjp(dweights, logits, weights, config.normalize)
    if config.input_dependent:
        dx_g, g_grads = g_vjp(dlogits, x, params, config, cache)
        dx = dx + dx_g
        grads.update(g_grads)
    else:
        grads.update(fixed_logits_vjp(dlogits, config))
    return dx, {name: grads[name].astype(x.dtype, copy=False) for name in param_shapes(config)}


# ---------------------------------------------------------------------------------------------
# Locally connected form (spec section 11)


def embedded_basis(params, config: LRLCConfig) -> np.ndarray:
    """The basis on the window of `config.locally_connected_config()`: (K, k_h, k_w, C_in,
    C_out). A plain basis as it is; basis.k of a mixed basis placed at its own taps, which
    start at (window padding before - basis k's padding before) with step d_k, and zeros
    elsewhere (spec section 16.5)."""
    params = _named_params(params, config.basis_names, config, "embedded_basis")
    window = config.locally_connected_config()
    if window is config:
        return params["basis"]
    members = basis_members(params, config)
    channels = members[0].shape[-2:]
    _check_size((config.rank, *window.kernel_size, *channels), "embedded_basis")
    out = np.zeros((config.rank, *window.kernel_size, *channels), members[0].dtype)
    for k, (member, dilation, pads) in enumerate(
        zip(members, config.dilations, config.basis_padding_pairs)
    ):
        taps = tuple(
            slice(before - own[0], before - own[0] + (size - 1) * d + 1, d)
            for (before, _), own, size, d in zip(
                window.padding_pairs, pads, member.shape[:-2], dilation
            )
        )
        out[(k, *taps)] = member
    return out


def to_locally_connected(params, config: LRLCConfig, x=None):
    """Equivalent locally connected (kernel, bias): kernel[..., i, j] = sum_k w[..., i, j, k] F^(k).

    kernel is (H_out, W_out, kh, kw, C_in, C_out), or (B, H_out, W_out, ...) per example for
    an input-dependent layer (then `x` is required); bias is (H_out, W_out, C_out). The window
    (kh, kw) is that of `config.locally_connected_config()`: a mixed basis's union window.
    """
    check_config(config, "to_locally_connected")
    weights = combining_weights(params, config, x)
    params = _floating_params(params, config, weights.dtype)
    basis = embedded_basis(params, config)
    return position_banks(weights, basis), bias_map(params, config, weights.dtype)


def locally_connected(x, kernel, bias, config: LRLCConfig) -> np.ndarray:
    """y[b, i, j, o] = sum_{u, v, c} xpad[b, i s_h + u d_h, j s_w + v d_w, c] K[i, j, u, v, c, o]
    + bias[i, j, o], on the geometry of `config.locally_connected_config()` (`config` itself
    unless the basis is mixed). `kernel` may carry a leading batch axis (one per example)."""
    check_config(config, "locally_connected")
    x = check_input(x, config)
    kernel = as_floating(kernel, "locally connected kernel")
    bias = as_floating(bias, "locally connected bias")
    check_lc_shapes(kernel.shape, bias.shape, config, batch=x.shape[0])
    shared, _ = lc_shapes(config)
    window = config.locally_connected_config()
    patches = extract_patches(
        x, window.kernel_size, window.stride, window.dilation, window.padding_pairs
    )
    kernel = np.broadcast_to(kernel, (x.shape[0], *shared))
    grid, taps = _letters(config.spatial_dims)
    subscripts = f"b{grid}{taps}c,b{grid}{taps}co->b{grid}o"
    return np.einsum(subscripts, patches, kernel, optimize=True) + bias


# ---------------------------------------------------------------------------------------------
# Initialisation (spec section 10)


def init_params(config: LRLCConfig, seed: int = 0, dtype=np.float64) -> dict[str, np.ndarray]:
    """Initial parameters drawn from `initial_value` (spec section 10): He-uniform basis,
    'conv_init' logits, Glorot-uniform kernels in g, zero biases. Every fixed layer starts
    as the convolution with kernel sum_k w_k F^(k), whatever its normalisation.

    `seed` is a non-negative int (NumPy's generator seed); `dtype` a NumPy floating dtype.
    """
    check_config(config, "init_params")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise TypeError(f"init_params: seed must be a non-negative int, got {seed!r}")
    if seed < 0:
        raise ValueError(f"init_params: seed must be a non-negative int, got {seed!r}")
    dtype = _floating_dtype(dtype, "init_params")
    shapes = param_shapes(config)
    for name, shape in shapes.items():
        _check_size(shape, f"init_params: parameter {name!r}")
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in shapes.items():
        rule = initial_value(name, config)
        if rule.uniform:
            params[name] = rng.uniform(-rule.limit, rule.limit, size=shape)
        else:
            params[name] = np.full(shape, rule.value)
    return {name: value.astype(dtype) for name, value in params.items()}
