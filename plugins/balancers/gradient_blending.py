"""`ogr_gb`: Gradient-Blending with overfitting-to-generalisation ratios (Wang, Tran, Feiszli, "What Makes Training
Multi-Modal Classification Networks Hard?", CVPR 2020; its original Caffe2 code is not used here, the reference
re-implementation is GeWu-Lab/BalanceBenchmark @ 4c1482fca5aa, `balancemm/trainer/GBlending_trainer.py`).

The loss blends one loss per unimodal head with the fused loss, `L = Σ_m w_m·CE(head_m) + w_f·CE(fused)`.
The weights come from how each configuration (each modality alone = its encoder and head, and the whole
fused model) generalises versus overfits when trained further. For every configuration k a copy of the
current model is trained for `super_epoch` epochs (its own loss only, a fresh optimizer of the run's type and
group settings), measuring the training loss L^T and validation loss L^V before (N) and after (N + n):

    O = L^V − L^T,  ΔO = O_{N+n} − O_N,  ΔG = L^V_N − L^V_{N+n},  w_k ∝ ΔG_k / ΔO_k²,  Σ_k w_k = 1

`mode="online"` re-estimates at the start of every super-epoch (paper's online G-Blend, BalanceBenchmark's
"online"); `mode="offline"` estimates once, from the initial model, and keeps the weights.

The super-epoch defaults to a fifth of the run (`super_epoch: null`, at least one epoch), so online G-Blend
re-estimates five times whatever the run's length; BalanceBenchmark's fixed 10 is `super_epoch: 10`. A fixed 10 on
a 10-epoch run makes "online" a single estimate from the untrained model, i.e. offline G-Blend, which starves a
modality that overfits early for the whole run (measured on the synthetic grid, with the weights re-estimated
every 2 epochs for comparison: `docs/methods/prototypes-and-losses.md`).

Choices where the paper and BalanceBenchmark's re-implementation differ, and why:
* Losses are means per sample, not sums over batches (BalanceBenchmark sums, which makes w depend on the
  number of batches).
* Following the paper, N is the current checkpoint (BalanceBenchmark takes N after the first epoch of the
  copy), and L^T is measured in eval mode on a fixed subset of the training set (`train_eval_samples`, all
  of it by default), not as the running training loss. The held-out set is the validation split.
* A unimodal configuration is the encoder with its own head (the paper's unimodal model), not the fused
  model with the other modalities zeroed (BalanceBenchmark).
* Safeguards: ΔO² is clamped at `min_delta_o_sq` (1e-8) so a flat overfitting curve cannot blow a weight
  up; a configuration whose validation loss got worse (ΔG < 0) gets weight 0 (`negative_gain="zero"`;
  BalanceBenchmark takes |ΔG|, `negative_gain="abs"`); if every weight is 0 the previous weights are kept
  (uniform before the first estimate); a diverged copy (NaN losses) also keeps the previous weights.

Cost: each estimate trains K + 1 copies for `super_epoch` epochs plus two no-grad passes over the train
subset and the validation set per copy; online, that is (K + 1)× the main run's training. Tests use
`super_epoch=1`.
"""

from __future__ import annotations

import copy
import inspect
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from mmbench.api import (
    Balancer,
    Batch,
    Batches,
    Model,
    ModelOutput,
    Params,
    Requirements,
    TrainContext,
    hookimpl,
)

FUSED = "fused"

# (L^T_N, L^V_N, L^T_{N+n}, L^V_{N+n})
Losses = tuple[float, float, float, float]


def blend_weights(losses: dict[str, Losses], min_delta_o_sq: float = 1e-8,
                  negative_gain: str = "zero") -> tuple[dict[str, float] | None, dict[str, float]]:
    """Normalised blending weights (None if all are 0) and the raw ΔG/ΔO² per configuration."""
    raw = {}
    for k, (train_n, val_n, train_nn, val_nn) in losses.items():
        delta_o = (val_nn - train_nn) - (val_n - train_n)
        delta_g = val_n - val_nn
        gain = abs(delta_g) if negative_gain == "abs" else max(delta_g, 0.0)
        raw[k] = gain / max(delta_o * delta_o, min_delta_o_sq)
    total = sum(raw.values())
    if not total > 0:
        return None, raw
    return {k: v / total for k, v in raw.items()}, raw


class OGRGBParams(Params):
    super_epoch: int | None = Field(
        None, ge=1, le=1000, json_schema_extra={"search": {"log_int": [1, 20]}},
        description="n: epochs per super-epoch and per estimation run; null = a fifth of the run, at least 1 "
                    "(BalanceBenchmark 10)")
    mode: Literal["online", "offline"] = Field(
        "online", description="online: re-estimate every super-epoch; offline: once, from the initial model")
    train_eval_samples: int | None = Field(
        None, ge=1, description="size of the fixed training subset L^T is measured on (None: whole train set)")
    min_delta_o_sq: float = Field(1e-8, gt=0.0, description="lower clamp of ΔO²")
    negative_gain: Literal["zero", "abs"] = Field(
        "zero", description="ΔG < 0: weight 0 (default) or |ΔG| as in BalanceBenchmark")


