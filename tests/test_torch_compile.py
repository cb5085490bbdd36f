"""lrlc_torch under torch.compile: the user's own compile of a layer, and the compiled paths of
`lrlc_torch.compiled` against the reference with the conformance tolerance rule.

Inductor's C++ code generation takes 10-90 s per program on this project's 2-core CI
machines (minutes when they are loaded), so only two tests run it (`test_inductor_*`, tiny
shapes, fixed layers); the others trace with
"aot_eager" (TorchDynamo + AOTAutograd, no code generation) or run the compiled path's
math uncompiled, which is what inductor is given.
"""

import pytest
import torch

import conformance
import lrlc_numpy as L
from conformance.backends import torch as torch_adapter
from lrlc_torch import LocallyConnected2d, LRLC2d, compiled

CONFIG = L.LRLCConfig(
    2, 3, 3, rank=2, input_size=(7, 6), stride=2, padding="same", combining="full",
    input_dependent=True,
)  # fmt: skip
BATCH = 2
FIXED = L.LRLCConfig(3, 4, 3, rank=3, input_size=(7, 6), padding="same")


def _data(config, batch=BATCH, dtype=torch.float32):
    x_nhwc, params, dy_nhwc = conformance.case_data(conformance.Case("compile", config, batch), 0)
    layer = LRLC2d.from_lrlc_config(config, dtype=dtype)
    layer.load_neutral_params(params)
    x = torch.from_numpy(x_nhwc).to(dtype).permute(0, 3, 1, 2).requires_grad_(True)
    dy = torch.from_numpy(dy_nhwc).to(dtype).permute(0, 3, 1, 2)
    return layer, x, dy


def _compare(results, tol):
    (want_y, want_grads), (got_y, got_grads) = results
    assert conformance.relative_error(got_y.numpy(), want_y.numpy()) <= tol
    for got, want in zip(got_grads, want_grads):
        assert conformance.relative_error(got.numpy(), want.numpy()) <= tol


def _run(module, layer, x, dy):
    y = module(x)
    return y.detach(), torch.autograd.grad(y, (x, *layer.parameters()), dy)


@pytest.fixture
def wired(monkeypatch):
    """The layers' forward routed through `lrlc_torch.compiled` (the wiring the lead applies
    to layers.py), the compiled path selected on every device, programs made afresh."""

    def lrlc_forward(self, x):
        params = dict(self.named_parameters())
        return compiled.forward(x, params, self.config, strategy=self.strategy)

    def lc_forward(self, x):
        return compiled.locally_connected(x, self.weight, self.bias, self.config)

    monkeypatch.setattr(LRLC2d, "forward", lrlc_forward)
    monkeypatch.setattr(LocallyConnected2d, "forward", lc_forward)
    monkeypatch.setattr(compiled, "_programs", {})
    with compiled.use_compiled(True):
        yield


def test_compiled_equals_eager():
    """The user's own torch.compile of a layer, every part traced in one graph."""
    layer, x, dy = _data(CONFIG)
    compiled_layer = torch.compile(layer, backend="aot_eager", fullgraph=True)
    results = [_run(module, layer, x, dy) for module in (layer, compiled_layer)]
    _compare(results, conformance.tolerance("float32", CONFIG, BATCH))


@pytest.mark.parametrize("config", [CONFIG, FIXED], ids=["input-dependent", "fixed"])
def test_users_compile_traces_the_compiled_path(wired, config):
    """A user's torch.compile over a layer that calls `compiled.forward`: the compiled math is
    traced into the user's graph (fullgraph: no break) and no program of its own is made."""
    layer, x, dy = _data(config)
    layer.strategy = "conv" if config.input_dependent else "lc"
    with compiled.use_compiled(False):
        eager = _run(layer, layer, x, dy)
    user = torch.compile(layer, backend="aot_eager", fullgraph=True)
    _compare([eager, _run(user, layer, x, dy)], conformance.tolerance("float32", config, BATCH))
    assert compiled.compiled_programs() == 0


