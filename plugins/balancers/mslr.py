"""`mslr`: Modality-Specific Learning Rates for additive late fusion (Yao & Mihalcea, "Modality-specific Learning
Rates for Effective Multimodal Additive Late-fusion", Findings of ACL 2022).

No official code exists; this follows the MSLR baseline of the AGM repository (lihong2303/AGM_ICCV2023 @
5a65542c70b1, `run/CREMAD_main.py` and `model/CREMAD_net.py::AVClassifier_Sum`; the reference behind AGM's and
MLB's comparison tables):

* the model is an additive late fusion `o = Σ_m (W_m z_m + b_m)` (our `sum` fusion), trained on CE(o);
* every modality has a fixed initial scale `c_m` and a ratio `q_m` (1 at first). After every epoch's
  validation, with `A_m` the accuracy of modality m's own branch `W_m z_m + b_m` and `H_m` the last
  `memory` accuracies: while `H_m` is not full, `A_m` is appended and `q_m` stays 1; afterwards
  `q_m = A_m / mean(H_m)`, then the oldest entry is dropped and `A_m` appended. `q_m` is recomputed each
  epoch, not compounded;
* every step, after backward, all gradients of encoder m and of its branch (`W_m`, `b_m`) are multiplied by
  `c_m·q_m` — for plain SGD a per-modality learning rate of `lr·c_m·q_m`.

Options: `compound=True` with `update_every=5` is the "dynamic" form of a third-party re-implementation (seen
through a code index that did not name its repository, so it cannot be cited here):
every `update_every` epochs the scale itself is multiplied, `scale_m ← scale_m·A_m/mean(H_m)`.
`accuracy_from="engine"` uses the engine's per-modality validation accuracy (fused model with the other
modalities' features zeroed, i.e. the branch plus the other branches' biases) instead of the exact branch
accuracy, saving one no-grad validation pass per epoch.

Differences from the reference: the AGM repo's CREMA-D `test` counts the audio accuracy with the visual
prediction (so both ratios follow visual accuracy); we measure each branch on its own. Safeguard: if the
history mean is 0 the ratio is left at 1. As in the reference the scale is a gradient multiplier, so with
Adam or weight decay it is not exactly a learning-rate change.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from mmbench.api import (
    Balancer,
    Batch,
    EpochRecord,
    ModelOutput,
    Requirements,
    Task,
    TrainContext,
    hookimpl,
    unknown_names,
)
from mmbench.api import Params as AnyParams  # in a class body, `Params` is the class's own parameter model


def mslr_ratio(history: list[float], accuracy: float) -> float:
    """q = A / mean(H) (1 when the history mean is 0)."""
    mean = sum(history) / len(history)
    return accuracy / mean if mean > 0 else 1.0


class MSLRParams(AnyParams):
    init_scale: dict[str, float] = Field(
        default_factory=dict,
        description="c_m per modality name (missing modalities: 1.0); CREMA-D reference audio 0.9, visual 1.1")
    memory: int = Field(5, ge=1, le=100, json_schema_extra={"search": {"int": [1, 10]}},
                        description="length of the validation-accuracy history H_m")
    compound: bool = Field(False, description="multiply the scale by q every `update_every` epochs (the 'dynamic' "
                                              "form) instead of using c_m·q_m with q recomputed each epoch (AGM's)")
    update_every: int = Field(1, ge=1, le=100, description="epochs between ratio updates (the 'dynamic' form uses 5)")
    accuracy_from: Literal["branch", "engine"] = Field(
        "branch", description="'branch': accuracy of W_m z_m + b_m (extra no-grad val pass); "
                                "'engine': the engine's unimodal validation accuracy")


class MSLR(Balancer):
    """Per-modality gradient multipliers `c_m·q_m`, with q_m from each branch's validation accuracy."""

    name = "mslr"
    Params = MSLRParams
    params: MSLRParams
    requires = Requirements(fusions=frozenset({"sum"}), fusion_contributions=True, validation_each_epoch=True,
                            single_label=True)
    task_defaults = {"cremad": {"init_scale": {"audio": 0.9, "visual": 1.1}}}

    @classmethod
    def check(cls, params: AnyParams, task: Task) -> list[str]:
        if not isinstance(params, MSLRParams):
            raise TypeError(f"{cls.name} checks MSLRParams, got {type(params).__name__}")
        return unknown_names("init_scale", params.init_scale, task.modalities)

    def setup(self, ctx: TrainContext) -> None:
        model = ctx.model
        self._modalities = tuple(model.modalities)
        if model.fusion is None:
            raise RuntimeError("mslr scales the fusion's per-modality blocks, and this cell's model has no fusion")
        blocks = model.fusion.classifier_blocks()
        self._params: dict[str, list[nn.Parameter]] = {}
        for m in self._modalities:
            branch = [t for t in blocks[m] if isinstance(t, nn.Parameter)]
            self._params[m] = [*model.encoders[m].parameters(), *branch]
        self._history: dict[str, deque[float]] = {m: deque(maxlen=self.params.memory) for m in self._modalities}
        self._base = {m: float(self.params.init_scale.get(m, 1.0)) for m in self._modalities}
        self._ratio = {m: 1.0 for m in self._modalities}
        self._scale = dict(self._base)
        self._accuracy: dict[str, float] = {}

    @torch.no_grad()
    def after_backward(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> None:
        for m in self._modalities:
            grads = [p.grad for p in self._params[m] if p.grad is not None]
            if grads:
                torch._foreach_mul_(grads, self._scale[m])

    @torch.no_grad()
    def branch_accuracy(self, ctx: TrainContext) -> dict[str, float]:
        """Accuracy of each additive branch `W_m z_m + b_m` on the validation set."""
        model = ctx.model
        was_training = model.training
        model.eval()
        hits = {m: torch.zeros((), device=ctx.device) for m in self._modalities}
        count = 0
        for batch in ctx.val_loader:  # on the device already
            with ctx.autocast():
                out = model(batch.inputs)
            for m in self._modalities:
                hits[m] += (out.contributions[m].argmax(-1) == batch.label).sum()
            count += len(batch.label)
        model.train(was_training)
        return {m: float(h) / max(1, count) for m, h in hits.items()}

    def engine_accuracy(self, stats: EpochRecord) -> dict[str, float]:
        """Each modality's unimodal validation accuracy, as the engine recorded it."""
        accuracy = {}
        for m in self._modalities:
            value = stats.val.unimodal[m]["accuracy"] if stats.val is not None else None
            if value is None:
                raise RuntimeError(f"mslr (accuracy_from 'engine') reads each modality's validation accuracy; the "
                                   f"epoch's record has none for {m!r}")
            accuracy[m] = value
        return accuracy

    def on_epoch_end(self, ctx: TrainContext, stats: EpochRecord) -> None:
        if self.params.accuracy_from == "branch":
            accuracy = self.branch_accuracy(ctx)
        else:
            accuracy = self.engine_accuracy(stats)
        self._accuracy = accuracy
        update = (ctx.epoch + 1) % self.params.update_every == 0
        for m in self._modalities:
            history = self._history[m]
            if len(history) == history.maxlen:
                q = mslr_ratio(list(history), accuracy[m])
                if not self.params.compound:
                    self._ratio[m] = q
                    self._scale[m] = self._base[m] * q
                elif update:
                    self._ratio[m] = q
                    self._scale[m] *= q
            history.append(accuracy[m])

    def coefficients(self) -> dict[str, float]:
        """The scales and ratios the next epoch will use, and this epoch's branch accuracies."""
        coeffs = {f"scale.{m}": s for m, s in self._scale.items()}
        coeffs.update({f"q.{m}": q for m, q in self._ratio.items()})
        coeffs.update({f"val_acc.{m}": a for m, a in self._accuracy.items()})
        return coeffs


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [MSLR]
