"""`dimml`: Detached and Interactive Multimodal Learning (Fan, Xu, Wang, Liu, Guo, "Detached and Interactive
Multimodal Learning", ACM MM 2024, arXiv 2407.19514; official code fanyunfeng-bit/DI-MML @ 83b9b7acc47a,
`main_CFT.py` (stage 1), `main_CFT_stage2.py` (stage 2), `loss/contrast_loss.py`, README commands).

The modalities are trained *detached*: each encoder with its own head, so no modality's loss reaches another's
encoder and none can dominate. They *interact* only through a linear classifier shared by all modalities and a
dimension-level contrastive term. A fusion is then fitted on the frozen features. Two stages in one cell:

1. `detached` (not selectable on validation; encoders, heads and the shared classifier learn):
   `L = Σ_m CE(head_m(f_m)) + w·Σ_m CE(shared(f_m)) + L_c` (`main_CFT.py` L88–95; w = 1).
   At epoch `contrast_start` (official 20 of 150) a no-grad pass over the training split finds each modality's
   effective dimensions: per dimension d, the share of samples whose nearest class centroid in that dimension
   alone, `argmin_k |f_m[i, d] − c_m[k, d]|`, is their class; the dimensions above the mean share are m's top
   ones, and m's effective dimensions `D_m` are its top ones that no other modality has among its top ones
   (`get_indices`). From then on
   `L_c = Σ_m Σ_{k≠m} mean_i −log( exp(f_k[i,D_m]·f̄_m[i,D_m]/τ) / Σ_j exp(f_k[i,D_m]·f̄_m[j,D_m]/τ) )`,
   `f̄` detached (`SupConLoss.forward`): modality k learns, on the dimensions where m is uniquely good, to point
   toward m's feature of the same sample.
2. `fusion` (a fresh optimizer; only the cell's fusion learns, encoders frozen in eval mode): `CE(fusion(f), y)`.
   Predictions (`valid_combine_classifier`) are a per-sample weighted sum of the heads' and the fusion's logits,
   `Σ_k w_k z_k`, `w = softmax_k(max_c softmax(z_k)_c / T)`; a modality left out at evaluation has no head term.

Defaults: w = 1, τ = 1 and T = 1 (argparse); per task from the README commands: CREMA-D τ 50 / T 1, AVE τ 10 /
T 3, UCF101 τ 10 / T 1. The official schedule is 150 epochs of stage 1 (contrast from epoch 20) and 20 of stage
2; here `fusion_epochs` and `contrast_start` default to the same proportions of the cell's epochs
(`round(E·20/170)`, at least 1, for stage 2; `round(E₁·20/150)` of stage 1's E₁ epochs for the contrast).

Departures from the official code, and why:

* Any number of modalities: D_m excludes every other modality's top dimensions, and L_c sums over every ordered
  pair. With two modalities both are the official definitions.
* The effective-dimension pass reads the training split in batches in eval mode (official: batch size 1, same
  result), and a class absent from the split gets no centroid (official: a 0/0 centroid).
* The stage-2 fusion is the cell's fusion of pooled features (official: concat; `late_fusion` is required).
* One run instead of two scripts that exchange checkpoints; the learning-rate schedule restarts at stage 2.

Coefficients per epoch: stage 1 `ce.<m>`, `shared_ce.<m>`, `contrast`, and `effective_dims.<m>` (|D_m|) once
found; stage 2 `fusion_ce`.
"""

from __future__ import annotations

import warnings

import torch
from pydantic import Field, NonNegativeInt, PositiveInt
from torch import Tensor, nn

from mmbench.api import Balancer, Batch, EpochMeans, ModelOutput, Requirements, Stage, TrainContext, hookimpl
from mmbench.api import Params as AnyParams  # in a class body, `Params` is the class's own parameter model
from mmbench_plugins.balancers.features import encoded_pass

