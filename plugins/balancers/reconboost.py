"""`reconboost`: ReconBoost (Hua, Xu, Bao, Yang, Huang, "ReconBoost: Boosting Can Achieve Modality Reconcilement",
ICML 2024, arXiv 2405.09321; official code huacong/ReconBoost @ 14ab57ac26e0, `train.py`, `models/dynamic_net.py`,
`schedule.py`).

Where it acts: it replaces joint training with alternating boosting *stages*, each of two phases, run as the
engine's stages (`Stage.trains` freezes what does not learn). Every modality's learner is its encoder followed
by one head shared by all modalities, `z_m = head(f_m)`, head = Linear(d, 256)–ReLU–Linear(256, C)
(dynamic_net.py L5–15); the ensemble predicts `ρ·Σ_m z_m` with a learnable boost rate ρ (init 1, L33).

* Phase 1, `epochs_per_stage` epochs (train.py L295–357): modality m = the stage's turn (the task's order,
  cycled; schedule.py) learns alone, its encoder and the shared head, against the frozen ensemble of the others
  `F_{−m} = ρ·Σ_{k≠m} z_k` (no grad), with the boosting loss, a CE whose per-sample weight falls as the others
  get the sample right:
      `L_boost = −(1/C)·(w1 − w2·softmax(F_{−m})[y])·log softmax(z_m)[y]`   (L339–340; 1/C from the code's mean)
  plus the memory-consolidation term `α·MSE(softmax(z_m), softmax(z_prev))`, z_prev the learner of the previous
  stage (L348–351). Before any other modality has learned, the ensemble is a constant whose softmax over its one
  column is 1 (L331–332): the weight is w1 − w2.
* Phase 2, `correct_epochs` epochs (global rectification, L369–402): every modality that has learned so far, the
  head and ρ minimise `CE(ρ·Σ_k z_k, y)`.
* Each phase starts with fresh optimizer state (the official code builds a new SGD for each, L296, L371).
* Prediction: `ρ·Σ_k z_k` over the modalities that have learned (a dropped modality is left out, as a
  missing learner). Only rectification epochs after every modality has learned are selectable on validation
  (the official run keeps the best stage from the fourth on, L420).

Defaults (train.py): `epochs_per_stage` 4 (L59), `correct_epochs` 4 (L60), `weight1` 5 (L75; the README's AVE
command 4: `task_defaults`), `weight2` 1 (L76), `alpha` 0.5 (L77), ρ init 1 (L57), head width 256. The official
learning rates (0.01 for both phases, SGD momentum 0.9, wd 5e-4, L64–65, L296, L371) and its stage-wise decay
are the grid's recipe to set; the official CREMA-D run takes ~100 stages = ~800 training-set passes.

Departures from the official code, and why:

* The consolidation term: the official code detaches both of its arguments (L349), so it adds nothing to the
  gradient (BalanceBenchmark's re-implementation, GeWu-Lab/BalanceBenchmark @ 4c1482fca5aa,
  `ReconBoost_trainer.py` L344, copies that). The paper proposes memory consolidation as part of the method, so
  by default the gradient flows through the current learner's prediction (z_prev, a frozen earlier learner, stays
  detached); `consolidation_gradient: false` reproduces the released no-op.
* Learning rates follow the engine's schedule (one recipe for both phases, as the official defaults are equal);
  the official decay every 30 stages is a step schedule in epochs here.
* More than two modalities: the official `train_MSA.py` runs three (text, visual, audio); the order here is the
  task's (or `order`).
* Evaluation uses every test sample (the official test loader drops the last partial batch).

Requirements: equal feature sizes (one shared head), single-label targets (softmax boosting); the cell's fusion
is not used (`ignores_fusion`).

Coefficients per epoch: `rate` (ρ), `active.<m>` (1 for the modality of a learning phase), `rectifying` (1 in
phase 2), `boost_loss`, `consolidation` (its value, with or without gradient), `rectify_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import Tensor, nn

from mmbench.api import (
    Balancer,
    Batch,
    EpochMeans,
    ModelOutput,
    Requirements,
    Stage,
    Task,
    TrainContext,
    hookimpl,
)
from mmbench.api import Params as AnyParams

HEAD, RATE = "recon_head", "boost_rate"


def boosting_loss(z_m: Tensor, ensemble: Tensor | None, y: Tensor, w1: float, w2: float) -> Tensor:
    """`mean_i −(1/C)·(w1 − w2·softmax(F_{−m})[y_i])·log softmax(z_m)[y_i]`; no ensemble: its softmax is 1."""
    log_p = F.log_softmax(z_m.float(), dim=-1).gather(1, y.view(-1, 1)).squeeze(1)
    if ensemble is None:
        other = torch.ones_like(log_p)
    else:
        other = F.softmax(ensemble.detach().float(), dim=-1).gather(1, y.view(-1, 1)).squeeze(1)
    return (-(w1 - w2 * other) * log_p / z_m.shape[-1]).mean()


def consolidation(z_m: Tensor, z_prev: Tensor, gradient: bool = True) -> Tensor:
    """`MSE(softmax(z_m), softmax(z_prev))` over every element; z_prev detached, z_m too unless `gradient`."""
    current = F.softmax(z_m.float(), dim=-1)
    return F.mse_loss(current if gradient else current.detach(), F.softmax(z_prev.detach().float(), dim=-1))


@dataclass(frozen=True)
class Phase:
    """Where an epoch falls: its stage, whether it rectifies, the stage's modality and who has learned so far."""

    stage: int
    rectifying: bool
    modality: str
    learned: tuple[str, ...]  # modalities with a learner, in order (the stage's one included when rectifying)
    previous: str | None  # the modality of the stage before


