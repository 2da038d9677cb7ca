"""`ogm` and `ogm_ge`: On-the-fly Gradient Modulation (+ Generalisation Enhancement) (Peng, Wei, Deng, Wang, Hu,
"Balanced Multimodal Learning via On-the-fly Gradient Modulation", CVPR 2022).

After the plain backward pass of each step, every modality's pseudo-unimodal logits `o_m` (its exact additive
share of the fused logits, read from the fusion) give a score `s_m = Σ_i softmax(o_m)[i, y_i]` (sum over the
batch). The discrepancy ratio `ρ_m = s_m / s_other` decides which modality dominates; the dominant one's
encoder gradients are scaled by `k_m = 1 − tanh(α·ρ_m)` (paper Eq. 10, current official code), the other's
are left alone (`k = 1`). OGM-GE additionally adds Gaussian noise `N(0, σ²)` to every modulated gradient of
*both* modalities, with `σ` the unbiased std of that tensor's un-scaled gradient plus 1e-8. Nothing happens
outside the epoch window `[modulation_starts, modulation_ends]` (inclusive, epochs from 0).

Differences from the official code (GeWu-Lab/OGM-GE_CVPR2022 @ 343dc1d95c9b, `main.py::train_epoch`), and why:

* Parameter selection. The released code touches only 4-D gradients (conv kernels) of the encoders, found by
  parsing parameter names (which silently selects nothing without `nn.DataParallel`, issue #38). Here the
  encoders' parameters are taken by model group, and `modulate` decides which: `"weights"` (default) = every
  parameter of ≥2 dimensions (conv kernels and fc/embedding weights, no biases or norm parameters), as the
  maintainers answered in issue #22 ("modulate the backbone: conv layers, and fc layers if it has them") —
  with the released rule an MLP or transformer encoder would never be modulated; `"conv"` = exactly 4-D
  tensors, the released rule (Conv2d kernels only).
* More than two modalities: neither the paper nor the official code has them; the authors' group's benchmark
  (GeWu-Lab/BalanceBenchmark @ 4c1482fca5aa, `balancemm/trainer/OGM_trainer.py`, three modalities) is followed: a sample
  counts only where modality m predicts it correctly, with `softmax(cos(o_m))`, so
  `s_m = Σ_{i: argmax o_m,i = y_i} softmax(cos(o_m,i))[y_i]`, and each modality is compared with the weakest,
  `ρ_m = s_m / min_j s_j`, `k_m = 1 − tanh(α·ρ_m)` where `ρ_m > 1`, else 1 (BalanceBenchmark raises beyond
  three modalities; here any M ≥ 3 takes this rule). With two modalities `ρ_m = s_m / s_other`, the official
  rule, except at an exact tie `s_a = s_v` (probability zero), where the official `else` branch scales the
  first modality and this one scales neither.
* Safeguards: scores are computed in float32 (pseudo-logits may be bf16 under autocast) and each ratio's
  denominator is clamped at the smallest positive float, so two underflowed scores give `ρ = 0, k = 1`
  instead of NaN (the official code has no epsilon). A 1-element tensor (unbiased std undefined) gets
  `σ = 1e-8`.
* Everything is tensor arithmetic on the device (the `ρ > 1` branch is `torch.where`); no host sync per step.
* GE noise is drawn from a generator owned by the balancer, seeded from the run seed, so runs repeat exactly.

`formula="tanh_relu_rho_minus_one"` reproduces the pre-May-2022 code: `k_m = 1 − tanh(α·relu(ρ_m − 1))`
for every modality (continuous at ρ = 1).

The journal version (Wei, Hu, Du, Wen, "On-the-fly Modulation for Balanced Multimodal Learning", T-PAMI 2024;
GeWu-Lab/BML_TPAMI2024 @ 4b3aa4fd8418, `code/main.py::train`) computes the same coefficient: the dominant
modality gets `1 − tanh(α·relu(ρ))` with `ρ > 1`, i.e. `1 − tanh(α·ρ)`, the other 1 — the default `tanh_rho`,
so no separate formula is needed. Its script differs only in the recipe: α 0.8, no modulation in the warm-up
epochs 0–5 and none after epoch 60, conv kernels only, and its default `--modulation OGM_GE` adds the noise:
`ogm_ge` with `alpha: 0.8, modulation_starts: 6, modulation_ends: 60, modulate: conv`. Its feature-dropping
counterpart is `opm`.

Coefficients reported per epoch: `k.<m>` the mean coefficient applied over the epoch's steps (1 outside the
window) and `rho.<m>` the mean ratio (always computed).
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
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

#: added to the GE noise std (official code)
GE_STD_EPS = 1e-8
#: offset so the noise stream differs from the data-order stream seeded with the same run seed
_NOISE_SEED_OFFSET = 0x0C3A


class OGMParams(EpochWindowParams):
    alpha: float = Field(
        0.1, gt=0.0, le=100.0, json_schema_extra={"search": {"log_uniform": [0.05, 3.0]}},
        description="α in k = 1 − tanh(α·ρ). README: 0.8 for CREMA-D, 0.1 for VGGSound and as the general "
                    "default; no official value for AVE/Kinetics-Sounds.",
    )
    modulation_ends: int | None = Field(50, ge=0, description="last epoch (inclusive) of modulation; official 50")
    modulate: Literal["weights", "conv"] = Field(
        "weights",
        description="which encoder gradients are modulated: 'weights' = every parameter with ≥2 dimensions "
                    "(conv and fc weights; maintainers' answer, issue #22); 'conv' = only 4-D conv kernels "
                    "(the released code's rule)",
    )
    formula: Literal["tanh_rho", "tanh_relu_rho_minus_one"] = Field(
        "tanh_rho",
        description="'tanh_rho' = paper Eq. 10 / current code (dominant modality k = 1 − tanh(α·ρ), others 1); "
                    "'tanh_relu_rho_minus_one' = pre-May-2022 code (k = 1 − tanh(α·relu(ρ−1)) for all)",
    )



def ogm_coefficients(
    contributions: dict[str, Tensor], labels: Tensor, alpha: float, formula: str = "tanh_rho",
) -> tuple[Tensor, Tensor, Tensor]:
    """Scores `s`, ratios `ρ` and coefficients `k`, each a `(M,)` tensor in the order of `contributions`.

    Two modalities: `s_m = Σ_i softmax(o_m)[i, y_i]`, `ρ_m = s_m / s_other`. Three or more (BalanceBenchmark):
    `s_m = Σ_{i correct} softmax(cos(o_m))[i, y_i]`, `ρ_m = s_m / min_j s_j`. `k` per `formula` (module doc).
    """
    logits = torch.stack([o.detach().float() for o in contributions.values()])  # (M, B, C)
    index = labels.view(1, -1, 1).expand(logits.shape[0], -1, 1)
    if logits.shape[0] == 2:
        scores = logits.softmax(-1).gather(-1, index).squeeze(-1).sum(-1)  # (M,)
        reference = scores.flip(0)
    else:
        correct = logits.argmax(-1) == labels.view(1, -1)
        scores = (logits.cos().softmax(-1).gather(-1, index).squeeze(-1) * correct).sum(-1)
        reference = scores.min().expand_as(scores)
    ratios = scores / reference.clamp_min(torch.finfo(scores.dtype).tiny)
    if formula == "tanh_rho":
        coeffs = torch.where(ratios > 1, 1 - torch.tanh(alpha * ratios), torch.ones_like(ratios))
    elif formula == "tanh_relu_rho_minus_one":
        coeffs = 1 - torch.tanh(alpha * torch.relu(ratios - 1))
    else:
        raise ValueError(f"unknown OGM formula {formula!r}")
    return scores, ratios, coeffs


def ge_noise_std(grad: Tensor) -> Tensor:
    """σ of OGM-GE's noise: unbiased std of the (un-scaled) gradient + 1e-8, as a 0-d tensor."""
    if grad.numel() < 2:
        return torch.full((), GE_STD_EPS, dtype=grad.dtype, device=grad.device)
    return grad.std() + GE_STD_EPS


