"""lrlc_torch's torch conventions (issue 15): channels_last models and inputs, unbatched
(C, H, W) input, torch.export with a dynamic batch (inference and training), the strategy
rule under a symbolic batch, clear errors from TorchScript and the legacy ONNX exporter,
the dynamo ONNX exporter checked with onnxruntime, and the package version."""

import copy
import io
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.export import Dim, export

import conformance
import lrlc_numpy as L
import lrlc_torch
from lrlc_torch import LocallyConnected2d, LRLC2d, convert_convs
from lrlc_torch import functional as LF
from tests.test_torch_surgery import BasicBlock

FIXED = L.LRLCConfig(3, 4, 3, rank=3, input_size=(8, 7), stride=2, padding="same")
IDEP = L.LRLCConfig(
    3, 4, 3, rank=2, input_size=(8, 7), padding="same", combining="full", input_dependent=True
)
MIXED = L.LRLCConfig(3, 4, [3, 5], rank=2, input_size=(8, 7), dilation=[1, 2], padding="same")
# Rank 16 exceeds the crossover of an unknown (large) batch: 'auto' takes the LC form.
HIGH_RANK = L.LRLCConfig(3, 4, 3, rank=16, input_size=(8, 7), padding="same")
RANK_ONE = L.LRLCConfig(
    3, 4, 3, rank=1, input_size=(8, 7), padding="same", combining="full", input_dependent=True
)  # w = 1 exactly: eager runs one convolution (spec section 4.3)
CONFIGS = {
    "fixed": FIXED, "idep": IDEP, "mixed": MIXED, "high-rank": HIGH_RANK, "rank1": RANK_ONE,
}  # fmt: skip


def loaded(config, strategy="auto", dtype=torch.float64, seed=0):
    x, params, _ = conformance.case_data(conformance.Case("t", config, 3), seed)
    layer = LRLC2d.from_lrlc_config(config, strategy=strategy, dtype=dtype)
    layer.load_neutral_params(params)
    return layer, torch.from_numpy(x).to(dtype).permute(0, 3, 1, 2)


def close(got, want, config, dtype="float64"):
    tol = conformance.tolerance(dtype, config, got.shape[0] if got.dim() == 4 else 1)
    return conformance.relative_error(got.detach().numpy(), want.detach().numpy()) <= tol


def test_version_is_the_distributions():
    """One number for the distribution (lrlc_numpy/_version.py; tests/smoke_wheel.py checks
    it against an installed wheel's metadata)."""
    assert lrlc_torch.__version__ == L.__version__
    assert lrlc_torch.__version__.count(".") == 2


# ---------------------------------------------------------------------------------------------
# channels_last


def test_channels_last_model_gives_the_same_values_and_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(
        LRLC2d.from_lrlc_config(FIXED, dtype=torch.float64),
        nn.ReLU(),
        LRLC2d(4, 4, [3, 5], rank=2, input_size=(4, 4), dilation=[1, 2], padding="same",
               dtype=torch.float64),
        LRLC2d(4, 4, 3, rank=2, input_size=(4, 4), padding="same", combining="full",
               input_dependent=True, dtype=torch.float64),
        LocallyConnected2d(4, 2, 3, (4, 4), padding="same", dtype=torch.float64),
    )  # fmt: skip
    twin = copy.deepcopy(model).to(memory_format=torch.channels_last)
    for name, param in twin.named_parameters():
        if param.dim() == 4:  # the basis, like nn.Conv2d.weight
            assert param.is_contiguous(memory_format=torch.channels_last), name
    x = torch.randn(2, 3, 8, 7, dtype=torch.float64)
    want = model(x)
    for inputs in (x, x.to(memory_format=torch.channels_last)):
        got = twin(inputs)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    want.square().sum().backward()
    twin(x.to(memory_format=torch.channels_last)).square().sum().backward()
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=1e-11, msg=name)
    # The neutral view is the canonical layout whatever the memory format.
    for name, value in twin[2].neutral_params().items():
        np.testing.assert_array_equal(value, model[2].neutral_params()[name], err_msg=name)


def resnet_like():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        BasicBlock(4, 8, stride=2),
        BasicBlock(8, 8, stride=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    ).double()


def test_resnet_upgraded_by_convert_convs_trains_in_channels_last():
    torch.manual_seed(0)
    model = resnet_like()
    x = torch.randn(6, 3, 10, 10, dtype=torch.float64)
    labels = torch.randint(0, 5, (6,))
    replaced = convert_convs(model, x[:1], rank=2, predicate=lambda n, c: c.kernel_size == (3, 3))
    assert len(replaced) == 5
    twin = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_cl = x.to(memory_format=torch.channels_last)
    optimisers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, twin)]
    losses = {id(model): [], id(twin): []}
    for _ in range(3):
        for m, inputs, optimiser in zip((model, twin), (x, x_cl), optimisers):
            optimiser.zero_grad()
            loss = nn.functional.cross_entropy(m(inputs), labels)
            loss.backward()
            optimiser.step()
            losses[id(m)].append(loss.item())
    np.testing.assert_allclose(losses[id(twin)], losses[id(model)], rtol=1e-12)
    assert losses[id(model)][-1] < losses[id(model)][0]
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-12, msg=name)
    model.eval()
    twin.eval()
    torch.testing.assert_close(twin(x_cl), model(x), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Unbatched input, as nn.Conv2d takes it


@pytest.mark.parametrize("strategy", ["auto", "conv", "lc"])
@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS)
def test_unbatched_input_is_one_example(config, strategy):
    if strategy == "lc" and config.input_dependent:
        pytest.skip("input-dependent layers run Algorithm 1 only")
    layer, x = loaded(config, strategy)
    x1 = x[0].detach().requires_grad_(True)
    y = layer(x1)
    assert y.shape == (config.out_channels, *config.output_size)
    torch.testing.assert_close(y, layer(x[:1])[0], rtol=0, atol=1e-13)
    y.sum().backward()
    assert x1.grad.shape == x1.shape
    if not config.input_dependent:
        lc = layer.to_locally_connected()
        torch.testing.assert_close(lc(x[0]), lc(x[:1])[0], rtol=0, atol=1e-13)


