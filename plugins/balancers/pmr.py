"""`pmr`: Prototypical Modal Rebalance (Fan, Xu, Wang, Wang, Guo, "PMR: Prototypical Modal Rebalance for Multimodal
Learning", CVPR 2023; official code fanyunfeng-bit/Modal-Imbalance-PMR @ 3615e4898355, `main_Prototype_grad.py`).

Once per epoch (before it starts) every modality gets class prototypes `c_k^m`: the mean encoder feature of
class k over the first `⌊N·fraction⌋` (at least 1) batches of the shuffled train loader, computed without
gradient in eval mode — a random ≈10 % subset. From the third epoch on they are mixed with the previous ones,
`c ← (1 − μ)·c_fresh + μ·c_old` (the code calls its prototype routine with epoch 0 before training and after
the first epoch, so neither of those mixes).

Per step, with prototypes fixed: `D_m[i,k] = ‖z_m,i − c_k^m‖₂`, prototype logits `−D_m`, prototypical
cross-entropy `PCE_m = CE(−D_m, y)`, and `ŝ_m = Σ_i softmax(−D_m)[i, y_i]`. In the window
`[modulation_starts, modulation_ends]` (inclusive, epochs from 0) the loss is

    L = task_loss(o, y) + Σ_m β_m · PCE_m,   β_m = α if ρ_m < 1 else 0,   ρ_m = ŝ_m / max_{k≠m} ŝ_k,

i.e. the slower modality (lower prototype score) gets the extra term with the constant weight α (not scaled
by ρ); at an exact tie neither does. With two modalities this is the code's rule (`ρ = ŝ_a/ŝ_v > 1` → only
the visual term). Outside the window `L = task_loss(o, y)`.

Differences from the official code, and why:

* Paper-only component left out: the abstract's prototype-based entropy regularisation of the dominant
  modality in the early stage is not in the released script (this follows the code).
* More than two modalities: the code has two; the authors' benchmark for three (GeWu-Lab/BalanceBenchmark @
  4c1482fca5aa, `balancemm/trainer/PMR_trainer.py`) is followed. There the prototype scores drive an OGM-GE-style
  gradient rule instead of the PCE term: `ρ_m = ŝ_m / min_j ŝ_j`, and after backward the gradient of every encoder
  weight (≥ 2 dimensions) of modality m becomes `k_m·g − ε`, `k_m = 1 − tanh(η·ρ_m)` where `ρ_m > 1` (else 1),
  `ε ~ N(0, σ²)` with σ the unbiased std of g + 1e-8, η = 0.01 (BalanceBenchmark's default; `ETA`). The loss
  is the task loss alone; `beta.<m>` is 0 and `k.<m>` reports the coefficients.
* Safeguards (the code has none): a class with no sample in the prototype pass keeps its previous
  prototype, or, on the first pass, gets the mean feature of all the pass's samples (the code divides by
  zero → NaN/inf prototypes → NaN loss); the count of such classes is reported as `empty_classes`. Zero
  distances use a square root whose gradient is 0 at 0 (the code's `sqrt(dot)` gives NaN gradients there).
  Distances and prototypes are computed in float32.
* Prototype source: the code uses the validation loader (whole) for AVE and CG-MNIST. Here the default is
  the train loader for every task, because this suite selects models on validation, whose labels must not
  feed training; `prototype_split="val"` reproduces the code (use `prototype_fraction=1.0` as AVE did).
* Distances are one vectorised computation instead of the code's (B, C) Python loop; class sums use a
  one-hot matmul. No host synchronisation per step (β is a `torch.where`).
* Timing: the code recomputes the prototypes right after each epoch's training; here it happens at the next
  epoch's start — the same weights, only the random subset differs (the val metrics do not use them).
* Features are the encoders' pooled outputs `z_m` of any fusion (the code's fusions return them too).

Coefficients reported per epoch: `beta.<m>` mean coefficient of `PCE_m` (0 outside the window), `rho.<m>`
mean ratio, `pce.<m>` mean PCE (always computed), `empty_classes` the number of classes with no sample in
the epoch's prototype pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from mmbench.api import (
    Balancer,
    Batch,
    EpochMeans,
    EpochWindowParams,
    ModelOutput,
    Requirements,
    TrainContext,
    hookimpl,
)
from mmbench_plugins.balancers.ogm import ge_noise_std

#: η of BalanceBenchmark's three-modality gradient rule (its PMR default)
ETA = 0.01
#: offset so the noise stream differs from the data-order stream seeded with the same run seed
_NOISE_SEED_OFFSET = 0x0B3D


class PMRParams(EpochWindowParams):
    alpha: float = Field(
        1.0, ge=0.0, le=100.0, json_schema_extra={"search": {"log_uniform": [0.25, 5.0]}},
        description="α, weight of the slower modality's PCE term. argparse default 1.0; bash.sh: CREMA-D concat "
                    "2.0 (sum 5.0, film/gated 3.0), AVE 2.0, CG-MNIST 1.0",
    )
    momentum: float = Field(
        0.2, ge=0.0, lt=1.0, json_schema_extra={"search": {"uniform": [0.0, 0.5]}},
        description="μ in c ← (1−μ)·c_fresh + μ·c_old (argparse `momentum_coef` 0.2; every bash.sh run uses "
                    "0.0)",
    )
    modulation_ends: int | None = Field(
        100, ge=0, description="last epoch (inclusive) with the PCE term; argparse 100, bash.sh 70; null = all",
    )
    prototype_fraction: float = Field(
        0.1, gt=0.0, le=1.0,
        description="fraction of the loader's batches (⌊N·fraction⌋, at least 1) used for the prototypes "
                    "(code: N // 10)",
    )
    prototype_split: Literal["train", "val"] = Field(
        "train",
        description="loader the prototypes come from: 'train' (code for CREMA-D/KS/VGGSound) or 'val' (code for "
                    "AVE and CG-MNIST; uses validation labels in training)",
    )



# ------------------------------------------------------------------------------------- core computations


def euclidean_distances(z: Tensor, prototypes: Tensor) -> Tensor:
    """`D[i,k] = ‖z_i − c_k‖₂` in float32, with a zero (not NaN) gradient where the distance is 0."""
    diff = z.float().unsqueeze(1) - prototypes.float().unsqueeze(0)  # (B, C, d)
    squared = diff.pow(2).sum(-1)
    positive = squared > 0
    return torch.where(positive, torch.where(positive, squared, torch.ones_like(squared)).sqrt(),
                       torch.zeros_like(squared))


def pmr_terms(features: Mapping[str, Tensor], prototypes: Mapping[str, Tensor], labels: Tensor,
              alpha: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Scores `ŝ`, ratios `ρ`, coefficients `β` (all `(M,)`, no gradient) and the `(M,)` PCE losses.

    `ŝ_m = Σ_i softmax(−D_m)[i, y_i]`, `PCE_m = CE(−D_m, y)`; two modalities: `ρ_m = ŝ_m / ŝ_other`,
    `β_m = α·[ρ_m < 1]`; three or more (BalanceBenchmark): `ρ_m = ŝ_m / min_j ŝ_j`, `β = 0`.
    """
    logits = torch.stack([-euclidean_distances(features[m], prototypes[m]) for m in features])  # (M, B, C)
    log_p = logits.log_softmax(-1)
    index = labels.view(1, -1, 1).expand(logits.shape[0], -1, 1)
    log_p_true = log_p.gather(-1, index).squeeze(-1)  # (M, B)
    pce = -log_p_true.mean(-1)
    with torch.no_grad():
        scores = log_p_true.exp().sum(-1)
        two = scores.numel() == 2
        reference = scores.flip(0) if two else scores.min().expand_as(scores)
        ratios = scores / reference.clamp_min(torch.finfo(scores.dtype).tiny)
        betas = torch.where((ratios < 1) & two, torch.full_like(ratios, alpha), torch.zeros_like(ratios))
    return scores, ratios, betas, pce


