"""lrlc_experiments.models: every variant's output shape and trainable-parameter count.

Parameter counts are computed here from the architecture (paper Section 4, eqs. 3-6 and the
contract's parameter table), not read off the code under test.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lrlc_experiments.models import (
    VARIANTS,
    AppendCoordinates,
    ModelConfig,
    build_model,
    count_parameters,
    matched_width,
)

pytest.importorskip("lrlc_torch")

K = 3  # kernel size of every layer
G_RATES = (1, 2, 4, 8)


def conv_count(c_in, c_out):
    return K * K * c_in * c_out + c_out  # kernel + bias


def norm_count(c):
    return 2 * c  # batch-norm scale and shift (running statistics are buffers)


def lrlc_count(c_in, c_out, rank, out_h, out_w):
    """Basis, row/column logits (eq. 3), row/column biases and channel bias (eq. 5)."""
    return rank * K * K * c_in * c_out + (out_h + out_w) * rank + out_h + out_w + c_out


def input_dependent_count(c_in, c_out, rank, in_h, in_w, out_h, out_w):
    """Basis, per-position spatial bias, channel bias, and the network g of eq. 6."""
    n = sum(r <= (min(in_h, in_w) - 1) // 2 for r in G_RATES)
    g = c_in * rank + rank  # 1×1 reduction to K channels
    g += n * (K * K * rank + rank)  # depthwise dilated 3×3 branches
    g += (n + 2) * rank * 3 * rank + 3 * rank  # squeeze
    g += 3 * rank * 6 * rank + 6 * rank  # excite
    g += 6 * rank * rank + rank  # projection to K logits
    return rank * K * K * c_in * c_out + out_h * out_w + c_out + g


def lc_count(c_in, c_out, out_h, out_w):
    return out_h * out_w * (K * K * c_in * c_out + c_out)


def expected_count(variant, rank, c_in, size, width, classes, depth=3, wide=None):
    """Trainable parameters of the paper's network with `variant`, from the architecture."""
    v = VARIANTS[variant]
    positions = range(1, depth + 1) if v.positions == "all" else v.positions
    total = 0
    channels = c_in + (2 if v.coordconv else 0)
    for p in range(1, depth + 1):
        in_size = size - 2 * (p - 1)
        out_size = in_size - 2
        kind = v.kind if p in positions else "conv"
        out_channels = wide if kind == "wide-conv" else width
        if kind in ("conv", "wide-conv"):
            total += conv_count(channels, out_channels)
        elif kind == "spatial-bias":
            total += lrlc_count(channels, out_channels, 1, out_size, out_size)
        elif kind == "lrlc":
            total += lrlc_count(channels, out_channels, rank, out_size, out_size)
        elif kind == "lrlc-input-dependent":
            total += input_dependent_count(
                channels, out_channels, rank, in_size, in_size, out_size, out_size
            )
        else:
            total += lc_count(channels, out_channels, out_size, out_size)
        total += norm_count(out_channels)
        channels = out_channels
    return total + channels * classes + classes  # linear classifier


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_output_shape_and_parameter_count(variant):
    rank = 2 if VARIANTS[variant].ranked else None
    c_in, size, width, classes = 2, 11, 8, 5
    config = ModelConfig(variant, c_in, (size, size), classes, rank=rank, width=width)
    model = build_model(config, seed=0)
    y = model(torch.randn(4, c_in, size, size))
    assert y.shape == (4, classes)
    wide = matched_width(config) if VARIANTS[variant].kind == "wide-conv" else None
    assert count_parameters(model) == expected_count(
        variant, rank, c_in, size, width, classes, wide=wide
    )


@pytest.mark.parametrize("rank", [1, 3, 8])
def test_paper_sized_lrlc_and_input_dependent_counts(rank):
    for variant in ("lrlc-3", "lrlc-input-dependent-3", "lrlc-all"):
        config = ModelConfig(variant, 3, (32, 32), 10, rank=rank)
        expected = expected_count(variant, rank, 3, 32, 64, 10)
        assert count_parameters(build_model(config)) == expected