@pytest.mark.parametrize("strategy", ["conv", "lc"])
def test_compiled_math_passes_conformance(wired, monkeypatch, strategy):
    """Every plain case of the catalogue, float64 and float32, values and gradients, through
    the compiled path's math (run uncompiled: the functions inductor is given)."""
    monkeypatch.setattr(compiled, "_BACKEND", None)
    cases = [case for case in conformance.catalogue() if not case.config.mixed]
    report = conformance.run(
        torch_adapter.Backend(strategy=strategy, compiled=True),
        dtypes=("float64", "float32"),
        devices=("cpu",),
        cases=cases,
        checks=("forward", "vjp_input", "vjp_params", "lc_forward"),
    )
    assert not report.failures, report.failures[:3]
    assert compiled.compiled_programs() > 0  # the compiled path ran, not the eager one


def test_inductor_lc_matches_the_reference(wired):
    """Inductor's program for strategy 'lc' (the window-row products as custom operators),
    float32 forward and gradients, and the locally connected layer's float64 forward, against
    lrlc_numpy with the conformance tolerance."""
    case = conformance.Case("compiled-lc", FIXED)
    for dtype, checks in (("float32", ("vjp_input", "vjp_params")), ("float64", ("lc_forward",))):
        report = conformance.run(
            torch_adapter.Backend(strategy="lc", compiled=True),
            dtypes=(dtype,),
            devices=("cpu",),
            cases=[case],
            checks=checks,
        )
        assert not report.failures, report.failures
    assert compiled.compiled_programs() == 2  # the LRLC layer's and the LC layer's


def test_inductor_algorithm1_matches_the_reference(wired):
    """Inductor's program for Algorithm 1 (the combination and bias fused around the
    convolution), float64 gradients. (g under compile: the aot_eager tests above.)"""
    report = conformance.run(
        torch_adapter.Backend(strategy="conv", compiled=True),
        dtypes=("float64",),
        devices=("cpu",),
        cases=[conformance.Case("compiled-conv", FIXED)],
        checks=("vjp_input", "vjp_params"),
    )
    assert not report.failures, report.failures
    assert compiled.compiled_programs() == 1


def test_a_repeated_shape_does_not_compile_again(wired, monkeypatch):
    """torch._dynamo compiles once per shape and grad mode, then reuses the program."""
    from torch._dynamo.utils import counters

    monkeypatch.setattr(compiled, "_BACKEND", "aot_eager")
    layer, x, dy = _data(FIXED)
    layer.strategy = "lc"
    before = counters["stats"]["unique_graphs"]

    def compiles():
        return counters["stats"]["unique_graphs"] - before

    for _ in range(3):
        _run(layer, layer, x, dy)
    assert compiles() == 1
    with torch.no_grad():
        layer(x)
        layer(x)
    assert compiles() == 2  # the inference program, once
    _run(layer, layer, x[:1], dy[:1])  # a new batch size compiles once more
    assert compiles() == 3
    _run(layer, layer, x, dy)
    assert compiles() == 3
    assert compiled.compiled_programs() == 1


def test_each_config_has_its_own_program_and_cache(wired, monkeypatch):
    """More configs than torch._dynamo's per-code-object recompile limit keep compiling
    (one code object per program), none falls back to eager silently."""
    from torch._dynamo.utils import counters

    monkeypatch.setattr(compiled, "_BACKEND", "aot_eager")
    before = counters["stats"]["unique_graphs"]
    limit = torch._dynamo.config.recompile_limit
    for rank in range(1, limit + 3):
        config = L.LRLCConfig(2, 2, 3, rank=rank + 1, input_size=(5, 5), padding="same")
        layer, x, _ = _data(config)
        with torch.no_grad():
            layer(x)
    assert counters["stats"]["unique_graphs"] - before == compiled.compiled_programs() == limit + 2


