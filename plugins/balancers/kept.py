"""Samples that keep only some of their modalities: what the data-composing balancers (`remix`, `smv`) train on.

Such a balancer tags each entry of an epoch (`EpochData.tags`): `ALL` keeps every modality, `i` keeps only the
task's i-th modality. The others' pooled features are zeroed per sample and the cell's late fusion is applied again
(`Requirements.late_fusion`), as the official codes zero an encoder's output before their concatenation head. The
zeroed modalities' encoders still run forward, as there. `TaggedBalancer` runs such a step for every tagged batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from mmbench.api import Balancer, Batch, FusionOutput, Model, ModelOutput, TrainContext

#: the tag of an entry that keeps every modality
ALL = -1


def keep_masks(tags: Tensor, modalities: Sequence[str]) -> dict[str, Tensor]:
    """Per modality a (B, 1) mask, 1 where the sample keeps it: tag `ALL` keeps all, tag i only modality i."""
    return {m: ((tags == ALL) | (tags == i)).unsqueeze(1) for i, m in enumerate(modalities)}


def kept_features(features: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The features with each sample's dropped modalities zeroed (a modality without a mask is kept)."""
    return {m: f * masks[m].to(f.dtype) if m in masks else f for m, f in features.items()}


def fuse_kept(model: Model, features: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> tuple[dict[str, Tensor],
                                                                                                  FusionOutput]:
    """The zeroed features and the cell's late fusion applied to them."""
    if model.fusion is None:
        raise RuntimeError("zeroing modalities per sample needs the cell's late fusion (Requirements.late_fusion)")
    kept = kept_features(features, masks)
    return kept, model.fusion(kept)


def forward_kept(model: Model, batch: Batch, modalities: Sequence[str]) -> ModelOutput:
    """A forward pass in which each sample keeps the modalities of its tag (`batch.meta["tag"]`): the late fusion
    on the zeroed features, the unimodal heads (if the model has them) on the features as the encoders give them."""
    features = model.encode(batch.inputs)
    kept, fused = fuse_kept(model, features, keep_masks(batch.meta["tag"], modalities))
    unimodal = {m: model.heads[m](features[m]) for m in model.heads}
    return ModelOutput(fused.logits, kept, fused.contributions, unimodal, fusion_inputs=kept)


class TaggedBalancer(Balancer):
    """A balancer whose composed epochs tag their samples: a tagged batch runs `forward_kept`, then `loss`; an
    untagged one (an epoch the balancer did not compose) the usual step."""

    def train_step(self, ctx: TrainContext, batch: Batch) -> tuple[Tensor, ModelOutput]:
        if "tag" not in batch.meta:
            return super().train_step(ctx, batch)
        ctx.optimizer.zero_grad(set_to_none=True)
        with ctx.autocast():
            out = forward_kept(ctx.model, batch, ctx.model.modalities)
            loss = self.loss(ctx, batch, out)
        loss.backward()
        self.after_backward(ctx, batch, out)
        self.optimizer_step(ctx)
        return loss.detach(), out


def only(modalities: Sequence[str], keep: int | frozenset[int], device: torch.device) -> dict[str, Tensor]:
    """(1, 1) masks that keep the modalities at the positions in `keep` for a whole batch."""
    positions = {keep} if isinstance(keep, int) else keep
    return {m: torch.tensor([[i in positions]], device=device) for i, m in enumerate(modalities)}
