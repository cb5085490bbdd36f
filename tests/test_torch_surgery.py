"""Upgrading convolutions: `LRLC2d.from_conv` and `lrlc_torch.convert_convs`."""

import pytest
import torch
from torch import nn

import conformance
from lrlc_torch import LRLC2d, convert_convs

BATCH = 2


def close_to(got, want, layer):
    """Within the float64 rule of spec section 15 for `layer`'s config."""
    tol = conformance.tolerance("float64", layer.config, got.shape[0])
    return conformance.relative_error(got.detach().numpy(), want.detach().numpy()) <= tol


@pytest.mark.parametrize(
    "conv, input_size",
    [
        (nn.Conv2d(3, 4, 3, padding=1), (9, 8)),
        (nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0), bias=False), (9, 8)),
        (nn.Conv2d(3, 4, (2, 3), dilation=2, padding="same"), (7, 8)),
        (nn.Conv2d(3, 4, 1, stride=2), (9, 8)),
    ],
    ids=["3x3", "strided-nobias", "same-even-dilated", "1x1"],
)
def test_from_conv_equals_the_conv_at_init(conv, input_size):
    conv = conv.double()
    torch.manual_seed(0)
    layer = LRLC2d.from_conv(conv, rank=3, input_size=input_size)
    x = torch.randn(BATCH, 3, *input_size, dtype=torch.float64)
    assert close_to(layer(x), conv(x), layer)
    for member in layer.basis.unflatten(0, (3, conv.out_channels)):
        assert torch.equal(member, conv.weight)
    weights = layer.combining_weights()
    assert weights.std(dim=0).min() > 0  # members are not weighted uniformly anywhere


def test_from_conv_members_diverge_in_training():
    """Identical members with uniform weights get identical gradients forever; the small
    random logits of from_conv break that symmetry."""
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    x = torch.randn(BATCH, 2, 6, 6, dtype=torch.float64)
    spread = {}
    for scale in (0.0, 1e-2):
        layer = LRLC2d.from_conv(conv, rank=2, input_size=(6, 6), logit_scale=scale)
        layer(x).square().sum().backward()
        grad = layer.basis.grad.unflatten(0, (2, 3))
        spread[scale] = (grad[0] - grad[1]).abs().max().item()
    assert spread[0.0] == 0.0 and spread[1e-2] > 0.0


def test_from_conv_input_dependent_and_combining_options():
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    x = torch.randn(BATCH, 2, 7, 6, dtype=torch.float64)
    for options in (dict(combining="full", input_dependent=True), dict(combining="row")):
        layer = LRLC2d.from_conv(conv, rank=2, input_size=(7, 6), **options)
        assert close_to(layer(x), conv(x), layer)


@pytest.mark.parametrize(
    "conv, options, match",
    [
        (nn.Conv2d(4, 4, 3, groups=2), {}, "groups=2"),
        (nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect"), {}, "padding_mode='reflect'"),
        (nn.Conv2d(2, 4, 3), dict(normalize="l2"), "normalize='l2'"),
    ],
)
def test_from_conv_rejects_what_it_cannot_reproduce(conv, options, match):
    with pytest.raises(ValueError, match=match):
        LRLC2d.from_conv(conv, rank=2, input_size=(8, 8), **options)
    with pytest.raises(TypeError, match="nn.Conv2d"):
        LRLC2d.from_conv(nn.Linear(2, 2), rank=2, input_size=(8, 8))


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 4, 1),
        )
        self.head = nn.Linear(4, 5)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def three_by_three(name, conv):
    return conv.kernel_size == (3, 3)


def test_convert_convs_keeps_outputs_then_trains():
    torch.manual_seed(0)
    model = SmallCNN().double()
    x = torch.randn(8, 3, 12, 10, dtype=torch.float64)
    labels = torch.randint(0, 5, (8,))
    before = model(x)
    replaced = convert_convs(model, x[:1], rank=3, predicate=three_by_three)
    assert replaced == ["features.0", "features.2"]
    assert isinstance(model.features[0], LRLC2d) and isinstance(model.features[4], nn.Conv2d)
    assert model.features[0].config.input_size == (12, 10)
    assert model.features[2].config.input_size == (12, 10)
    assert model.features[2].config.output_size == (6, 5)
    assert close_to(model(x), before, model.features[2])

    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    basis = model.features[0].basis.unflatten(0, (3, -1))
    assert not torch.equal(basis[0], basis[1])  # the members have started to differ


class BasicBlock(nn.Module):
    """A ResNet basic block with a projection shortcut, as in torchvision's ResNets."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.downsample(x))


def test_convert_convs_on_a_resnet_block_leaves_batchnorm_alone():
    torch.manual_seed(0)
    model = nn.Sequential(BasicBlock(4, 8, stride=2), BasicBlock(8, 8, stride=1)).double()
    x = torch.randn(4, 4, 10, 10, dtype=torch.float64)
    model(x)  # one training step's worth of batch-norm statistics
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    model.eval()
    before = model(x)
    model.train()
    replaced = convert_convs(model, x, rank=2, predicate=three_by_three)
    assert replaced == ["0.conv1", "0.conv2", "1.conv1", "1.conv2"]
    assert model.training and model[0].conv1.training
    assert isinstance(model[0].downsample[0], nn.Conv2d)
    for name, value in stats.items():
        assert torch.equal(model.state_dict()[name], value), name
    model.eval()
    assert close_to(model(x), before, model[0].conv1)


def test_convert_convs_needs_one_known_size_per_conv():
    class TwoSizes(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1)
            self.unused = nn.Conv2d(2, 2, 3)

        def forward(self, x):
            return self.conv(x).sum() + self.conv(x[:, :, ::2, ::2]).sum()

    x = torch.randn(1, 2, 8, 8)
    with pytest.raises(ValueError, match=r"never reached \['unused'\]"):
        convert_convs(TwoSizes(), x, rank=2, predicate=lambda name, conv: name == "unused")
    with pytest.raises(ValueError, match=r"'conv' sees inputs of sizes \(8, 8\) and \(4, 4\)"):
        convert_convs(TwoSizes(), x, rank=2, predicate=lambda name, conv: name == "conv")