class OGM(Balancer):
    """OGM: scale the dominant modality's encoder gradients by `1 − tanh(α·ρ)` after backward."""

    name = "ogm"
    Params = OGMParams
    params: OGMParams
    requires = Requirements(fusion_contributions=True, single_label=True)
    task_defaults = {"cremad": {"alpha": 0.8}}
    #: OGM-GE adds noise; set by the subclass
    noise: bool = False

    def setup(self, ctx: TrainContext) -> None:
        modalities = ctx.model.modalities
        self.modalities = tuple(modalities)
        self.selected: dict[str, list[torch.nn.Parameter]] = {}
        for m in modalities:
            params = [p for p in ctx.model.encoders[m].parameters() if p.requires_grad and self._selects(p)]
            if not params:
                warnings.warn(f"{self.name}: modulate={self.params.modulate!r} selects no trainable parameter of "
                              f"the {m!r} encoder; its gradients will not be modulated", stacklevel=2)
            self.selected[m] = params
        self.generator = None
        if self.noise:
            seed = ctx.generator.initial_seed() if ctx.generator is not None else torch.initial_seed()
            self.generator = torch.Generator(device=ctx.device).manual_seed(seed + _NOISE_SEED_OFFSET)
        self.stats = EpochMeans()

    def _selects(self, p: torch.nn.Parameter) -> bool:
        return p.dim() >= 2 if self.params.modulate == "weights" else p.dim() == 4

    def active(self, epoch: int) -> bool:
        return self.params.active(epoch)

    @torch.no_grad()
    def after_backward(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> None:
        contributions = {m: out.contributions[m] for m in self.modalities}
        _, ratios, coeffs = ogm_coefficients(contributions, batch.label, self.params.alpha, self.params.formula)
        active = self.active(ctx.epoch)
        self.stats.add("k", coeffs if active else torch.ones_like(coeffs), labels=self.modalities)
        self.stats.add("rho", ratios, labels=self.modalities)
        if not active:
            return
        for i, m in enumerate(self.modalities):
            k = coeffs[i]
            for p in self.selected[m]:
                if p.grad is None:
                    continue
                if self.noise:
                    sigma = ge_noise_std(p.grad)  # from the un-scaled gradient
                    p.grad.mul_(k.to(p.grad.dtype))
                    noise = torch.randn(p.grad.shape, generator=self.generator, device=p.grad.device,
                                        dtype=p.grad.dtype)
                    p.grad.add_(noise * sigma)
                else:
                    p.grad.mul_(k.to(p.grad.dtype))

    def coefficients(self) -> dict[str, float]:
        return self.stats.read()


class OGMGE(OGM):
    """OGM-GE: OGM plus Gaussian noise (std of the un-scaled gradient) on both modalities' gradients."""

    name = "ogm_ge"
    noise = True


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [OGM, OGMGE]
