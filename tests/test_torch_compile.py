"""lrlc_torch under torch.compile: compiled forward and gradients equal eager ones.

One small input-dependent config (it runs every part: the single basis convolution, the
combination, the network g with its resize matrices, the biases). The backend is
"aot_eager": it traces the whole graph with TorchDynamo (fullgraph=True, so any graph
break fails the test) and AOTAutograd, without inductor's C++ code generation, which
takes over 30 s on this project's 2-core CI machines.
"""

import torch

import conformance
import lrlc_numpy as L
from lrlc_torch import LRLC2d

CONFIG = L.LRLCConfig(
    2, 3, 3, rank=2, input_size=(7, 6), stride=2, padding="same", combining="full",
    input_dependent=True,
)  # fmt: skip
BATCH = 2


def test_compiled_equals_eager():
    x_nhwc, params, dy_nhwc = conformance.case_data(conformance.Case("compile", CONFIG, BATCH), 0)
    layer = LRLC2d.from_lrlc_config(CONFIG)  # float32, the usual training dtype
    layer.load_neutral_params(params)
    x = torch.from_numpy(x_nhwc).float().permute(0, 3, 1, 2).requires_grad_(True)
    dy = torch.from_numpy(dy_nhwc).float().permute(0, 3, 1, 2)
    tol = conformance.tolerance("float32", CONFIG, BATCH)

    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    results = []
    for module in (layer, compiled):
        y = module(x)
        grads = torch.autograd.grad(y, (x, *layer.parameters()), dy)
        results.append((y.detach(), grads))
    (want_y, want_grads), (got_y, got_grads) = results
    assert conformance.relative_error(got_y.numpy(), want_y.numpy()) <= tol
    for got, want in zip(got_grads, want_grads):
        assert conformance.relative_error(got.numpy(), want.numpy()) <= tol
