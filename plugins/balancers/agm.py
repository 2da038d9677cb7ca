"""`agm`: Adaptive Gradient Modulation (Li, Li, Hu, Lei, Li, Zhou, "Boosting Multi-modal Model Performance with
Adaptive Gradient Modulation", ICCV 2023; official code lihong2303/AGM_ICCV2023 @ 5a65542c70b1).

Each step runs the model once normally (train mode) and once for every proper subset of the modalities with
the other modalities' **inputs** zeroed (eval mode: BatchNorm running statistics, no dropout, but with
autograd). From these outputs `f(S)` it forms one Shapley-style output per modality,

    u_m = φ_m + f(∅)/M,   φ_m = Σ_{S ⊆ others} |S|!(M−|S|−1)!/M! · (f(S ∪ {m}) − f(S)),

which is exactly what the official code computes for two (`u_a = ½(T − f(0,v) + f(a,0))`) and three
modalities (URFunny's 1/3, 1/6 weights): the code leaves out the empty set's share, so `u_m` is the Shapley
value plus `f(∅)/M` and `Σ_m u_m = f(all)` (the fused logits). `f(∅)` cancels from every `u_m`, so that pass
is skipped (2^M − 2 extra passes; the code runs it and discards it).

Per batch, modality scores `s_m = mean_i −log max(softmax(u_m)[i, y_i], 1e-8)`, ratios
`r_m = exp(mean_{k≠m} s_k − s_m)`, reference ratios `r̄_m` from the run-long running means `s̄_m` (same
formula), and coefficients `k_m = exp(α · min(r̄_m − r_m, clip))`. The running means are then updated,
`s̄ ← s̄·(n−1)/n + s/n` with `n` the global step from 1, over the whole run, inside and outside the window.
In the window `[modulation_starts, modulation_ends]` (inclusive, epochs from 0) the gradient flowing into
each `u_m` is multiplied by `k_m` during backward (the code's identity modules with backward hooks), so the
fused loss `CE(Σ_m u_m, y)` reaches all passes and all parameters with the modulated weights. After backward,
if any gradient element of the fusion's weight matrices lies outside `[−τ, τ]`, all gradients are clipped
to total norm `max_norm` (`τ = max_norm = 1` in the CREMA-D code; 5 in URFunny's).

Differences from the official code, and why:

* Fusion-agnostic selection of the "classifier weight" watched by the conditional clip: every fusion
  parameter with ≥2 dimensions (the code watches its final linear layer; for `concat` and `sum` these are
  the same tensors). The clip runs without host synchronisation (`torch.where` on the total norm).
* `exact_shapley=True` (not in the code) uses the exact Shapley values `φ_m` as unimodal outputs (scores and
  hooks), with the fused logits `Σ_m φ_m + f(∅)` (the empty set's share is not modulated); it costs one more
  pass. Default `False` = the code.
* `reset_outside_window`: the code never resets the hook scale when the window closes, so the last
  coefficients keep scaling every later step (**quirk**, default `False` = the code). `True` restores
  unscaled gradients outside the window. Before the window opens the scale is 1 in both cases.
* Epochs count from 0 here (the code counts from 1): the code's `modulation_starts = s` is `s − 1` here.
  With the default window (whole run) this does not matter.
* The Shapley combination, scores and fused loss are computed in float32 (the passes' logits may be bf16
  under autocast; differences like `T − f(0, v)` lose precision in bf16). The run-long running means, the
  ratios and the coefficients are float64 on the device (no host sync), as the code's Python floats: a float32
  cumulative mean drifts about 3e-4 relative over an author-scale run (~150,000 steps), which moves the
  coefficients by about 1e-3.
* Scores use `log_softmax` clamped at `−log(1e-8)` — the same value as the code's per-sample floor, without
  its Python loop. The code raises on NaN unimodal outputs; here a NaN propagates to the loss and the engine
  marks the cell diverged.

Fusions whose train and eval modes differ (the method's own behaviour): the coalition passes run in eval mode while
the full pass T runs in train mode (as in the code), so each `u_m` carries the gap between T and the eval-mode
network, not only modality m's share. With `concat` and `sum` (no dropout, no BatchNorm) the gap is 0. With `gmu`
(dropout 0.5 before every linear layer) the gap drives the scores, and through k = exp(α(r̄ − r)), r = exp(score
gap), the coefficients run away: measured in `docs/methods/gradient-modulation.md`.

Coefficients reported per epoch: `k.<m>` mean of the computed coefficient, `scale.<m>` mean scale actually
applied by the hooks, `r.<m>` mean ratio, `score.<m>` the running mean `s̄_m` at epoch end, `clip_rate` the
fraction of steps whose gradients were clipped.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

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

#: per-sample probability floor of the official scores
PROB_FLOOR = 1e-8


class AGMParams(EpochWindowParams):
    alpha: float = Field(
        1.0, ge=0.0, le=100.0, json_schema_extra={"search": {"log_uniform": [0.25, 5.0]}},
        description="α in k = exp(α·min(r̄ − r, clip)). argparse default 1.0; author-stated (lihongcs/AGM "
                    "issues #3/#5/#10): CREMA-D 1.5, AV-MNIST 2.5, UR-Funny 4.0",
    )
    clip: float | None = Field(
        10.0, gt=0.0,
        description="upper clip c of the exponent's argument r̄ − r: 10 in the CREMA-D code, 7 in UR-Funny's, "
                    "none (null) in the AVE/AV-MNIST/MOSEI code",
    )
    modulation_ends: int | None = Field(
        None, ge=0,
        description="last epoch (inclusive) of modulation; null = to the end of training (author-stated "
                    "settings use a window covering the whole run; the argparse default 0–20 is not used)",
    )
    reset_outside_window: bool = Field(
        False,
        description="False = the code: after the window the hooks keep the last coefficients; True = scale 1 "
                    "outside the window",
    )
    exact_shapley: bool = Field(
        False,
        description="False = the code's unimodal outputs u_m = φ_m + f(∅)/M (sum to the fused logits); True = "
                    "exact Shapley values φ_m (one more forward pass per step)",
    )
    grad_clip_threshold: float | None = Field(
        1.0, gt=0.0,
        description="τ: clip all gradients when a fusion weight-gradient element leaves [−τ, τ] (1 in the "
                    "CREMA-D and AV-MNIST code, 5 in UR-Funny's, none in AVE's); null disables the clip",
    )
    grad_clip_norm: float = Field(1.0, gt=0.0, description="total-norm bound of that clip (1 CREMA-D, 5 UR-Funny)")



# ------------------------------------------------------------------------------------- core computations


def shapley_weight(subset_size: int, count: int) -> float:
    """|S|!(M−|S|−1)!/M!: the weight of the marginal contribution to a coalition S of size |S|."""
    return math.factorial(subset_size) * math.factorial(count - subset_size - 1) / math.factorial(count)


def shapley_outputs(outputs: Mapping[frozenset[str], Tensor], modalities: Sequence[str],
                    exact: bool = False) -> dict[str, Tensor]:
    """Per-modality outputs from `outputs[S] = f(only S present)` for every subset `S` of `modalities`.

    `exact=False`: the official `u_m = φ_m + f(∅)/M` (needs no `f(∅)`; `Σ u_m = f(all)`).
    `exact=True`: the Shapley values `φ_m` (needs `f(∅)`; `Σ φ_m = f(all) − f(∅)`).
    """
    count = len(modalities)
    result = {}
    for m in modalities:
        others = [k for k in modalities if k != m]
        terms = []
        for size in range(count):
            w = shapley_weight(size, count)
            for subset in itertools.combinations(others, size):
                s = frozenset(subset)
                if not s and not exact:
                    terms.append(w * outputs[frozenset({m})])  # f(∅)'s −1/M share cancels with the +f(∅)/M
                else:
                    terms.append(w * (outputs[s | {m}] - outputs[s]))
        result[m] = sum(terms[1:], start=terms[0])  # the empty coalition comes first: never an empty sum
    return result


def agm_scores(unimodal: Sequence[Tensor], labels: Tensor) -> Tensor:
    """`s_m = mean_i −log max(softmax(u_m)[i, y_i], 1e-8)` as an `(M,)` float32 tensor (no gradient)."""
    logits = torch.stack([u.detach().float() for u in unimodal])  # (M, B, C)
    index = labels.view(1, -1, 1).expand(logits.shape[0], -1, 1)
    nll = -logits.log_softmax(-1).gather(-1, index).squeeze(-1)
    return nll.clamp_max(-math.log(PROB_FLOOR)).mean(-1)


def agm_ratios(scores: Tensor) -> Tensor:
    """`r_m = exp(mean_{k≠m} s_k − s_m)` (2 modalities: `r_a = exp(s_v − s_a)`)."""
    count = scores.numel()
    return torch.exp((scores.sum() - scores) / (count - 1) - scores)


def agm_coefficients(scores: Tensor, running: Tensor, alpha: float,
                     clip: float | None) -> tuple[Tensor, Tensor, Tensor]:
    """Ratios `r`, reference ratios `r̄` (from the running means) and `k = exp(α·min(r̄ − r, clip))`."""
    r = agm_ratios(scores)
    r_bar = agm_ratios(running)
    gap = r_bar - r
    if clip is not None:
        gap = gap.clamp_max(clip)
    return r, r_bar, torch.exp(alpha * gap)


def update_running_mean(running: Tensor, scores: Tensor, n: int) -> Tensor:
    """Cumulative mean over the run: `s̄ ← s̄·(n−1)/n + s/n`, `n` = global step counted from 1."""
    return running * ((n - 1) / n) + scores / n


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by `scale` (the code's backward hook)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: Tensor) -> Tensor:  # torch types the context as Any
        ctx.save_for_backward(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (scale,) = ctx.saved_tensors
        return grad * scale.to(grad.dtype), None


def scale_grad(x: Tensor, scale: Tensor) -> Tensor:
    return _ScaleGrad.apply(x, scale)


@torch.no_grad()
def conditional_clip_(params: Sequence[torch.nn.Parameter], watched: Sequence[torch.nn.Parameter],
                      threshold: float, max_norm: float) -> Tensor:
    """Clip `params`' gradients to total norm `max_norm` iff a `watched` gradient element is outside ±τ.

    Returns the trigger as a 0-d bool tensor; never synchronises with the host.
    """
    with_grad = [p for p in params if p.grad is not None]
    grads = [p.grad for p in params if p.grad is not None]
    watched_grads = [p.grad for p in watched if p.grad is not None]
    if not with_grad or not watched_grads:
        return torch.zeros((), dtype=torch.bool)
    peak = torch.stack([g.detach().abs().max().float() for g in watched_grads]).max()
    trigger = peak > threshold
    total = torch.nn.utils.get_total_norm(grads)
    # a zero norm gives coefficient max_norm / 1e-6 clamped to 1: no change when not triggered
    torch.nn.utils.clip_grads_with_norm_(with_grad, max_norm, torch.where(trigger, total, torch.zeros_like(total)))
    return trigger


# ------------------------------------------------------------------------------------------- balancer


class AGM(Balancer):
    """AGM: Shapley-style unimodal outputs from zeroed-input passes; their gradients scaled by `k_m`."""

    name = "agm"
    Params = AGMParams
    params: AGMParams
    requires = Requirements(single_label=True)
    task_defaults = {
        # author-stated in lihongcs/AGM issues: α = 1.5, window = whole run (1500 epochs); clip 10 and τ = 1
        # from run/CREMAD_main.py
        "cremad": {"alpha": 1.5, "clip": 10.0},
        # run/AVE_main.py clips neither the exponent nor the gradients; the AVE α is not stated by the authors
        "ave": {"clip": None, "grad_clip_threshold": None},
    }

    def setup(self, ctx: TrainContext) -> None:
        self.modalities = tuple(ctx.model.modalities)
        count = len(self.modalities)
        self.subsets = [frozenset(s) for size in range(0 if self.params.exact_shapley else 1, count)
                        for s in itertools.combinations(self.modalities, size)]
        fusion = ctx.model.fusion
        if fusion is None:
            raise RuntimeError("agm watches the fusion's weight gradients, and this cell's model has no fusion")
        fusion_params = [p for p in fusion.parameters() if p.requires_grad]
        self.watched = [p for p in fusion_params if p.dim() >= 2] or fusion_params
        self.all_params = [p for p in ctx.model.parameters() if p.requires_grad]
        self.running = torch.zeros(count, dtype=torch.float64, device=ctx.device)
        self.scale = torch.ones(count, dtype=torch.float64, device=ctx.device)
        self.stats = EpochMeans()

    def active(self, epoch: int) -> bool:
        return self.params.active(epoch)

    def _subset_outputs(self, ctx: TrainContext, batch: Batch) -> dict[frozenset[str], Tensor]:
        """`f(S)` for every proper subset S (inputs of the modalities outside S zeroed), in eval mode."""
        model = ctx.model
        was_training = model.training
        model.eval()
        try:
            outputs = {}
            for s in self.subsets:
                dropped = set(self.modalities) - set(s)
                outputs[s] = model(model.without(batch.inputs, dropped)).fused_logits().float()
        finally:
            model.train(was_training)
        return outputs

    def observe(self, scores: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """Ratios and coefficients of step n's scores against the running means, then the means updated
        (all float64)."""
        scores = scores.double()
        r, _, k = agm_coefficients(scores, self.running, self.params.alpha, self.params.clip)
        self.running = update_running_mean(self.running, scores, n)
        return r, k

    def train_step(self, ctx: TrainContext, batch: Batch) -> tuple[Tensor, ModelOutput]:
        ctx.optimizer.zero_grad(set_to_none=True)
        y = batch.label
        with ctx.autocast():
            out = ctx.model(batch.inputs)
            outputs = self._subset_outputs(ctx, batch)
            outputs[frozenset(self.modalities)] = out.fused_logits().float()
            unimodal = shapley_outputs(outputs, self.modalities, exact=self.params.exact_shapley)

            r, k = self.observe(agm_scores([unimodal[m] for m in self.modalities], y), ctx.step + 1)
            if self.active(ctx.epoch):
                self.scale = k
            elif self.params.reset_outside_window:
                self.scale = torch.ones_like(k)
            scaled = [scale_grad(unimodal[m], self.scale[i]) for i, m in enumerate(self.modalities)]
            fused = sum(scaled[1:], start=scaled[0])
            if self.params.exact_shapley:
                fused = fused + outputs[frozenset()]
            loss = ctx.task_loss(fused, y)
        loss.backward()
        if self.params.grad_clip_threshold is not None:
            clipped = conditional_clip_(self.all_params, self.watched, self.params.grad_clip_threshold,
                                        self.params.grad_clip_norm)
            self.stats.add("clip_rate", clipped.to(ctx.device))
        self.optimizer_step(ctx)

        for name, value in (("k", k), ("scale", self.scale), ("r", r)):
            self.stats.add(name, value, labels=self.modalities)
        fused_out = ModelOutput(fused.detach(), out.features, out.contributions, out.unimodal)
        return loss.detach(), fused_out

    def coefficients(self) -> dict[str, float]:
        running = self.running.tolist()
        return {**self.stats.read(), **{f"score.{m}": running[i] for i, m in enumerate(self.modalities)}}


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [AGM]
