"""`aug`: sustained boosting with adaptive classifier assignment (Jiang, Huang, Yang, "Rethinking Multimodal Learning
from the Perspective of Mitigating Classification Ability Disproportion", NeurIPS 2025; official code
njustkmg/NeurIPS25-AUG @ 841d079eff52, `train_CREMAD.py`, `model/AudioVideo.py`; the earlier tree @ 966dbf514c84
also has `train_KS.py` and `train_NVGesture.py`).

Where it acts: the whole training step and the model, which grows. Each modality m classifies with a stack of
branches that share one last layer `fc` (Linear(256, C), shared by all modalities and branches): the base branch
`fc(ReLU(W_0 f_m))` and the boosting branches added during training, `a_j = fc(ReLU(W_j f_m))`; its logits are
the sum `S_t = Σ_{j≤t} a_j` (AudioVideo.py L47–104). Each batch makes one optimizer step per modality, in the
task's order (train_CREMAD.py L47–75), on

    one branch:  L = CE(S_1, y)
    t ≥ 2:       L = CE(S_t, y) + CE(S_{t−1}, y) + CE(a_t, y − λ·y⊙softmax(S_{t−1}))

the last term (the newest branch fits the residual of the ones before, softmax detached) written as the code
does, `CE(a_t, y) − λ·CE(a_t, y⊙p_{t−1})` (L57, L70; paper Eqs. 2–5).

Adaptive classifier assignment (ACA, L205–228): over each epoch's training steps s_m = Σ_i softmax(S^m)[i, y_i];
after epoch 0 and every `check_every` epochs (official: a tenth of the run), with two modalities and
ρ = s_1/s_2: ρ > σ + τ adds a branch to the second modality, ρ < σ − τ to the first. With three or more
(NVGesture, `train_NVGesture.py` @ 966dbf514c84), a branch is added to every m with s_m / Σ_{k≠m} s_k < σ_multi.
A branch assigned after epoch e joins when epoch e + 1 starts, so the model validated (and maybe selected) at
epoch e is the one that was trained, as the official code saves it before adding the branch (L216–228).

Prediction: `Σ_m w_m S^m` (`merge_weights`; official `merge_alpha` 0.4 on audio, 0.6 on video); a dropped modality
gets weight 0 and the others are renormalised.

Defaults: λ 0.5 (hard-coded L57/L70 @ 841d079eff52; 0.2 in train_KS.py and train_NVGesture.py @ 966dbf514c84:
`task_defaults`), σ 1.0 (`--lam`, L165), τ 0.01 (L222–228), σ_multi 0.4 (NVGesture), width 256, merge weights
uniform unless given (CREMA-D and Kinetics-Sounds: 0.4 audio / 0.6 visual, `--merge_alpha`). `check_every`
per task from the paper's t_N: CREMA-D 20, Kinetics-Sounds / NVGesture 10, Twitter2015 5, Sarcasm 1. Every
Linear of the method's own modules is Xavier-normal with zero bias (`utils.weight_init`, `add_layer`). The
official recipe (SGD lr 1e-2, momentum 0.9, wd 1e-4, StepLR(70, 0.1), batch 64, 200 epochs) is the grid's.

Departures from the official code, and why:

* The branches added during training learn (`ctx.add_module` gives them to the optimizer, at the shared layer's
  current learning rate). The official optimizer is built once over the model's parameters at the start (L201)
  and `add_layer` appends new Linear modules later (AudioVideo.py L67–74), so the added branches are never
  stepped: they stay at their random init while the encoder learns through them. The paper's branches learn
  (they are trained on the residual target); `train_added_branches: false` reproduces the release.
* The paper tests `s_a − σ·s_v > τ`; the code tests the ratio `s_a/s_v > σ + τ` (L222). The code's test is kept.
* Batch order of the per-modality steps: the task's modality order (official: audio, then video).
* The encoder of each modality runs right before its own step (official: both before the audio step); the
  second step's encoder is untouched by the first, so the result is the same.
* The learning-rate scheduler is stepped after each epoch (the engine's), not before it (L212).

Requirements: single-label targets (softmax residual targets); the cell's fusion is not used (`ignores_fusion`);
any number of modalities (two: the CREMA-D rule; three or more: the NVGesture rule).

Coefficients per epoch: `ratio` (s_1/s_2) with two modalities, else `ratio.<m>` (s_m/Σ_{k≠m} s_k), `branches.<m>`
(branches of m, base included,
with those assigned after the epoch, which join when the next one starts), `loss.<m>` (mean per-modality loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import Tensor, nn

from mmbench.api import (
    Balancer,
    Batch,
    EpochMeans,
    EpochRecord,
    ModelOutput,
    Requirements,
    Task,
    TrainContext,
    hookimpl,
    late_fusion,
)
from mmbench.api import Params as AnyParams

HEAD = "aug_head"
#: the smallest denominator of a score ratio (scores are sums of probabilities: 0 only if every one underflowed)
TINY = 1e-30


def embed_name(m: str) -> str:
    return f"aug_embed_{m}"


def branch_name(m: str, k: int) -> str:
    return f"aug_branch{k}_{m}"


def residual_loss(s_prev: Tensor, a_t: Tensor, y: Tensor, lam: float) -> Tensor:
    """`CE(a_t, y) − λ·CE(a_t, y⊙softmax(S_{t−1}))` = CE of a_t against the residual target `y − λ·y⊙p_{t−1}`."""
    onehot = F.one_hot(y, a_t.shape[-1]).to(a_t.dtype)
    residual_target = onehot * F.softmax(s_prev.detach(), dim=-1)
    return F.cross_entropy(a_t, y) - lam * F.cross_entropy(a_t, residual_target)


def boosting_loss(branch_logits: Sequence[Tensor], y: Tensor, lam: float) -> Tensor:
    """One branch: CE(S_1); t ≥ 2: CE(S_t) + CE(S_{t−1}) + the residual loss of the newest branch a_t."""
    total = torch.stack(list(branch_logits)).sum(0)
    if len(branch_logits) == 1:
        return F.cross_entropy(total, y)
    previous = torch.stack(list(branch_logits[:-1])).sum(0)
    return F.cross_entropy(total, y) + F.cross_entropy(previous, y) + residual_loss(previous, branch_logits[-1], y,
                                                                                     lam)


def aca_targets(scores: Sequence[float], sigma: float, tau: float, sigma_multi: float) -> list[int]:
    """The modalities (positions) that get a new branch: two modalities by the ratio s_1/s_2 with a dead zone,
    three or more each below σ_multi of the others' sum."""
    if len(scores) == 2:
        ratio = scores[0] / max(scores[1], TINY)
        return [1] if ratio > sigma + tau else [0] if ratio < sigma - tau else []
    total = sum(scores)
    return [i for i, s in enumerate(scores) if s / max(total - s, TINY) < sigma_multi]


