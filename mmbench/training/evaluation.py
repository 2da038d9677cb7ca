"""Evaluation: the metrics of a split under the model as it is, fused, with each modality alone, and with each
modality missing; each set of predictions scored once. For the final test split also with every coalition of
modalities kept, from which reporting computes each modality's Shapley contribution."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from mmbench.contract.balancer import Balancer
from mmbench.contract.batch import Inputs, ModelOutput
from mmbench.contract.context import Batches, TrainContext
from mmbench.schema.results import SplitScores
from mmbench.training import metrics as metric_lib
from mmbench.training.model import MultimodalModel


def _passes_without(model: MultimodalModel, inputs: Mapping[str, Inputs],
                    features: Mapping[str, Tensor]) -> Callable[[set[str]], ModelOutput]:
    """The model's output without some modalities, each set of dropped modalities computed once: late fusions
    reuse the encoder pass `features`; intermediate ones must encode again without the dropped inputs."""
    passes: dict[frozenset[str], ModelOutput] = {}

    def without(drop: set[str]) -> ModelOutput:
        key = frozenset(drop)
        if key not in passes:
            passes[key] = model(inputs, drop) if model.drives_encoders else model.head(features, drop)
        return passes[key]

    return without


@torch.no_grad()
def evaluate(model: MultimodalModel, ctx: TrainContext, balancer: Balancer, batches: Batches) -> SplitScores:
    """Metrics of the multimodal prediction, of each modality alone, and with each modality missing.

    Per-modality ("unimodal") predictions come from the per-modality heads when the model has them,
    otherwise from the fused model with every other modality dropped. Encoders run once per batch, and each
    set of dropped modalities once (with two modalities, "a alone" is "b missing").
    """
    task = ctx.task
    modalities = model.modalities
    was_training = model.training
    model.eval()
    fused: list[Tensor] = []
    labels: list[Tensor] = []
    alone: dict[str, list[Tensor]] = {m: [] for m in modalities}
    missing: dict[str, list[Tensor]] = {m: [] for m in modalities}
    for batch in batches:
        with ctx.autocast():
            features = model.fusion_inputs(batch.inputs)
            out = model.head(features)
            without = _passes_without(model, batch.inputs, features)

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

    scored: dict[tuple[int, ...], dict[str, float | None]] = {}

    def score(chunks: list[Tensor]) -> dict[str, float | None]:
        # the same predictions are scored once ("a alone" and "b missing" share their tensors)
        key = tuple(map(id, chunks))
        if key not in scored:
            scored[key] = dict(metric_lib.compute(task.metrics, torch.cat(chunks), y, task.num_classes,
                                                  task.multilabel))
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


#: coalitions are measured exactly, every subset of the modalities, up to this many modalities (16 subsets)
MAX_COALITION_MODALITIES = 4


@torch.no_grad()
def coalition_scores(model: MultimodalModel, ctx: TrainContext, balancer: Balancer,
                     batches: Batches) -> dict[str, dict[str, float | None]]:
    """The metrics of the model with each subset of its modalities kept and the others dropped (the rule of
    `evaluate`'s missing-modality passes), keyed by the kept modalities sorted and joined by '+' ('' for none).
    Empty for fewer than 2 or more than `MAX_COALITION_MODALITIES` modalities. Encoders run once per batch
    (twice for an intermediate fusion, which must encode without the dropped inputs)."""
    modalities = model.modalities
    if not 2 <= len(modalities) <= MAX_COALITION_MODALITIES:
        return {}
    kept_sets = [frozenset(c) for k in range(len(modalities) + 1) for c in itertools.combinations(modalities, k)]
    logits: dict[frozenset[str], list[Tensor]] = {kept: [] for kept in kept_sets}
    labels: list[Tensor] = []
    was_training = model.training
    model.eval()
    for batch in batches:
        with ctx.autocast():
            features = model.fusion_inputs(batch.inputs)
            without = _passes_without(model, batch.inputs, features)
            for kept in kept_sets:
                out = model.head(features) if len(kept) == len(modalities) else without(set(modalities) - kept)
                logits[kept].append(balancer.eval_logits(ctx, out).float())
        labels.append(batch.label)
    model.train(was_training)
    y, task = torch.cat(labels), ctx.task
    return {"+".join(sorted(kept)): finite(dict(metric_lib.compute(task.metrics, torch.cat(chunks), y,
                                                                   task.num_classes, task.multilabel)))
            for kept, chunks in logits.items()}


def finite(scores: Any) -> Any:
    """`scores` (a SplitScores or a name -> value mapping) with every non-finite number as None: JSON has no
    NaN, and a value that is not a number (a metric undefined on the split, a loss of non-finite logits) is
    recorded as missing rather than breaking the result file."""
    if isinstance(scores, SplitScores):
        return SplitScores.model_validate(finite(scores.model_dump()))
    if isinstance(scores, dict):
        return {key: finite(value) for key, value in scores.items()}
    return scores if not isinstance(scores, float) or math.isfinite(scores) else None
