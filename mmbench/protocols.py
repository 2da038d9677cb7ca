"""The four protocols that are the core's whole vocabulary: Task, Encoder, Fusion, Balancer.

Plugins subclass these. The core never names a concrete method, model or dataset; everything it knows
about a component comes from the class attributes declared here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn
from torch.utils.data import Dataset

if TYPE_CHECKING:
    from mmbench.context import EpochStats, TrainContext


class Incompatible(Exception):
    """Raised while building a cell whose parts cannot work together; the runner records it as skipped."""


class Params(BaseModel):
    """Base for every component's parameter model: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(Params):
    """For components without parameters."""


class EpochWindowParams(Params):
    """Parameters of a method that acts only inside an inclusive window of epochs (counted from 0).

    Subclasses re-declare `modulation_ends` to give their paper's default.
    """

    modulation_starts: int = Field(0, ge=0, description="first epoch (from 0, inclusive) the method acts in")
    modulation_ends: int | None = Field(None, ge=0, description="last epoch (inclusive); null = to the end")

    @model_validator(mode="after")
    def _non_empty_window(self) -> EpochWindowParams:
        if self.modulation_ends is not None and self.modulation_ends < self.modulation_starts:
            raise ValueError(f"modulation_ends ({self.modulation_ends}) < modulation_starts "
                             f"({self.modulation_starts}): the window would be empty")
        return self

    def active(self, epoch: int) -> bool:
        end = self.modulation_ends
        return self.modulation_starts <= epoch and (end is None or epoch <= end)


# --------------------------------------------------------------------------------------------- Task


@dataclass(frozen=True)
class ModalitySpec:
    """One input modality: its name, what kind of signal it is, and the shape of one sample's tensor."""

    name: str
    kind: str
    shape: tuple[int, ...]


class Task:
    """A dataset plus its task definition.

    Constructing a task must be cheap (no data is read) so grids can be validated before anything trains;
    `splits()` reads the data. Each split is a Dataset yielding `{modality: tensor, ..., "label": tensor}`.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    metrics: ClassVar[tuple[str, ...]] = ("accuracy", "macro_f1")
    primary_metric: ClassVar[str] = "accuracy"
    multilabel: ClassVar[bool] = False

    def __init__(self, params: Params, root: Path | None = None) -> None:
        self.params = params
        self.root = root

    @property
    def modalities(self) -> dict[str, ModalitySpec]:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        raise NotImplementedError

    def splits(self) -> dict[str, Dataset]:
        """Return the `train`, `val` and `test` datasets."""
        raise NotImplementedError

    def augment(self, modality: str, x: Tensor, generator: torch.Generator) -> Tensor:
        """An augmented view of one sample of `modality` (used by consistency-based balancers)."""
        raise NotImplementedError(f"task {self.name!r} defines no augmentation")

    @classmethod
    def has_augmentation(cls) -> bool:
        return cls.augment is not Task.augment


# ------------------------------------------------------------------------------------------ Encoder


class Encoder(nn.Module):
    """One modality's network: input tensor `(B, *shape)` -> pooled features `(B, out_dim)`."""

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    #: modality kinds this encoder accepts (None: any)
    accepts: ClassVar[frozenset[str] | None] = None

    def __init__(self, modality: ModalitySpec, params: Params) -> None:
        super().__init__()
        self.modality = modality
        self.params = params
        self.out_dim: int = 0

    def blocks(self) -> list[nn.Module]:
        """The encoder as a sequence of blocks whose composition is `forward`, for fusions that work inside
        the encoders (intermediate fusion). Optional."""
        raise NotImplementedError(f"encoder {self.name!r} does not expose its blocks")


# ------------------------------------------------------------------------------------------- Fusion


@dataclass
class FusionOutput:
    """Class logits, plus each modality's exact additive share of them when the fusion can offer it."""

    logits: Tensor
    contributions: dict[str, Tensor] = field(default_factory=dict)


class Fusion(nn.Module):
    """Combines pooled per-modality features into class logits.

    A late fusion only sees the pooled features. An intermediate fusion (`drives_encoders = True`) also
    runs the encoders block by block in `encode` (using `Encoder.blocks()`), exchanging information between
    modalities inside them; its `forward` still maps the pooled features to logits.

    A fusion with `offers_contributions = True` returns, for every modality, logits that are exactly that
    modality's part of the fused logits (the sum over modalities equals the logits); balancers such as OGM
    read them. Fusions that cannot split their output exactly must leave `contributions` empty.
    """

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    offers_contributions: ClassVar[bool] = False
    #: the fusion needs every modality's feature to have the same size
    equal_dims: ClassVar[bool] = False
    #: an intermediate fusion: it runs the encoders itself (`encode`) and exchanges information inside them
    drives_encoders: ClassVar[bool] = False

    def __init__(self, feature_dims: Mapping[str, int], num_classes: int, params: Params) -> None:
        super().__init__()
        self.feature_dims = dict(feature_dims)
        self.num_classes = num_classes
        self.params = params

    def forward(self, features: Mapping[str, Tensor]) -> FusionOutput:  # pragma: no cover - protocol
        raise NotImplementedError

    def bind(self, encoders: Mapping[str, Encoder]) -> None:
        """For fusions with `drives_encoders = True`: called once with the built encoders, before the
        optimizer exists, so the fusion can size its inner modules from the encoders' blocks (or raise
        `Incompatible`)."""

    def encode(self, inputs: Mapping[str, Tensor], encoders: Mapping[str, Encoder]) -> dict[str, Tensor]:
        """Pooled features of every modality, for fusions with `drives_encoders = True`."""
        raise NotImplementedError(f"fusion {self.name!r} does not drive the encoders")

    def classifier_blocks(self) -> dict[str, tuple[Tensor, Tensor | None]]:
        """Per-modality `(weight block, bias share)` of the final linear layer, for fusions that have one."""
        raise NotImplementedError(f"fusion {self.name!r} has no per-modality linear blocks")


