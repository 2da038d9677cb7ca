"""`cggm`: Classifier-Guided Gradient Modulation (Guo, Jin, Chen, Zhao, "Classifier-guided Gradient Modulation for
Enhanced Multimodal Learning", NeurIPS 2024; official code zrguo/CGGM @ 21e428cb7e66, `src/foodtrain.py`
`train_model`, `src/eval_metrics.py::cal_cos`, `models/msamodel.py::ClassifierGuided`, defaults in
`run/food_run.py`).

An auxiliary classifier per modality reads that modality's features, detached, and is trained alongside the
model with an optimizer of its own (AdamW, lr 5e-4, weight decay 3e-3). Its batch accuracy tells how fast each
modality is improving, and CGGM acts twice on every step, after the plain backward pass:

* magnitude: `d_m = acc_m(t) − acc_m(t−1)`, `B_m = (Σ_k d_k − d_m)/(Σ_k d_k)` (`Σ d` + 1e-8, as released), and
  every gradient of encoder m is multiplied by `ρ·B_m` (ρ = 1.3) — the modality improving fastest is slowed;
* direction: `L_gm = (Σ_m |B_m| − Σ_m B_m·cos_m)/M`, added with weight λ (0.05, Food-101) to the *next*
  step's loss. `cos_m` is the cosine between the auxiliary classifier's output weight and the fusion's output
  weight, taken on the parameter tensors (the released code passes the parameters themselves to `cal_cos`,
  not their `.grad`), so L_gm pulls the fusion's weights toward the direction of the classifiers whose
  modality improves slowest. A cosine of `.grad` tensors would carry no gradient at all (they are not part of
  the graph), so the released form is the one that acts, and it is the one followed.

Differences from the official code (mapping onto this suite's model), and why:

* The auxiliary classifiers read each encoder's pooled feature `(B, D_m)` (released: small transformers over
  the encoders' token sequences): `Linear(D_m, D_m) → ReLU → Linear(D_m, C)`, the released classifier's head
  (`proj1 → ReLU → out_layer`) without the transformer. They are `model.extras["cggm_classifiers"]`, stepped
  by the balancer's own optimizer (`separately_optimized`), after the encoders' gradients are scaled.
* `cos_m` compares the classifier's output weight `(C, D_m)` with modality m's block of the fusion's final
  linear layer `(C, D_m)` (`Fusion.classifier_blocks`). The released fusion's output layer reads the fused
  representation, whose width equals the classifiers' (`proj_dim`), and is compared whole with each classifier;
  here each classifier is compared with the part of the fusion's weight that reads its own modality, so the
  fusion must expose per-modality blocks (concat, sum, late_linear).
* B_m is clamped into [0, 1] (`clamp: true`, default). As released, `Σ d` is often exactly 0: batch accuracies
  are multiples of 1/B, so one modality gaining a sample while another loses one cancels, and B_m is then
  of order ±1e6 (±d/1e-8). The released training survives this only through its gradient clip
  (`run/food_run.py --clip 0.8`) and L_gm then dominates the loss. On the synthetic grid the per-epoch means
  of B were between ±5e4 and ±3e5 from the second epoch on, the slow modality's classifier stayed at chance,
  and the model ended 6 points below joint training (docs/methods/detached-and-auxiliary.md). Clamped, a
  cancelling step gives the modality that improved B = 0 and the one that fell back B = 1 — the method's
  intent (slow the modality improving fastest) — and B is unchanged whenever all d ≥ 0 (B_m = 1 − d_m/Σd).
  `clamp: false` reproduces the released coefficients; `clip_grad_norm: 0.8` the released clip (over every
  parameter the engine's optimizer steps, after the modulation; default null: the clip is the released
  recipe's, applied to its baseline too, and this suite's joint training has none).
* Accuracies, B_m and L_gm stay tensors on the device (released: Python floats), and the classifiers' AdamW is
  the fused implementation (its step count stays a tensor), so no step waits on the host.

Coefficients per epoch (means over steps): `coeff.<m>` (B_m), `acc.<m>` (auxiliary classifier batch accuracy),
`cos.<m>`, `l_gm`.
"""

from __future__ import annotations

from typing import cast

import torch
from pydantic import Field
from torch import Tensor, nn

from mmbench.api import Balancer, Batch, EpochMeans, ModelOutput, Requirements, TrainContext, hookimpl
from mmbench.api import Params as AnyParams  # in a class body, `Params` is the class's own parameter model

CLASSIFIERS = "cggm_classifiers"
#: added to Σ d before dividing (released code)
DIFF_EPS = 1e-8


def modulation_coefficients(accuracy: Tensor, previous: Tensor, clamp: bool = True) -> Tensor:
    """`B_m = (Σ d − d_m)/(Σ d + 1e-8)` with `d = accuracy − previous`, `(M,)`, clamped into [0, 1] with `clamp`."""
    diff = accuracy - previous
    total = diff.sum() + DIFF_EPS
    coeffs = (total - diff) / total
    return coeffs.clamp(0.0, 1.0) if clamp else coeffs


