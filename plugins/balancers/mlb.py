"""`multi_loss` and `mlb`: the multi-loss objective and Multi-Loss Balanced gradient modulation.

Kontras, Chatzichristos, Blaschko, De Vos, "Improving Multimodal Learning with Multi-Loss Gradient
Modulation", BMVC 2024 (arXiv 2405.07930; official code kkontras/MLB @ 357b5ce1bcb7,
`agents/general_agent/helpers/Bias_Infusion.py::Bias_Infusion_MLB`).

* **Multi-Loss** (paper Eq. 3): `L = w_f·CE(fused) + Σ_i w_i·CE(head_i(z_i))`, all weights 1 in every
  released config. Each encoder gets its own linear head, so it always receives its own supervision.
* **MLB** adds, after `backward()` and before the optimizer step, a per-modality gradient multiplier
  recomputed every step from the current mini-batch (paper Eqs. 4–7):

      s_i = mean_b softmax(head_i)[b, y_b]          (detached; the code's score)
      r_i = mean_{j≠i} s_j / s_i                    (> 1: modality i lags)
      β_i = β_max if r_i > 1 else 2
      k_i = 1 + (β_i − 1)·tanh(α·(r_i − 1))

  `k_i` multiplies the gradients of encoder i, of its unimodal head, and of modality i's block of the fusion's
  final linear weight (when the fusion exposes `classifier_blocks()`); the shared fusion bias and any other
  fusion parameter are left alone, as in the official code.

Differences from the official code, and why:
* β_max = 2 by default, the released configs' value: they never set `tanh_mode`, so the code runs with β = 2 on
  both sides, which is Eq. 6 with β_max = 2. The paper's β_max = 10 is an illustrative value, and the paper
  warns that large values may diverge (`beta_max: 10`). With SGD the multiplier acts directly on the step, so
  β_max = 10 gives a lagging encoder up to 10× the learning rate of joint training (what that did on the
  synthetic grid: `docs/methods/gradient-modulation.md`).
* `score="accuracy"` offers the paper's wording of s_i ("sum of correct class predictions", counted with argmax);
  the default is the code's mean true-class probability.
* Parameters are selected by model groups (encoder, head, fusion block), never by substring of names.
* Safeguard: `r_i = (mean_{j≠i} s_j + ε)/(s_i + ε)` with ε = 1e-8, so an all-zero score (possible with
  `score="accuracy"`) gives r = 1 instead of NaN/inf; the change is below 1e-7 relative otherwise.
* With Adam (the paper's optimizer) a constant gradient multiplier is largely cancelled by the second-moment
  normalisation (Adam is invariant to a constant per-parameter rescaling; the paper's update is written for
  SGD); this is the method as published and is kept.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from mmbench.api import Balancer, Batch, EpochMeans, Fusion, ModelOutput, Params, Requirements, TrainContext, hookimpl

EPS = 1e-8


# ------------------------------------------------------------------------------------ core formulas


def true_class_score(logits: Tensor, labels: Tensor, score: str = "probability") -> Tensor:
    """s_i: the batch mean of the true-class softmax probability, or the fraction of argmax hits."""
    logits = logits.detach().float()
    if score == "probability":
        return logits.softmax(-1).gather(1, labels.view(-1, 1)).mean()
    return (logits.argmax(-1) == labels).float().mean()


def mlb_ratios(scores: Tensor) -> Tensor:
    """r_i = (mean of the other modalities' scores) / s_i, for a vector of M ≥ 2 scores."""
    m = scores.shape[-1]
    others = (scores.sum(-1, keepdim=True) - scores) / (m - 1)
    return (others + EPS) / (scores + EPS)


def mlb_coefficients(ratios: Tensor, alpha: float, beta_max: float) -> Tensor:
    """k_i = 1 + (β_i − 1)·tanh(α(r_i − 1)), β_i = β_max where r_i > 1 else 2 (branch-free, no host sync)."""
    beta = torch.where(ratios > 1, torch.full_like(ratios, beta_max), torch.full_like(ratios, 2.0))
    return 1 + (beta - 1) * torch.tanh(alpha * (ratios - 1))


# ---------------------------------------------------------------------------------------- helpers


def fusion_weight_blocks(fusion: Fusion) -> dict[str, tuple[nn.Parameter, tuple[int, ...], tuple[int, ...], int]]:
    """Per-modality weight blocks of the fusion's final linear layer, as (parameter, size, stride, offset).

    `classifier_blocks()` returns either a fusion parameter (sum fusion) or a view of one (concat: a column
    slice); the view's geometry lets us scale exactly that slice of the parameter's gradient. Blocks that are
    computed tensors rather than views of a parameter cannot be mapped back and are skipped with a warning.
    """
    try:
        blocks = fusion.classifier_blocks()
    except NotImplementedError:
        return {}
    params = {id(p): p for p in fusion.parameters()}
    found = {}
    for m, (weight, _bias) in blocks.items():
        base = weight if id(weight) in params else weight._base
        if base is None or id(base) not in params:
            warnings.warn(f"fusion {fusion.name!r}: the weight block of {m!r} is not a view of a fusion "
                          "parameter; its gradient is left unscaled", stacklevel=2)
            continue
        param = params[id(base)]
        found[m] = (param, tuple(weight.shape), tuple(weight.stride()),
                    int(weight.storage_offset() - param.storage_offset()))
    return found


def grad_block(param: nn.Parameter, size: tuple[int, ...], stride: tuple[int, ...], offset: int) -> Tensor | None:
    """The slice of `param.grad` that corresponds to a view of `param` (None when there is no gradient)."""
    grad = param.grad
    if grad is None:
        return None
    if grad.stride() != param.stride():
        raise RuntimeError("gradient layout differs from its parameter's; cannot locate the modality block")
    return grad.as_strided(size, stride, grad.storage_offset() + offset)


# ------------------------------------------------------------------------------------- balancers


class MultiLossParams(Params):
    fused_weight: float = Field(1.0, ge=0.0, description="w_f, weight of the fused-logits loss (1 in all configs)")
    unimodal_weight: float = Field(1.0, ge=0.0, json_schema_extra={"search": {"log_uniform": [0.1, 3.0]}},
                                   description="w_i, weight of every unimodal-head loss (1 in all configs)")


class MultiLoss(Balancer):
    """Multi-Loss (MLB paper's baseline, Eq. 3): fused loss + one loss per unimodal head, no modulation.

    Coefficients: the epoch mean of each unimodal head's training loss (`loss.<m>`).
    """

    name = "multi_loss"
    Params = MultiLossParams
    params: MultiLossParams
    requires = Requirements(unimodal_heads=True)

    def __init__(self, params: MultiLossParams) -> None:
        super().__init__(params)
        self.stats = EpochMeans()

    def loss(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> Tensor:
        y = batch.label
        unimodal = {m: ctx.task_loss(logits, y) for m, logits in out.unimodal.items()}
        self.stats.add("loss", torch.stack(list(unimodal.values())), labels=list(unimodal))
        p = self.params
        return p.fused_weight * ctx.task_loss(out.fused_logits(), y) + p.unimodal_weight * sum(unimodal.values())

    def coefficients(self) -> dict[str, float]:
        return self.stats.read()


class MLBParams(MultiLossParams):
    alpha: float = Field(0.8, gt=0.0, le=100.0, json_schema_extra={"search": {"log_uniform": [0.2, 3.0]}},
                         description="α, slope of tanh (configs: 0.8 CREMA-D/AVE, 1.0 UCF101)")
    beta_max: float = Field(2.0, ge=1.0, le=100.0, json_schema_extra={"search": {"log_uniform": [1.0, 10.0]}},
                            description="β_max, largest acceleration of a lagging modality: 2 = the released "
                                        "configs' symmetric form k = 1 + tanh(α(r−1)); the paper's example 10 "
                                        "may diverge (it says so), e.g. with SGD")
    score: Literal["probability", "accuracy"] = Field(
        "probability", description="s_i: mean true-class probability (code) or argmax hit rate (paper's wording)")
    scale_fusion_block: bool = Field(
        True, description="also scale modality i's block of the fusion's final linear weight (code: fc_i_lin)")


class MLB(MultiLoss):
    """Multi-Loss Balanced: the multi-loss objective plus per-step gradient multipliers k_i (module docstring).

    Coefficients: epoch means of k_i (`k.<m>`), r_i (`r.<m>`) and the unimodal losses (`loss.<m>`).
    """

    name = "mlb"
    Params = MLBParams
    params: MLBParams
    requires = Requirements(unimodal_heads=True, single_label=True)
    task_defaults = {
        "cremad": {"alpha": 0.8},
        "ave": {"alpha": 0.8},
        "ucf101": {"alpha": 1.0},
    }

    def setup(self, ctx: TrainContext) -> None:
        model = ctx.model
        self._modalities = tuple(model.modalities)
        self._params: dict[str, list[nn.Parameter]] = {
            m: [*model.encoders[m].parameters(), *(model.heads[m].parameters() if m in model.heads else ())]
            for m in self._modalities
        }
        if model.fusion is None:
            raise RuntimeError("mlb trains the fused logits and scales the fusion's gradients; this cell's model "
                               "has no fusion")
        self._blocks = fusion_weight_blocks(model.fusion) if self.params.scale_fusion_block else {}

    def coefficients_for(self, out: ModelOutput, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(k, r) for one batch, ordered as the model's modalities."""
        scores = torch.stack([true_class_score(out.unimodal[m], labels, self.params.score)
                              for m in self._modalities])
        ratios = mlb_ratios(scores)
        return mlb_coefficients(ratios, self.params.alpha, self.params.beta_max), ratios

    @torch.no_grad()
    def after_backward(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> None:
        k, r = self.coefficients_for(out, batch.label)
        self.stats.add("k", k, labels=self._modalities)
        self.stats.add("r", r, labels=self._modalities)
        for i, m in enumerate(self._modalities):
            grads = [p.grad for p in self._params[m] if p.grad is not None]
            if grads:
                torch._foreach_mul_(grads, k[i])
            if m in self._blocks:
                block = grad_block(*self._blocks[m])
                if block is not None:
                    block.mul_(k[i])



@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [MultiLoss, MLB]
