"""`umt`: Uni-Modal Teacher (Du, Teng, Li, Liu, Yuan, Wang, Yuan, Zhao, "On Uni-Modal Feature Learning in Supervised
Multi-Modal Learning", ICML 2023, arXiv 2305.01233).

The paper: in joint training each encoder learns fewer uni-modal features than it would alone. UMT first trains
one uni-modal model per modality, then trains the multimodal model with its task loss plus a distillation of
each teacher's features into the matching encoder of the multimodal model.

No official code was found; the reference is BalanceBenchmark (GeWu-Lab/BalanceBenchmark @ 4c1482fca5aa,
`balancemm/trainer/UMT_trainer.py`; scaling 10 in `configs/trainer_config.yaml`). There the teachers come from
earlier, separate runs of its `unimodalTrainer` (the newest checkpoint per modality) and the student step is
`CE(ŷ, y) + λ·Σ_m MSE(f_m^teacher, f_m)`, the teachers run without gradient. Here both parts run in one cell,
as two stages:

1. `teachers` (the first `teacher_epochs` epochs; not selectable on validation): each encoder is trained alone
   with its own linear head, `Σ_m CE(head_m(f_m), y)`. Only encoders and heads learn, and an encoder receives
   gradient from its own head only, so each trains exactly as in a run of its own (same batches, same recipe).
2. `student` (the rest; a fresh optimizer and learning-rate schedule): the teachers are frozen copies of the
   encoders at the end of stage 1; the encoders are put back to their weights before training (parameters and
   buffers), and the student (encoders + the cell's fusion) learns `CE(ŷ, y) + λ·Σ_m MSE(f_m^teacher, f_m)`,
   the MSE a mean over the batch and the feature's elements (`nn.MSELoss`).

Departures from BalanceBenchmark, and why:

* One run instead of three: the teachers get this cell's recipe and a share of its epochs (`teacher_epochs`,
  default half), instead of separate runs with their own checkpoints found by directory name.
* Teachers run in eval mode (frozen BatchNorm statistics, no dropout). BalanceBenchmark never switches its
  loaded teachers out of training mode, so their BatchNorm statistics keep moving with each student batch —
  a frozen teacher is what the paper describes.
* Its teachers are wrapped in `DataParallel(device_ids=[0, 1])`, i.e. two GPUs hard-coded; here they run where
  the cell runs.
* UME (the paper's uni-modal ensemble) is not part of BalanceBenchmark and not implemented here.

With a one-epoch run there is no epoch for the teachers: the student is distilled toward its own initial
encoders (a warning says so). Coefficients per epoch: `teacher_ce.<m>` in stage 1, `distill.<m>` (the MSE) in
stage 2.
"""

from __future__ import annotations

import copy
import warnings

import torch
from pydantic import Field, NonNegativeInt
from torch import Tensor, nn

from mmbench.api import Balancer, Batch, EpochMeans, ModelOutput, Requirements, Stage, TrainContext, hookimpl
from mmbench.api import Params as AnyParams  # in a class body, `Params` is the class's own parameter model

TEACHERS = Stage("teachers", selectable=False, trains=frozenset({"encoder", "head"}))
STUDENT = Stage("student", trains=frozenset({"encoder", "fusion"}), fresh_optimizer=True)


def distillation_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """`MSE(f^teacher, f)`: the mean squared difference over the batch and the feature's elements."""
    return nn.functional.mse_loss(student.float(), teacher.float())


def teacher_epochs(requested: int | None, epochs: int) -> int:
    """Epochs of the teacher stage: the request (default half the run), leaving the student at least one."""
    wanted = epochs // 2 if requested is None else requested
    return max(0, min(wanted, epochs - 1))


class UMTParams(AnyParams):
    scaling: float = Field(10.0, ge=0.0, le=1000.0, json_schema_extra={"search": {"log_uniform": [0.1, 100.0]}},
                           description="λ, weight of the feature distillation (BalanceBenchmark: 10)")
    teacher_epochs: NonNegativeInt | None = Field(
        None, description="epochs that train the uni-modal teachers before the student (None: half the run); "
                          "the student always keeps at least one epoch")


class UMT(Balancer):
    """Train uni-modal teachers first, then the multimodal student with their features distilled into it."""

    name = "umt"
    Params = UMTParams
    params: UMTParams
    requires = Requirements(unimodal_heads=True)

    def setup(self, ctx: TrainContext) -> None:
        self.modalities = tuple(ctx.model.modalities)
        self.switch = teacher_epochs(self.params.teacher_epochs, ctx.epochs)
        if self.switch == 0:
            warnings.warn("umt: a run of one epoch leaves none for the teachers; the student is distilled toward "
                          "its initial encoders", stacklevel=2)
        self.initial = copy.deepcopy(ctx.model.encoders.state_dict())
        self.teachers: nn.ModuleDict | None = None
        self.stats = EpochMeans()

    def stage(self, ctx: TrainContext) -> Stage:
        return TEACHERS if ctx.epoch < self.switch else STUDENT

    def on_epoch_start(self, ctx: TrainContext) -> None:
        if ctx.epoch >= self.switch and self.teachers is None:
            self.teachers = copy.deepcopy(ctx.model.encoders).eval().requires_grad_(False)
            ctx.model.encoders.load_state_dict(self.initial)

    def loss(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> Tensor:
        y = batch.label
        if self.teachers is None:
            losses = torch.stack([ctx.task_loss(out.unimodal[m], y) for m in self.modalities])
            self.stats.add("teacher_ce", losses, labels=self.modalities)
            return losses.sum()
        with torch.no_grad():
            targets = {m: self.teachers[m](batch.inputs[m]) for m in self.modalities}
        distill = torch.stack([distillation_loss(out.features[m], targets[m]) for m in self.modalities])
        self.stats.add("distill", distill, labels=self.modalities)
        return ctx.task_loss(out.fused_logits(), y) + self.params.scaling * distill.sum()

    def coefficients(self) -> dict[str, float]:
        return self.stats.read()


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [UMT]
