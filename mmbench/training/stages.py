"""A balancer's stages applied to the model and optimizer, and the extra modules a stage or a step may add.

A stage names the parameter groups that learn in it; the others are frozen for the stage. Parameters an encoder
froze itself (a fixed pretrained trunk) stay frozen whatever the stage. A stage may also start over with a new
optimizer and learning-rate schedule.
"""

from __future__ import annotations

from torch import nn

from mmbench.contract.balancer import Balancer
from mmbench.contract.stages import Stage
from mmbench.training.model import MultimodalModel


def learns(group: str, stage: Stage) -> bool:
    """Whether parameter group `group` (e.g. `encoder.audio`) learns in `stage` (its `trains`: names or prefixes)."""
    return stage.trains is None or any(group == name or group.startswith(name + ".") for name in stage.trains)


def freeze_for(model: MultimodalModel, stage: Stage, fixed: set[nn.Parameter]) -> None:
    """Let exactly the stage's groups learn, never the parameters in `fixed` (frozen by their module)."""
    for group, params in model.parameter_groups().items():
        for p in params:
            p.requires_grad_(learns(group, stage) and p not in fixed)


def optimized_groups(model: MultimodalModel, balancer: type[Balancer]) -> dict[str, list[nn.Parameter]]:
    """The model's parameter groups the engine's optimizer steps: all but the extras a balancer steps itself."""
    own = {f"extra.{name}" for name in balancer.separately_optimized}
    return {group: params for group, params in model.parameter_groups().items() if group not in own}
