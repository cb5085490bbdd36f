"""Hypothesis strategies that build LRLCConfig field by field, so that a failing config
shrinks to a small one (fewer channels, rank 1, a 1x1 kernel, no stride, ...)."""

from __future__ import annotations

from hypothesis import assume
from hypothesis import strategies as st

from lrlc_numpy import COMBINING_MODES, NORMALIZATIONS, LRLCConfig


def _pairs(low, high):
    return st.tuples(st.integers(low, high), st.integers(low, high))


_PADDINGS = st.one_of(
    st.sampled_from(["valid", "same"]),
    st.integers(0, 2),
    st.tuples(_pairs(0, 2), _pairs(0, 2)),
)


@st.composite
def lrlc_configs(draw, *, mixed: bool | None = False) -> LRLCConfig:
    """A valid config on small shapes. `mixed`: False for one kernel for every basis, True
    for a mixed basis (spec section 16), None for either."""
    if mixed is None:
        mixed = draw(st.booleans())
    combining = draw(st.sampled_from(COMBINING_MODES))
    rank = draw(st.integers(1, 4 if mixed else 5))
    if mixed:
        per_basis = draw(st.sampled_from(["both", "kernel", "dilation"]))
        kernels = st.lists(_pairs(1, 4), min_size=rank, max_size=rank)
        dilations = st.lists(_pairs(1, 2), min_size=rank, max_size=rank)
        kernel_size = draw(kernels if per_basis != "dilation" else _pairs(1, 3))
        dilation = draw(dilations if per_basis != "kernel" else _pairs(1, 2))
        padding = "same"
    else:
        kernel_size, dilation, padding = draw(_pairs(1, 3)), draw(_pairs(1, 2)), draw(_PADDINGS)
    try:
        return LRLCConfig(
            in_channels=draw(st.integers(1, 4)),
            out_channels=draw(st.integers(1, 4)),
            kernel_size=kernel_size,
            rank=rank,
            input_size=draw(_pairs(3, 11)),
            stride=draw(_pairs(1, 2)),
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
