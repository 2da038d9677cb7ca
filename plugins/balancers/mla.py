"""`mla`: Multimodal Learning with Alternating unimodal adaptation (Zhang, Yoon, Bansal, Yao, "Multimodal
Representation Learning by Alternating Unimodal Adaptation", CVPR 2024).

MLA replaces joint training. Every modality's features go through ONE shared linear head (added by this
balancer as `model.extras["mla_head"]`, optimizer group `extra.mla_head`); for each batch the modalities take
turns (in the task's modality order): `o_m = head(f_m)`, `L_m = CE(o_m, y)`, backward (only encoder m and the
shared head receive gradient), project the shared head's *weight* gradient with an OWM/RLS projector, then one
optimizer step. So a batch makes M optimizer steps, and the encoders never see each other's loss.

Projection (paper; official `GSPlugin.before_update`), skipped on the very first step of training only:

    α = α0^(1 + b/N_b)          b = batch index in the epoch, N_b = batches per epoch (α0 = 0.1)
    r = mean_batch(f_m)         (1 × d, detached)
    k = P rᵀ;   P ← P − k kᵀ / (α + r k);   P ← P / ‖P‖_F;   grad_W ← grad_W · Pᵀ

One P (d × d, starting at I) is shared by all modalities and never reset; it is updated with the current batch
before the current gradient is projected. The bias gradient is not projected.

At test time the per-modality logits `head(f_m)` are fused: `fusion="entropy"` (default) weights them per sample
by `w_m = softmax_m(−H_m)`, `H_m` the class entropy of `softmax(o_m)` (the paper's uncertainty gating);
`"entropy_batch"` is the official code's variant (softmax over the *batch* axis and entropy summed over the whole
B × C matrix: one weight per modality per evaluation batch, so predictions depend on the batch size);
`"fixed"` uses fixed weights (official defaults: 0.55/0.45 for two modalities, 0.35/0.25/0.40 for three).

Missing-modality evaluation: a modality the engine drops (`ModelOutput.dropped`) gets weight 0 (the other
weights renormalised), so "modality m alone" is exactly `head(f_m)` (what the official code reports as
unimodal accuracy) and "m missing" fuses the rest.

The cell's fusion module is not used by MLA at all (neither in the loss nor in the prediction) and its
parameters never receive gradient: it declares `ignores_fusion`, so a grid runs it with its first fusion only.

Differences from the official code (Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation @
ab6c184579f9, `main.py`, `utils/utils.py::GSPlugin`), and why:

* The projection runs by default (`project_gradients: true`, the paper's method). In the official code it never
  runs: the hook only acts on a parameter named `module.weight`, but it receives the bare `fc_out` Linear whose
  parameters are `weight`/`bias`, so P stays I and no gradient is modified. `project_gradients: false`
  reproduces the released behaviour (alternating training through a shared head, no projection).
* OWM denominator: `α + r k`, a scalar, as in OWM's recursive-least-squares update (Zeng, Chen, Cui, Yu,
  "Continual learning of context-dependent processing in neural networks", Nature Machine Intelligence 2019).
  The official (dead) code and BalanceBenchmark (GeWu-Lab/BalanceBenchmark @ 4c1482fca5aa,
  `balancemm/trainer/MLA_trainer.py`) write `α + k r`, a d × d outer product divided elementwise; that is a typo
  of the OWM rule, not reproduced.
* `projection: "additive"` gives BalanceBenchmark's rule `grad_W ← grad_W + grad_W · Pᵀ`.
* `zero_grad(set_to_none=True)` between the per-modality steps: the idle encoder is not moved at all. Under the
  official torch 1.8 `zero_grad()` left zero tensors, so SGD momentum and weight decay still moved the first
  modality's encoder during the second modality's step — an artefact, not part of the method.
* P has the features' dimension d (hard-coded 512 officially). The shared head is initialised like the official
  `weight_init` (Xavier-normal weight, zero bias).
* The returned training loss is the mean of the per-modality losses (official logging used 0.55·L_a + 0.45·L_v;
  it is never optimised).
* Safeguards: P is kept in float32 and re-symmetrised after each update (exact arithmetic keeps it symmetric;
  this only removes float drift over many thousands of updates); entropies use `log_softmax` (no log 0).

Coefficients per epoch: `loss.<m>` mean per-modality loss, `kept.<m>` mean ‖projected grad‖ / ‖grad‖ of the
shared head weight (1 when not projecting), `gate.<m>` mean test-time fusion weight on the training batches,
`p_eff_rank` = tr(P)² / ‖P‖_F² (d for P = I, shrinking as P projects out learned directions).
"""

