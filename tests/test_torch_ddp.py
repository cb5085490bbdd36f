"""A DistributedDataParallel step over 2 CPU processes (gloo, loopback) gives the gradients
of one process on the whole batch."""

import datetime
import socket

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import conformance
import lrlc_numpy as L
from lrlc_torch import LRLC2d

WORLD_SIZE = 2
BATCH = 4  # split evenly, so the mean of per-process mean losses is the full-batch mean
CONFIGS = (
    L.LRLCConfig(2, 3, 3, rank=2, input_size=(7, 6), padding="same"),
    L.LRLCConfig(
        3, 2, 3, rank=2, input_size=(7, 6), stride=2, padding="same", combining="full",
        input_dependent=True,
    ),
)  # fmt: skip


def model_and_data():
    """The same model and batch in every process: parameters and data from fixed seeds."""
    layers = []
    for seed, config in enumerate(CONFIGS):
        _, params, _ = conformance.case_data(conformance.Case("ddp", config), seed)
        layer = LRLC2d.from_lrlc_config(config, dtype=torch.float64)
        layer.load_neutral_params(params)
        layers += [layer, nn.ReLU()]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 2, 7, 6, generator=generator, dtype=torch.float64)
    target = torch.randn(BATCH, 2, 4, 3, generator=generator, dtype=torch.float64)
    return nn.Sequential(*layers[:-1]), x, target


def gradients(model, x, target):
    nn.functional.mse_loss(model(x), target).backward()
    return {name: p.grad.numpy() for name, p in model.named_parameters()}


def worker(rank, port, out_path):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=datetime.timedelta(seconds=120),
    )
    try:
        model, x, target = model_and_data()
        shard = slice(rank * BATCH // WORLD_SIZE, (rank + 1) * BATCH // WORLD_SIZE)
        grads = gradients(nn.parallel.DistributedDataParallel(model), x[shard], target[shard])
        if rank == 0:
            np.savez(out_path, **grads)
        # Both ranks done before either tears gloo down: a rank destroying its group while
        # its peer still has a connection open aborted once in CI ("terminate called without
        # an active exception", SIGABRT in rank 0 after the gradients were saved).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_gradients_equal_single_process(tmp_path):
    out_path = tmp_path / "ddp_grads.npz"
    mp.spawn(worker, args=(free_port(), str(out_path)), nprocs=WORLD_SIZE, join=True)
    model, x, target = model_and_data()
    want = gradients(model, x, target)
    with np.load(out_path, allow_pickle=False) as got:
        assert set(got.files) == {f"module.{name}" for name in want}
        tol = max(conformance.tolerance("float64", c, BATCH) for c in CONFIGS)
        for name, value in want.items():
            assert np.abs(value).max() > 0, name  # every parameter takes part
            assert conformance.relative_error(got[f"module.{name}"], value) <= tol, name
