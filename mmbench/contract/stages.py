"""How a method shapes training beyond one step: the `Stage` of each epoch (a warm-up, a teacher stage, one
modality's turn) and `EpochData`, each epoch's composition of the training split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """A part of training with its own rules, which a balancer names for each epoch (`Balancer.stage`): a
    warm-up, a teacher stage, one modality's turn in a boosting round. The engine applies a stage when it
    changes and records its name in each epoch's record."""

    name: str = "train"
    #: the model of an epoch of this stage may be the one selected on validation (False: a teacher or warm-up
    #: stage whose model is not yet the method's prediction)
    selectable: bool = True
    #: the parameter groups that learn in it, by name or prefix (`encoder`, `encoder.audio`, `fusion`, `head`,
    #: `extra.<name>`; None: all); the others are frozen (`requires_grad` off) for the stage
    trains: frozenset[str] | None = None
    #: start the stage with a new optimizer and learning-rate schedule (a second training run on the same model)
    fresh_optimizer: bool = False


@dataclass(frozen=True)
class EpochData:
    """How one epoch reads the training split (`Balancer.epoch_data`): which samples, how often, with which tag.

    `indices` are positions in the training split, repeats allowed (the engine shuffles them with the cell's
    generator); `tags`, one integer per entry, reach the balancer as `batch.meta["tag"]` (e.g. the modality a
    sample is trained on alone), with `batch.meta["index"]` the sample's position; `group_by_tag` makes every
    batch hold a single tag."""

    indices: Sequence[int]
    tags: Sequence[int] | None = None
    group_by_tag: bool = False

    def __post_init__(self) -> None:
        if self.tags is not None and len(self.tags) != len(self.indices):
            raise ValueError(f"EpochData has {len(self.indices)} indices but {len(self.tags)} tags")


#: the default stage: all of training, every epoch selectable, every parameter learning
TRAIN = Stage()
