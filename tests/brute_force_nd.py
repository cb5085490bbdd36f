"""A naive LRLC layer in any number of spatial axes, one output position at a time.

Written from spec section 17 (the paper's equations read axis by axis) with loops over
`itertools.product`; it shares no code with lrlc_numpy beyond the config object, so its
agreement with the vectorised reference is evidence for the n-D reference. In 2-D it is
checked against tests/brute_force.py, the 2-D loops. Tiny shapes only.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

AXES = {2: ("row", "col"), 3: ("depth", "row", "col")}


def _same(n, k, s, d):
    """TensorFlow's SAME padding for one axis: out = ceil(n / s), the excess split low-first."""
    total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def _pads(config, kernel, dilation):
    if config.padding == "valid":
        return [(0, 0)] * len(kernel)
    if config.padding == "same" or config.mixed:
        return [
            _same(n, k, s, d)
            for n, k, s, d in zip(config.input_size, kernel, config.stride, dilation)
        ]
    return list(config.padding)


def _geometry(config):
    """(kernel, dilation, pads) of every basis."""
    if config.mixed:
        pairs = zip(config.kernel_sizes, config.dilations)
    else:
        pairs = [(config.kernel_size, config.dilation)] * config.rank
    return [(kernel, dilation, _pads(config, kernel, dilation)) for kernel, dilation in pairs]


def _out_grid(config, kernel, dilation, pads):
    return tuple(
        (n + lo + hi - (k - 1) * d - 1) // s + 1
        for n, (lo, hi), k, s, d in zip(config.input_size, pads, kernel, config.stride, dilation)
    )


def _window(x, b, pos, o, filt, config, kernel, dilation, pads):
    """Eq. 1 at output `pos`: sum over taps and input channels of xpad * filt[..., o]."""
    total = 0.0
    for tap in itertools.product(*(range(k) for k in kernel)):
        where = tuple(
            i * s + u * d - lo
            for i, u, s, d, (lo, _) in zip(pos, tap, config.stride, dilation, pads)
        )
        if all(0 <= w < n for w, n in zip(where, config.input_size)):
            for c in range(config.in_channels):
                total += x[(b, *where, c)] * filt[(*tap, c, o)]
    return total


def _normalise(logits, mode):
    if mode == "softmax":
        top = max(logits)
        e = [math.exp(v - top) for v in logits]
        return [v / sum(e) for v in e]
    if mode == "l2":
        return [v / math.sqrt(max(sum(q * q for q in logits), 1e-12)) for v in logits]
    return list(logits)


def _interp_weights(n_in, n_out, o):
    """The aligned-corners linear weights of output o: {source index: weight}."""
    src = o * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    lo = min(int(math.floor(src)), n_in - 1)
    hi = min(lo + 1, n_in - 1)
    weights = {lo: 1.0 - (src - lo)}
    weights[hi] = weights.get(hi, 0.0) + (src - lo)
    return weights


def _resize(a, out):
    """Aligned-corners linear resize of a (*grid, C) to `out`, one output point at a time:
    the product of the per-axis weights over the 2^n surrounding points."""
    res = np.zeros((*out, a.shape[-1]))
    for pos in itertools.product(*(range(n) for n in out)):
        per_axis = [_interp_weights(n_in, n_out, o) for n_in, n_out, o in zip(a.shape, out, pos)]
        for corner in itertools.product(*(w.items() for w in per_axis)):
            res[pos] += math.prod(w for _, w in corner) * a[tuple(i for i, _ in corner)]
    return res


def _g(xb, params, config, out):
    """Eq. 6's network g on one example xb (*grid, C_in), spec section 17.3."""
    grid, k = xb.shape[:-1], config.rank
    low = xb @ params["g.reduce.kernel"] + params["g.reduce.bias"]
    pool = low.reshape(-1, k).mean(axis=0).reshape((1,) * len(grid) + (k,))
    branches = [low, pool]
    for r in (1, 2, 4, 8):
        if 2 * r + 1 > min(grid):
            continue
        kern, bias = params[f"g.dilated{r}.kernel"], params[f"g.dilated{r}.bias"]
        size = tuple(n - 2 * r for n in grid)
        d = np.zeros((*size, k))
        for pos in itertools.product(*(range(n) for n in size)):
            for tap in itertools.product(range(3), repeat=len(grid)):
                d[pos] += low[tuple(i + u * r for i, u in zip(pos, tap))] * kern[tap]
            d[pos] += bias
        branches.append(d)
    cat = np.concatenate([_resize(branch, out) for branch in branches], axis=-1)
    s = np.maximum(cat @ params["g.squeeze.kernel"] + params["g.squeeze.bias"], 0)
    e = 1 / (1 + np.exp(-(s @ params["g.excite.kernel"] + params["g.excite.bias"])))
    return e @ params["g.project.kernel"] + params["g.project.bias"]


def lrlc_forward(x, params, config):
    """y[b, pos, o] = sum_k w[pos, k] (I * F^k)[b, pos, o] + B[pos, o], position by position."""
    geometry = _geometry(config)
    out = _out_grid(config, *geometry[0])
    n, k = len(out), config.rank
    names = AXES.get(n, ())
    y = np.zeros((x.shape[0], *out, config.out_channels))
    for b in range(x.shape[0]):
        g = _g(x[b], params, config, out) if config.input_dependent else None
        for pos in itertools.product(*(range(m) for m in out)):
            if config.input_dependent:
                logits = list(g[pos])
            elif config.combining == "full":
                logits = list(params["logits"][pos])
            else:
                tables = names if config.combining == "rowcol" else (config.combining,)
                logits = [
                    sum(params[f"{a}_logits"][pos[names.index(a)], q] for a in tables)
                    for q in range(k)
                ]
            w = _normalise(logits, config.normalize)
            bias = 0.0
            if config.spatial_bias:
                if config.combining == "full":
                    bias += params["spatial_bias"][pos]
                else:
                    tables = names if config.combining == "rowcol" else (config.combining,)
                    bias += sum(params[f"{a}_bias"][pos[names.index(a)]] for a in tables)
            for o in range(config.out_channels):
                total = bias + (params["channel_bias"][o] if config.channel_bias else 0.0)
                for q in range(k):
                    bank = params[f"basis.{q}"] if config.mixed else params["basis"][q]
                    total += w[q] * _window(x, b, pos, o, bank, config, *geometry[q])
                y[(b, *pos, o)] = total
    return y