from __future__ import annotations

from typing import Literal, cast

import torch
from pydantic import Field
from torch import Tensor, nn

from mmbench.api import (
    Balancer,
    Batch,
    EpochMeans,
    ModelOutput,
    Requirements,
    Task,
    TrainContext,
    hookimpl,
    late_fusion,
)
from mmbench.api import Params as AnyParams  # in a class body, `Params` is the class's own parameter model

HEAD = "mla_head"
#: official fixed fusion weights by number of modalities (`main(av_alpha=0.55)`; a/v/t = 0.35/0.25/0.4)
OFFICIAL_FIXED_WEIGHTS = {2: (0.55, 0.45), 3: (0.35, 0.25, 0.40)}


# ------------------------------------------------------------------------------------------ core maths


def owm_alpha(batch_index: int, batches_per_epoch: int, alpha0: float = 0.1) -> float:
    """α = α0^(1 + b/N_b): from α0 at the first batch of an epoch towards α0² at its end."""
    return alpha0 ** (1.0 + batch_index / max(1, batches_per_epoch))


def owm_update(P: Tensor, features: Tensor, alpha: float) -> Tensor:
    """One OWM/RLS update of the projector with the batch-mean feature, then Frobenius normalisation."""
    r = features.detach().float().mean(0, keepdim=True)  # (1, d)
    k = P @ r.T  # (d, 1)
    P = P - (k @ k.T) / (alpha + r @ k)
    P = 0.5 * (P + P.T)  # float-drift safeguard (exactly symmetric in exact arithmetic)
    return P / torch.linalg.matrix_norm(P)


def project_gradient(grad: Tensor, P: Tensor, mode: Literal["replace", "additive"] = "replace") -> Tensor:
    """`grad · Pᵀ` (OWM, official) or `grad + grad · Pᵀ` (BalanceBenchmark)."""
    projected = grad @ P.T.to(grad.dtype)
    return projected if mode == "replace" else grad + projected


# ------------------------------------------------------------------------------------------ balancer


class MLAParams(AnyParams):
    project_gradients: bool = Field(
        True,
        description="project the shared head's weight gradient with the OWM projector (the paper's method); "
                    "false reproduces the official code, where the projection never ran",
    )
    projection: Literal["replace", "additive"] = Field(
        "replace",
        description="'replace': grad ← grad·Pᵀ (paper/official); 'additive': grad ← grad + grad·Pᵀ "
                    "(BalanceBenchmark's variant)",
    )
    alpha0: float = Field(0.1, gt=0.0, lt=1.0, json_schema_extra={"search": {"log_uniform": [0.01, 0.5]}},
                          description="α = alpha0^(1 + b/N_b); official 0.1")
    fusion: Literal["entropy", "entropy_batch", "fixed"] = Field(
        "entropy",
        description="test-time fusion: 'entropy' = per-sample class-entropy gating (paper; default), "
                    "'entropy_batch' = official code's batch-level dim-0 entropy, 'fixed' = fixed weights",
    )
    fixed_weights: tuple[float, ...] | None = Field(
        None,
        description="weights for fusion='fixed', in the task's modality order (renormalised to sum 1 at "
                    "evaluation); None = official defaults (0.55/0.45 for 2 modalities, 0.35/0.25/0.40 for 3, "
                    "uniform otherwise)",
    )


