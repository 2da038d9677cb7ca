"""The training engine: builds a cell's model, runs its epochs with the balancer's hooks, evaluates.

Reading order: `train()` at the bottom is the whole life of a cell; `_run_epoch` is one epoch;
`evaluate` turns a split into metrics (multimodal, per-modality, each modality missing).
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from mmbench.contract.balancer import Balancer
from mmbench.contract.batch import Batch, ModelOutput
from mmbench.contract.context import TrainContext
from mmbench.contract.encoder import Encoder
from mmbench.contract.errors import Incompatible
from mmbench.contract.fusion import Fusion
from mmbench.contract.task import Task
from mmbench.data.fake import FAKE_SIZES, fake_splits
from mmbench.schema.params import Params
from mmbench.schema.recipe import TrainRecipe
from mmbench.schema.results import EpochRecord, SplitScores
from mmbench.training import acceleration, profiling
from mmbench.training import metrics as metric_lib
from mmbench.training.model import MultimodalModel
from mmbench.training.optim import build_optimizer, build_scheduler, resolve_device


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


class AugmentedViews(Dataset):
    """Pairs every training sample with the task's augmented view of each modality, redrawn every epoch."""

    def __init__(self, base: Dataset, task: Task, seed: int) -> None:
        self.base, self.task, self.seed = base, task, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[dict, dict]:
        sample = self.base[index]
        gen = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) & 0x7FFFFFFF)
        return sample, {m: self.task.augment(m, sample[m], gen) for m in self.task.modalities}


class Shuffle(Sampler[int]):
    """A fresh order of the training split each epoch: one permutation drawn from the cell's generator per pass.

    torch's `RandomSampler` draws a second, empty permutation when a pass is read past its last batch, which a
    loader with worker processes does (it fetches ahead) and the engine's own loop does not; the next epoch's
    order would then depend on the worker count. This draws exactly one, the same one `RandomSampler` draws first.
    """

    def __init__(self, size: int, generator: torch.Generator) -> None:
        self.size, self.generator = size, generator

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        yield from torch.randperm(self.size, generator=self.generator).tolist()


def collate(samples: list | Mapping[str, Any]) -> Batch:
    """Samples (`{modality: inputs, ..., "label": y}`, or `(sample, views)` pairs) -> one `Batch`.

    A dataset that fetches whole batches (`__getitems__`, e.g. `TensorDictDataset`) hands over one such mapping
    of stacked tensors instead of a list; it becomes the batch as it is.
    """
    if isinstance(samples, Mapping):
        inputs = dict(samples)
        label = inputs.pop("label")
        return Batch(inputs, label)
    views = None
    if isinstance(samples[0], tuple):
        samples, views = zip(*samples)
    stacked = default_collate(list(samples))
    label = stacked.pop("label")
    return Batch(stacked, label, default_collate(list(views)) if views else {})


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


