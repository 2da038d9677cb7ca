"""`uda` and `dynamic_uda`: supervised consistency training on augmented views (Monter-Aldana, López-Monroy,
Sánchez-Vega, "Dynamic Regularization in UDA for Transformers in Multimodal Classification", ACL 2023; the
authors' notebook: IvonneMont/Dynamic-UDA-for-Transformers-in-Multimodal-Classification @ b1ecf2a0882c,
`unsupervised_data_augmentation.ipynb`, fixed-λ UDA only).

Loss per step: L = L_s + λ_i · L_c, where L_s is the task loss on the clean batch and

    L_c = mean_batch KL( softmax(f(x)) ‖ softmax(f(x̂)) )      (paper Eq. 6: 1/|U| Σ_{x∈U})

with the clean logits f(x) a constant target (a separate no-grad forward, as in the official notebook) and the
gradient flowing only through the augmented view x̂. `uda` keeps λ_i = λ fixed (the notebook's UDA);
`dynamic_uda` recomputes λ_i at every epoch boundary from the previous two epochs (paper Eqs. 8–11):

    q^V = (1 + L^V_{i−1}) / (1 + L^V_{i−2}),  q^T = (1 + M^T_{i−1}) / (1 + M^T_{i−2}),
    R = (q^V)^N · (q^T)^K,  λ_i = λ · R       (recomputed from the base λ, never compounded)

L^V is the validation loss and M^T the training-set metric of an epoch. Epochs 0 and 1 have no two-epoch
history and use λ (neither the paper nor the notebook says; our choice).

Variants: the paper's "UDA dynamic" augments every modality, "UDA dynamic Image" / "UDA dynamic Text" only the
image / text; `augment` names the modalities whose augmented view enters x̂ (the others stay clean in x̂), so
those variants are `augment: [image]` / `augment: [text]` with the task's modality names. The engine supplies
the views (`batch.views`) from the task's `augment`.

Differences from the official code and why:
- The paper's dynamic λ has no public code; this follows Eqs. 8–11. N and K are not published: the defaults
  N = 4, K = 1 are our choice (N ≫ K as the paper requires).
- The notebook's augmented views are generated once, offline; here they are drawn from the task's augmentation
  (seeded per sample and epoch), so they may differ between epochs.
- The notebook's supervised BCE uses per-class `pos_weight`; that belongs to the task's loss and is not part of
  this method (the engine's task loss is used).
- The notebook switches UDA off (λ = 0) when validation patience runs out and stops at the next exhaustion; the
  engine has no early stopping, so only the first stage is offered (`off_patience`, off by default).
- The KL is over the class softmax even on multi-label tasks (the official quirk, default); `divergence:
  bernoulli` sums per-class Bernoulli KLs instead.
- Reduction over the batch: the paper's mean (Eq. 6, default). The notebook's `torch.sum` runs on micro-batches
  of 4 with 16 gradient-accumulation steps (loss divided by 16), so its effective consistency weight is 4× the
  mean over the 64 samples of an optimizer step: the notebook is `lam: 4` here (its λ = 1 times its micro-batch
  of 4). `reduction: sum` sums over the engine's whole batch, which is the notebook's arithmetic only with
  `batch_size: 4`; with a batch of 64 it weighs the KL 64× the paper's and 16× the notebook's.
- With a fusion that has dropout (`gmu`: 0.5 before every linear layer) the clean target and the augmented
  prediction differ by their dropout masks too, so L_c stays well above 0 and λ matters.
- λ_i = λ (q^V)^N (q^T)^K has no bound in the paper or the notebook, so a rising validation loss feeds a larger
  consistency weight: nothing here caps it (it would not be the method). What these choices did on the
  synthetic grid, including a run that diverged this way: `docs/methods/prototypes-and-losses.md`.
Safeguard: a non-finite ratio R (only possible from a non-finite validation loss) falls back to R = 1.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from mmbench.api import (
    Balancer,
    Batch,
    EpochMeans,
    EpochRecord,
    Inputs,
    ModelOutput,
    Requirements,
    Task,
    TrainContext,
    hookimpl,
    unknown_names,
)
from mmbench.api import Params as AnyParams  # in a class body, `Params` is the class's own parameter model
from mmbench.api import metrics as metric_lib

#: λ-schedule cases of the paper's Table 1 (0: warm-up, 4: outside the table, e.g. q^V ≥ 1 with q^T ≤ 1)
WARMUP, CASE_BOTH_UP, CASE_OVERFIT, CASE_GENERALISE, CASE_OTHER = 0, 1, 2, 3, 4


def consistency_kl(p_logits: Tensor, q_logits: Tensor, divergence: str = "softmax") -> Tensor:
    """Per-sample KL(p ‖ q) between the target (clean) and the augmented predictions."""
    p_logits, q_logits = p_logits.float(), q_logits.float()
    if divergence == "softmax":
        log_p, log_q = F.log_softmax(p_logits, dim=-1), F.log_softmax(q_logits, dim=-1)
        return (log_p.exp() * (log_p - log_q)).sum(-1)
    # one Bernoulli per class: p·(log p − log q) + (1−p)·(log(1−p) − log(1−q)), summed over classes
    log_p, log_q = F.logsigmoid(p_logits), F.logsigmoid(q_logits)
    log_1p, log_1q = F.logsigmoid(-p_logits), F.logsigmoid(-q_logits)
    return (log_p.exp() * (log_p - log_q) + log_1p.exp() * (log_1p - log_1q)).sum(-1)


def dynamic_lambda(lam: float, val_losses: list[float], train_metrics: list[float], n: int, k: int
                   ) -> tuple[float, int, float, float, float]:
    """λ_i for the epoch after the given histories: (λ_i, case, q^V, q^T, R).

    During warm-up (fewer than two epochs of history) the quotients are reported as 1 and λ_i = λ.
    """
    if len(val_losses) < 2 or len(train_metrics) < 2:
        return lam, WARMUP, 1.0, 1.0, 1.0
    q_v = (1.0 + val_losses[-1]) / (1.0 + val_losses[-2])
    q_t = (1.0 + train_metrics[-1]) / (1.0 + train_metrics[-2])
    try:
        ratio = q_v**n * q_t**k
    except OverflowError:
        ratio = math.inf
    if not math.isfinite(ratio):  # safeguard: only a non-finite loss or metric gets here
        return lam, CASE_OTHER, 1.0, 1.0, 1.0
    if q_v > 1 and q_t > 1:
        case = CASE_BOTH_UP
    elif q_v < 1:
        case = CASE_OVERFIT if ratio > 1 else CASE_GENERALISE  # (q^T)^K ≷ (q^V)^(−N)  ⇔  R ≷ 1
    else:
        case = CASE_OTHER
    return lam * ratio, case, q_v, q_t, ratio


def _or_nan(value: float | None) -> float:
    """A number of an epoch record, where the engine writes a non-finite one as None: as NaN it takes
    `dynamic_lambda`'s safeguard."""
    return math.nan if value is None else value


