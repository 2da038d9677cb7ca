"""`TrainContext`: what the engine hands a balancer at every hook — the model, optimizer, position, history."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from mmbench.contract.model import Model
from mmbench.contract.task import Task
from mmbench.schema.results import EpochRecord, SplitScores


@dataclass
class TrainContext:
    """State shared by the engine and the balancer during one cell's training."""

    model: Model
    optimizer: torch.optim.Optimizer
    task: Task
    device: torch.device
    epochs: int
    train_loader: DataLoader
    val_loader: DataLoader
    task_loss: Callable[[Tensor, Tensor], Tensor]
    #: metrics of the current model on a loader (multimodal, each modality alone, each missing)
    evaluate: Callable[[DataLoader], SplitScores]
    autocast_dtype: torch.dtype | None = None
    epoch: int = 0
    step: int = 0
    step_in_epoch: int = 0
    history: list[EpochRecord] = field(default_factory=list)
    generator: torch.Generator | None = None

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on accelerators, nothing on CPU (keeps CPU runs bit-for-bit repeatable)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)
