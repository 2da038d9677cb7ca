"""The training engine: builds a cell's model, runs its epochs with the balancer's hooks, evaluates.

Reading order: `train()` at the bottom is the whole life of a cell; `_run_epoch` is one epoch; `step` one step.
Evaluation (`evaluation.py`) turns a split into metrics; `batches.py` makes the batches; `stages.py` applies a
balancer's stages.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmbench.contract.balancer import Balancer
from mmbench.contract.batch import Batch
from mmbench.contract.context import TrainContext
from mmbench.contract.encoder import Encoder
from mmbench.contract.errors import Incompatible
from mmbench.contract.fusion import Fusion
from mmbench.contract.stages import Stage
from mmbench.contract.task import Task
from mmbench.data.fake import FAKE_SIZES, fake_splits
from mmbench.schema.params import Params
from mmbench.schema.recipe import TrainRecipe
from mmbench.schema.results import EpochRecord, SplitScores
from mmbench.training import acceleration, profiling
from mmbench.training import metrics as metric_lib
from mmbench.training.batches import CellData, collate
from mmbench.training.evaluation import coalition_scores, evaluate, finite
from mmbench.training.model import MultimodalModel
from mmbench.training.optim import build_optimizer, build_scheduler, resolve_device
from mmbench.training.stages import freeze_for, optimized_groups

__all__ = ["CellComponents", "TrainOutcome", "build_model", "collate", "seed_everything", "step", "task_loss_fn",
           "train"]


@dataclass
class CellComponents:
    """The resolved parts of one cell: classes with validated parameters."""

    task: Task
    encoders: dict[str, tuple[type[Encoder], Params]]
    fusion: tuple[type[Fusion], Params] | None  # None for a balancer that forms its own predictions
    balancer: tuple[type[Balancer], Params]
    #: train on generated stand-ins of the task's shapes (`mmbench.data.fake`) instead of its data
    fake_data: bool = False
    #: how many generated samples each split holds when `fake_data`
    fake_sizes: Mapping[str, int] = field(default_factory=lambda: dict(FAKE_SIZES))


@dataclass
class TrainOutcome:
    status: str  # "ok" | "diverged"
    best_epoch: int | None = None
    diverged_epoch: int | None = None
    #: what was non-finite when the cell diverged: the training loss, or the validation loss (non-finite weights)
    divergence: str | None = None
    test: SplitScores | None = None
    val: SplitScores | None = None
    history: list[EpochRecord] = field(default_factory=list)
    profile: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def task_loss_fn(multilabel: bool) -> Callable[[Tensor, Tensor], Tensor]:
    if multilabel:
        return lambda logits, y: torch.nn.functional.binary_cross_entropy_with_logits(logits, y.float())
    return torch.nn.functional.cross_entropy


def build_model(components: CellComponents, balancer: Balancer) -> MultimodalModel:
    task = components.task
    encoders = {m: cls(task.modalities[m], params) for m, (cls, params) in components.encoders.items()}
    dims = {m: e.out_dim for m, e in encoders.items()}
    fusion = None
    if components.fusion is not None and not balancer.requires.ignores_fusion:
        fusion_cls, fusion_params = components.fusion
        if fusion_cls.equal_dims and len(set(dims.values())) > 1:
            raise Incompatible(f"fusion {fusion_cls.name!r} needs equal feature sizes; the encoders give {dims}")
        fusion = fusion_cls(dims, task.num_classes, fusion_params)
        if fusion.drives_encoders:
            fusion.bind(encoders)
    if balancer.requires.equal_feature_dims and len(set(dims.values())) > 1:
        raise Incompatible(f"{balancer.name} needs equal feature sizes; the encoders give {dims}")
    return MultimodalModel(encoders, fusion, task.num_classes, unimodal_heads=balancer.requires.unimodal_heads,
                           extras=balancer.extra_modules(dims, task.num_classes))


@dataclass
class EpochTotals:
    """What an epoch's steps accumulate, on the device: the summed loss, the train logits and labels."""

    loss: Tensor
    logits: list[Tensor] = field(default_factory=list)
    labels: list[Tensor] = field(default_factory=list)


def step(ctx: TrainContext, balancer: Balancer, batch: Batch, clock: profiling.StepClock, totals: EpochTotals) -> None:
    """One training step as the engine runs it: the balancer's step on a batch already on the device, then the
    bookkeeping.

    It never reads a tensor back to the host (the contract test runs it under `forbid_host_sync`), so on a GPU
    the host queues the next steps while this one computes.
    """
    started = clock.start()
    loss, out = balancer.train_step(ctx, batch)
    clock.stop(started, batch_size=batch.label.shape[0])
    totals.loss += loss.float()
    totals.logits.append(balancer.eval_logits(ctx, out).detach().float())
    totals.labels.append(batch.label)


