"""A deliberately naive LRLC layer, written straight from the paper's equations with loops.

It shares no code with lrlc_numpy beyond the config object, so agreement between the two
is evidence that the vectorised reference computes the equations. Tiny shapes only.
"""

from __future__ import annotations

import math

import numpy as np


def same_padding(n, k, s, d):
    """TensorFlow's SAME rule for one axis, restated: pad so that out = ceil(n / s)."""
    out = -(-n // s)
    needed = (out - 1) * s + (k - 1) * d + 1
    total = max(needed - n, 0)
    return total // 2, total - total // 2


def explicit_padding(config):
    if config.padding == "valid":
        return (0, 0), (0, 0)
    if config.padding == "same":
        return tuple(
            same_padding(n, k, s, d)
            for n, k, s, d in zip(
                config.input_size, config.kernel_size, config.stride, config.dilation
            )
        )
    return config.padding


def padded_pixel(x, b, row, col, c, pads):
    """xpad[b, row, col, c] read from the unpadded input (zero outside)."""
    (top, _), (left, _) = pads
    r, q = row - top, col - left
    if 0 <= r < x.shape[1] and 0 <= q < x.shape[2]:
        return x[b, r, q, c]
    return 0.0


def basis_geometry(config):
    """(kernel, dilation, pads) of each basis: shared, or for a mixed basis each basis's own
    kernel and dilation with SAME padding for them (spec section 16.2)."""
    if not config.mixed:
        return [(config.kernel_size, config.dilation, explicit_padding(config))] * config.rank
    return [
        (
            kernel,
            dilation,
            tuple(
                same_padding(n, k, s, d)
                for n, k, s, d in zip(config.input_size, kernel, config.stride, dilation)
            ),
        )
        for kernel, dilation in zip(config.kernel_sizes, config.dilations)
    ]


def output_grid(config, kernel, dilation, pads):
    (top, bottom), (left, right) = pads
    kh, kw = kernel
    (sh, sw), (dh, dw) = config.stride, dilation
    h, w = config.input_size
    return (
        (h + top + bottom - (kh - 1) * dh - 1) // sh + 1,
        (w + left + right - (kw - 1) * dw - 1) // sw + 1,
    )


def window_sum(x, b, i, j, o, filt, config, kernel, dilation, pads):
    """Sum over the window at output (i, j) of xpad * filt[..., o] (eq. 1)."""
    (sh, sw), (dh, dw) = config.stride, dilation
    total = 0.0
    for u in range(kernel[0]):
        for v in range(kernel[1]):
            for c in range(config.in_channels):
                pixel = padded_pixel(x, b, i * sh + u * dh, j * sw + v * dw, c, pads)
                total += pixel * filt[u, v, c, o]
    return total


def normalise(logits, mode):
    """Eq. 4 (softmax) and the alternatives, on a list of K numbers."""
    if mode == "softmax":
        m = max(logits)
        e = [math.exp(v - m) for v in logits]
        return [v / sum(e) for v in e]
    if mode == "l2":
        return [v / math.sqrt(max(sum(q * q for q in logits), 1e-12)) for v in logits]
    return list(logits)


def bilinear_aligned(a, out_h, out_w):
    """Resize a (H, W, C) array with aligned corners, pixel by pixel."""
    h, w, c = a.shape
    out = np.zeros((out_h, out_w, c))
    for i in range(out_h):
        for j in range(out_w):
            y = i * (h - 1) / (out_h - 1) if out_h > 1 else 0.0
            x = j * (w - 1) / (out_w - 1) if out_w > 1 else 0.0
            y0, x0 = min(int(math.floor(y)), h - 1), min(int(math.floor(x)), w - 1)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = y - y0, x - x0
            out[i, j] = (
                (1 - fy) * (1 - fx) * a[y0, x0]
                + (1 - fy) * fx * a[y0, x1]
                + fy * (1 - fx) * a[y1, x0]
                + fy * fx * a[y1, x1]
            )
    return out


def g_logits(xb, params, config, out_h, out_w):
    """Eq. 6's network g on one example xb (H, W, C_in), loop by loop."""
    h, w, c_in = xb.shape
    k = config.rank
    low = np.zeros((h, w, k))
    for i in range(h):
        for j in range(w):
            for q in range(k):
                low[i, j, q] = params["g.reduce.bias"][q] + sum(
                    xb[i, j, c] * params["g.reduce.kernel"][c, q] for c in range(c_in)
                )
    pool = np.full((1, 1, k), low.mean(axis=(0, 1)))
    branches = [low, pool]
    for r in (1, 2, 4, 8):
        if r > (min(h, w) - 1) // 2:
            continue
        kern, bias = params[f"g.dilated{r}.kernel"], params[f"g.dilated{r}.bias"]
        d = np.zeros((h - 2 * r, w - 2 * r, k))
        for i in range(h - 2 * r):
            for j in range(w - 2 * r):
                for q in range(k):
                    d[i, j, q] = bias[q] + sum(
                        low[i + u * r, j + v * r, q] * kern[u, v, q]
                        for u in range(3)
                        for v in range(3)
                    )
        branches.append(d)
    cat = np.concatenate([bilinear_aligned(b, out_h, out_w) for b in branches], axis=-1)
    logits = np.zeros((out_h, out_w, k))
    for i in range(out_h):
        for j in range(out_w):
            s = np.maximum(cat[i, j] @ params["g.squeeze.kernel"] + params["g.squeeze.bias"], 0)
            pre = s @ params["g.excite.kernel"] + params["g.excite.bias"]
            e = np.array([1 / (1 + math.exp(-v)) for v in pre])
            logits[i, j] = e @ params["g.project.kernel"] + params["g.project.bias"]
    return logits


def lrlc_forward(x, params, config):
    """O[b, i, j] = I_ij * (sum_k w_ij^k F^k) + B_ij (eqs. 1-6), one position at a time.

    A mixed basis has no shared window, so there each basis is applied with its own
    (sum_k w_ij^k (I * F^k)_ij, Algorithm 1's order)."""
    geometry = basis_geometry(config)
    out_h, out_w = output_grid(config, *geometry[0])
    batch = x.shape[0]
    k = config.rank
    y = np.zeros((batch, out_h, out_w, config.out_channels))
    for b in range(batch):
        g = g_logits(x[b], params, config, out_h, out_w) if config.input_dependent else None
        for i in range(out_h):
            for j in range(out_w):
                if config.input_dependent:
                    logits = list(g[i, j])
                elif config.combining == "rowcol":  # eq. 3
                    logits = [
                        params["row_logits"][i, q] + params["col_logits"][j, q] for q in range(k)
                    ]
                elif config.combining == "row":
                    logits = list(params["row_logits"][i])
                elif config.combining == "col":
                    logits = list(params["col_logits"][j])
                else:
                    logits = list(params["logits"][i, j])
                w = normalise(logits, config.normalize)  # eq. 4
                bias = 0.0
                if config.spatial_bias:  # eq. 5
                    if config.combining in ("rowcol", "row"):
                        bias += params["row_bias"][i]
                    if config.combining in ("rowcol", "col"):
                        bias += params["col_bias"][j]
                    if config.combining == "full":
                        bias += params["spatial_bias"][i, j]
                for o in range(config.out_channels):
                    total = bias + (params["channel_bias"][o] if config.channel_bias else 0.0)
                    if config.mixed:
                        for q in range(k):
                            bank = params[f"basis.{q}"]
                            total += w[q] * window_sum(x, b, i, j, o, bank, config, *geometry[q])
                    else:
                        filt = sum(w[q] * params["basis"][q] for q in range(k))  # eq. 2
                        total += window_sum(x, b, i, j, o, filt, config, *geometry[0])
                    y[b, i, j, o] = total
    return y