# ---------------------------------------------------------------------------------------------
# torch.export with a dynamic batch


def grads_of(module, x):
    x = x.detach().requires_grad_(True)
    y = module(x)
    y.square().sum().backward()
    return y.detach(), x.grad, {n: p.grad for n, p in module.named_parameters()}


@pytest.mark.parametrize("dim", [Dim("batch"), Dim.AUTO], ids=["Dim(batch)", "Dim.AUTO"])
@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS)
def test_export_with_a_dynamic_batch_infers_and_trains(config, dim):
    """Exported under the default strategy, at batch 3, then run at batch 5: the same values
    and, through the exported program's own autograd, the same gradients as eager."""
    layer, x = loaded(config)
    program = export(layer, (x,), dynamic_shapes={"x": {0: dim}})
    exported = program.module()
    x5 = torch.randn(5, *x.shape[1:], dtype=x.dtype)
    want = grads_of(layer, x5)
    got = grads_of(exported, x5)
    assert close(got[0], want[0], config) and close(got[1], want[1], config)
    assert set(got[2]) == set(want[2])
    for name, grad in want[2].items():  # rank 1: g's gradients are exact zeros in both
        assert got[2][name] is not None, name
        assert close(got[2][name], grad, config), name


def test_export_of_a_locally_connected_layer_trains():
    lc = LocallyConnected2d.from_lrlc_config(MIXED, dtype=torch.float64)
    x = torch.randn(3, 3, 8, 7, dtype=torch.float64)
    exported = export(lc, (x,), dynamic_shapes={"x": {0: Dim("batch")}}).module()
    x5 = torch.randn(5, 3, 8, 7, dtype=torch.float64)
    want, got = grads_of(lc, x5), grads_of(exported, x5)
    for a, b in [(got[0], want[0]), (got[1], want[1]), *zip(got[2].values(), want[2].values())]:
        assert close(a, b, MIXED)


def test_a_symbolic_batch_takes_the_rules_unknown_batch_branch(monkeypatch):
    """No branch reads the symbolic batch: the rule sees None (lrlc_numpy.strategy: an unknown
    batch counts as large), which picks 'lc' at rank 16 and 'conv' at rank 3."""
    seen = []
    original = LF.choose_strategy

    def spy(config, batch, strategy, device):
        chosen = original(config, batch, strategy, device)
        seen.append((config.rank, batch, chosen))
        return chosen

    monkeypatch.setattr(LF, "choose_strategy", spy)
    for config in (FIXED, HIGH_RANK):
        layer, x = loaded(config)
        export(layer, (x,), dynamic_shapes={"x": {0: Dim("batch")}})
        layer(x)
    assert (16, None, "lc") in seen and (3, None, "conv") in seen
    assert (16, 3, "conv") in seen  # a known batch of 3 is small: Algorithm 1


# ---------------------------------------------------------------------------------------------
# TorchScript and the legacy ONNX exporter: a clear error naming what works


@pytest.mark.parametrize(
    "module",
    [LRLC2d.from_lrlc_config(FIXED), LocallyConnected2d.from_lrlc_config(FIXED)],
    ids=["LRLC2d", "LocallyConnected2d"],
)
def test_torchscript_and_legacy_onnx_raise_a_clear_error(module):
    x = torch.randn(2, 3, 8, 7)
    points_to = r"torch.onnx.export\(model, args, dynamo=True\)"
    name = type(module).__name__
    with pytest.raises(RuntimeError, match=rf"{name} does not support TorchScript.*{points_to}"):
        torch.jit.script(nn.Sequential(module, nn.ReLU()))
    with pytest.raises(RuntimeError, match=rf"{name} cannot be traced by torch.jit.trace.*"
                                           rf"{points_to}"):  # fmt: skip
        torch.jit.trace(module, (x,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's own deprecation warning
        with pytest.raises(RuntimeError, match=rf"dynamo=False\).*{points_to}"):
            torch.onnx.export(module, (x,), io.BytesIO(), dynamo=False)


# ---------------------------------------------------------------------------------------------
# The dynamo ONNX exporter, checked with onnxruntime where it installs


@pytest.mark.parametrize("config", [FIXED, IDEP, MIXED], ids=["fixed", "idep", "mixed"])
def test_onnx_export_runs_in_onnxruntime(config):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    layer, x = loaded(config, dtype=torch.float32)
    layer.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            layer, (x,), dynamo=True, dynamic_shapes={"x": {0: Dim("batch")}}, verbose=False
        )
    session = onnxruntime.InferenceSession(
        program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    x5 = torch.randn(5, *x.shape[1:])
    (got,) = session.run(None, {session.get_inputs()[0].name: x5.numpy()})
    want = layer(x5).detach().numpy()
    tol = conformance.tolerance("float32", config, 5)
    assert conformance.relative_error(got, want) <= tol