def _run_epoch(ctx: TrainContext, balancer: Balancer, clock: profiling.StepClock,
               flops: profiling.StepFlops) -> tuple[Tensor, Tensor, Tensor]:
    """Train one epoch (the cell's first step counted by `flops`); returns the summed loss (on device), and the
    epoch's train logits and labels."""
    ctx.model.train()
    totals = EpochTotals(torch.zeros((), device=ctx.device))
    iterator = iter(ctx.train_loader)
    for ctx.step_in_epoch in range(len(ctx.train_loader)):  # noqa: B020 - the context carries the position
        batch = clock.timed_fetch(iterator)
        with flops.counting(ctx.step):
            step(ctx, balancer, batch, clock, totals)
        ctx.step += 1
    clock.finish()
    return totals.loss, torch.cat(totals.logits), torch.cat(totals.labels)


@dataclass
class Selection:
    """The model selected on validation so far: its epoch, score and state (with the extra modules it had)."""

    score: float | None = None
    epoch: int | None = None
    state: dict[str, Tensor] | None = None
    extras: frozenset[str] = frozenset()
    #: some epoch could be selected (false when every epoch was of a stage that is not)
    offered: bool = False

    def offer(self, model: MultimodalModel, primary: str, score: float | None, epoch: int) -> None:
        self.offered = True
        if score is not None and (self.score is None or metric_lib.better(primary, score, self.score)):
            self.score, self.epoch = score, epoch
            self.state, self.extras = copy.deepcopy(model.state_dict()), frozenset(model.extras)

    def restore(self, model: MultimodalModel) -> None:
        """Load the selected state; extra modules added after the selected epoch leave the model. Without a
        selected state (no epoch could be selected) the model stays as training left it, extras included."""
        if self.state is None:
            return
        for name in set(model.extras) - self.extras:
            del model.extras[name]
        model.load_state_dict(self.state)


class Stages:
    """The balancer's stage of each epoch, applied when it changes (`stages.py`)."""

    def __init__(self, model: MultimodalModel, recipe: TrainRecipe, balancer: Balancer) -> None:
        self.model, self.recipe, self.balancer = model, recipe, balancer
        self.fixed = {p for p in model.parameters() if not p.requires_grad}
        self.current: Stage | None = None

    def enter(self, ctx: TrainContext, scheduler: Any) -> Any:
        """Apply the stage of `ctx.epoch`; returns the learning-rate scheduler to use from now on."""
        stage = self.balancer.stage(ctx)
        if stage == self.current:
            return scheduler
        if self.current is not None or stage.trains is not None:
            freeze_for(self.model, stage, self.fixed)
        if self.current is not None and stage.fresh_optimizer:
            ctx.optimizer = build_optimizer(self.recipe.optimizer, optimized_groups(self.model, type(self.balancer)))
            scheduler = build_scheduler(self.recipe.scheduler, ctx.optimizer, self.recipe.epochs - ctx.epoch)
        self.current = ctx.stage = stage
        return scheduler