class GradientBlending(Balancer):
    """OGR-GB loss weighting (module docstring). Coefficients: `w.<k>`, and the last estimate's `dG.<k>`,
    `dO.<k>` for k in the modalities and `fused`."""

    name = "ogr_gb"
    Params = OGRGBParams
    params: OGRGBParams
    requires = Requirements(unimodal_heads=True)

    def setup(self, ctx: TrainContext) -> None:
        self._configs = (*ctx.model.modalities, FUSED)
        self.weights = {k: 1.0 / len(self._configs) for k in self._configs}
        self._deltas: dict[str, tuple[float, float]] = {}
        size, limit = ctx.train_size, self.params.train_eval_samples
        indices = None
        if limit is not None and limit < size:
            indices = torch.randperm(size, generator=torch.Generator().manual_seed(0))[:limit].tolist()
        self._train_eval: Batches = ctx.split_batches("train", indices=indices)

    # -------------------------------------------------------------------------------------- estimation

    @staticmethod
    def config_logits(model: Model, batch: Batch, config: str) -> Tensor:
        """Logits of one configuration: a modality's encoder + head, or the fused model."""
        if config == FUSED:
            return model(batch.inputs).fused_logits()
        return model.heads[config](model.encoders[config](batch.inputs[config]))

    @staticmethod
    def fresh_optimizer(optimizer: torch.optim.Optimizer, original: Model, clone: Model) -> torch.optim.Optimizer:
        """A new optimizer of the run's type with its group settings (lr, ...) over the clone, no state."""
        mapping = {id(p): q for p, q in zip(original.parameters(), clone.parameters(), strict=True)}
        groups = []
        for group in optimizer.param_groups:
            params = [mapping[id(p)] for p in group["params"] if id(p) in mapping]
            if params:
                groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": params})
        cls = type(optimizer)
        accepted = inspect.signature(cls.__init__).parameters  # e.g. AdamW rejects Adam's decoupled_weight_decay
        return cls(groups, **{k: v for k, v in optimizer.defaults.items() if k in accepted})

    @torch.no_grad()
    def mean_loss(self, ctx: TrainContext, model: Model, loader: Batches, config: str) -> float:
        model.eval()
        total = torch.zeros((), device=ctx.device)
        count = 0
        for batch in loader:  # on the device already
            with ctx.autocast():
                logits = self.config_logits(model, batch, config)
            n = len(batch.label)
            total += ctx.task_loss(logits.float(), batch.label) * n
            count += n
        return float(total) / max(1, count)

    def measure(self, ctx: TrainContext, model: Model, config: str) -> tuple[float, float]:
        return (self.mean_loss(ctx, model, self._train_eval, config),
                self.mean_loss(ctx, model, ctx.val_loader, config))

    def super_epoch(self, ctx: TrainContext) -> int:
        return self.params.super_epoch or max(1, ctx.epochs // 5)

    def estimate(self, ctx: TrainContext) -> None:
        losses: dict[str, Losses] = {}
        for config in self._configs:
            clone = copy.deepcopy(ctx.model)
            optimizer = self.fresh_optimizer(ctx.optimizer, ctx.model, clone)
            before = self.measure(ctx, clone, config)
            for _ in range(self.super_epoch(ctx)):
                clone.train()
                for batch in ctx.train_loader:  # on the device already
                    optimizer.zero_grad(set_to_none=True)
                    with ctx.autocast():
                        loss = ctx.task_loss(self.config_logits(clone, batch, config), batch.label)
                    loss.backward()
                    optimizer.step()
            losses[config] = (*before, *self.measure(ctx, clone, config))
            del clone, optimizer
        weights, _ = blend_weights(losses, self.params.min_delta_o_sq, self.params.negative_gain)
        self._deltas = {k: (lv - lvn, (lvn - ltn) - (lv - lt)) for k, (lt, lv, ltn, lvn) in losses.items()}
        if weights is not None:
            self.weights = weights

    def on_epoch_start(self, ctx: TrainContext) -> None:
        if ctx.epoch == 0 or (self.params.mode == "online" and ctx.epoch % self.super_epoch(ctx) == 0):
            self.estimate(ctx)

    # -------------------------------------------------------------------------------------- training

    def loss(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> Tensor:
        y = batch.label
        total = self.weights[FUSED] * ctx.task_loss(out.fused_logits(), y)
        for m, logits in out.unimodal.items():
            total = total + self.weights[m] * ctx.task_loss(logits, y)
        return total

    def coefficients(self) -> dict[str, float]:
        coeffs = {f"w.{k}": w for k, w in self.weights.items()}
        for k, (gain, overfit) in self._deltas.items():
            coeffs[f"dG.{k}"], coeffs[f"dO.{k}"] = gain, overfit
        return coeffs


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [GradientBlending]