SHARED = "dimml_shared"
DETACHED = Stage("detached", selectable=False, trains=frozenset({"encoder", "head", f"extra.{SHARED}"}))
FUSION = Stage("fusion", trains=frozenset({"fusion"}), fresh_optimizer=True)
#: the official schedule: 150 epochs of stage 1, contrast from its epoch 20; 20 epochs of stage 2
OFFICIAL_STAGE1, OFFICIAL_CONTRAST, OFFICIAL_STAGE2 = 150, 20, 20


def schedule(epochs: int, fusion_epochs: int | None, contrast_start: int | None) -> tuple[int, int]:
    """(stage-1 epochs, epoch the contrast starts), the defaults in the official proportions."""
    stage2 = fusion_epochs if fusion_epochs is not None else max(
        1, round(epochs * OFFICIAL_STAGE2 / (OFFICIAL_STAGE1 + OFFICIAL_STAGE2)))
    stage1 = max(0, epochs - stage2)
    start = contrast_start if contrast_start is not None else round(stage1 * OFFICIAL_CONTRAST / OFFICIAL_STAGE1)
    return stage1, start


def dimension_accuracy(features: Tensor, labels: Tensor, num_classes: int, chunk: int = 1024) -> Tensor:
    """`(D,)`: per dimension, the share of samples whose nearest class centroid in that dimension is their class."""
    features = features.float()
    counts = torch.bincount(labels, minlength=num_classes).to(features.dtype)
    sums = torch.zeros(num_classes, features.shape[1], device=features.device).index_add_(0, labels, features)
    centroids = sums / counts.clamp_min(1).unsqueeze(1)
    absent = (counts == 0).view(1, -1, 1)
    correct = torch.zeros(features.shape[1], device=features.device)
    for start in range(0, features.shape[0], chunk):
        x, y = features[start:start + chunk], labels[start:start + chunk]
        dist = (x.unsqueeze(1) - centroids.unsqueeze(0)).abs().masked_fill(absent, float("inf"))  # (b, C, D)
        correct += (dist.argmin(1) == y.unsqueeze(1)).float().sum(0)
    return correct / features.shape[0]