def train(
    components: CellComponents,
    recipe: TrainRecipe,
    seed: int,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
    evaluate_test: bool = True,
) -> TrainOutcome:
    """Train one cell and evaluate the model selected on validation. Raises on errors; the runner records them.

    With `evaluate_test=False` (a search trial) the test split is dropped unread: no loader, no evaluation."""
    generator = seed_everything(seed)
    device = resolve_device(recipe.device)
    acceleration.configure_backends(device, recipe)
    task = components.task
    balancer_cls, balancer_params = components.balancer
    problems = balancer_cls.check(balancer_params, task)
    if problems:
        raise ValueError(f"{balancer_cls.name} parameters do not fit task {task.name!r}: {'; '.join(problems)}")
    balancer = balancer_cls(balancer_params)
    requires = balancer_cls.requires

    splits = fake_splits(task, seed, components.fake_sizes) if components.fake_data else task.splits()
    if not evaluate_test:
        splits.pop("test", None)
    data = CellData(task, splits, recipe.batch_size, recipe.eval_batch_size or recipe.batch_size, generator, seed,
                    device, requires.augmented_views, acceleration.loader_options(device, recipe, splits["train"]))
    model = build_model(components, balancer)
    model = model.to(device, memory_format=acceleration.memory_format(model, device, recipe))  # type: ignore[call-overload]
    acceleration.compile_model(model, recipe)
    optimizer = build_optimizer(recipe.optimizer, optimized_groups(model, balancer_cls))
    scheduler = build_scheduler(recipe.scheduler, optimizer, recipe.epochs)
    val = data.evaluation("val")
    ctx = TrainContext(
        model=model, optimizer=optimizer, task=task, device=device, epochs=recipe.epochs,
        train_loader=data.epoch(0, None), val_loader=val, task_loss=task_loss_fn(task.multilabel),
        evaluate=lambda batches: evaluate(model, ctx, balancer, batches),
        autocast_dtype=torch.bfloat16 if (device.type == "cuda" and recipe.bf16) else None,
        generator=generator, split_batches=data.split_batches, train_size=len(splits["train"]),  # type: ignore[arg-type]
        initial_state={n: p.detach().clone() for n, p in model.named_parameters()} if requires.initial_weights
        else {},
    )
    rss_scope = profiling.reset_peak_host_rss()
    profiling.reset_peak_memory(device)
    clock = profiling.StepClock(device)
    flops = profiling.StepFlops(enabled=not recipe.compile)
    timer = profiling.Stopwatch()
    with timer("balancer"):
        balancer.setup(ctx)
    stages = Stages(model, recipe, balancer)
    selected = Selection()
    outcome = TrainOutcome(status="ok")
    started = time.perf_counter()
    for ctx.epoch in range(recipe.epochs):
        with timer("balancer"):
            scheduler = stages.enter(ctx, scheduler)
            balancer.on_epoch_start(ctx)
            ctx.train_loader = data.epoch(ctx.epoch, balancer.epoch_data(ctx))
        loss_sum, train_logits, train_labels = _run_epoch(ctx, balancer, clock, flops)
        train_loss = float(loss_sum) / max(1, len(ctx.train_loader))
        if not np.isfinite(train_loss):
            outcome.status, outcome.diverged_epoch, outcome.divergence = "diverged", ctx.epoch, "training loss"
            break
        with timer("validation"):
            scores = finite(evaluate(model, ctx, balancer, val))
        if scores.loss is None:  # a finite mean over the epoch's steps, but the last ones left non-finite weights
            outcome.status, outcome.diverged_epoch, outcome.divergence = "diverged", ctx.epoch, "validation loss"
            break
        stats = EpochRecord(
            epoch=ctx.epoch,
            train_loss=train_loss,
            train_metrics=finite(metric_lib.compute(task.metrics, train_logits, train_labels, task.num_classes,
                                                    task.multilabel)),
            val=scores,
            lr=ctx.optimizer.param_groups[0]["lr"],
            stage=ctx.stage.name if ctx.stage.name != "train" else None,
        )
        if ctx.stage.selectable:  # the weights just validated: what on_epoch_end changes belongs to the next epoch
            selected.offer(model, task.primary_metric, scores.metrics[task.primary_metric], ctx.epoch)
        if scheduler is not None:
            scheduler.step()
        with timer("balancer"):
            balancer.on_epoch_end(ctx, stats)
            stats.coefficients = finite(balancer.coefficients())
        ctx.history.append(stats)
        if on_epoch_end is not None:
            on_epoch_end(stats)
    train_seconds = time.perf_counter() - started

    outcome.history, outcome.best_epoch = ctx.history, selected.epoch
    if outcome.status == "ok" and ctx.history and (selected.state is not None or not selected.offered):
        if not selected.offered:  # no epoch of a selectable stage: the model as training left it
            outcome.best_epoch = ctx.history[-1].epoch
        selected.restore(model)
        outcome.val = finite(evaluate(model, ctx, balancer, val))
        if evaluate_test:
            test = data.evaluation("test")
            outcome.test = finite(evaluate(model, ctx, balancer, test))
            outcome.test.coalitions = coalition_scores(model, ctx, balancer, test)
    outcome.profile = _profile(model, clock, timer, device, train_seconds, len(ctx.history), rss_scope, flops.total)
    return outcome


def _profile(model: MultimodalModel, clock: profiling.StepClock, timer: profiling.Stopwatch, device: torch.device,
             train_seconds: float, epochs: int, rss_scope: str, step_flops: int | None) -> dict[str, Any]:
    """Where the training time went. `train_seconds` spans the epochs: steps, data loading, validation and the
    balancer's epoch hooks (its share is reported apart, since `step_ms` cannot show it)."""
    compute_seconds = sum(clock.step_seconds)
    device_info = profiling.device_description(device)
    share = (lambda seconds: seconds / train_seconds) if train_seconds else (lambda seconds: 0.0)
    return {
        "device": device_info,
        "train_seconds": train_seconds,
        "epochs": epochs,
        "seconds_per_epoch": train_seconds / epochs if epochs else 0.0,
        "step_ms": profiling.step_summary(clock.step_seconds),
        "step_samples_per_second": clock.samples / compute_seconds if compute_seconds else 0.0,
        "samples_per_second": clock.samples / train_seconds if train_seconds else 0.0,
        "data_wait_fraction": share(clock.data_wait_seconds),
        "validation_fraction": share(timer.seconds["validation"]),
        "balancer_hook_fraction": share(timer.seconds["balancer"]),
        "peak_accelerator_memory_bytes": profiling.peak_accelerator_memory(device),
        "peak_host_rss_bytes": profiling.peak_host_rss_bytes(),
        "host_rss_scope": rss_scope,
        "params": model.parameter_counts(),
        "accelerator_hours": train_seconds / 3600.0 * device_info["count"] if device.type != "cpu" else 0.0,
        "step_flops": step_flops,
    }
