"""The training recipe of a cell: optimizer, scheduler, epochs, batch size, device."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveFloat, PositiveInt

from mmbench.protocols import Params


class OptimizerConfig(Params):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: PositiveFloat = 1e-2
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD only")
    weight_decay: float = Field(0.0, ge=0.0)
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam/AdamW only")


class SchedulerConfig(Params):
    name: Literal["none", "step", "cosine"] = "none"
    step_size: PositiveInt = Field(30, description="epochs between decays (step)")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="decay factor (step)")


class TrainRecipe(Params):
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 64
    eval_batch_size: PositiveInt | None = None
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    device: str = Field("auto", description="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:N'")
    bf16: bool = Field(True, description="bf16 autocast on CUDA; CPU always runs float32")
    num_workers: int = Field(0, ge=0)


def build_optimizer(config: OptimizerConfig, groups: dict[str, list[torch.nn.Parameter]]) -> torch.optim.Optimizer:
    """One optimizer param group per declared model group, each tagged with its `name`."""
    param_groups = [{"params": params, "name": name} for name, params in groups.items() if params]
    if config.name == "sgd":
        return torch.optim.SGD(param_groups, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    cls = torch.optim.Adam if config.name == "adam" else torch.optim.AdamW
    return cls(param_groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)


def build_scheduler(config: SchedulerConfig, optimizer: torch.optim.Optimizer, epochs: int):
    """An epoch-level learning-rate scheduler, or None."""
    if config.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    if config.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return device
