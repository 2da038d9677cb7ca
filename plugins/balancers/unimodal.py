"""`unimodal`: every encoder trained alone with its own head — each modality's own potential."""

from __future__ import annotations

import torch

from mmbench.api import Balancer, ModelOutput, Requirements, hookimpl


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

    def train_step(self, ctx, batch) -> tuple[torch.Tensor, ModelOutput]:
        """The default step, except that the fusion reads detached copies of what it reads — pooled features,
        or token sequences for a fusion over tokens (which the pooled features in `ModelOutput` are not)."""
        ctx.optimizer.zero_grad(set_to_none=True)
        with ctx.autocast():
            encoded = ctx.model.fusion_inputs(batch.inputs)
            out = ctx.model.head(encoded)
            fused = ctx.model.fusion({m: z.detach() for m, z in encoded.items()}).logits
            loss = ctx.task_loss(fused, batch.label) + sum(ctx.task_loss(logits, batch.label)
                                                           for logits in out.unimodal.values())
        loss.backward()
        self.optimizer_step(ctx)
        return loss.detach(), out


@hookimpl
def mmbench_balancers():
    return [Unimodal]
