"""The catalogue of conformance cases and the data each case runs on.

A case is a layer config and a batch size; its inputs (x, params, dy) are drawn from a
seed, so every failure can be reproduced from (case, seed) alone.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from lrlc_numpy import COMBINING_MODES, NORMALIZATIONS, LRLCConfig, init_params


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    config: LRLCConfig
    batch: int = 2

    def describe(self) -> str:
        return f"{self.name}: batch={self.batch}, config={self.config.to_json()}"


def _modes():
    """Every mode of the spec: combining x normalisation x biases, fixed and input-dependent."""
    for combining, normalize, spatial, channel in itertools.product(
        COMBINING_MODES, NORMALIZATIONS, (True, False), (True, False)
    ):
        for input_dependent in (False, True) if combining == "full" else (False,):
            yield dict(
                combining=combining,
                normalize=normalize,
                spatial_bias=spatial,
                channel_bias=channel,
                input_dependent=input_dependent,
            )


def _mode_name(mode):
    bias = ("s" if mode["spatial_bias"] else "") + ("c" if mode["channel_bias"] else "")
    kind = "idep" if mode["input_dependent"] else "fixed"
    return f"{kind}-{mode['combining']}-{mode['normalize']}-bias[{bias}]"


# Geometry variants, each run with a few representative modes.
GEOMETRIES = {
    "nonsquare-valid": dict(kernel_size=3, input_size=(7, 6)),
    "stride2-same": dict(kernel_size=3, input_size=(9, 8), stride=2, padding="same"),
    "stride2-same-odd": dict(kernel_size=(3, 2), input_size=(8, 7), stride=(2, 3), padding="same"),
    "dilation2-same": dict(kernel_size=3, input_size=(9, 10), dilation=2, padding="same"),
    "dilation2-valid": dict(kernel_size=(2, 3), input_size=(8, 9), dilation=(2, 1)),
    "explicit-int": dict(kernel_size=3, input_size=(6, 7), padding=1),
    "explicit-pairs": dict(kernel_size=3, input_size=(6, 5), padding=((2, 0), (1, 3))),
    "kernel1": dict(kernel_size=1, input_size=(5, 6)),
    "large-idep-grid": dict(kernel_size=3, input_size=(18, 17), stride=2, padding="same"),
}

GEOMETRY_MODES = (
    dict(combining="rowcol", normalize="softmax"),
    dict(combining="full", normalize="l2"),
    dict(combining="full", normalize="softmax", input_dependent=True),
)

# Mixed bases (spec section 16): one kernel size and dilation per basis, padding 'same'.
# The first is the authors' verified pair; the rest add an even kernel (SAME's odd pixel
# after), stride 2 with non-square pairs, rank 1, and groups of equal geometry that are
# not contiguous (bases 0 and 2 share one convolution).
MIXED_GEOMETRIES = {
    "mixed-3x3d1-5x5d2": dict(kernel_size=[3, 5], dilation=[1, 2], input_size=(9, 8)),
    "mixed-1x1-2x2-3x3d2": dict(kernel_size=[1, 2, 3], dilation=[1, 1, 2], input_size=(8, 7)),
    "mixed-stride2": dict(
        kernel_size=[(3, 2), 4], dilation=[1, (2, 1)], stride=2, input_size=(9, 8)
    ),
    "mixed-rank1": dict(kernel_size=[2], input_size=(7, 6)),
    "mixed-groups": dict(kernel_size=[3, 5, 3, 5], dilation=[1, 2, 1, 1], input_size=(7, 6)),
}


# Sequences and volumes (spec section 17): (name, config fields). 1-D layers combine with
# 'full' only; 3-D ones with 'rowcol' (a table per axis) or 'full'. Every normalisation,
# fixed and input-dependent, strides, dilations, each padding form and mixed bases.
_FULL, _IDEP = dict(combining="full"), dict(combining="full", input_dependent=True)
ND_CASES = (
    ("1d/fixed-softmax", dict(kernel_size=3, input_size=(9,), padding="same", **_FULL)),
    ("1d/fixed-l2", dict(kernel_size=3, input_size=(9,), normalize="l2", **_FULL)),
    ("1d/fixed-none-bias[]", dict(kernel_size=3, input_size=(9,), normalize="none",
                                  spatial_bias=False, channel_bias=False, **_FULL)),
    ("1d/idep-softmax", dict(kernel_size=3, input_size=(11,), padding="same", **_IDEP)),
    ("1d/idep-l2-bias[c]", dict(kernel_size=3, input_size=(9,), normalize="l2",
                                spatial_bias=False, **_IDEP)),
    ("1d-stride2-same/fixed", dict(kernel_size=4, input_size=(11,), stride=2, padding="same",
                                   **_FULL)),
    ("1d-stride2-same/idep", dict(kernel_size=4, input_size=(11,), stride=2, padding="same",
                                  **_IDEP)),
    ("1d-dilation2-valid", dict(kernel_size=3, input_size=(10,), dilation=2, **_FULL)),
    ("1d-explicit-pairs", dict(kernel_size=3, input_size=(8,), padding=((2, 0),),
                               normalize="none", **_FULL)),
    ("1d-mixed/fixed", dict(kernel_size=[1, 3, 5], dilation=[1, 2, 1], input_size=(9,),
                            padding="same", **_FULL)),
    ("1d-mixed/idep", dict(kernel_size=[2, 3], input_size=(9,), padding="same", **_IDEP)),
    ("3d/rowcol-softmax", dict(kernel_size=3, input_size=(4, 5, 3), padding="same")),
    ("3d/rowcol-l2", dict(kernel_size=3, input_size=(4, 5, 3), padding="same", normalize="l2")),
    ("3d/rowcol-none-bias[c]", dict(kernel_size=2, input_size=(3, 4, 3), normalize="none",
                                    spatial_bias=False)),
    ("3d/full-softmax", dict(kernel_size=2, input_size=(3, 4, 3), **_FULL)),
    ("3d/idep-softmax", dict(kernel_size=3, input_size=(5, 6, 5), padding="same", **_IDEP)),
    ("3d/idep-l2-bias[c]", dict(kernel_size=2, input_size=(3, 4, 3), normalize="l2",
                                spatial_bias=False, **_IDEP)),
    ("3d-stride-same", dict(kernel_size=(2, 3, 3), input_size=(4, 6, 5), stride=(1, 2, 2),
                            padding="same")),
    ("3d-stride-same/full-l2", dict(kernel_size=(2, 3, 3), input_size=(4, 6, 5),
                                    stride=(1, 2, 2), padding="same", normalize="l2", **_FULL)),
    ("3d-dilation-valid", dict(kernel_size=2, input_size=(3, 5, 4), dilation=(1, 2, 1))),
    ("3d-explicit-pairs", dict(kernel_size=3, input_size=(3, 4, 4),
                               padding=((1, 0), (0, 1), (1, 1)), normalize="none", **_FULL)),
    ("3d-mixed/rowcol", dict(kernel_size=[(1, 3, 3), 3], input_size=(3, 5, 4),
                             padding="same")),
    ("3d-mixed/idep", dict(kernel_size=[(1, 3, 3), 3], input_size=(3, 5, 4), padding="same",
                           **_IDEP)),
)  # fmt: skip


def catalogue() -> list[Case]:
    """All cases: every mode on a small non-square grid, then geometry x representative modes,
    then rank 1 and rank >= 8, then mixed bases (every combining mode and normalisation on
    the first, representative modes on the rest), then 1-D and 3-D layers (`ND_CASES`)."""
    cases = []
    for mode in _modes():
        config = LRLCConfig(3, 4, 3, rank=3, input_size=(7, 6), padding="same", **mode)
        cases.append(Case(_mode_name(mode), config))
    for (geo_name, geometry), mode in itertools.product(GEOMETRIES.items(), GEOMETRY_MODES):
        config = LRLCConfig(2, 3, rank=2, **geometry, **mode)
        cases.append(Case(f"{geo_name}/{_mode_name(dataclasses.asdict(config))}", config))
    for rank, mode in itertools.product((1, 8, 9), GEOMETRY_MODES):
        config = LRLCConfig(3, 2, 3, rank=rank, input_size=(8, 7), padding="same", **mode)
        cases.append(Case(f"rank{rank}/{_mode_name(dataclasses.asdict(config))}", config, batch=3))
    every_mode = [
        dict(combining=combining, normalize=normalize)
        for combining, normalize in itertools.product(COMBINING_MODES, NORMALIZATIONS)
    ] + [dict(combining="full", normalize=n, input_dependent=True) for n in NORMALIZATIONS]
    for index, (geo_name, geometry) in enumerate(MIXED_GEOMETRIES.items()):
        rank = len(geometry["kernel_size"])
        for mode in every_mode if index == 0 else GEOMETRY_MODES:
            config = LRLCConfig(2, 3, rank=rank, padding="same", **geometry, **mode)
            cases.append(Case(f"{geo_name}/{_mode_name(dataclasses.asdict(config))}", config))
    for name, fields in ND_CASES:
        rank = len(fields["kernel_size"]) if isinstance(fields["kernel_size"], list) else 2
        cases.append(Case(name, LRLCConfig(2, 3, rank=rank, **fields)))
    return cases


def random_config(rng: np.random.Generator, *, mixed: bool = False) -> LRLCConfig:
    """A random valid config on small shapes (used by the hypothesis and seeded fuzz runs);
    with `mixed`, a mixed basis (`random_mixed_config`)."""
    if mixed:
        return random_mixed_config(rng)
    while True:
        mode = dict(
            combining=str(rng.choice(COMBINING_MODES)),
            normalize=str(rng.choice(NORMALIZATIONS)),
            spatial_bias=bool(rng.integers(2)),
            channel_bias=bool(rng.integers(2)),
        )
        mode["input_dependent"] = mode["combining"] == "full" and bool(rng.integers(2))
        padding = [
            "valid",
            "same",
            int(rng.integers(0, 3)),
            (
                (int(rng.integers(0, 3)), int(rng.integers(0, 3))),
                (int(rng.integers(0, 3)), int(rng.integers(0, 3))),
            ),
        ][int(rng.integers(4))]
        try:
            return LRLCConfig(
                in_channels=int(rng.integers(1, 5)),
                out_channels=int(rng.integers(1, 5)),
                kernel_size=(int(rng.integers(1, 4)), int(rng.integers(1, 4))),
                rank=int(rng.integers(1, 6)),
                input_size=(int(rng.integers(3, 12)), int(rng.integers(3, 12))),
                stride=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
                dilation=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
                padding=padding,
                **mode,
            )
        except ValueError:  # an empty output grid; draw again
            continue


def random_mixed_config(rng: np.random.Generator) -> LRLCConfig:
    """A random mixed basis: K in [1, 4], per basis a kernel of 1-4 and a dilation of 1-2
    on each axis (a list for either field or both), padding 'same', random mode."""
    rank = int(rng.integers(1, 5))

    def per_basis(high):
        return [
            (int(rng.integers(1, high + 1)), int(rng.integers(1, high + 1))) for _ in range(rank)
        ]

    shared = int(rng.integers(3))  # 0: both per basis; 1: one dilation; 2: one kernel size
    combining = str(rng.choice(COMBINING_MODES))
    return LRLCConfig(
        in_channels=int(rng.integers(1, 4)),
        out_channels=int(rng.integers(1, 4)),
        kernel_size=(int(rng.integers(1, 4)),) * 2 if shared == 2 else per_basis(4),
        rank=rank,
        input_size=(int(rng.integers(3, 10)), int(rng.integers(3, 10))),
        stride=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
        dilation=int(rng.integers(1, 3)) if shared == 1 else per_basis(2),
        padding="same",
        combining=combining,
        normalize=str(rng.choice(NORMALIZATIONS)),
        spatial_bias=bool(rng.integers(2)),
        channel_bias=bool(rng.integers(2)),
        input_dependent=combining == "full" and bool(rng.integers(2)),
    )


def case_data(case: Case, seed: int):
    """(x, params, dy) in float64 for `case`, drawn from `seed`.

    Logits and biases are drawn away from their (constant, zero) initial values so that
    every parameter affects the output and a dropped or misplaced term shows.
    """
    config = case.config
    rng = np.random.default_rng([seed, config.rank, *config.input_size])
    params = init_params(config, seed=seed)
    for name, value in params.items():
        if name in config.basis_names:
            continue
        spread = 1.0 if "logits" in name else 0.5
        params[name] = value + rng.normal(scale=spread, size=value.shape)
    x = rng.normal(size=(case.batch, *config.input_size, config.in_channels))
    dy = rng.normal(size=(case.batch, *config.output_size, config.out_channels))
    return x, params, dy