@torch.no_grad()
def evaluate(ctx: TrainContext, balancer: Balancer, loader: DataLoader) -> SplitScores:
    """Metrics of the multimodal prediction, of each modality alone, and with each modality missing.

    Per-modality ("unimodal") predictions come from the per-modality heads when the model has them,
    otherwise from the fused model with every other modality dropped. Encoders run once per batch, and each
    set of dropped modalities once (with two modalities, "a alone" is "b missing").
    """
    model, task = ctx.model, ctx.task
    modalities = model.modalities
    was_training = model.training
    model.eval()
    fused: list[Tensor] = []
    labels: list[Tensor] = []
    alone: dict[str, list[Tensor]] = {m: [] for m in modalities}
    missing: dict[str, list[Tensor]] = {m: [] for m in modalities}
    for raw in loader:
        batch = raw.to(ctx.device)
        with ctx.autocast():
            features = model.fusion_inputs(batch.inputs)
            out = model.head(features)

            passes: dict[frozenset[str], ModelOutput] = {}

            def without(drop: set[str]) -> ModelOutput:
                # late fusions reuse the encoder pass; intermediate ones must re-encode without the inputs
                key = frozenset(drop)
                if key not in passes:
                    passes[key] = model(batch.inputs, drop) if model.drives_encoders \
                        else model.head(features, drop)
                return passes[key]

            fused.append(balancer.eval_logits(ctx, out).float())
            for m in modalities:
                missing[m].append(balancer.eval_logits(ctx, without({m})).float())
                others = set(modalities) - {m}
                if out.unimodal:  # a head sees only its modality's features, unless the fusion mixed them in
                    source = without(others) if model.drives_encoders else out
                    alone[m].append(source.unimodal[m].float())
                else:
                    alone[m].append(balancer.eval_logits(ctx, without(others)).float())
        labels.append(batch.label)
    model.train(was_training)
    y = torch.cat(labels)

    scored: dict[tuple[int, ...], dict[str, float]] = {}

    def score(chunks: list[Tensor]) -> dict[str, float]:
        # the same predictions are scored once ("a alone" and "b missing" share their tensors)
        key = tuple(map(id, chunks))
        if key not in scored:
            scored[key] = metric_lib.compute(task.metrics, torch.cat(chunks), y, task.num_classes, task.multilabel)
        return scored[key]

    def loss_of(chunks: list[Tensor]) -> float:
        return float(ctx.task_loss(torch.cat(chunks), y))

    return SplitScores(
        loss=loss_of(fused),
        metrics=score(fused),
        unimodal={m: score(alone[m]) for m in modalities},
        missing_modality={m: score(missing[m]) for m in modalities},
        unimodal_loss={m: loss_of(alone[m]) for m in modalities},
    )


def finite(scores):
    """`scores` (a SplitScores or a name -> value mapping) with every non-finite number as None: JSON has no
    NaN, and a value that is not a number (a metric undefined on the split, a loss of non-finite logits) is
    recorded as missing rather than breaking the result file."""
    if isinstance(scores, SplitScores):
        return SplitScores.model_validate(finite(scores.model_dump()))
    if isinstance(scores, dict):
        return {key: finite(value) for key, value in scores.items()}
    return scores if not isinstance(scores, float) or math.isfinite(scores) else None


@dataclass
class EpochTotals:
    """What an epoch's steps accumulate, on the device: the summed loss, the train logits and labels."""

    loss: Tensor
    logits: list[Tensor] = field(default_factory=list)
    labels: list[Tensor] = field(default_factory=list)


def step(ctx: TrainContext, balancer: Balancer, raw: Batch, clock: profiling.StepClock, totals: EpochTotals) -> None:
    """One training step as the engine runs it: the batch to the device, the balancer's step, the bookkeeping.

    It never reads a tensor back to the host (the contract test runs it under `forbid_host_sync`), so on a GPU
    the host queues the next steps while this one computes.
    """
    batch = raw.to(ctx.device)
    started = clock.start()
    loss, out = balancer.train_step(ctx, batch)
    clock.stop(started, batch_size=batch.label.shape[0])
    totals.loss += loss.float()
    totals.logits.append(balancer.eval_logits(ctx, out).detach().float())
    totals.labels.append(batch.label)


def _run_epoch(ctx: TrainContext, balancer: Balancer, clock: profiling.StepClock) -> tuple[Tensor, Tensor, Tensor]:
    """Train one epoch; returns the summed loss (on device), and the epoch's train logits and labels."""
    ctx.model.train()
    totals = EpochTotals(torch.zeros((), device=ctx.device))
    iterator = iter(ctx.train_loader)
    for ctx.step_in_epoch in range(len(ctx.train_loader)):
        step(ctx, balancer, clock.timed_fetch(iterator), clock, totals)
        ctx.step += 1
    clock.finish()
    return totals.loss, torch.cat(totals.logits), torch.cat(totals.labels)


