"""The recipe's torch side: optimizer, learning-rate scheduler and device."""

from __future__ import annotations

import torch

from mmbench.schema.recipe import OptimizerConfig, SchedulerConfig


def build_optimizer(config: OptimizerConfig, groups: dict[str, list[torch.nn.Parameter]]) -> torch.optim.Optimizer:
    """One optimizer param group per declared model group, each tagged with its `name`.

    Always torch's multi-tensor (`foreach`) update, which torch picks by itself on CUDA only: on the CPU it
    gives the same bits with one call per group instead of one per parameter (an SGD step of the quickstart's
    model in 0.76× the time, `benchmarks/README.md`)."""
    param_groups = [{"params": params, "name": name} for name, params in groups.items() if params]
    if config.name == "sgd":
        return torch.optim.SGD(param_groups, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, foreach=True)
    cls = torch.optim.Adam if config.name == "adam" else torch.optim.AdamW
    return cls(param_groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay, foreach=True)


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