def phase_of(epoch: int, learn_epochs: int, correct_epochs: int, order: tuple[str, ...]) -> Phase:
    stage, within = divmod(epoch, learn_epochs + correct_epochs)
    rectifying = within >= learn_epochs
    done = stage + 1 if rectifying else stage  # stages whose learning phase is over
    learned = order[:min(done, len(order))]
    previous = order[(stage - 1) % len(order)] if stage > 0 else None
    return Phase(stage, rectifying, order[stage % len(order)], learned, previous)


class BoostRate(nn.Module):
    """ρ, the learnable scale of the ensemble's summed logits."""

    def __init__(self, init: float) -> None:
        super().__init__()
        self.rate = nn.Parameter(torch.tensor(float(init)))


class ReconBoostParams(AnyParams):
    epochs_per_stage: PositiveInt = Field(4, description="epochs of a stage's learning phase (official 4)")
    correct_epochs: int = Field(4, ge=0, description="epochs of a stage's rectification phase (official 4)")
    weight1: float = Field(5.0, description="w1 of the boosting loss (official 5; AVE README 4)")
    weight2: float = Field(1.0, description="w2: how much the others' confidence lowers a sample's weight")
    alpha: float = Field(0.5, ge=0.0, description="weight of the memory-consolidation term (official 0.5)")
    consolidation_gradient: bool = Field(
        True, description="true: the consolidation term trains the current learner (the paper); false: it is "
                          "detached as in the released code (train.py L349), a no-op")
    boost_rate: float = Field(1.0, description="initial ρ (official 1.0)")
    hidden: PositiveInt = Field(256, description="width of the shared head's hidden layer (official 256)")
    order: tuple[str, ...] | None = Field(None, description="the modalities' turns (None: the task's order)")


