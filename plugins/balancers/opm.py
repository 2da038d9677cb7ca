"""`opm`: On-the-fly Prediction Modulation (Wei, Hu, Du, Wen, "On-the-fly Modulation for Balanced Multimodal
Learning", IEEE T-PAMI 2024; official code GeWu-Lab/BML_TPAMI2024 @ 4b3aa4fd8418, `code/models/Classifier.py`,
`code/main.py`).

OPM acts in the forward pass, before the fusion: the dominant modality's pooled feature is dropped (zeroed) for
some samples, so the fusion has to predict from the others. Each training step (in the epoch window, and then
only with probability `p_exe`):

    s_m = Σ_i softmax(o_m)[i, y_i]                          batch sum of the true-class probability of the
                                                            modality's share o_m of the fused logits
    ρ_m = s_m / min_j s_j                                   (two modalities: s_m / s_other for the dominant one)
    q_m = q_base·(1 + λ·tanh(relu(ρ_m − 1)))  if ρ_m > 1,  else 0;   clipped to [0, 1]
    keep_{i,m} ~ Bernoulli(1 − q_m)                         per sample and modality
    θ = Σ_m d_m q_m / Σ_m d_m                               d_m the feature size of modality m
    f̃_{i,m} = keep_{i,m} · f_{i,m} / (1 − θ)                every kept feature, of every modality, is rescaled

and the loss is the task loss of the fusion applied to `f̃` (`ctx.model.fusion(f̃)`). The scores come from
the fusion's per-modality shares of the unmasked pass (for `concat`, the column blocks of its linear layer with
bias/M, the split the official code uses with detached weights). Evaluation never drops anything.

Defaults (official `main.py` argparse, L42–47, and `scripts/train_opm.sh`): q_base 0.5, λ 0.5, p_exe 0.7; no drop
in the warm-up epochs 0–5 (`warm_up = 1 if epoch <= 5`, L91), so `modulation_starts` is 6. `code/config.py`
sets q_base 0.4, but `cfg.parse(vars(args))` overwrites it with argparse's 0.5, which the script also passes
(GeWu-Lab/BalanceBenchmark @ 4c1482fca5aa uses 0.4).

Differences from the official code, and why:

* More than two modalities (the code has two; its θ is already written for any `dim_list`): every modality is
  compared with the weakest, `ρ_m = s_m / min_j s_j`. With two modalities this is the official rule; the
  weakest modality always has q = 0.
* Samples whose every modality was dropped are removed from the batch in the official code. That cannot
  happen: the weakest modality has q = 0, so every sample keeps it; there is nothing to remove (and no
  data-dependent batch shape, which would need a host sync).
* The Bernoulli draws come from a generator owned by the balancer and the per-step `p_exe` draw from a Python
  generator, both seeded from the run seed (the code uses the global NumPy/torch streams), so runs repeat.
  Everything else is tensor arithmetic on the device (no host sync per step); scores are float32.
* The training accuracy the engine records is that of the unmasked pass (the model as evaluated).

The same paper's OGM is `ogm` / `ogm_ge` (see that module: its coefficient is OGM's `tanh_rho`).

Coefficients per epoch: `q.<m>` mean drop probability over the steps that dropped, `kept.<m>` the fraction of
those steps' samples whose feature was kept, `executed` the fraction of the epoch's steps that dropped.
"""

from __future__ import annotations

import random
from typing import cast

import torch
from pydantic import Field
from torch import Tensor

from mmbench.api import (
    Balancer,
    Batch,
    Encoder,
    EpochMeans,
    EpochWindowParams,
    ModelOutput,
    Requirements,
    TrainContext,
    hookimpl,
)
from mmbench_plugins.balancers.confidence import ratio_to_weakest, true_class_score_sums

#: offsets so the balancer's random streams differ from the data-order stream seeded with the same run seed
_MASK_SEED_OFFSET = 0x0B3A
_EXECUTE_SEED_OFFSET = 0x0B3B