class UDAParams(AnyParams):
    lam: float = Field(1.0, ge=0.0, le=1e4, json_schema_extra={"search": {"log_uniform": [0.1, 10.0]}},
                       description="λ, weight of the consistency loss (notebook: 1.0 on a sum over 4 samples, "
                                   "i.e. 4.0 on the mean)")
    augment: tuple[str, ...] | None = Field(
        None, description="modalities whose augmented view is used in x̂ (null: all; paper variants: all / "
                          "image only / text only)")
    divergence: Literal["softmax", "bernoulli"] = Field(
        "softmax", description="KL over the class softmax (official, also on multi-label tasks) or per-class "
                               "Bernoulli KLs summed")
    reduction: Literal["mean", "sum"] = Field(
        "mean", description="over the batch: mean (paper Eq. 6) or sum (the notebook's, on its micro-batches of "
                            "4; its effective scale is `lam: 4` with the mean)")
    clean_target: Literal["separate", "reuse"] = Field(
        "separate", description="target logits from a separate no-grad clean forward (official) or the detached "
                                "logits of the supervised forward (saves one forward)")
    off_patience: int | None = Field(
        None, ge=1, description="switch the consistency loss off after this many epochs without improvement of the "
                                "validation primary metric (the notebook's first early-stopping stage); null: never")


