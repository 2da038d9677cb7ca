"""`unimodal`: every encoder trained alone with its own head — each modality's own potential."""

from __future__ import annotations

import torch

from mmbench.api import Balancer, Batch, ModelOutput, Requirements, TrainContext, hookimpl


class Unimodal(Balancer):
    """Loss = Σ_m task_loss(head_m(z_m)) + task_loss(fusion(stop_gradient(z))).

    Each encoder only receives gradient from its own head, so it is trained exactly as it would be alone
    (optimizers act per parameter). The fusion is fitted on the detached features so the cell still has a
    multimodal prediction (a late combination of independently trained encoders) without letting one
    modality's training influence another's.
    """

    name = "unimodal"
    is_reference = True
    requires = Requirements(unimodal_heads=True, min_modalities=1)

    def loss(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> torch.Tensor:
        """The fusion is fitted on detached copies of what it read (pooled features, or token sequences for a
        fusion over tokens), so no gradient of the fused loss reaches an encoder."""
        y = batch.label
        fusion = ctx.model.fusion
        if fusion is None:
            raise RuntimeError("unimodal fits the fusion on detached features, and this cell's model has no fusion")
        fused = fusion({m: z.detach() for m, z in out.fusion_inputs.items()}).logits
        return ctx.task_loss(fused, y) + sum(ctx.task_loss(logits, y) for logits in out.unimodal.values())


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [Unimodal]
