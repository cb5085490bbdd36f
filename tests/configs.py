"""Hypothesis strategies that build LRLCConfig field by field, so that a failing config
shrinks to a small one (fewer channels, rank 1, a 1x1 kernel, no stride, ...)."""

from __future__ import annotations

from hypothesis import assume
from hypothesis import strategies as st

from lrlc_numpy import COMBINING_MODES, NORMALIZATIONS, LRLCConfig


def _tuples(n, low, high):
    return st.tuples(*[st.integers(low, high)] * n)


def _pairs(low, high):
    return _tuples(2, low, high)


def _paddings(n):
    return st.one_of(
        st.sampled_from(["valid", "same"]),
        st.integers(0, 2),
        _tuples(n, 0, 2),
        st.tuples(*[_pairs(0, 2)] * n),
    )


# Combining modes per spatial rank (spec section 17.2) and the largest grid axis drawn
# (volumes kept small: the reference and the catalogue's checks grow with the volume).
_MODES = {1: ("full",), 2: COMBINING_MODES, 3: ("rowcol", "full")}
_LARGEST = {1: 16, 2: 11, 3: 6}


@st.composite
def lrlc_configs(draw, *, mixed: bool | None = False, spatial_dims: int | None = 2):
    """A valid config on small shapes. `mixed`: False for one kernel for every basis, True
    for a mixed basis (spec section 16), None for either. `spatial_dims`: 1, 2 or 3 axes
    (spec section 17), None for any."""
    if mixed is None:
        mixed = draw(st.booleans())
    n = draw(st.sampled_from((1, 2, 3))) if spatial_dims is None else spatial_dims
    combining = draw(st.sampled_from(_MODES[n]))
    rank = draw(st.integers(1, 4 if mixed else 5))
    if mixed:
        per_basis = draw(st.sampled_from(["both", "kernel", "dilation"]))
        kernels = st.lists(_tuples(n, 1, 4), min_size=rank, max_size=rank)
        dilations = st.lists(_tuples(n, 1, 2), min_size=rank, max_size=rank)
        kernel_size = draw(kernels if per_basis != "dilation" else _tuples(n, 1, 3))
        dilation = draw(dilations if per_basis != "kernel" else _tuples(n, 1, 2))
        padding = "same"
    else:
        kernel_size, dilation = draw(_tuples(n, 1, 3)), draw(_tuples(n, 1, 2))
        padding = draw(_paddings(n))
    try:
        return LRLCConfig(
            in_channels=draw(st.integers(1, 4)),
            out_channels=draw(st.integers(1, 4)),
            kernel_size=kernel_size,
            rank=rank,
            input_size=draw(_tuples(n, 3, _LARGEST[n])),
            stride=draw(_tuples(n, 1, 2)),
            dilation=dilation,
            padding=padding,
            combining=combining,
            normalize=draw(st.sampled_from(NORMALIZATIONS)),
            spatial_bias=draw(st.booleans()),
            channel_bias=draw(st.booleans()),
            input_dependent=combining == "full" and draw(st.booleans()),
        )
    except ValueError:  # an empty output grid
        assume(False)