def direction_loss(coeffs: Tensor, cosines: Tensor) -> Tensor:
    """`L_gm = (Σ|B_m| − Σ B_m·cos_m)/M`; differentiable in the cosines, B treated as constants."""
    coeffs = coeffs.detach()
    return (coeffs.abs().sum() - (coeffs * cosines).sum()) / coeffs.numel()


def weight_cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine between two weight tensors, flattened; on copies, so later in-place updates leave the graph valid."""
    return nn.functional.cosine_similarity(a.clone().flatten(), b.clone().flatten(), dim=0)


class CGGMParams(AnyParams):
    rho: float = Field(1.3, gt=0.0, le=10.0, json_schema_extra={"search": {"uniform": [0.5, 2.0]}},
                       description="ρ, scale of the encoders' gradient multipliers ρ·B_m (official 1.3)")
    lam: float = Field(0.05, ge=0.0, le=10.0, json_schema_extra={"search": {"log_uniform": [0.01, 1.0]}},
                       description="λ, weight of the direction term L_gm (official 0.05 on Food-101, 0.2 on MOSI)")
    cls_lr: float = Field(5e-4, gt=0.0, le=1.0, description="learning rate of the auxiliary classifiers' AdamW")
    cls_weight_decay: float = Field(3e-3, ge=0.0, le=1.0, description="their AdamW weight decay (official 3e-3)")
    clamp: bool = Field(True, description="clamp B_m into [0, 1] (false: the released coefficients, ±1e6 when "
                                          "the accuracy changes cancel)")
    clip_grad_norm: float | None = Field(
        None, gt=0.0, description="clip the model's gradient norm after the modulation (the released recipe: 0.8); "
                                  "null: no clipping")


class CGGM(Balancer):
    """Scale each encoder's gradient by how slowly its auxiliary classifier improves; align the fusion to them."""

    name = "cggm"
    Params = CGGMParams
    params: CGGMParams
    requires = Requirements(single_label=True, fusions=frozenset({"concat", "sum", "late_linear"}))
    separately_optimized = frozenset({CLASSIFIERS})

    def extra_modules(self, feature_dims: dict[str, int], num_classes: int) -> dict[str, nn.Module]:
        return {CLASSIFIERS: nn.ModuleDict({
            m: nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, num_classes)) for m, d in feature_dims.items()
        })}

    def setup(self, ctx: TrainContext) -> None:
        self.modalities = tuple(ctx.model.modalities)
        self.classifiers = cast(nn.ModuleDict, ctx.model.extras[CLASSIFIERS])
        self.cls_optimizer = torch.optim.AdamW(self.classifiers.parameters(), lr=self.params.cls_lr,
                                               weight_decay=self.params.cls_weight_decay, fused=True)
        groups = ctx.model.parameter_groups()
        self.model_params = [p for name, ps in groups.items() if name != f"extra.{CLASSIFIERS}" for p in ps]
        self.previous = torch.zeros(len(self.modalities), device=ctx.device)
        self.pending: Tensor | None = None  # L_gm of the previous step
        self.stats = EpochMeans()

    def loss(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> Tensor:
        loss = ctx.task_loss(out.fused_logits(), batch.label)
        return loss if self.pending is None else loss + self.params.lam * self.pending

    def after_backward(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> None:
        y = batch.label
        self.cls_optimizer.zero_grad(set_to_none=True)
        with ctx.autocast():
            logits = [self.classifiers[m](out.features[m].detach()) for m in self.modalities]
            cls_loss = torch.stack([ctx.task_loss(o, y) for o in logits]).sum()
        cls_loss.backward()
        accuracy = torch.stack([(o.detach().argmax(-1) == y).float().mean() for o in logits])
        coeffs = modulation_coefficients(accuracy, self.previous, self.params.clamp)
        self.previous = accuracy
        blocks = ctx.model.fusion.classifier_blocks() if ctx.model.fusion is not None else {}
        cosines = torch.stack([weight_cosine(self._out_layer(m).weight, blocks[m][0]) for m in self.modalities])
        self.pending = direction_loss(coeffs, cosines)
        with torch.no_grad():
            for i, m in enumerate(self.modalities):
                for p in ctx.model.encoders[m].parameters():
                    if p.grad is not None:
                        p.grad.mul_((self.params.rho * coeffs[i]).to(p.grad.dtype))
        self.cls_optimizer.step()
        if self.params.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.model_params, self.params.clip_grad_norm)
        self.stats.add("coeff", coeffs, labels=self.modalities)
        self.stats.add("acc", accuracy, labels=self.modalities)
        self.stats.add("cos", cosines.detach(), labels=self.modalities)
        self.stats.add("l_gm", self.pending.detach())

    def _out_layer(self, m: str) -> nn.Linear:
        """The output layer of modality m's auxiliary classifier (the one compared with the fusion's weights)."""
        return cast(nn.Linear, cast(nn.Sequential, self.classifiers[m])[-1])

    def coefficients(self) -> dict[str, float]:
        return self.stats.read()


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [CGGM]
