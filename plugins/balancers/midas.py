"""`midas`: MIDAS, misalignment-based data augmentation (Hwang, Choi, Whang, "MIDAS: Misalignment-based Data
Augmentation Strategy for Imbalanced Multimodal Learning", NeurIPS 2025, arXiv 2509.25831; official code
Seong-HyeonHwang/MIDAS_NeurIPS2025 @ d25b225222f5, `models/model_midas_cremad.py` L81–174, `configs/default_config.py`).

MIDAS trains the fusion on misaligned samples built from the batch's own features, with soft labels saying how much
each modality should count. With pooled features `f_a, f_v`, per-modality linear heads `h_m`, confidences
`c_m = softmax(h_m(f_m))[y]` (detached) and a random permutation π of the batch, two misaligned batches are fused by
the cell's (late) fusion:

    pair 1 = fuse(f_a, f_v[π]):  w_a = c_a / (c_a + c_v[π]),   loss₁ = w_a·CE(z̃₁, y) + w_v·CE(z̃₁, y[π])
    pair 2 = fuse(f_a[π], f_v):  w_a = c_a[π] / (c_a[π] + c_v), loss₂ = w_a·CE(z̃₂, y[π]) + w_v·CE(z̃₂, y)

with `w_v = 1 − w_a`. The weak modality's term (the label that comes from its source) is multiplied by α: the weak
modality is video when `uni_ratio = mean c_a / mean c_v > 1`, else audio. Each pair's per-sample loss is multiplied
by the hard-sample weight `1 + (cos(f_s, f_s[π]) + 1)/2 ∈ [1, 2]`, s the swapped modality (detached), and

    L_mis = mean_i(weighted loss₁ + weighted loss₂) / 2
    L = CE(z, y) + mis_loss_weight·L_mis + (CE(h_a(f_a), y) + CE(h_v(f_v), y)) / 2

During the first `warmup_epochs` the loss is the unimodal part alone (the fusion is not trained; those epochs form
a stage `warmup` whose models are not selected). α starts at 1 and moves after every step by ±η: with
`mm_ratio` the mean over the two pairs of `mean p̃[label of a's source] / mean p̃[label of v's source]`, α grows when
the misaligned predictions lean to the strong modality more than the unimodal confidences do (`mm_ratio >
uni_ratio` with audio strong, `mm_ratio < uni_ratio` with video strong) and shrinks otherwise, never below 1.

Defaults (official): η = 0.05 and mis_loss_weight 1 (hard-coded, L105–106); warm-up 10 epochs on CREMA-D and
Kinetics(-Sounds) of a 70-epoch run (`get_method_config`), hence `warmup_epochs: null` = a seventh of the run
elsewhere; recipe SGD lr 1e-3, momentum 0.9, weight decay 1e-4, batch 64, StepLR(50, 0.1), 70 epochs (the grid's).

Where the paper and the official code differ (per the paper's text; the code is followed, it is what produced the
paper's numbers): the paper pairs each sample with a partner of a different label, the code with a random
permutation (a same-label partner just gets its own label, both terms); the paper's α update is a batch-averaged
difference between target weights and normalised multimodal confidences, the code's a fixed ±η step from the ratio
comparison, floored at 1; the paper's hard-sample weight is the cosine itself, the code's `1 + (cos + 1)/2`.

Differences from the official code, and why:

* The first modality of the task plays the code's audio, the second its video (the rule is symmetric except at
  `uni_ratio = 1` exactly, where the code takes audio as the weak modality, and so does this).
* Any late fusion of pooled features (the code's is concatenation + linear): the misaligned features go through
  the cell's fusion (`Requirements.late_fusion`). Two modalities only, as in the code (the paper's three-modality
  form is not in the released code).
* The warm-up epochs are not offered for model selection (their fusion is untrained); the code's checkpoint
  callback watches every epoch. The code steps its StepLR only after the warm-up; the engine's schedule counts
  from epoch 0.
* No host sync: the branches are `torch.where`, α is a tensor on the device; the permutation comes from a
  generator owned by the balancer, seeded from the run seed, so runs repeat exactly.
* Safeguards: confidence sums and ratio denominators are clamped at the smallest positive float.

Coefficients per epoch (means over the epoch's steps): `alpha` (1 in the warm-up); after the warm-up also
`uni_ratio`, `mm_ratio`, `weak.<m>` (the fraction of steps modality m was the weak one) and `mis_loss`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from mmbench.api import (
    Balancer,
    Batch,
    EpochMeans,
    ModelOutput,
    Params,
    Requirements,
    Stage,
    TrainContext,
    hookimpl,
)

WARMUP = Stage("warmup", selectable=False)
#: MIDAS's CREMA-D / Kinetics-Sounds schedule: 10 warm-up epochs of 70
WARMUP_SHARE = 10 / 70
#: offset so the permutation stream differs from the data-order stream seeded with the same run seed
_PERM_SEED_OFFSET = 0x3D5


def confidence(logits: Tensor, labels: Tensor) -> Tensor:
    """`softmax(logits)[i, y_i]`, detached, in float32."""
    return logits.detach().float().softmax(-1).gather(-1, labels.view(-1, 1)).squeeze(-1)


def hard_weight(original: Tensor, swapped: Tensor) -> Tensor:
    """`1 + (cos(original_i, swapped_i) + 1)/2`, per sample (detached): 2 for a partner feature like the one it
    replaces, 1 for an opposite one."""
    return 1 + (F.cosine_similarity(original.detach().float(), swapped.detach().float(), dim=1) + 1) / 2


def alpha_step(alpha: Tensor, uni_ratio: Tensor, mm_ratio: Tensor, eta: float) -> Tensor:
    """α ± η (official rule), floored at 1: up when the misaligned predictions lean further toward the strong
    modality than the unimodal confidences (`uni_ratio = mean c_a / mean c_v`)."""
    up = torch.where(uni_ratio > 1, mm_ratio > uni_ratio, mm_ratio < uni_ratio)
    return torch.clamp_min(alpha + torch.where(up, eta, -eta), 1.0)


def misaligned_loss(fuse: Callable[[dict[str, Tensor]], Tensor], features: dict[str, Tensor], labels: Tensor,
                    conf: dict[str, Tensor], perm: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """`(L_mis, uni_ratio, mm_ratio)` for two modalities (order: the code's audio, then video).

    For each modality s swapped in from π (the other, k, kept): soft weights from the confidences of the features'
    sources, the weak modality's label term × α, the sample's loss × the hard-sample weight."""
    a, v = features
    tiny = torch.finfo(torch.float32).tiny
    uni_ratio = conf[a].mean() / conf[v].mean().clamp_min(tiny)
    weak = {a: uni_ratio <= 1, v: uni_ratio > 1}
    total, ratios = torch.zeros_like(labels, dtype=torch.float32), []
    for kept, swapped in ((a, v), (v, a)):
        mixed = {kept: features[kept], swapped: features[swapped][perm]}
        logits = fuse(mixed).float()
        label = {kept: labels, swapped: labels[perm]}  # the label of each modality's source
        c_kept, c_swapped = conf[kept], conf[swapped][perm]
        weight = {kept: c_kept / (c_kept + c_swapped).clamp_min(tiny)}
        weight[swapped] = 1 - weight[kept]
        pair = sum(torch.where(weak[m], alpha, 1.0) * weight[m] * F.cross_entropy(logits, label[m], reduction="none")
                   for m in (kept, swapped))
        total = total + hard_weight(features[swapped], mixed[swapped]) * pair
        prob = logits.detach().softmax(-1)
        mean_p = {m: prob.gather(-1, label[m].view(-1, 1)).mean() for m in (a, v)}
        ratios.append(mean_p[a] / mean_p[v].clamp_min(tiny))
    return total.mean() / 2, uni_ratio, (ratios[0] + ratios[1]) / 2


class MIDASParams(Params):
    eta: float = Field(0.05, gt=0.0, le=1.0, json_schema_extra={"search": {"log_uniform": [0.01, 0.2]}},
                       description="η, α's step per training step (official 0.05, hard-coded)")
    mis_loss_weight: float = Field(1.0, ge=0.0, le=10.0, json_schema_extra={"search": {"uniform": [0.25, 2.0]}},
                                   description="weight of the misaligned loss (official 1, hard-coded)")
    warmup_epochs: int | None = Field(
        None, ge=0,
        description="epochs of unimodal-head training only before MIDAS starts (official: 10 on CREMA-D and "
                    "Kinetics-Sounds, 0 on UCF101, 2 on Food-101); null = a seventh of the run (10 of 70)")


class MIDAS(Balancer):
    """Misaligned feature pairs fused with confidence-weighted soft labels, the weak modality's term weighted by
    an adaptive α, plus the fused and unimodal losses."""

    name = "midas"
    Params = MIDASParams
    params: MIDASParams
    requires = Requirements(unimodal_heads=True, late_fusion=True, single_label=True, max_modalities=2)
    task_defaults = {"cremad": {"warmup_epochs": 10}, "kinetics_sounds": {"warmup_epochs": 10}}

    def setup(self, ctx: TrainContext) -> None:
        self.modalities = tuple(ctx.model.modalities)
        configured = self.params.warmup_epochs
        self.warmup = round(ctx.epochs * WARMUP_SHARE) if configured is None else configured
        self.alpha = torch.ones((), device=ctx.device)
        seed = ctx.generator.initial_seed() if ctx.generator is not None else torch.initial_seed()
        self.generator = torch.Generator(device=ctx.device).manual_seed(seed + _PERM_SEED_OFFSET)
        self.stats = EpochMeans()

    def stage(self, ctx: TrainContext) -> Stage:
        return WARMUP if ctx.epoch < self.warmup else super().stage(ctx)

    def loss(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> Tensor:
        y = batch.label
        unimodal = torch.stack([ctx.task_loss(out.unimodal[m], y) for m in self.modalities]).mean()
        self.stats.add("alpha", self.alpha)
        if ctx.epoch < self.warmup:
            return unimodal
        fusion = ctx.model.fusion
        if fusion is None:
            raise RuntimeError("midas fuses misaligned features with the cell's late fusion; this model has none")
        conf = {m: confidence(out.unimodal[m], y) for m in self.modalities}
        perm = torch.randperm(y.shape[0], generator=self.generator, device=self.generator.device).to(y.device)
        mis, uni_ratio, mm_ratio = misaligned_loss(lambda f: fusion(f).logits, out.features, y, conf, perm, self.alpha)
        self.stats.add("uni_ratio", uni_ratio)
        self.stats.add("mm_ratio", mm_ratio)
        self.stats.add("weak", torch.stack([uni_ratio <= 1, uni_ratio > 1]).float(), labels=self.modalities)
        self.stats.add("mis_loss", mis)
        self.alpha = alpha_step(self.alpha, uni_ratio, mm_ratio, self.params.eta)
        return ctx.task_loss(out.fused_logits(), y) + self.params.mis_loss_weight * mis + unimodal

    def coefficients(self) -> dict[str, float]:
        return self.stats.read()


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [MIDAS]