@pytest.mark.parametrize("rank", [1, 2, 5])
def test_wide_conv_width_is_the_closest_parameter_match(rank):
    c_in, size, width, classes = 1, 16, 64, 10
    config = ModelConfig("wide-conv-3", c_in, (size, size), classes, rank=rank, width=width)
    target = expected_count("lrlc-3", rank, c_in, size, width, classes)

    def gap(w):
        return abs(expected_count("wide-conv-3", None, c_in, size, width, classes, wide=w) - target)

    best = min(range(1, 2000), key=gap)  # first minimiser: ties go to the narrower width
    assert matched_width(config) == best
    assert best > width or rank == 1
    expected = expected_count("wide-conv-3", None, c_in, size, width, classes, wide=best)
    assert count_parameters(build_model(config)) == expected


def test_coordinates_are_two_channels_in_minus_one_to_one():
    x = torch.zeros(2, 3, 4, 5)
    y = AppendCoordinates()(x)
    assert y.shape == (2, 5, 4, 5)
    np.testing.assert_allclose(y[0, 3].numpy(), np.repeat(np.linspace(-1, 1, 4)[:, None], 5, 1))
    np.testing.assert_allclose(y[1, 4].numpy(), np.repeat(np.linspace(-1, 1, 5)[None, :], 4, 0))
    torch.testing.assert_close(y[:, :3], x)


def test_spatial_bias_variant_starts_as_the_convolution_plus_zero_bias():
    """Rank 1 with softmax weights is a convolution plus a spatial bias (paper Section 3.2.1);
    the bias starts at zero, so outputs agree once the kernels agree."""
    config = ModelConfig("spatial-bias-3", 1, (9, 9), 4, width=6)
    lrlc = build_model(config, seed=0)
    conv = build_model(dataclasses.replace(config, variant="conv"), seed=0)
    conv.load_state_dict(
        {k: v for k, v in lrlc.state_dict().items() if not k.startswith("layers.2")}, strict=False
    )
    with torch.no_grad():
        # The torch layer keeps its basis as one (K C_out, C_in, kh, kw) weight; K = 1 here.
        conv.layers[2].weight.copy_(lrlc.layers[2].basis[: conv.layers[2].out_channels])
        conv.layers[2].bias.copy_(lrlc.layers[2].channel_bias)
    x = torch.randn(3, 1, 9, 9)
    lrlc.eval()
    conv.eval()
    torch.testing.assert_close(lrlc(x), conv(x))


def test_build_model_is_seeded_and_leaves_the_global_generator_alone():
    config = ModelConfig("lrlc-3", 1, (10, 10), 10, rank=2, width=8)
    state = torch.random.get_rng_state()
    a, b, c = build_model(config, 1), build_model(config, 1), build_model(config, 2)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.layers[0].weight, c.layers[0].weight)
    assert not torch.equal(a.layers[2].basis, c.layers[2].basis)


def test_model_config_and_input_errors():
    with pytest.raises(ValueError, match="unknown model variant 'lrlc-4'"):
        ModelConfig("lrlc-4", 1, (8, 8), 10, rank=2)
    with pytest.raises(ValueError, match="needs a rank >= 1, got None"):
        ModelConfig("lrlc-3", 1, (8, 8), 10)
    with pytest.raises(ValueError, match="takes no rank, got rank=2"):
        ModelConfig("conv", 1, (8, 8), 10, rank=2)
    with pytest.raises(ValueError, match="too small"):
        ModelConfig("conv", 1, (6, 8), 10)
    with pytest.raises(ValueError, match="changes layer 3 but the network has depth 2"):
        ModelConfig("lc-3", 1, (8, 8), 10, depth=2)
    model = build_model(ModelConfig("conv", 1, (8, 8), 10, width=4))
    with pytest.raises(ValueError, match=r"shape \(2, 1, 9, 8\); expected \(batch, 1, 8, 8\)"):
        model(torch.zeros(2, 1, 9, 8))


def test_architecture_identifies_spatial_bias_with_lrlc_of_rank_one():
    def arch(variant, rank=None):
        return ModelConfig(variant, 1, (10, 10), 10, rank=rank).architecture()

    assert arch("spatial-bias-3") == arch("lrlc-3", 1)
    assert arch("spatial-bias-all") == arch("lrlc-all", 1)
    distinct = [
        arch("conv"),
        arch("coordconv"),
        arch("spatial-bias-3"),
        arch("spatial-bias-2"),
        arch("lrlc-3", 2),
        arch("lrlc-input-dependent-3", 1),
        arch("wide-conv-3", 1),
        arch("lc-3"),
    ]
    assert len(set(distinct)) == len(distinct)
