"""`TrainContext`: what the engine hands a balancer at every hook — the model, optimizer, position, history, and
the means to shape training beyond one step."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from mmbench.contract.batch import Batch
from mmbench.contract.model import Model
from mmbench.contract.stages import TRAIN, Stage
from mmbench.contract.task import Task
from mmbench.schema.results import EpochRecord, SplitScores


class Batches(Protocol):
    """A pass over a split: its batches on the device, ready for the model, and how many there are."""

    def __iter__(self) -> Iterator[Batch]: ...

    def __len__(self) -> int: ...


@dataclass
class TrainContext:
    """State shared by the engine and the balancer during one cell's training."""

    model: Model
    optimizer: torch.optim.Optimizer
    task: Task
    device: torch.device
    epochs: int
    #: the current epoch's training batches
    train_loader: Batches
    val_loader: Batches
    task_loss: Callable[[Tensor, Tensor], Tensor]
    #: metrics of the current model on a pass over a split (multimodal, each modality alone, each missing)
    evaluate: Callable[[Batches], SplitScores]
    autocast_dtype: torch.dtype | None = None
    epoch: int = 0
    step: int = 0
    step_in_epoch: int = 0
    history: list[EpochRecord] = field(default_factory=list)
    generator: torch.Generator | None = None
    #: the stage of the current epoch (`Balancer.stage`)
    stage: Stage = TRAIN
    #: the model's parameters before training, by name (with `Requirements.initial_weights`; else empty)
    initial_state: dict[str, Tensor] = field(default_factory=dict)
    #: a pass of the balancer's own over a split: `split_batches("train")` reads it in its own order,
    #: `split_batches("train", indices=[...], batch_size=n)` the listed positions in that order (a subset, a
    #: shuffle), batches on the device with `meta["index"]`, without the epoch's composition or augmented views;
    #: each split as it is read in training or evaluation (the training split with its random transforms)
    split_batches: Callable[..., Batches] = field(default=lambda split, indices=None, batch_size=None: [])
    #: how many samples the training split holds
    train_size: int = 0

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on accelerators, nothing on CPU (keeps CPU runs bit-for-bit repeatable)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def add_module(self, name: str, module: nn.Module, optimize: bool = True, **group: Any) -> None:
        """Add a trainable module in the middle of training (e.g. a classifier branch a method grows): it joins
        `model.extras[name]` (saved with the selected model; the engine restores the extras of the selected
        epoch) and, with `optimize`, the optimizer as parameter group `extra.<name>` with `group`'s settings (e.g.
        `lr=`) over the optimizer's defaults. Read such modules back from `ctx.model.extras`."""
        if name in self.model.extras:
            raise ValueError(f"the model already has an extra module {name!r}")
        self.model.extras[name] = module.to(self.device)
        if optimize:
            self.optimizer.add_param_group({"params": list(module.parameters()), "name": f"extra.{name}", **group})

    def snapshot(self, prefix: str = "") -> dict[str, Tensor]:
        """Detached copies of the parameters whose name starts with `prefix` (e.g. "encoders.audio"), by name."""
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if n.startswith(prefix)}

    def reset_optimizer_state(self, params: list[nn.Parameter]) -> None:
        """Forget the optimizer's state (momentum, Adam's moments) of these parameters."""
        for p in params:
            self.optimizer.state.pop(p, None)