def effective_dimensions(accuracies: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each modality's dimensions above its mean accuracy that are above the mean for no other modality."""
    top = {m: acc > acc.mean() for m, acc in accuracies.items()}
    out = {}
    for m, mask in top.items():
        others = torch.stack([t for k, t in top.items() if k != m]).any(0)
        out[m] = torch.nonzero(mask & ~others).flatten()
    return out


def contrast_loss(learner: Tensor, anchor: Tensor, temperature: float) -> Tensor:
    """`mean_i −log softmax_j(learner_i · anchor_j / τ)[i]`, the anchor detached (InfoNCE, the same sample as the
    positive, the batch's other samples as negatives)."""
    logits = learner.float() @ anchor.detach().float().T / temperature
    return nn.functional.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def ensemble_weights(logits: list[Tensor], present: Tensor, temperature: float) -> Tensor:
    """`(K, B)` weights `softmax_k(max_c softmax(z_k)_c / T)`, 0 where `present` (K, 1) is False."""
    conf = torch.stack([z.float().softmax(-1).amax(-1) for z in logits]) / temperature
    return conf.masked_fill(~present, float("-inf")).softmax(0)


class DIMMLParams(AnyParams):
    temperature: float = Field(1.0, gt=0.0, le=1000.0, description="τ of the stage-1 contrastive term (argparse 1; "
                                                                    "README: CREMA-D 50, AVE 10, UCF101 10)")
    ensemble_temperature: float = Field(1.0, gt=0.0, le=1000.0,
                                        description="T of the test-time weights (README: CREMA-D 1, AVE 3, UCF 1)")
    weight: float = Field(1.0, ge=0.0, le=100.0, description="w, weight of the shared classifier's CE (official 1)")
    fusion_epochs: PositiveInt | None = Field(
        None, description="epochs of stage 2 (the fusion on frozen encoders); None: round(E·20/170), at least 1")
    contrast_start: NonNegativeInt | None = Field(
        None, description="epoch the contrastive term starts; None: round(E1·20/150) of stage 1's E1 epochs")


class DIMML(Balancer):
    """Detached unimodal training with a shared classifier and cross-modal dimension contrast, then a fusion."""

    name = "dimml"
    Params = DIMMLParams
    params: DIMMLParams
    requires = Requirements(unimodal_heads=True, equal_feature_dims=True, single_label=True, late_fusion=True)
    task_defaults = {"cremad": {"temperature": 50.0, "ensemble_temperature": 1.0},
                     "ave": {"temperature": 10.0, "ensemble_temperature": 3.0},
                     "ucf101": {"temperature": 10.0, "ensemble_temperature": 1.0}}

    def extra_modules(self, feature_dims: dict[str, int], num_classes: int) -> dict[str, nn.Module]:
        dims = set(feature_dims.values())
        if len(dims) != 1:
            raise ValueError(f"dimml feeds every modality's feature into one shared classifier and contrasts them "
                             f"dimension by dimension, so all feature sizes must be equal; got {feature_dims}")
        return {SHARED: nn.Linear(dims.pop(), num_classes)}

    def setup(self, ctx: TrainContext) -> None:
        self.modalities = tuple(ctx.model.modalities)
        self.stage1, self.start = schedule(ctx.epochs, self.params.fusion_epochs, self.params.contrast_start)
        if self.stage1 == 0:
            warnings.warn("dimml: the run is too short for stage 1; the fusion is fitted on untrained encoders",
                          stacklevel=2)
        self.dims: dict[str, Tensor] | None = None
        self.stats = EpochMeans()

    def stage(self, ctx: TrainContext) -> Stage:
        return DETACHED if ctx.epoch < self.stage1 else FUSION

    def on_epoch_start(self, ctx: TrainContext) -> None:
        if self.dims is None and self.start <= ctx.epoch < self.stage1:
            self.dims = self._find_dimensions(ctx)

    def _find_dimensions(self, ctx: TrainContext) -> dict[str, Tensor]:
        features, y = encoded_pass(ctx, ctx.split_batches("train"))
        accuracies = {m: dimension_accuracy(features[m], y, ctx.task.num_classes) for m in self.modalities}
        return effective_dimensions(accuracies)

    def train_step(self, ctx: TrainContext, batch: Batch) -> tuple[Tensor, ModelOutput]:
        if ctx.epoch >= self.stage1:  # the frozen encoders run as at test time (official: eval mode)
            ctx.model.encoders.eval()
        return super().train_step(ctx, batch)

    def loss(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> Tensor:
        y = batch.label
        if ctx.epoch >= self.stage1:
            fused = ctx.task_loss(out.fused_logits(), y)
            self.stats.add("fusion_ce", fused)
            return fused
        shared = ctx.model.extras[SHARED]
        own = torch.stack([ctx.task_loss(out.unimodal[m], y) for m in self.modalities])
        common = torch.stack([ctx.task_loss(shared(out.features[m]), y) for m in self.modalities])
        loss = own.sum() + self.params.weight * common.sum()
        self.stats.add("ce", own, labels=self.modalities)
        self.stats.add("shared_ce", common, labels=self.modalities)
        if self.dims is not None:
            contrast = torch.stack([
                contrast_loss(out.features[k][:, dims], out.features[m][:, dims], self.params.temperature)
                for m, dims in self.dims.items() for k in self.modalities if k != m]).sum()
            self.stats.add("contrast", contrast)
            loss = loss + contrast
        return loss

    def eval_logits(self, ctx: TrainContext, out: ModelOutput) -> Tensor:
        logits = [out.unimodal[m] for m in self.modalities] + [out.fused_logits()]
        present = torch.tensor([[m not in out.dropped] for m in self.modalities] + [[True]], device=logits[0].device)
        weights = ensemble_weights(logits, present, self.params.ensemble_temperature)
        return sum(w.unsqueeze(-1) * z.float() for w, z in zip(weights, logits, strict=True))

    def coefficients(self) -> dict[str, float]:
        coeffs = self.stats.read()
        if self.dims is not None:
            coeffs.update({f"effective_dims.{m}": float(len(d)) for m, d in self.dims.items()})
        return coeffs


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [DIMML]