def _make_loaders(task: Task, splits: dict[str, Dataset], recipe: TrainRecipe, generator: torch.Generator,
                  augmented: bool, seed: int, device: torch.device) -> dict[str, DataLoader]:
    train_set = AugmentedViews(splits["train"], task, seed) if augmented else splits["train"]
    eval_bs = recipe.eval_batch_size or recipe.batch_size
    common = {"collate_fn": collate, **acceleration.loader_options(device, recipe, splits["train"])}
    return {
        "train": DataLoader(train_set, batch_size=recipe.batch_size, sampler=Shuffle(len(train_set), generator),
                            generator=generator, **common),
        "val": DataLoader(splits["val"], batch_size=eval_bs, shuffle=False, **common),
        **({"test": DataLoader(splits["test"], batch_size=eval_bs, shuffle=False, **common)} if "test" in splits
           else {}),
    }


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
    loaders = _make_loaders(task, splits, recipe, generator, requires.augmented_views, seed, device)
    model = build_model(components, balancer)
    model = model.to(device, memory_format=acceleration.memory_format(model, device, recipe))
    acceleration.compile_model(model, recipe)
    optimizer = build_optimizer(recipe.optimizer, model.parameter_groups())
    scheduler = build_scheduler(recipe.scheduler, optimizer, recipe.epochs)
    ctx = TrainContext(
        model=model, optimizer=optimizer, task=task, device=device, epochs=recipe.epochs,
        train_loader=loaders["train"], val_loader=loaders["val"], task_loss=task_loss_fn(task.multilabel),
        evaluate=lambda loader: evaluate(ctx, balancer, loader),
        autocast_dtype=torch.bfloat16 if (device.type == "cuda" and recipe.bf16) else None,
        generator=generator,
    )
    rss_scope = profiling.reset_peak_host_rss()
    profiling.reset_peak_memory(device)
    clock = profiling.StepClock(device)
    timer = profiling.Stopwatch()
    with timer("balancer"):
        balancer.setup(ctx)
    primary = task.primary_metric
    best_score: float | None = None
    best_state: dict[str, Tensor] | None = None
    outcome = TrainOutcome(status="ok")
    started = time.perf_counter()
    for ctx.epoch in range(recipe.epochs):
        if isinstance(loaders["train"].dataset, AugmentedViews):
            loaders["train"].dataset.epoch = ctx.epoch
        with timer("balancer"):
            balancer.on_epoch_start(ctx)
        loss_sum, train_logits, train_labels = _run_epoch(ctx, balancer, clock)
        train_loss = float(loss_sum) / max(1, len(ctx.train_loader))
        if not np.isfinite(train_loss):
            outcome.status, outcome.diverged_epoch, outcome.divergence = "diverged", ctx.epoch, "training loss"
            break
        with timer("validation"):
            val = finite(evaluate(ctx, balancer, loaders["val"]))
        if val.loss is None:  # a finite mean over the epoch's steps, but the last ones left non-finite weights
            outcome.status, outcome.diverged_epoch, outcome.divergence = "diverged", ctx.epoch, "validation loss"
            break
        stats = EpochRecord(
            epoch=ctx.epoch,
            train_loss=train_loss,
            train_metrics=finite(metric_lib.compute(task.metrics, train_logits, train_labels, task.num_classes,
                                                    task.multilabel)),
            val=val,
            lr=optimizer.param_groups[0]["lr"],
        )
        if scheduler is not None:
            scheduler.step()
        with timer("balancer"):
            balancer.on_epoch_end(ctx, stats)
            stats.coefficients = finite(balancer.coefficients())
        ctx.history.append(stats)
        score = val.metrics[primary]
        if score is not None and (best_score is None or metric_lib.better(primary, score, best_score)):
            best_score, outcome.best_epoch = score, ctx.epoch
            best_state = copy.deepcopy(model.state_dict())
        if on_epoch_end is not None:
            on_epoch_end(stats)
    train_seconds = time.perf_counter() - started

    outcome.history = ctx.history
    if outcome.status == "ok" and best_state is not None:
        model.load_state_dict(best_state)
        outcome.val = finite(evaluate(ctx, balancer, loaders["val"]))
        outcome.test = finite(evaluate(ctx, balancer, loaders["test"])) if evaluate_test else None
    outcome.profile = _profile(ctx, clock, timer, device, train_seconds, len(ctx.history), rss_scope)
    return outcome


def _profile(ctx: TrainContext, clock: profiling.StepClock, timer: profiling.Stopwatch, device: torch.device,
             train_seconds: float, epochs: int, rss_scope: str) -> dict[str, Any]:
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
        "params": ctx.model.parameter_counts(),
        "accelerator_hours": train_seconds / 3600.0 * device_info["count"] if device.type != "cpu" else 0.0,
    }
