"""`mmpareto`: MMPareto, Pareto integration of the multimodal and unimodal gradients (Wei, Hu, "MMPareto: Boosting
Multimodal Learning with Innocent Unimodal Assistance", ICML 2024; official code GeWu-Lab/MMPareto_ICML2024 @
a339db39cc25, `code/MMPareto.py`, `code/min_norm_solvers.py`).

Besides the fused loss `L_mm = CE(z, y)`, every modality has a linear head and a unimodal loss `L_m = CE(h_m(f_m), y)`.
The step replaces the gradient of each encoder m: with `g_mm` the gradient of `L_mm` and `g_u` that of `L_m` on the
encoder's parameters, both taken over the whole encoder (all its tensors flattened into one vector),

    cos(g_mm, g_u) > 0:   (k_mm, k_u) = (0.5, 0.5)
    otherwise:            k_mm = (‖g_u‖² − ⟨g_mm, g_u⟩) / ‖g_mm − g_u‖²,  k_u = 1 − k_mm

(the two-vector min-norm element of the Multiple-Gradient Descent Algorithm, Sener & Koltun, NeurIPS 2018, whose
solver the official code uses: `k_mm = 0.999` where ⟨g_mm, g_u⟩ ≥ ‖g_mm‖², `0.001` where ⟨g_mm, g_u⟩ ≥ ‖g_u‖²).
Then, per parameter tensor (official L184–207):

    g_new = 2·(k_mm·g_mm + k_u·g_u);   g_new ← g_new·‖g_mm + g_u‖/‖g_new‖  if ‖g_mm + g_u‖ > ‖g_new‖;   grad = γ·g_new

so the direction is the Pareto one (common to both losses when they conflict) and the magnitude at least that of
plain summed training, times γ = 1.5 (hard-coded at L178). Every other parameter (the fusion, the heads) keeps the
gradient of `L_mm + Σ_m L_m`. With more than two modalities nothing changes: encoder m only sees `L_mm` and its
own `L_m` (the official code has two modalities; the rule is per encoder).

Differences from the official code, and why:

* Two backward passes per step instead of four: `L_mm` and `Σ_m L_m` are differentiated separately with
  `torch.autograd.grad` and the other parameters get their sum, which equals the official extra backward of
  `L_mm + L_a + L_v`. With a late fusion `Σ_m L_m` reaches encoder m only through `L_m`, so each encoder's `g_u`
  is exactly the official one; with a fusion that exchanges information inside the encoders (e.g. MMTM) it also
  carries the other unimodal losses' share through the exchange.
* Encoders are the model's `encoder.<m>` parameter groups (the official code selects parameters by the names
  `audio`/`visual`, excluding names with `head`).
* The official dot products count every tensor twice (a per-tensor list plus their concatenation); that scales all
  of them by 2 and leaves k unchanged, so they are computed once here.
* Safeguards: when `g_new` is zero (both gradients zero, or exactly opposite with equal norms) it stays zero (the
  official code divides by its zero norm: NaN); the cosine's and the min-norm solution's denominators are clamped
  at the smallest positive float. No host sync: the branches are `torch.where`.
* Training recipe, not the method: the official script creates a StepLR(30, 0.1) but never steps it (a constant
  lr 0.002, SGD momentum 0.9, weight decay 1e-4, batch 64, 50 epochs); that is the grid's `train` block here.

Coefficients per epoch (means over steps): `k_mm.<m>` the weight of the multimodal gradient, `cos.<m>` the cosine
between the two gradients, `conflict.<m>` the fraction of steps where they conflict (cos ≤ 0), `scale.<m>` the
encoder's final gradient norm over that of `g_mm + g_u` (γ for agreeing gradients).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from mmbench.api import Balancer, Batch, EpochMeans, ModelOutput, Params, Requirements, TrainContext, hookimpl

#: k_mm at the min-norm solver's boundary cases (official `min_norm_solvers.py`, `_min_norm_element_from2`)
BOUNDARY_HIGH, BOUNDARY_LOW = 0.999, 0.001


def pareto_weights(dot: Tensor, sq_mm: Tensor, sq_u: Tensor) -> tuple[Tensor, Tensor]:
    """`(k_mm, cos)` of one encoder from ⟨g_mm, g_u⟩, ‖g_mm‖², ‖g_u‖² (0-d tensors): 0.5 when the gradients agree
    (cos > 0), else the weight of g_mm in the min-norm element of their convex hull."""
    tiny = torch.finfo(dot.dtype).tiny
    cos = dot / (sq_mm * sq_u).sqrt().clamp_min(tiny)
    min_norm = (sq_u - dot) / (sq_mm + sq_u - 2 * dot).clamp_min(tiny)
    min_norm = torch.where(dot >= sq_mm, torch.full_like(dot, BOUNDARY_HIGH),
                           torch.where(dot >= sq_u, torch.full_like(dot, BOUNDARY_LOW), min_norm))
    return torch.where(cos > 0, torch.full_like(dot, 0.5), min_norm), cos


def pareto_gradient(g_mm: Tensor, g_u: Tensor, k_mm: Tensor, gamma: float) -> Tensor:
    """One tensor's new gradient: `2(k_mm·g_mm + (1 − k_mm)·g_u)`, raised to the norm of `g_mm + g_u` when
    shorter, times γ."""
    new = 2 * (k_mm * g_mm + (1 - k_mm) * g_u)
    target, norm = torch.linalg.vector_norm(g_mm + g_u), torch.linalg.vector_norm(new)
    grow = (target > norm) & (norm > 0)
    return new * (torch.where(grow, target / norm.clamp_min(torch.finfo(norm.dtype).tiny), 1.0) * gamma)


class MMParetoParams(Params):
    gamma: float = Field(1.5, gt=0.0, le=10.0, json_schema_extra={"search": {"uniform": [1.0, 2.0]}},
                         description="γ, the factor on every encoder's combined gradient (official 1.5, hard-coded)")


class MMPareto(Balancer):
    """Per encoder, the Pareto (min-norm) combination of the multimodal and unimodal gradients when they conflict,
    their mean otherwise, at no less than the summed gradient's norm, times γ."""

    name = "mmpareto"
    Params = MMParetoParams
    params: MMParetoParams
    requires = Requirements(unimodal_heads=True)

    def setup(self, ctx: TrainContext) -> None:
        self.modalities = tuple(ctx.model.modalities)
        groups = ctx.model.parameter_groups()
        self.encoders = {m: [p for p in groups[f"encoder.{m}"] if p.requires_grad] for m in self.modalities}
        encoder_ids = {id(p) for ps in self.encoders.values() for p in ps}
        self.others = [p for p in ctx.model.parameters() if p.requires_grad and id(p) not in encoder_ids]
        self.stats = EpochMeans()

    def train_step(self, ctx: TrainContext, batch: Batch) -> tuple[Tensor, ModelOutput]:
        ctx.optimizer.zero_grad(set_to_none=True)
        with ctx.autocast():
            out = ctx.model(batch.inputs)
            fused = ctx.task_loss(out.fused_logits(), batch.label)
            unimodal = torch.stack([ctx.task_loss(out.unimodal[m], batch.label) for m in self.modalities]).sum()
        params = [p for ps in self.encoders.values() for p in ps] + self.others
        grads_mm = torch.autograd.grad(fused, params, retain_graph=True, allow_unused=True)
        grads_u = torch.autograd.grad(unimodal, params, allow_unused=True)
        by_param = {id(p): (a, b) for p, a, b in zip(params, grads_mm, grads_u, strict=True)}
        for p in self.others:
            a, b = by_param[id(p)]
            p.grad = a if b is None else b if a is None else a + b
        for m in self.modalities:
            self._combine(m, [(p, *by_param[id(p)]) for p in self.encoders[m]])
        ctx.optimizer.step()
        return (fused + unimodal).detach(), out

    @torch.no_grad()
    def _combine(self, modality: str, grads: list[tuple[nn.Parameter, Tensor | None, Tensor | None]]) -> None:
        """Set encoder `modality`'s gradients to the MMPareto combination."""
        pairs = [(p, torch.zeros_like(p) if a is None else a, torch.zeros_like(p) if b is None else b)
                 for p, a, b in grads if a is not None or b is not None]
        if not pairs:
            return
        dot = torch.stack([(a.float() * b.float()).sum() for _, a, b in pairs]).sum()
        sq_mm = torch.stack([a.float().square().sum() for _, a, _ in pairs]).sum()
        sq_u = torch.stack([b.float().square().sum() for _, _, b in pairs]).sum()
        k_mm, cos = pareto_weights(dot, sq_mm, sq_u)
        sq_sum = sq_new = torch.zeros((), device=dot.device)
        for p, a, b in pairs:
            p.grad = pareto_gradient(a, b, k_mm.to(a.dtype), self.params.gamma)
            sq_sum = sq_sum + (a.float() + b.float()).square().sum()
            sq_new = sq_new + p.grad.float().square().sum()
        self.stats.add(f"k_mm.{modality}", k_mm)
        self.stats.add(f"cos.{modality}", cos)
        self.stats.add(f"conflict.{modality}", (cos <= 0).float())
        self.stats.add(f"scale.{modality}", (sq_new / sq_sum.clamp_min(torch.finfo(sq_sum.dtype).tiny)).sqrt())

    def coefficients(self) -> dict[str, float]:
        return self.stats.read()


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [MMPareto]
