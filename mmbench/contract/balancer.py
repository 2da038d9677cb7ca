"""`Balancer`: the method under study, hooked into the training step, and its `Requirements` of a cell."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from mmbench.contract.batch import Batch, ModelOutput
from mmbench.contract.context import TrainContext
from mmbench.contract.stages import TRAIN, EpochData, Stage
from mmbench.contract.task import Task
from mmbench.schema.params import NoParams
from mmbench.schema.params import Params as AnyParams  # `Params` is each class's own attribute
from mmbench.schema.results import EpochRecord


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
    #: the engine keeps a copy of the initial parameters (`TrainContext.initial_state`), for methods that move
    #: parameters back toward them
    initial_weights: bool = False
    #: a late fusion the method can apply again to features it recombines (`ctx.model.fusion(features)`): not an
    #: intermediate fusion nor one over token sequences
    late_fusion: bool = False


class Balancer:
    """The method under study, hooked into the training step.

    Hook points, in the order the engine calls them: `extra_modules` (before the optimizer exists),
    `setup` (once, after the model and optimizer exist) -> per epoch: `stage` -> `on_epoch_start` ->
    `epoch_data` -> per step: `train_step`, whose default is zero_grad -> forward -> `loss` -> backward ->
    `after_backward` -> `optimizer_step` -> `on_epoch_end` (with the epoch's train and validation statistics).
    Methods that change the whole step (two-pass SAM-style, alternating per-modality steps) override
    `train_step`. `eval_logits` lets a method change how predictions are formed at evaluation.
    `coefficients` reports the method's internal state once per epoch; per-step code must not synchronise
    with the device (no `.item()`), so accumulate tensors and convert them there.

    Beyond one step, through the context: `ctx.add_module` (a module added in the middle of training, e.g. a new
    classifier branch), `ctx.initial_state` (with `Requirements.initial_weights`), `ctx.snapshot()` (the
    parameters at a moment, e.g. an epoch's start), `ctx.reset_optimizer_state`, `ctx.split_batches` (a
    pass over a split in its own order, e.g. to value each sample).
    """

    name: ClassVar[str]
    Params: ClassVar[type[AnyParams]] = NoParams
    requires: ClassVar[Requirements] = Requirements()
    #: per-task parameter defaults from the method's paper/official configs, applied under the grid's params
    task_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    #: plain training that the others are measured against (a grid's `baseline` key can name another)
    is_baseline: ClassVar[bool] = False
    #: a reference point rather than a method (each modality trained alone): shown apart, never ranked
    is_reference: ClassVar[bool] = False
    #: extra modules (`extra_modules` names) the engine's optimizer leaves alone: the method steps them with an
    #: optimizer of its own (e.g. auxiliary classifiers trained at another learning rate)
    separately_optimized: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, params: AnyParams) -> None:
        self.params = params

    @classmethod
    def check(cls, params: AnyParams, task: Task) -> list[str]:
        """Problems of these parameters with this task (e.g. a per-modality setting naming a modality the task
        lacks). `mmbench validate` reports them before anything trains; the engine refuses to train with any."""
        return []

    def extra_modules(self, feature_dims: dict[str, int], num_classes: int) -> dict[str, nn.Module]:
        """Trainable modules the method adds to the model (e.g. a shared head).

        They become `model.extras[<name>]`, get their own optimizer group `extra.<name>`, and are saved with
        the model when it is selected on validation.
        """
        return {}

    def setup(self, ctx: TrainContext) -> None:
        """Called once after the model and optimizer are built."""

    def stage(self, ctx: TrainContext) -> Stage:
        """The stage of the epoch about to start (`ctx.epoch`); the default is one stage throughout."""
        return TRAIN

    def on_epoch_start(self, ctx: TrainContext) -> None:
        """Called before the first step of each epoch."""

    def epoch_data(self, ctx: TrainContext) -> EpochData | None:
        """How this epoch reads the training split (called after `on_epoch_start`); None: every sample once."""
        return None

    def loss(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> Tensor:
        """The training loss; the default is the task loss on the fused logits."""
        return ctx.task_loss(out.fused_logits(), batch.label)

    def after_backward(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> None:
        """Gradient modulation: runs after `backward()` and before the optimizer step."""

    def optimizer_step(self, ctx: TrainContext) -> None:
        ctx.optimizer.step()

    def train_step(self, ctx: TrainContext, batch: Batch) -> tuple[Tensor, ModelOutput]:
        """One optimisation step; returns the detached loss and the forward output."""
        ctx.optimizer.zero_grad(set_to_none=True)
        with ctx.autocast():
            out = ctx.model(batch.inputs)
            loss = self.loss(ctx, batch, out)
        loss.backward()
        self.after_backward(ctx, batch, out)
        self.optimizer_step(ctx)
        return loss.detach(), out

    def on_epoch_end(self, ctx: TrainContext, stats: EpochRecord) -> None:
        """Called after the epoch's validation, with its record (losses, validation scores, timing)."""

    def eval_logits(self, ctx: TrainContext, out: ModelOutput) -> Tensor:
        """The logits predictions are made from at evaluation."""
        return out.fused_logits()

    def coefficients(self) -> dict[str, float]:
        """The method's coefficients for the epoch that just ended (called once per epoch)."""
        return {}
