"""`cml`: Calibrating Multimodal Learning (Ma, Zhang, Zhang, Wu, Fu, Zhou, Hu, "Calibrating Multimodal Learning",
ICML 2023, arXiv 2306.01265).

The paper's principle: a prediction's confidence should not increase when a modality is removed. CML adds a
regulariser to the training loss that penalises every sample whose confidence (its largest softmax probability)
rises when modalities are taken away. It acts only on the loss; the step is otherwise plain joint training.

No official code was found; the reference is BalanceBenchmark (GeWu-Lab/BalanceBenchmark @ 4c1482fca5aa,
`balancemm/trainer/CML_trainer.py`, `training_step` and `conf_loss`; λ = 0.1 in `configs/trainer_config.yaml`).
Its form, followed here:

* The modality order is shuffled once per epoch. Modalities are removed one after another from the end of that
  order, M − 1 times: `z_0 = z` (the fused logits), `z_k` = the logits with the last k modalities of the
  order removed. A modality is removed by giving the fusion a zero feature for it (`ctx.model.fusion` applied
  again to the features, hence `Requirements.late_fusion`). For the concat fusion this is exactly
  BalanceBenchmark's `z − W_m f_m` with the whole bias kept.
* Loss = `(CE(z_0) + Σ_{k=1}^{M−1} CE(z_k)) / M + λ·R`, `conf_k = max_c softmax(z_k)`. Gradients flow through
  both confidences of each pair, as in the reference.

The one departure, and why: the hinge. BalanceBenchmark sums the confidence increase over the batch *before*
the hinge, `R = Σ_k max(0, Σ_i (conf_k,i − conf_{k−1},i))` (`conf_loss`), so samples whose confidence drops
cancel those whose confidence rises, and a batch with as much of one as the other is not penalised at all. The
paper's principle and regulariser are per sample (`max(0, Conf(x^(T)) − Conf(x^(S)))` for a subset T of the
modalities S). Default `hinge: per_sample`: `R = Σ_k mean_i max(0, conf_k,i − conf_{k−1},i)` (each sample's
violation, averaged over the batch like the cross-entropy it is added to). `hinge: batch` reproduces
BalanceBenchmark's batch-summed form exactly.

Coefficients per epoch: `hinge` (mean R), `violations` (mean fraction of (sample, removal) pairs whose
confidence rose).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from mmbench.api import Balancer, Batch, EpochMeans, ModelOutput, Requirements, TrainContext, hookimpl
from mmbench.api import Params as AnyParams  # in a class body, `Params` is the class's own parameter model

#: offset so the removal-order stream differs from the data-order stream seeded with the same run seed
_ORDER_SEED_OFFSET = 0xC41


def confidence(logits: Tensor) -> Tensor:
    """Each sample's confidence: its largest softmax probability, `(B,)`."""
    return logits.float().softmax(-1).amax(-1)


def calibration_penalty(conf_full: Tensor, conf_removed: Tensor, hinge: str = "per_sample") -> Tensor:
    """The penalty of one removal: `mean_i max(0, Δ_i)` (per sample) or `max(0, Σ_i Δ_i)` (BalanceBenchmark's
    batch form), `Δ_i = conf_removed_i − conf_full_i`."""
    gap = conf_removed - conf_full
    if hinge == "per_sample":
        return gap.clamp_min(0).mean()
    if hinge == "batch":
        return gap.sum().clamp_min(0)
    raise ValueError(f"unknown CML hinge {hinge!r}")


class CMLParams(AnyParams):
    lam: float = Field(0.1, ge=0.0, le=100.0, json_schema_extra={"search": {"log_uniform": [0.01, 1.0]}},
                       description="λ, weight of the calibration regulariser (BalanceBenchmark: 0.1)")
    hinge: Literal["per_sample", "batch"] = Field(
        "per_sample", description="'per_sample': mean over samples of max(0, conf increase) (the paper's "
                                  "principle); 'batch': max(0, summed increase) (BalanceBenchmark)")


class CML(Balancer):
    """Cross-entropy with modalities removed one by one, plus a hinge on any confidence they raise."""

    name = "cml"
    Params = CMLParams
    params: CMLParams
    requires = Requirements(late_fusion=True, single_label=True)

    def setup(self, ctx: TrainContext) -> None:
        self.modalities = tuple(ctx.model.modalities)
        seed = ctx.generator.initial_seed() if ctx.generator is not None else torch.initial_seed()
        self.order_generator = torch.Generator().manual_seed(seed + _ORDER_SEED_OFFSET)
        self.order = self.modalities
        self.stats = EpochMeans()

    def on_epoch_start(self, ctx: TrainContext) -> None:
        perm = torch.randperm(len(self.modalities), generator=self.order_generator).tolist()
        self.order = tuple(self.modalities[i] for i in perm)

    def loss(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> Tensor:
        fusion = ctx.model.fusion
        if fusion is None:
            raise RuntimeError("cml removes modalities by fusing features again, and this cell has no fusion")
        y, features = batch.label, dict(out.fusion_inputs)
        logits = out.fused_logits()
        ce = ctx.task_loss(logits, y)
        penalty = logits.new_zeros((), dtype=torch.float32)
        violations = []
        conf = confidence(logits)
        for m in reversed(self.order[1:]):  # the last of the order goes first (BalanceBenchmark pops the end)
            features[m] = torch.zeros_like(features[m])
            logits = fusion(features).logits
            ce = ce + ctx.task_loss(logits, y)
            removed = confidence(logits)
            penalty = penalty + calibration_penalty(conf, removed, self.params.hinge)
            violations.append((removed > conf).float().mean())
            conf = removed
        self.stats.add("hinge", penalty)
        self.stats.add("violations", torch.stack(violations).mean())
        return ce / len(self.modalities) + self.params.lam * penalty

    def coefficients(self) -> dict[str, float]:
        return self.stats.read()


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [CML]