def test_window_row_operators_pass_opcheck():
    """The custom operators' fake (meta) functions, autograd registration and schemas."""
    positions, terms, out_channels, group, channels, batch = 5, 3, 2, 3, 2, 4
    step = 1
    length = (terms - 1) * 7 + step * (positions - 1) + group
    pixels = torch.randn(length, channels * batch, dtype=torch.float64, requires_grad=True)
    banks = torch.randn(
        terms, positions, out_channels, group * channels, dtype=torch.float64, requires_grad=True
    )
    starts = [7 * t for t in range(terms)]
    torch.library.opcheck(torch.ops.lrlc.window_rows, (pixels, banks, starts, step, group))
    dy = torch.randn(positions, out_channels, batch, dtype=torch.float64)
    torch.library.opcheck(
        torch.ops.lrlc.window_rows_pixels_grad, (banks.detach(), dy, length, starts, step, group)
    )
    torch.library.opcheck(
        torch.ops.lrlc.window_rows_banks_grad,
        (pixels.detach(), dy, starts, step, group, channels),
    )
    assert torch.autograd.gradcheck(
        lambda p, b: torch.ops.lrlc.window_rows(p, b, starts, step, group), (pixels, banks)
    )


def test_selection_rule(monkeypatch):
    monkeypatch.delenv(compiled.ENV_VAR, raising=False)
    assert compiled.enabled("cuda") and not compiled.enabled("cpu")
    monkeypatch.setenv(compiled.ENV_VAR, "0")
    assert not compiled.enabled("cuda")
    monkeypatch.setenv(compiled.ENV_VAR, "1")
    assert compiled.enabled("cpu") and not compiled.cuda_graphs_enabled()
    monkeypatch.setenv(compiled.ENV_VAR, "cudagraphs")
    assert compiled.enabled("cpu") and compiled.cuda_graphs_enabled()
    with compiled.use_compiled(False):
        assert not compiled.enabled("cuda") and not compiled.cuda_graphs_enabled()
    assert compiled.enabled("cpu")
    monkeypatch.setenv(compiled.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="LRLC_TORCH_COMPILED='fast'"):
        compiled.enabled("cpu")


@pytest.mark.parametrize(
    "config, why",
    [
        (L.LRLCConfig(2, 3, kernel_size=[3, 1], rank=2, input_size=(5, 5), padding="same"),
         "mixed basis"),
        (L.LRLCConfig(2, 3, 3, rank=1, input_size=(5, 5), padding="same"), "rank 1 softmax"),
    ],
)  # fmt: skip
def test_eager_fallbacks_make_no_program(wired, config, why):
    layer = LRLC2d.from_lrlc_config(config)
    layer(torch.randn(2, 2, 5, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        LRLC2d.from_lrlc_config(FIXED)(torch.randn(2, 3, 7, 6))
    assert compiled.compiled_programs() == 0, why


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graphs_match_eager(monkeypatch):
    """The input-dependent layer's program captured in a CUDA graph, float32, TF32 off."""
    monkeypatch.setattr(compiled, "_programs", {})
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    layer, x, dy = _data(CONFIG)
    layer, x, dy = layer.cuda(), x.detach().cuda().requires_grad_(True), dy.cuda()
    params = dict(layer.named_parameters())

    def routed(x):
        return compiled.forward(x, params, CONFIG, strategy="conv")

    with compiled.use_compiled(False):
        want = _run(routed, layer, x, dy)
    with compiled.use_compiled(True, cuda_graphs=True):
        for _ in range(3):  # warm-up, capture, replay
            got = _run(routed, layer, x, dy)
            got = (got[0].clone(), [g.clone() for g in got[1]])
    want = (want[0].cpu(), [g.cpu() for g in want[1]])
    got = (got[0].cpu(), [g.cpu() for g in got[1]])
    _compare([want, got], conformance.tolerance("float32", CONFIG, BATCH))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("strategy", ["conv", "lc"])
def test_inductor_on_cuda_passes_conformance(wired, strategy):
    """The default path on CUDA (inductor, Triton): float64, float32 with TF32 off (the
    adapter's rule) and bfloat16, values and gradients, fixed and input-dependent layers."""
    cases = [conformance.Case("compiled-fixed", FIXED), conformance.Case("compiled-idep", CONFIG)]
    report = conformance.run(
        torch_adapter.Backend(strategy=strategy, compiled=True),
        dtypes=("float64", "float32", "bfloat16"),
        devices=("gpu",),
        cases=cases,
        checks=("forward", "vjp_input", "vjp_params", "lc_forward"),
    )
    assert not report.failures, report.failures[:3]
