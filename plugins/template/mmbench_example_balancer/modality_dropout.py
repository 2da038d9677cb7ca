"""`modality_dropout`: randomly remove whole modalities from training samples.

Each training sample loses each modality's features with probability `p` (at least one modality is kept
per sample), so the fusion cannot lean on one modality alone. At evaluation nothing is dropped.
"""

from __future__ import annotations

import torch
from pydantic import Field

from mmbench.api import Balancer, Params, hookimpl


class ModalityDropoutParams(Params):
    p: float = Field(0.3, ge=0.0, lt=1.0, description="probability of dropping a modality from a sample")


class ModalityDropout(Balancer):
    """Fused loss on features where each modality is zeroed per sample with probability `p`."""

    name = "modality_dropout"
    Params = ModalityDropoutParams

    def setup(self, ctx) -> None:
        self.dropped = torch.zeros((), device=ctx.device)
        self.seen = torch.zeros((), device=ctx.device)

    def loss(self, ctx, batch, out):
        features = out.features
        batch_size = batch["label"].shape[0]
        keep = torch.rand(batch_size, len(features), device=ctx.device) >= self.params.p
        # a sample that would lose every modality keeps one chosen at random
        rescue = torch.nn.functional.one_hot(
            torch.randint(len(features), (batch_size,), device=ctx.device), len(features)).bool()
        keep = torch.where(keep.any(dim=1, keepdim=True), keep, rescue)
        masked = {m: z * keep[:, i, None].to(z.dtype) for i, (m, z) in enumerate(features.items())}
        self.dropped += (~keep).sum()
        self.seen += keep.numel()
        return ctx.task_loss(ctx.model.fusion(masked).logits, batch["label"])

    def coefficients(self) -> dict[str, float]:
        rate = float(self.dropped / self.seen) if float(self.seen) else 0.0
        self.dropped.zero_()
        self.seen.zero_()
        return {"dropped_fraction": rate}


@hookimpl
def mmbench_balancers():
    return [ModalityDropout]
