"""Each modality's pooled features over a whole pass, as the balancers that diagnose their encoders read them."""

from __future__ import annotations

import torch
from torch import Tensor

from mmbench.api import Batches, TrainContext


@torch.no_grad()
def encoded_pass(ctx: TrainContext, batches: Batches) -> tuple[dict[str, Tensor], Tensor]:
    """Eval-mode pooled features of every modality (float32) and the labels over `batches`; the model's mode is
    restored afterwards."""
    model, was_training = ctx.model, ctx.model.training
    model.eval()
    parts: dict[str, list[Tensor]] = {m: [] for m in model.modalities}
    labels = []
    try:
        for batch in batches:
            with ctx.autocast():
                encoded = model.encode(batch.inputs)
            for m in parts:
                parts[m].append(encoded[m].float())
            labels.append(batch.label)
    finally:
        model.train(was_training)
    return {m: torch.cat(chunks) for m, chunks in parts.items()}, torch.cat(labels)