class OPMParams(EpochWindowParams):
    modulation_starts: int = Field(6, ge=0, description="first epoch (from 0) that drops features; official: no "
                                                        "drop in the warm-up epochs 0–5")
    q_base: float = Field(0.5, ge=0.0, le=1.0, json_schema_extra={"search": {"uniform": [0.1, 0.9]}},
                          description="base drop probability of the dominant modality (official argparse and "
                                      "script 0.5; config.py and BalanceBenchmark 0.4)")
    lam: float = Field(0.5, ge=0.0, le=10.0, json_schema_extra={"search": {"uniform": [0.0, 2.0]}},
                       description="λ: how much the score ratio raises the drop probability (official 0.5)")
    p_exe: float = Field(0.7, ge=0.0, le=1.0, description="probability that a step drops at all (official 0.7)")


def drop_probabilities(scores: Tensor, q_base: float, lam: float) -> Tensor:
    """`q_m = q_base·(1 + λ·tanh(relu(ρ_m − 1)))` where `ρ_m = s_m / min_j s_j` exceeds 1, else 0; in [0, 1]."""
    excess = torch.tanh(torch.relu(ratio_to_weakest(scores) - 1))
    q = torch.where(excess > 0, q_base * (1 + lam * excess), torch.zeros_like(excess))
    return q.clamp(0.0, 1.0)


def kept_feature_scale(q: Tensor, dims: Tensor) -> Tensor:
    """`1 / (1 − θ)`, `θ = Σ_m d_m q_m / Σ_m d_m`: the dimension-weighted drop rate."""
    theta = (dims * q).sum() / dims.sum()
    return 1 / (1 - theta)


class OPM(Balancer):
    """Drop the dominant modality's features before the fusion, with a probability set by the score ratio."""

    name = "opm"
    Params = OPMParams
    params: OPMParams
    requires = Requirements(fusion_contributions=True, late_fusion=True, single_label=True)

    def setup(self, ctx: TrainContext) -> None:
        self.modalities = tuple(ctx.model.modalities)
        dims = [float(cast(Encoder, ctx.model.encoders[m]).out_dim) for m in self.modalities]
        self.dims = torch.tensor(dims, device=ctx.device)
        seed = ctx.generator.initial_seed() if ctx.generator is not None else torch.initial_seed()
        self.masks = torch.Generator(device=ctx.device).manual_seed(seed + _MASK_SEED_OFFSET)
        self.execute = random.Random(seed + _EXECUTE_SEED_OFFSET)
        self.stats = EpochMeans()
        self.steps = self.executed = 0

    def loss(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> Tensor:
        self.steps += 1
        if not self.params.active(ctx.epoch) or self.execute.random() >= self.params.p_exe:
            return super().loss(ctx, batch, out)
        self.executed += 1
        scores = true_class_score_sums({m: out.contributions[m] for m in self.modalities}, batch.label)
        q = drop_probabilities(scores, self.params.q_base, self.params.lam)
        keep = torch.bernoulli((1 - q).expand(batch.label.shape[0], -1), generator=self.masks)  # (B, M)
        kept = keep * kept_feature_scale(q, self.dims)
        inputs = out.fusion_inputs
        features = {m: inputs[m] * kept[:, i:i + 1].to(inputs[m].dtype) for i, m in enumerate(self.modalities)}
        self.stats.add("q", q, labels=self.modalities)
        self.stats.add("kept", keep.mean(0), labels=self.modalities)
        if ctx.model.fusion is None:
            raise RuntimeError("opm drops features before the cell's fusion, but the model has none")
        return ctx.task_loss(ctx.model.fusion(features).logits, batch.label)

    def coefficients(self) -> dict[str, float]:
        coeffs = self.stats.read()
        coeffs["executed"] = self.executed / max(1, self.steps)
        self.steps = self.executed = 0
        return coeffs


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [OPM]
