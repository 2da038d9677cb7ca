"""`remix`: Data Remixing (Ma, Chen, Deng, "Improving Multimodal Learning Balance and Sufficiency through Data
Remixing", ICML 2025, arXiv 2506.11550; official code MatthewMaxy/Remix_ICML2025 @ 80898aa0ad80, `train.py`,
`models/models.py`).

Where it acts: the composition of each epoch's data and the loss.

* Warm-up (the first `warmup_epochs` epochs): joint training with every unimodal head's CE added,
  `L = CE(z) + α·Σ_m CE(h_m(f_m))` (train.py L101–125; α = β = 0.5 for audio and video).
* After it, at the start of every epoch, a no-grad eval-mode pass over the training split gives each sample's
  confidence per modality, the KL divergence of its unimodal head's prediction from the uniform distribution,
  in bits: `KL_m = Σ_c p_m[c]·log₂(C·p_m[c])`, p clipped at 1e-9 (train.py L52–57). The sample is *decoupled*:
  the epoch trains it on the modality that is least confident on it, `argmin_m KL_m` (train.py L78–81), and only
  once. The epoch is *reassembled* into unimodal batches (every batch holds samples of one modality,
  `EpochData.group_by_tag`); the other modalities' features are zeroed before the fusion (models.py L55–59) and
  `L = CE(z) + γ·CE(h_m(f_m))` (train.py L127–173, γ1 = γ2 = 1).

Defaults (train.py): `warmup_epochs` 10 (L36), `warmup_weight` α = β = 0.5 (L43–44), `remix_weight` γ = 1 (L45–46).
The official recipe (Adam lr 5e-5, wd 1e-4, StepLR(30, 0.1), batch 64, 60 epochs) is the grid's to set.

Departures from the official code, and why:

* More than two modalities: the official code is written for audio and video; the rule `argmin_m KL_m` is its
  direct generalisation (ties go to the later modality, as the official strict `KL_a < KL_v`). C is the task's
  number of classes (6 is hard-coded in the official KL).
* Batch order: the official epoch trains every video batch, then every audio batch; here the unimodal batches of
  all modalities are shuffled together (the engine's `group_by_tag`), so no modality always has the last word in
  an epoch. The batches themselves (one modality each) are the method's "batch-level reassembling".
* The valuation pass reads the training split as the engine reads it for training (with the task's random
  transforms, if any); the official pass reads the training samples with the evaluation transforms.
* Zeroing is per sample on the pooled features (`kept.py`), with the cell's late fusion applied again: for the
  official concatenation head this is the official forward; any late fusion works.

Requirements: unimodal heads (the engine's `Linear(d_m, C)`, as the official `head_audio`/`head_video`), a late
fusion to apply again to zeroed features, single-label targets (softmax confidences).

Coefficients per epoch: `share.<m>` (the fraction of the training split assigned to m; 1/M in warm-up), `kl.<m>`
(mean KL_m of the last valuation, bits; 0 before the first), `ce.<m>` (mean unimodal CE of the steps).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import Tensor

from mmbench.api import (
    Balancer,
    Batch,
    EpochData,
    EpochMeans,
    ModelOutput,
    Params,
    Requirements,
    TrainContext,
    hookimpl,
)
from mmbench_plugins.balancers.kept import TaggedBalancer

#: the official clip of the probabilities before the logarithm
PROB_FLOOR = 1e-9


def kl_to_uniform_bits(probs: Tensor) -> Tensor:
    """KL(p ‖ uniform) in bits over the last axis: `Σ_c p_c·log₂(C·p_c)`, p clipped to [1e-9, 1]."""
    p = probs.float().clamp(PROB_FLOOR, 1.0)
    return (p * torch.log2(p * p.shape[-1])).sum(-1)


def assign(kl: Tensor) -> Tensor:
    """(M, N) confidences -> (N,) index of the least confident modality per sample; ties to the later one."""
    last = kl.flip(0).argmin(0)
    return kl.shape[0] - 1 - last


class RemixParams(Params):
    warmup_epochs: int = Field(10, ge=0, description="epochs of joint training with unimodal CEs before remixing "
                                                     "(official 10)")
    warmup_weight: float = Field(0.5, ge=0.0, description="α: weight of each unimodal CE in warm-up (official "
                                                          "α = β = 0.5)")
    remix_weight: float = Field(1.0, ge=0.0, description="γ: weight of the trained modality's unimodal CE after "
                                                         "warm-up (official γ1 = γ2 = 1)")


class Remix(TaggedBalancer):
    """Data Remixing: each sample trained on its least confident modality alone, in unimodal batches."""

    name = "remix"
    Params = RemixParams
    params: RemixParams
    requires = Requirements(unimodal_heads=True, late_fusion=True, single_label=True)

    def setup(self, ctx: TrainContext) -> None:
        self.modalities = tuple(ctx.model.modalities)
        self.assignment: list[int] | None = None
        self.kl_means: list[float] = [0.0] * len(self.modalities)
        self.stats = EpochMeans()

    def remixing(self, ctx: TrainContext) -> bool:
        return ctx.epoch >= self.params.warmup_epochs

    @torch.no_grad()
    def on_epoch_start(self, ctx: TrainContext) -> None:
        if not self.remixing(ctx):
            self.assignment = None
            return
        ctx.model.eval()
        kl = torch.empty(len(self.modalities), ctx.train_size, device=ctx.device)
        for batch in ctx.split_batches("train"):
            with ctx.autocast():
                out = ctx.model(batch.inputs)
            index = batch.meta["index"]
            for i, m in enumerate(self.modalities):
                kl[i, index] = kl_to_uniform_bits(out.unimodal[m].float().softmax(-1))
        self.assignment = assign(kl).tolist()  # once per epoch, not per step
        self.kl_means = kl.mean(1).tolist()

    def epoch_data(self, ctx: TrainContext) -> EpochData | None:
        if self.assignment is None:
            return None
        return EpochData(indices=range(len(self.assignment)), tags=self.assignment, group_by_tag=True)

    def loss(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> Tensor:
        """Warm-up: CE(z) + α·Σ_m CE(h_m); a remixed batch: CE(z) + γ·CE of its modality's head."""
        y = batch.label
        per_modality = torch.stack([torch.nn.functional.cross_entropy(out.unimodal[m].float(), y, reduction="none")
                                    for m in self.modalities])  # (M, B)
        self.stats.add("ce", per_modality.mean(1), labels=self.modalities)
        fused = ctx.task_loss(out.fused_logits(), y)
        if "tag" not in batch.meta:
            return fused + self.params.warmup_weight * per_modality.mean(1).sum()
        trained = per_modality.gather(0, batch.meta["tag"].view(1, -1)).squeeze(0)  # one modality per batch
        return fused + self.params.remix_weight * trained.mean()

    def coefficients(self) -> dict[str, float]:
        n = len(self.modalities)
        if self.assignment is None:
            shares = [1.0 / n] * n
        else:
            shares = [self.assignment.count(i) / max(1, len(self.assignment)) for i in range(n)]
        coeffs = {f"share.{m}": s for m, s in zip(self.modalities, shares, strict=True)}
        coeffs.update({f"kl.{m}": k for m, k in zip(self.modalities, self.kl_means, strict=True)
                       if math.isfinite(k)})
        coeffs.update(self.stats.read())
        return coeffs


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [Remix]