# ----------------------------------------------------------------------------------------- Balancer


@dataclass(frozen=True)
class Requirements:
    """What a balancer needs from the rest of a cell; the runner skips a cell that cannot provide it."""

    unimodal_heads: bool = False
    fusion_contributions: bool = False
    #: documents the need; the engine validates every epoch, so it is always met
    validation_each_epoch: bool = False
    augmented_views: bool = False
    equal_feature_dims: bool = False
    single_label: bool = False
    fusions: frozenset[str] | None = None
    #: the method forms its own predictions and never uses the cell's fusion (a grid pairs it with its
    #: first fusion only, instead of repeating identical runs)
    ignores_fusion: bool = False
    min_modalities: int = 2
    max_modalities: int | None = None


@dataclass
class ModelOutput:
    """Everything one forward pass offers the engine and the balancers."""

    logits: Tensor
    features: dict[str, Tensor]
    contributions: dict[str, Tensor] = field(default_factory=dict)
    unimodal: dict[str, Tensor] = field(default_factory=dict)


class Balancer:
    """The method under study, hooked into the training step.

    Hook points, in the order the engine calls them: `extra_modules` (before the optimizer exists),
    `setup` (once, after the model and optimizer exist) -> per epoch: `on_epoch_start` -> per step:
    `train_step`, whose default is zero_grad -> forward -> `loss` -> backward -> `after_backward` ->
    `optimizer_step` -> `on_epoch_end` (with the epoch's train and validation statistics).
    Methods that change the whole step (two-pass SAM-style, alternating per-modality steps) override
    `train_step`. `eval_logits` lets a method change how predictions are formed at evaluation.
    `coefficients` reports the method's internal state once per epoch; per-step code must not synchronise
    with the device (no `.item()`), so accumulate tensors and convert them there.
    """

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    requires: ClassVar[Requirements] = Requirements()
    #: per-task parameter defaults from the method's paper/official configs, applied under the grid's params
    task_defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, params: Params) -> None:
        self.params = params

    def extra_modules(self, feature_dims: dict[str, int], num_classes: int) -> dict[str, nn.Module]:
        """Trainable modules the method adds to the model (e.g. a shared head).

        They become `model.extras[<name>]`, get their own optimizer group `extra.<name>`, and are saved with
        the model when it is selected on validation.
        """
        return {}

    def setup(self, ctx: TrainContext) -> None:
        """Called once after the model and optimizer are built."""

    def on_epoch_start(self, ctx: TrainContext) -> None:
        """Called before the first step of each epoch."""

    def loss(self, ctx: TrainContext, batch: dict[str, Tensor], out: ModelOutput) -> Tensor:
        """The training loss; the default is the task loss on the fused logits."""
        return ctx.task_loss(out.logits, batch["label"])

    def after_backward(self, ctx: TrainContext, batch: dict[str, Tensor], out: ModelOutput) -> None:
        """Gradient modulation: runs after `backward()` and before the optimizer step."""

    def optimizer_step(self, ctx: TrainContext) -> None:
        ctx.optimizer.step()

    def train_step(self, ctx: TrainContext, batch: dict[str, Tensor]) -> tuple[Tensor, ModelOutput]:
        """One optimisation step; returns the detached loss and the forward output."""
        ctx.optimizer.zero_grad(set_to_none=True)
        with ctx.autocast():
            out = ctx.model(batch)
            loss = self.loss(ctx, batch, out)
        loss.backward()
        self.after_backward(ctx, batch, out)
        self.optimizer_step(ctx)
        return loss.detach(), out

    def on_epoch_end(self, ctx: TrainContext, stats: EpochStats) -> None:
        """Called after the epoch's validation, with its statistics."""

    def eval_logits(self, ctx: TrainContext, out: ModelOutput) -> Tensor:
        """The logits predictions are made from at evaluation."""
        return out.logits

    def coefficients(self) -> dict[str, float]:
        """The method's coefficients for the epoch that just ended (called once per epoch)."""
        return {}
