"""What the engine hands a balancer at every hook: the model, optimizer, position in training, history."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from mmbench.model import MultimodalModel
from mmbench.protocols import Task


@dataclass
class SplitStats:
    """One evaluation of a split: loss, the task's metrics, and per-modality / missing-modality metrics."""

    loss: float
    metrics: dict[str, float]
    unimodal: dict[str, dict[str, float]] = field(default_factory=dict)
    missing_modality: dict[str, dict[str, float]] = field(default_factory=dict)
    unimodal_loss: dict[str, float] = field(default_factory=dict)


@dataclass
class EpochStats:
    """The record of one epoch, kept in `TrainContext.history` and written to the run directory."""

    epoch: int
    train_loss: float
    train_metrics: dict[str, float]
    val: SplitStats | None
    lr: float
    coefficients: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainContext:
    """State shared by the engine and the balancer during one cell's training."""

    model: MultimodalModel
    optimizer: torch.optim.Optimizer
    task: Task
    device: torch.device
    epochs: int
    train_loader: DataLoader
    val_loader: DataLoader
    task_loss: Callable[[Tensor, Tensor], Tensor]
    evaluate: Callable[..., SplitStats]
    autocast_dtype: torch.dtype | None = None
    epoch: int = 0
    step: int = 0
    step_in_epoch: int = 0
    history: list[EpochStats] = field(default_factory=list)
    generator: torch.Generator | None = None

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on accelerators, nothing on CPU (keeps CPU runs bit-for-bit repeatable)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)