def check_interval(epochs: int) -> int:
    """The official ACA interval: a tenth of the run (1 for runs of 10 epochs or fewer)."""
    return epochs // 10 if epochs > 10 else 1


def _linear(d_in: int, d_out: int) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    nn.init.xavier_normal_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class AUGParams(AnyParams):
    residual_lambda: float = Field(0.5, ge=0.0, description="λ of the residual target (official 0.5; KS and "
                                                            "NVGesture scripts 0.2)")
    sigma: float = Field(1.0, gt=0.0, description="σ: the balanced score ratio of two modalities (--lam 1.0)")
    tau: float = Field(0.01, ge=0.0, description="τ: the dead zone around σ (official 0.01)")
    sigma_multi: float = Field(0.4, gt=0.0, description="three or more modalities: a branch for m when "
                                                        "s_m/Σ_{k≠m} s_k < this (NVGesture 0.4)")
    check_every: PositiveInt | None = Field(None, description="epochs between assignments (None: a tenth of "
                                                              "the run, official)")
    merge_weights: dict[str, float] | None = Field(
        None, description="prediction weight per modality (None: equal; official CREMA-D 0.4 audio / 0.6 video)")
    hidden: PositiveInt = Field(256, description="width of every branch (official 256)")
    train_added_branches: bool = Field(
        True, description="true: added branches learn (the paper); false: they stay at their init, as the "
                          "released optimizer never receives them")