class ReconBoost(Balancer):
    """Alternating boosting stages: one modality learns against the others' ensemble, then all rectify."""

    name = "reconboost"
    Params = ReconBoostParams
    params: ReconBoostParams
    requires = Requirements(equal_feature_dims=True, single_label=True, ignores_fusion=True)
    task_defaults = {"ave": {"weight1": 4.0}}

    @classmethod
    def check(cls, params: AnyParams, task: Task) -> list[str]:
        if not isinstance(params, ReconBoostParams):
            raise TypeError(f"{cls.name} checks ReconBoostParams, got {type(params).__name__}")
        if params.order is not None and sorted(params.order) != sorted(task.modalities):
            return [f"order {list(params.order)} must list each of the task's modalities "
                    f"({', '.join(task.modalities)}) once"]
        return []

    def extra_modules(self, feature_dims: dict[str, int], num_classes: int) -> dict[str, nn.Module]:
        dim = next(iter(feature_dims.values()))
        head = nn.Sequential(nn.Linear(dim, self.params.hidden), nn.ReLU(), nn.Linear(self.params.hidden, num_classes))
        return {HEAD: head, RATE: BoostRate(self.params.boost_rate)}

    def setup(self, ctx: TrainContext) -> None:
        self.order = tuple(self.params.order or ctx.model.modalities)
        self.phase = phase_of(0, self.params.epochs_per_stage, self.params.correct_epochs, self.order)
        self.entered: Phase | None = None
        self.rate = cast(BoostRate, ctx.model.extras[RATE])
        self.stats = EpochMeans()

    def stage(self, ctx: TrainContext) -> Stage:
        self.phase = phase = phase_of(ctx.epoch, self.params.epochs_per_stage, self.params.correct_epochs, self.order)
        if phase.rectifying:
            groups = {f"encoder.{m}" for m in phase.learned} | {f"extra.{HEAD}", f"extra.{RATE}"}
            return Stage("rectify", selectable=len(phase.learned) == len(self.order), trains=frozenset(groups))
        return Stage(f"learn.{phase.modality}", selectable=False,
                     trains=frozenset({f"encoder.{phase.modality}", f"extra.{HEAD}"}))

    def on_epoch_start(self, ctx: TrainContext) -> None:
        key = (self.phase.stage, self.phase.rectifying)
        if self.entered is not None and key != (self.entered.stage, self.entered.rectifying):
            ctx.reset_optimizer_state(list(ctx.model.parameters()))  # a new optimizer per phase (official)
        self.entered = self.phase

    def learners(self) -> tuple[str, ...]:
        """The modalities whose learner is in the prediction now (the learning one included)."""
        phase = self.phase
        return phase.learned if phase.rectifying or phase.modality in phase.learned else (*phase.learned,
                                                                                            phase.modality)

    def train_step(self, ctx: TrainContext, batch: Batch) -> tuple[Tensor, ModelOutput]:
        ctx.optimizer.zero_grad(set_to_none=True)
        phase, model, y = self.phase, ctx.model, batch.label
        head, rate = model.extras[HEAD], self.rate.rate
        with ctx.autocast():
            if phase.rectifying:
                features = {m: model.encoders[m](batch.inputs[m]) for m in phase.learned}
                logits = rate * sum(head(f).float() for f in features.values())
                loss = ctx.task_loss(logits, y)
                self.stats.add("rectify_loss", loss)
            else:
                m = phase.modality
                features = {m: model.encoders[m](batch.inputs[m])}
                z_m = head(features[m])
                with torch.no_grad():
                    others = {k: model.encoders[k](batch.inputs[k]) for k in phase.learned if k != m}
                    z_others = {k: head(f).float() for k, f in others.items()}
                features.update(others)
                ensemble = rate.detach() * sum(z_others.values()) if z_others else None
                loss = boosting_loss(z_m, ensemble, y, self.params.weight1, self.params.weight2)
                self.stats.add("boost_loss", loss)
                if phase.previous is not None and phase.previous in z_others:
                    term = consolidation(z_m, z_others[phase.previous], self.params.consolidation_gradient)
                    self.stats.add("consolidation", term)
                    loss = loss + self.params.alpha * term
        loss.backward()
        ctx.optimizer.step()
        out = ModelOutput(None, {k: f.detach() for k, f in features.items()})
        return loss.detach(), out

    def eval_logits(self, ctx: TrainContext, out: ModelOutput) -> Tensor:
        head = ctx.model.extras[HEAD]
        kept = [m for m in self.learners() if m not in out.dropped and m in out.features]
        if not kept:  # no learner left: no information, a uniform prediction
            any_feature = next(iter(out.features.values()))
            return any_feature.new_zeros(any_feature.shape[0], ctx.task.num_classes).float()
        return self.rate.rate.float() * sum(head(out.features[m]).float() for m in kept)

    def coefficients(self) -> dict[str, float]:
        coeffs = {f"active.{m}": float(not self.phase.rectifying and m == self.phase.modality) for m in self.order}
        coeffs["rectifying"] = float(self.phase.rectifying)
        coeffs["rate"] = float(self.rate.rate.detach())  # once per epoch
        coeffs.update(self.stats.read())
        return coeffs



@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [ReconBoost]