class MLA(Balancer):
    """Alternating unimodal steps through one shared head with OWM gradient projection; entropy-gated fusion."""

    name = "mla"
    Params = MLAParams
    params: MLAParams
    requires = Requirements(equal_feature_dims=True, single_label=True, ignores_fusion=True)
    task_defaults = {}

    def __init__(self, params: MLAParams) -> None:
        super().__init__(params)
        self.P: Tensor | None = None
        self.updates = 0  # optimizer steps taken so far (the official `exp_count`)

    def extra_modules(self, feature_dims: dict[str, int], num_classes: int) -> dict[str, nn.Module]:
        dims = set(feature_dims.values())
        if len(dims) != 1:
            raise ValueError(f"mla feeds every modality's feature into one shared linear head, so all feature "
                             f"sizes must be equal; got {feature_dims}. Set the encoders' output sizes equal.")
        head = nn.Linear(dims.pop(), num_classes)
        nn.init.xavier_normal_(head.weight)
        nn.init.zeros_(head.bias)
        return {HEAD: head}

    @classmethod
    def check(cls, params: AnyParams, task: Task) -> list[str]:
        if not isinstance(params, MLAParams):
            raise TypeError(f"{cls.name} checks MLAParams, got {type(params).__name__}")
        weights, n = params.fixed_weights, len(task.modalities)
        if weights is not None and len(weights) != n:
            return [f"fixed_weights has {len(weights)} entries for the task's {n} modalities "
                    f"({', '.join(task.modalities)})"]
        return []

    @staticmethod
    def _head(ctx: TrainContext) -> nn.Linear:
        """The shared head of `extra_modules` (the model's ModuleDict types it as any module)."""
        return cast(nn.Linear, ctx.model.extras[HEAD])

    def setup(self, ctx: TrainContext) -> None:
        self.P = torch.eye(self._head(ctx).in_features, device=ctx.device)
        self.modalities = tuple(ctx.model.modalities)
        n = len(self.modalities)
        fixed = self.params.fixed_weights or OFFICIAL_FIXED_WEIGHTS.get(n, (1.0 / n,) * n)
        self._fixed = torch.tensor(fixed, device=ctx.device, dtype=torch.float32).unsqueeze(1)  # made once
        self.stats = EpochMeans()

    # ------------------------------------------------------------------------------ training step

    def train_step(self, ctx: TrainContext, batch: Batch) -> tuple[Tensor, ModelOutput]:
        model, head, y = ctx.model, self._head(ctx), batch.label
        ctx.optimizer.zero_grad(set_to_none=True)
        with ctx.autocast():
            features = model.encode(batch.inputs)
        losses, logits = [], {}
        for m in self.modalities:
            with ctx.autocast():
                o = head(features[m])
                loss = ctx.task_loss(o, y)
            loss.backward()
            kept = torch.ones((), device=ctx.device)
            if self.params.project_gradients and self.updates > 0:
                grad = head.weight.grad
                if self.P is None or grad is None:
                    raise RuntimeError("mla projects the shared head's gradient with the projector made in setup; "
                                       f"it has {'no projector' if self.P is None else 'no gradient'}")
                alpha = owm_alpha(ctx.step_in_epoch, ctx.steps_per_epoch, self.params.alpha0)
                self.P = owm_update(self.P, features[m], alpha)
                new = project_gradient(grad, self.P, self.params.projection)
                kept = torch.linalg.matrix_norm(new) / torch.linalg.matrix_norm(grad).clamp_min(1e-30)
                head.weight.grad = new
            ctx.optimizer.step()
            ctx.optimizer.zero_grad(set_to_none=True)
            self.updates += 1
            losses.append(loss.detach().float())
            logits[m] = o.detach()
            self.stats.add(f"loss.{m}", losses[-1])
            self.stats.add(f"kept.{m}", kept)
        weights = self._weights([logits[m] for m in self.modalities])
        self.stats.add("gate", weights.mean(-1), labels=self.modalities)
        fused = late_fusion.fuse_logits([logits[m] for m in self.modalities], weights)
        out = ModelOutput(fused, {m: f.detach() for m, f in features.items()}, unimodal=logits)
        return torch.stack(losses).mean(), out

    # ------------------------------------------------------------------------------ prediction

    def _weights(self, logits: list[Tensor]) -> Tensor:
        if self.params.fusion == "fixed":
            return self._fixed
        return late_fusion.gate_weights(logits, self.params.fusion)

    @torch.no_grad()
    def eval_logits(self, ctx: TrainContext, out: ModelOutput) -> Tensor:
        """Entropy-gated (or fixed-weight) sum of `head(f_m)`; a dropped modality gets weight 0, so with one
        modality left this is exactly that modality's shared-head logits."""
        head = self._head(ctx)
        logits = [head(out.features[m]).float() for m in self.modalities]
        mask = late_fusion.presence(self.modalities, out.dropped, logits[0].device)
        return late_fusion.fuse_logits(logits, late_fusion.mask_weights(self._weights(logits), mask))

    def coefficients(self) -> dict[str, float]:
        coeffs = self.stats.read()
        if self.P is not None:
            coeffs["p_eff_rank"] = float(torch.trace(self.P) ** 2 / (self.P**2).sum())
        return coeffs


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [MLA]