class AUG(Balancer):
    """Per-modality boosting branches through a shared last layer, added to the weaker modality as it lags."""

    name = "aug"
    Params = AUGParams
    params: AUGParams
    requires = Requirements(single_label=True, ignores_fusion=True)
    task_defaults = {
        "cremad": {"merge_weights": {"audio": 0.4, "visual": 0.6}, "check_every": 20},
        "kinetics_sounds": {"merge_weights": {"audio": 0.4, "visual": 0.6}, "residual_lambda": 0.2,
                            "check_every": 10},
        "nvgesture": {"residual_lambda": 0.2, "check_every": 10},
        "twitter2015": {"check_every": 5},
        "sarcasm": {"check_every": 1},
    }

    @classmethod
    def check(cls, params: AnyParams, task: Task) -> list[str]:
        if not isinstance(params, AUGParams):
            raise TypeError(f"{cls.name} checks AUGParams, got {type(params).__name__}")
        weights = params.merge_weights
        if weights is not None and (set(weights) != set(task.modalities) or sum(weights.values()) <= 0):
            return [f"merge_weights {weights} must give each of the task's modalities ({', '.join(task.modalities)})"
                    " a weight, with a positive sum"]
        return []

    def extra_modules(self, feature_dims: dict[str, int], num_classes: int) -> dict[str, nn.Module]:
        hidden = self.params.hidden
        embeds: dict[str, nn.Module] = {embed_name(m): nn.Sequential(_linear(d, hidden), nn.ReLU())
                                        for m, d in feature_dims.items()}
        return {HEAD: _linear(hidden, num_classes), **embeds}

    def setup(self, ctx: TrainContext) -> None:
        self.modalities = tuple(ctx.model.modalities)
        self.dims = {m: cast(nn.Linear, cast(nn.Sequential, ctx.model.extras[embed_name(m)])[0]).in_features
                     for m in self.modalities}
        weights = self.params.merge_weights or {m: 1.0 for m in self.modalities}
        total = sum(weights.values())
        self.weights = torch.tensor([[weights[m] / total] for m in self.modalities], device=ctx.device)  # (M, 1)
        self.scores: list[Tensor] = []
        self.counts = {m: 1 for m in self.modalities}
        self.pending: list[str] = []  # modalities that get a branch when the next epoch starts
        self.ratios: dict[str, float] = {}
        self.stats = EpochMeans()

    def branches(self, ctx: TrainContext, m: str) -> list[nn.Module]:
        """Modality m's branches, the base first (those of the model as it is now: a restored model has its own)."""
        extras = ctx.model.extras
        found = [extras[embed_name(m)]]
        while branch_name(m, len(found)) in extras:
            found.append(extras[branch_name(m, len(found))])
        return found

    def branch_logits(self, ctx: TrainContext, m: str, f: Tensor) -> list[Tensor]:
        head = ctx.model.extras[HEAD]
        return [head(branch(f)).float() for branch in self.branches(ctx, m)]

    def train_step(self, ctx: TrainContext, batch: Batch) -> tuple[Tensor, ModelOutput]:
        y = batch.label
        features, logits, losses = {}, {}, []
        for m in self.modalities:
            ctx.optimizer.zero_grad(set_to_none=True)
            with ctx.autocast():
                f = ctx.model.encoders[m](batch.inputs[m])
                branch_logits = self.branch_logits(ctx, m, f)
                loss = boosting_loss(branch_logits, y, self.params.residual_lambda)
            loss.backward()
            ctx.optimizer.step()
            features[m], logits[m] = f.detach(), torch.stack(branch_logits).sum(0).detach()
            losses.append(loss.detach())
        probs = torch.stack([logits[m].softmax(-1).gather(1, y.view(-1, 1)).sum() for m in self.modalities])
        self.scores.append(probs)
        self.stats.add("loss", torch.stack(losses), labels=self.modalities)
        return torch.stack(losses).mean(), ModelOutput(None, features, unimodal=logits)

    def on_epoch_end(self, ctx: TrainContext, stats: EpochRecord) -> None:
        if not self.scores:
            return
        scores = torch.stack(self.scores).sum(0).double().tolist()  # once per epoch
        self.scores = []
        if len(scores) == 2:
            self.ratios = {"ratio": scores[0] / max(scores[1], TINY)}
        else:
            self.ratios = {f"ratio.{m}": s / max(sum(scores) - s, TINY)
                           for m, s in zip(self.modalities, scores, strict=True)}
        every = self.params.check_every or check_interval(ctx.epochs)
        if ctx.epoch == 0 or (ctx.epoch + 1) % every == 0:
            self.pending = [self.modalities[i] for i in
                            aca_targets(scores, self.params.sigma, self.params.tau, self.params.sigma_multi)]
        self.counts = {m: len(self.branches(ctx, m)) + self.pending.count(m) for m in self.modalities}

    def on_epoch_start(self, ctx: TrainContext) -> None:
        """The branches assigned after the last epoch join now: that epoch's model, the one validated and maybe
        selected, is kept without them (the official code saves it before `add_layer`)."""
        for m in self.pending:
            self.grow(ctx, m)
        self.pending = []

    def grow(self, ctx: TrainContext, m: str) -> None:
        """A new branch for m, at the shared layer's current learning rate (or frozen, as released)."""
        branch = nn.Sequential(_linear(self.dims[m], self.params.hidden), nn.ReLU())
        name = branch_name(m, len(self.branches(ctx, m)))
        if not self.params.train_added_branches:
            branch.requires_grad_(False)  # the encoder still learns through it, as in the release
            ctx.add_module(name, branch, optimize=False)
            return
        shared = ctx.model.extras[HEAD].weight
        lr = next(g["lr"] for g in ctx.optimizer.param_groups if any(p is shared for p in g["params"]))
        ctx.add_module(name, branch, lr=lr)

    def eval_logits(self, ctx: TrainContext, out: ModelOutput) -> Tensor:
        logits = [out.unimodal[m] if m in out.unimodal else torch.stack(
            self.branch_logits(ctx, m, out.features[m])).sum(0) for m in self.modalities]
        mask = late_fusion.presence(self.modalities, out.dropped, logits[0].device)
        return late_fusion.fuse_logits(logits, late_fusion.mask_weights(self.weights, mask))

    def coefficients(self) -> dict[str, float]:
        coeffs = dict(self.ratios)
        coeffs.update({f"branches.{m}": float(self.counts[m]) for m in self.modalities})
        coeffs.update(self.stats.read())
        return coeffs


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [AUG]
