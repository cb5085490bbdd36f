"""The paper's training protocol (Section 4): Adam, linear warm-up then cosine decay, no
augmentation, no regularisation. Every number is a field of `TrainingConfig`."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import nn

from .checks import build_dataclass, check_int, check_mapping, check_number, check_type
from .data import Dataset, Split


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """epochs, batch_size, peak_lr and warmup_epochs default to the paper's values."""

    epochs: int = 150
    batch_size: int = 512
    peak_lr: float = 0.01
    warmup_epochs: int = 10

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            check_int(f"TrainingConfig.{name}", getattr(self, name), minimum=1)
        check_int("TrainingConfig.warmup_epochs", self.warmup_epochs, minimum=0)
        if self.warmup_epochs > self.epochs:
            raise ValueError(
                f"TrainingConfig.warmup_epochs must lie in [0, epochs={self.epochs}], "
                f"got {self.warmup_epochs}"
            )
        check_number("TrainingConfig.peak_lr", self.peak_lr, positive=True)

    @classmethod
    def from_dict(cls, fields: dict, where: str = "TrainingConfig") -> TrainingConfig:
        """From a config file's dict; `where` names the file and key in errors."""
        return build_dataclass(cls, check_mapping(where, fields), where)


def learning_rate(step: int, *, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Learning rate for optimiser step `step` (0-based).

    Linear warm-up reaching peak_lr at the last warm-up step, then cosine decay from peak_lr
    towards zero over the remaining steps.
    """
    if not 0 <= step < total_steps:
        raise ValueError(f"step {step} outside the schedule's range [0, {total_steps})")
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def select_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else the CPU; 'cpu', 'cuda' and 'cuda:N' are taken as
    given, and refused when that device is absent."""
    check_type("device", device, str)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    kind, colon, index = device.partition(":")
    if kind != "cuda" or (colon and not index.isdigit()):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but no CUDA device is available")
    if index and int(index) >= torch.cuda.device_count():
        raise ValueError(
            f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) "
            "are present"
        )
    return torch.device(device)


def _batches(n: int, batch_size: int, generator: torch.Generator | None):
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return torch.split(order, batch_size)


@torch.no_grad()
def accuracy(model: nn.Module, split: Split, device: torch.device, batch_size: int = 1024) -> float:
    """Top-1 accuracy in percent, with batch norm in inference mode."""
    model.eval()
    images = torch.from_numpy(split.images)
    labels = torch.from_numpy(split.labels)
    correct = 0
    for idx in _batches(len(split), batch_size, None):
        logits = model(images[idx].to(device))
        correct += (logits.argmax(dim=1).cpu() == labels[idx]).sum().item()
    return 100.0 * correct / len(split)


def train(
    model: nn.Module,
    dataset: Dataset,
    config: TrainingConfig,
    *,
    seed: int,
    device: torch.device,
    progress=None,
    after_epoch=None,
) -> dict:
    """Train `model` in place on dataset.train; return final accuracies on every split.

    `seed` fixes the order of the minibatches (the model's initialisation is seeded by its
    builder). `progress`, when given, is a tqdm bar advanced once per epoch. `after_epoch`,
    when given, is called as after_epoch(epoch, model, loss) after each epoch (1-based), e.g.
    to record training curves; it must leave the model's parameters alone.
    """
    model.to(device)
    images = torch.from_numpy(dataset.train.images)
    labels = torch.from_numpy(dataset.train.labels)
    steps_per_epoch = math.ceil(len(dataset.train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = steps_per_epoch * config.warmup_epochs
    optimizer = torch.optim.Adam(model.parameters(), lr=config.peak_lr)
    generator = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    step = 0
    losses = []
    for _ in range(config.epochs):
        model.train()
        epoch_loss = 0.0
        for idx in _batches(len(images), config.batch_size, generator):
            lr = learning_rate(
                step, total_steps=total_steps, warmup_steps=warmup_steps, peak_lr=config.peak_lr
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(images[idx].to(device)), labels[idx].to(device))
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item() * len(idx)
            step += 1
        losses.append(epoch_loss / len(images))
        if not np.isfinite(losses[-1]):
            raise FloatingPointError(f"training diverged: epoch {len(losses)} loss {losses[-1]}")
        if progress is not None:
            progress.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            progress.update(1)
        if after_epoch is not None:
            after_epoch(len(losses), model, losses[-1])
    return {
        "train_accuracy": accuracy(model, dataset.train, device),
        "val_accuracy": accuracy(model, dataset.val, device),
        "test_accuracy": accuracy(model, dataset.test, device),
        "final_loss": losses[-1],
        "losses": losses,
    }