def gradient_coefficients(ratios: Tensor) -> Tensor:
    """BalanceBenchmark's three-modality coefficients `k_m = 1 − tanh(η·ρ_m)` where `ρ_m > 1`, else 1."""
    return torch.where(ratios > 1, 1 - torch.tanh(ETA * ratios), torch.ones_like(ratios))


def class_sums(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class feature sums `(C, d)` and sample counts `(C,)`, in float32."""
    onehot = F.one_hot(labels.long(), num_classes).float()  # (N, C)
    return onehot.T @ features.float(), onehot.sum(0)


def class_means(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class mean features (`(C, d)`; an empty class gives 0, not NaN) and the counts."""
    sums, counts = class_sums(features, labels, num_classes)
    return sums / counts.clamp_min(1).unsqueeze(1), counts


def update_prototypes(fresh: Tensor, counts: Tensor, old: Tensor | None, momentum: float, mix: bool,
                      fallback: Tensor) -> Tensor:
    """`(1−μ)·fresh + μ·old` when `mix` (else `fresh`); empty classes keep `old`, or `fallback` without one."""
    present = (counts > 0).unsqueeze(1)
    if old is None:
        return torch.where(present, fresh, fallback.expand_as(fresh))
    updated = (1 - momentum) * fresh + momentum * old if mix else fresh
    return torch.where(present, updated, old)


# ------------------------------------------------------------------------------------------- balancer


class PMR(Balancer):
    """PMR: prototypical cross-entropy on the slower modality, prototypes re-estimated every epoch."""

    name = "pmr"
    Params = PMRParams
    params: PMRParams
    requires = Requirements(single_label=True)
    task_defaults = {
        # bash.sh (CREMA-D concat / AVE concat runs): α 2.0, μ 0.0, window 0–70 of 130 epochs
        "cremad": {"alpha": 2.0, "momentum": 0.0, "modulation_ends": 70},
        "ave": {"alpha": 2.0, "momentum": 0.0, "modulation_ends": 70},
    }

    def setup(self, ctx: TrainContext) -> None:
        self.modalities = tuple(ctx.model.modalities)
        self.num_classes = ctx.task.num_classes
        self.prototypes: dict[str, Tensor] = {}
        self.empty_classes = 0
        self.stats = EpochMeans()
        self.gradient_rule = len(self.modalities) > 2  # BalanceBenchmark's form (module docstring)
        if self.gradient_rule:
            self.weights = {m: [p for p in ctx.model.encoders[m].parameters() if p.requires_grad and p.dim() >= 2]
                            for m in self.modalities}
            seed = ctx.generator.initial_seed() if ctx.generator is not None else torch.initial_seed()
            self.noise = torch.Generator(device=ctx.device).manual_seed(seed + _NOISE_SEED_OFFSET)

    def active(self, epoch: int) -> bool:
        return self.params.active(epoch)

    @torch.no_grad()
    def compute_prototypes(self, ctx: TrainContext) -> None:
        """Fresh class means of eval-mode features over a fraction of the loader, mixed with the old ones."""
        loader = ctx.train_loader if self.params.prototype_split == "train" else ctx.val_loader
        batches = max(1, math.floor(len(loader) * self.params.prototype_fraction))
        model = ctx.model
        was_training = model.training
        model.eval()
        sums: dict[str, Tensor] = {}
        counts = torch.zeros(self.num_classes, device=ctx.device)
        try:
            for _, batch in zip(range(batches), loader):  # on the device already
                with ctx.autocast():
                    z = model.encode(batch.inputs)
                for m in self.modalities:
                    s, c = class_sums(z[m], batch.label, self.num_classes)
                    sums[m] = sums[m] + s if m in sums else s
                counts += c
        finally:
            model.train(was_training)
        mix = ctx.epoch >= 2  # the code's first two prototype calls both pass epoch 0
        for m in self.modalities:
            fresh = sums[m] / counts.clamp_min(1).unsqueeze(1)
            overall = sums[m].sum(0, keepdim=True) / counts.sum().clamp_min(1)
            self.prototypes[m] = update_prototypes(fresh, counts, self.prototypes.get(m), self.params.momentum,
                                                   mix, fallback=overall)
        self.empty_classes = int((counts == 0).sum())  # once per epoch, not per step

    def on_epoch_start(self, ctx: TrainContext) -> None:
        self.compute_prototypes(ctx)

    def loss(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> Tensor:
        y = batch.label
        features = {m: out.features[m] for m in self.modalities}
        _, ratios, betas, pce = pmr_terms(features, self.prototypes, y, self.params.alpha)
        loss = ctx.task_loss(out.fused_logits(), y)
        active = self.active(ctx.epoch)
        if active:
            loss = loss + (betas * pce).sum()
        self.stats.add("beta", betas if active else torch.zeros_like(betas), labels=self.modalities)
        self.stats.add("rho", ratios, labels=self.modalities)
        self.stats.add("pce", pce, labels=self.modalities)
        self.ratios = ratios
        return loss

    @torch.no_grad()
    def after_backward(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> None:
        """Three or more modalities, in the window: `g ← k_m·g − N(0, σ²)` on every encoder weight."""
        if not (self.gradient_rule and self.active(ctx.epoch)):
            return
        k = gradient_coefficients(self.ratios)
        self.stats.add("k", k, labels=self.modalities)
        for i, m in enumerate(self.modalities):
            for p in self.weights[m]:
                if p.grad is None:
                    continue
                sigma = ge_noise_std(p.grad)
                p.grad.mul_(k[i].to(p.grad.dtype))
                p.grad.sub_(torch.randn(p.grad.shape, generator=self.noise, device=p.grad.device,
                                        dtype=p.grad.dtype) * sigma)

    def coefficients(self) -> dict[str, float]:
        return {**self.stats.read(), "empty_classes": float(self.empty_classes)}


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [PMR]
