"""`lfm`: Learning the modality gap (Yang, Wan, Jiang, Xu, "Facilitating Multimodal Classification via Dynamically
Learning Modality Gap", NeurIPS 2024; official code njustkmg/NeurIPS24-LFM @ ad44fa09fee4, `Crema_epoch.py`).

LFM trains one linear head per modality, predicts with their average, and mixes two objectives with an
epoch-dependent weight — the supervised loss of the averaged prediction, and an alignment of the modalities'
predicted distributions:

    z̄ = (1/M) Σ_m o_m                               o_m = head_m(f_m); two modalities: 0.5·o_a + 0.5·o_v
    p_m = softmax(o_m),  p̄ = (1/M) Σ_m p_m
    D = (1/M) Σ_m KL(p_m ‖ p̄)                        the Jensen–Shannon divergence (two modalities:
                                                    ½KL(p_a‖p̄) + ½KL(p_v‖p̄)), averaged over the batch
    loss = 2·(α₁(e)·CE(z̄, y) + (1 − α₁(e))·D)
    α₁(e) = Σ_{k=0..5} a_k e^k                       a degree-5 polynomial in the epoch e (from 0)

The polynomial (coefficients at `Crema_epoch.py` L47–53) is the authors' fit of the weight their hypergradient
variant (`Crema_epoch_learnable.py`) learns over 200 CREMA-D epochs: 0.2046 at epoch 0, 0.5392 at epoch 100,
0.9160 at epoch 199, so the alignment dominates early and the classification late. The cell's fusion module is
not used (`ignores_fusion`); predictions are `z̄` over the modalities present (a dropped modality gets weight 0,
the others are renormalised, so "modality m alone" is exactly `o_m`).

Differences from the official code, and why:

The released alignment is not the Jensen–Shannon divergence it is named after (the defect that changes the
method): `F.kl_div(p.log(), m)` computes `KL(m ‖ p)` (PyTorch's `kl_div(input, target)` is
`Σ target·(log target − input)`), so the code minimises `½KL(p̄‖p_a) + ½KL(p̄‖p_v)` (L37–44). The default is the
JS divergence the code's `js_score` names; `alignment: released` reproduces the release, `(1/M) Σ_m KL(p̄ ‖ p_m)`.

Other differences, and why:

* More than two modalities (the code has two): z̄ and p̄ average over all of them, D is the M-way JS divergence.
* The epoch in α₁(e) counts this run's epochs, as in the code: a run shorter than 200 epochs stays in the
  alignment-heavy part of the schedule (α₁ reaches 0.25 at epoch 10, 0.44 at epoch 50).
* Divergences are computed from `log_softmax` (the code takes `log` of a softmax).

Coefficients per epoch: `alpha1` the epoch's α₁, `alignment` mean D, `ce` mean CE of z̄.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from mmbench.api import (
    Balancer,
    Batch,
    EpochMeans,
    ModelOutput,
    Params,
    Requirements,
    TrainContext,
    hookimpl,
    late_fusion,
)

#: α₁(e) = Σ_k a_k e^k, `Crema_epoch.py::getAlpha_Learnable_Fitted` (α₂ there is exactly 1 − α₁)
ALPHA1_COEFFICIENTS = (2.04623704e-01, 3.35472727e-03, 1.22989557e-04, -2.92947416e-06, 2.23835486e-08,
                       -5.39717505e-11)


class LFMParams(Params):
    alignment: Literal["js", "released"] = Field(
        "js", description="'js': the Jensen–Shannon divergence (mean KL of each p_m to the mixture) the code names; "
                          "'released': what it computes, the mean KL of the mixture to each p_m")


def alpha1(epoch: int) -> float:
    """The classification weight α₁(e) of the fitted schedule (the alignment weight is 1 − α₁)."""
    return sum(a * epoch**k for k, a in enumerate(ALPHA1_COEFFICIENTS))


def alignment_divergence(logits: list[Tensor], kind: str = "js") -> Tensor:
    """`(1/M) Σ_m KL(p_m ‖ p̄)` (js) or `(1/M) Σ_m KL(p̄ ‖ p_m)` (released), summed over classes, batch mean."""
    log_p = torch.stack([o.float().log_softmax(-1) for o in logits])  # (M, B, C)
    log_mix = torch.logsumexp(log_p, 0) - math.log(len(logits))  # log p̄, (B, C)
    if kind == "js":
        kl = (log_p.exp() * (log_p - log_mix)).sum(-1)
    elif kind == "released":
        kl = (log_mix.exp() * (log_mix - log_p)).sum(-1)
    else:
        raise ValueError(f"unknown LFM alignment {kind!r}")
    return kl.mean()


class LFM(Balancer):
    """Average of unimodal heads; CE of the average mixed with a JS alignment by an epoch-dependent weight."""

    name = "lfm"
    Params = LFMParams
    params: LFMParams
    requires = Requirements(unimodal_heads=True, ignores_fusion=True, single_label=True)

    def setup(self, ctx: TrainContext) -> None:
        self.modalities = tuple(ctx.model.modalities)
        self.stats = EpochMeans()
        self.alpha = alpha1(0)

    def on_epoch_start(self, ctx: TrainContext) -> None:
        self.alpha = alpha1(ctx.epoch)

    def loss(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> Tensor:
        logits = [out.unimodal[m] for m in self.modalities]
        ce = ctx.task_loss(torch.stack(logits).mean(0), batch.label)
        divergence = alignment_divergence(logits, self.params.alignment)
        self.stats.add("ce", ce)
        self.stats.add("alignment", divergence)
        return 2 * (self.alpha * ce + (1 - self.alpha) * divergence)

    def eval_logits(self, ctx: TrainContext, out: ModelOutput) -> Tensor:
        """The mean of the unimodal heads' logits over the modalities present."""
        logits = [out.unimodal[m].float() for m in self.modalities]
        mask = late_fusion.presence(self.modalities, out.dropped, logits[0].device)
        return late_fusion.fuse_logits(logits, late_fusion.mask_weights(torch.ones_like(mask), mask))

    def coefficients(self) -> dict[str, float]:
        return {**self.stats.read(), "alpha1": self.alpha}


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [LFM]
