"""`mmcosine`: Multi-Modal Cosine loss (Xu, Feng, Zhang, Hu, "MMCosine: Multi-Modal Cosine Loss Towards Balanced
Audio-Visual Fine-Grained Learning", ICASSP 2023).

The fusion's final linear layer is split into per-modality weight blocks `W_m` (rows = classes). Features and
each class row of each block are L2-normalised, and the logits become

    ℓ = s · Σ_m cos(z_m, W_m) = s · Σ_m  (z_m / ‖z_m‖) (W_m / ‖W_m[k,:]‖)ᵀ

so no modality can dominate the logits through the norm of its features or of its classifier weights. The
training loss is the task loss on `ℓ`; the bias is not used (it never receives gradient, as in the official
code), and neither is the fusion's raw output.

Differences from the official code (GeWu-Lab/MMCosine_ICASSP23 @ 00ba0a9cbd9b, `main_CD.py`), and why:

* Evaluation uses the same cosine logits (also for the train metrics); the official `valid()` predicts the
  fused class from the raw linear output `W[z_a; z_v] + b` (un-normalised, with the never-trained bias)
  while training optimised the cosine logits. Evaluating the logits that were trained is the consistent
  choice, and the authors' group's benchmark makes it too (GeWu-Lab/BalanceBenchmark @ 4c1482fca5aa).
* Missing-modality / unimodal evaluation: a dropped modality's features are zero (also in
  `ModelOutput.features`), so its cosine term is 0 and the prediction is `s · Σ_{kept} cos_m`.
* The supervised-contrastive NCE term (`--lam`, default 0, supplementary material only) is left out.
* Works with the `sum` fusion too (one linear per modality: its weight is the block), besides `concat`;
  the official code has concat and its own symmetric FiLM/gated variants, which mmbench does not provide.
* Three or more modalities: `ℓ = s · Σ_m cos_m` over all of them, as the authors' group's benchmark does for
  three (BalanceBenchmark, `balancemm/trainer/MMCosine_trainer.py`); the official code has two.
* Multi-label tasks work unchanged (the task loss is then BCE on the cosine logits).
* Cosines are computed in float32 (features may be bf16 under autocast); normalisation uses eps 1e-12 as
  `F.normalize` does in the official code, so an all-zero feature gives cos = 0, not NaN.

Coefficients reported per epoch: `cos.<m>` the mean cosine between modality m's feature and its weight row
for the true class(es) over the epoch's training samples, and `weight_norm.<m>` the mean row norm of the
raw block `W_m` at the epoch's end (what MMCosine stops from mattering).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from mmbench.api import Balancer, Batch, EpochMeans, ModelOutput, Params, Requirements, TrainContext, hookimpl


class MMCosineParams(Params):
    scaling: float = Field(
        10.0, gt=0.0, le=1000.0, json_schema_extra={"search": {"log_uniform": [5.0, 60.0]}},
        description="scale s of the cosine logits; official default 10 (README); the maintainers suggest "
                    "≈50 for FiLM/gated fusions (issue #1); BalanceBenchmark uses 15",
    )


def cosine_logits(features: dict[str, Tensor], blocks: dict[str, Tensor], scaling: float) -> dict[str, Tensor]:
    """Per-modality scaled cosine logits `s · cos(z_m, W_m)` (`(B, C)` each, float32); their sum is ℓ."""
    out = {}
    for m, z in features.items():
        with torch.autocast(device_type=z.device.type, enabled=False):
            z_hat = F.normalize(z.float(), dim=-1)
            w_hat = F.normalize(blocks[m].float(), dim=-1)  # each class row of the block
            out[m] = scaling * (z_hat @ w_hat.T)
    return out


def summed(parts: dict[str, Tensor]) -> Tensor:
    """ℓ, the sum of the per-modality logits."""
    terms = list(parts.values())
    return sum(terms[1:], start=terms[0])


class MMCosine(Balancer):
    """Logits `s · Σ_m cos(z_m, W_m)` in training and evaluation; bias and raw fused output unused."""

    name = "mmcosine"
    Params = MMCosineParams
    params: MMCosineParams
    requires = Requirements(fusions=frozenset({"concat", "sum"}))
    task_defaults = {"cremad": {"scaling": 10.0}}

    def setup(self, ctx: TrainContext) -> None:
        self.modalities = tuple(ctx.model.modalities)
        fusion = ctx.model.fusion
        if fusion is None:
            raise RuntimeError("mmcosine reads the fusion's classifier blocks, and this cell's model has no fusion")
        self.fusion = fusion
        self.stats = EpochMeans()

    def _logits(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        blocks = {m: w for m, (w, _bias) in self.fusion.classifier_blocks().items()}
        return cosine_logits({m: features[m] for m in self.modalities}, blocks, self.params.scaling)

    def loss(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> Tensor:
        parts = self._logits(out.features)
        logits = summed(parts)
        y = batch.label
        with torch.no_grad():  # mean cosine to the true class(es), for the epoch's coefficients
            target = y.float() if ctx.task.multilabel else F.one_hot(y, logits.shape[-1]).float()
            cos = torch.stack([(p / self.params.scaling * target).sum() for p in parts.values()])
            self.stats.add("cos", cos / target.sum().clamp_min(1), labels=self.modalities)
        return ctx.task_loss(logits, y)

    def eval_logits(self, ctx: TrainContext, out: ModelOutput) -> Tensor:
        return summed(self._logits(out.features))

    def coefficients(self) -> dict[str, float]:
        result = self.stats.read()
        with torch.no_grad():
            for m, (w, _bias) in self.fusion.classifier_blocks().items():
                result[f"weight_norm.{m}"] = float(w.norm(dim=-1).mean())
        return result


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [MMCosine]