class UDA(Balancer):
    """Fixed-λ UDA: task loss + λ · KL(clean ‖ augmented) averaged over the batch."""

    name = "uda"
    Params = UDAParams
    params: UDAParams
    requires = Requirements(augmented_views=True, min_modalities=1)
    # λ = 1: the notebook's value (the paper publishes none), here on the paper's mean (notebook scale: 4)
    task_defaults = {"moviescope": {"lam": 1.0}, "mmimdb": {"lam": 1.0}}

    def __init__(self, params: UDAParams) -> None:
        super().__init__(params)
        self.lam_i = params.lam
        self.switched_off = False
        self._best: float | None = None
        self._stale = 0
        self.stats = EpochMeans()

    @classmethod
    def check(cls, params: AnyParams, task: Task) -> list[str]:
        if not isinstance(params, UDAParams):
            raise TypeError(f"{cls.name} checks UDAParams, got {type(params).__name__}")
        return unknown_names("augment", params.augment or (), task.modalities)

    def setup(self, ctx: TrainContext) -> None:
        modalities = ctx.model.modalities
        chosen = self.params.augment if self.params.augment is not None else modalities
        self.modalities = modalities
        self.augmented = tuple(m for m in modalities if m in chosen)

    def current_lambda(self, ctx: TrainContext) -> float:
        return self.params.lam

    def on_epoch_start(self, ctx: TrainContext) -> None:
        lam_i = self.current_lambda(ctx)
        self.lam_i = 0.0 if self.switched_off else lam_i

    def augmented_batch(self, batch: Batch) -> dict[str, Inputs]:
        """x̂: the augmented view of the chosen modalities, the clean input of the others."""
        return {m: batch.views[m] if m in self.augmented else batch.inputs[m] for m in self.modalities}

    def consistency(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> Tensor:
        q_logits = ctx.model(self.augmented_batch(batch)).fused_logits()
        if self.params.clean_target == "reuse":
            p_logits = out.fused_logits().detach()
        else:
            with torch.no_grad():
                p_logits = ctx.model(batch.inputs).fused_logits()
        kl = consistency_kl(p_logits, q_logits, self.params.divergence)
        return kl.sum() if self.params.reduction == "sum" else kl.mean()

    def loss(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> Tensor:
        supervised = ctx.task_loss(out.fused_logits(), batch.label)
        if self.lam_i == 0.0:  # a Python float fixed for the epoch: no device sync
            return supervised
        lc = self.consistency(ctx, batch, out)
        self.stats.add("consistency", lc)
        return supervised + self.lam_i * lc

    def on_epoch_end(self, ctx: TrainContext, stats: EpochRecord) -> None:
        if self.params.off_patience is None or stats.val is None or self.switched_off:
            return
        primary = ctx.task.primary_metric
        score = stats.val.metrics[primary]  # None: not finite, which is no improvement
        if score is not None and (self._best is None or metric_lib.better(primary, score, self._best)):
            self._best, self._stale = score, 0
        else:
            self._stale += 1
            if self._stale >= self.params.off_patience:
                self.switched_off = True

    def coefficients(self) -> dict[str, float]:
        lc = self.stats.read().get("consistency", 0.0)  # 0 in an epoch without the term (λ_i = 0)
        return {"lambda": float(self.lam_i), "consistency": lc, "uda_off": float(self.switched_off)}


class DynamicUDAParams(UDAParams):
    n: int = Field(4, ge=0, le=64, json_schema_extra={"search": {"int": [1, 8]}},
                   description="N, exponent of the validation-loss quotient (N ≫ K; unpublished)")
    k: int = Field(1, ge=0, le=64, json_schema_extra={"search": {"int": [0, 2]}},
                   description="K, exponent of the training-metric quotient (unpublished)")
    train_metric: str | None = Field(
        None, description="training metric M^T (a metric of the task, higher is better); null: the primary metric")


class DynamicUDA(UDA):
    """UDA with λ_i = λ · (q^V)^N (q^T)^K recomputed at each epoch from the two previous epochs (Eqs. 8–11)."""

    name = "dynamic_uda"
    Params = DynamicUDAParams
    params: DynamicUDAParams
    requires = Requirements(augmented_views=True, validation_each_epoch=True, min_modalities=1)
    # the notebook tunes on micro-AP (Moviescope tables report AP); MM-IMDb's tables report micro/macro F1
    task_defaults = {"moviescope": {"lam": 1.0, "train_metric": "map_micro"},
                     "mmimdb": {"lam": 1.0, "train_metric": "f1_micro"}}

    def __init__(self, params: DynamicUDAParams) -> None:
        super().__init__(params)
        self.case, self.q_v, self.q_t, self.ratio = WARMUP, 1.0, 1.0, 1.0

    @classmethod
    def check(cls, params: AnyParams, task: Task) -> list[str]:
        if not isinstance(params, DynamicUDAParams):
            raise TypeError(f"{cls.name} checks DynamicUDAParams, got {type(params).__name__}")
        problems = super().check(params, task)
        if params.train_metric is not None:
            problems += unknown_names("train_metric", [params.train_metric], task.metrics, what="metrics")
            if params.train_metric in metric_lib.LOWER_IS_BETTER:
                problems.append(f"train_metric must be higher-is-better; {params.train_metric!r} is not")
        return problems

    def setup(self, ctx: TrainContext) -> None:
        super().setup(ctx)
        self.metric = self.params.train_metric or ctx.task.primary_metric

    def current_lambda(self, ctx: TrainContext) -> float:
        recent = ctx.history[-2:]
        val_losses = [_or_nan(e.val.loss) for e in recent if e.val is not None]
        train_metrics = [_or_nan(e.train_metrics[self.metric]) for e in recent]
        lam_i, self.case, self.q_v, self.q_t, self.ratio = dynamic_lambda(
            self.params.lam, val_losses, train_metrics, self.params.n, self.params.k)
        return lam_i

    def coefficients(self) -> dict[str, float]:
        return {**super().coefficients(), "case": float(self.case), "q_v": float(self.q_v),
                "q_t": float(self.q_t), "ratio": float(self.ratio)}


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [UDA, DynamicUDA]
