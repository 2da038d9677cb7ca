"""`greedy`: balanced multi-modal learning (Wu, Jastrzębski, Cho, Geras, "Characterizing and overcoming the
greedy nature of learning in multi-modal DNNs", ICML 2022; official code nyukat/greedy_multimodal_learning @
a190e03755bd, `src/callbacks.py::Bias_Mitigation_Strong`).

Runs on the `mmtm` fusion (two branches joined by MMTMs, one head per branch). Loss = Σ_m CE(l_m) over the
branch heads (official `blend_loss`); the prediction is the mean of the heads. After every backward (before
the optimizer step; the step itself is unchanged) the *conditional learning speed* is tracked from
parameter groups, for modality i:

    bypass_i = the MMTMs' gate layers of modality i + the shared squeeze layers (counted for both)
    main_i   = encoder i + its head
    r_G = Σ_{θ∈G} ‖∇θ‖² / Σ_{θ∈G} ‖θ‖²,   M_G += r_G   (cumulative, never reset)
    BDR_i = log10(M_bypass_i / M_main_i),   d = BDR_0 − BDR_1

From the `starting_epoch`-th epoch (1-indexed, as the official loop counts: by default after one epoch of
normal training), when not curating and |d| > ε the next `window` steps run in curation mode for the caring
modality `0 if d > 0 else 1`: its MMTM gates are replaced by their running means, so its branch must learn
from its own modality. M is not updated during curation steps. The decision taken after step t's backward
applies from step t+1's forward.

Everything per step stays on the device: the state (sums, BDRs, d, curating flag, caring modality, window
counter) is a set of tensors updated with `torch.where`, and the fusion reads the resulting `(2,)` mask.
The only Python branching is on the epoch (locked / unlocked).

`mode: random` is the official ablation (`Bias_Mitigation_Random`): once unlocked, every step picks
uniformly among normal, curate modality 1, curate modality 0.

Differences from the official code (each official behaviour is a parameter):
* evaluation runs in normal mode (`curate_in_eval: true` lets the curation flag reach validation and test
  forwards, as the official framework does);
* the running mean gates are updated by training forwards only. `track_eval: true` also updates them in
  evaluation, once per evaluated batch: the official framework runs one forward per validation batch and one
  per test batch every epoch, and its module updates the means in each. The engine's evaluation runs every
  batch five times (all modalities, each dropped, each alone); only the all-modality forward updates the
  means (the fusion skips forwards with a modality's input zeroed). What this reproduces: the official
  updates from the validation batches of every epoch. Not reproduced: the official per-epoch test-split
  updates (the engine evaluates the test split once, on the selected model, after training); the final
  validation and test evaluations of the selected model update its running means too, which matters only for
  `curate_in_eval: true`;
* each modality's running mean tracks its own gate (`shared_gate_mean: true`: both track modality 0's gate,
  the official bug in `src/balanced_mmtm.py`, where both running means are updated from modality 0's gate);
* with momentum or weight decay, the curated gate layer still moves (its gradient is zero rather than
  absent); the official recipe uses neither.
Safeguards: Σ‖θ‖² and the sums M are clamped at 1e-30 before dividing / taking logs, so a group without
gradient gives a finite d instead of NaN (official: division by zero). The sums are kept in float64.

Coefficients per epoch: `bdr.<m>` and `d_bdr` (conditional learning speeds, last values computed),
`curation_fraction` (share of the epoch's steps run in curation mode) and `curation_fraction.<m>` (steps in
which branch m was re-balanced, i.e. cut from cross-modal information), `unlocked`, `gate_mean.<m>` (mean of
the running gates), and with `utilisation: true` the conditional utilisation rates `cond_util.<m>` = u(m|other)
= (A_other − A_other^iso)/A_other on validation, where A is the accuracy of the other branch's head and
A^iso that head's accuracy when its MMTM inputs from m are replaced by their mean (official
`turnoff_cross_modal_flow` evaluation), and `d_util` = u(m_1|m_0) − u(m_0|m_1) (same sign convention as d).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from mmbench.api import (
    Balancer,
    Batch,
    EpochMeans,
    EpochRecord,
    Incompatible,
    ModelOutput,
    Params,
    Requirements,
    TrainContext,
    hookimpl,
)
from mmbench_plugins.fusions.mmtm import MMTMFusion

TINY = 1e-30


@dataclass
class GreedyState:
    """Device-side state of the balancing callback. `sums` = (M_b0, M_b1, M_m0, M_m1)."""

    sums: Tensor
    bdr: Tensor
    d: Tensor
    curating: Tensor
    caring: Tensor
    counter: Tensor

    @classmethod
    def initial(cls, device: torch.device) -> GreedyState:
        zeros = torch.zeros(4, dtype=torch.float64, device=device)
        return cls(sums=zeros, bdr=zeros[:2].clone(), d=zeros[0].clone(),
                   curating=torch.zeros((), dtype=torch.bool, device=device),
                   caring=torch.zeros((), dtype=torch.long, device=device),
                   counter=torch.zeros((), dtype=torch.long, device=device))

    def mask(self) -> Tensor:
        """`(2,)` bool: which branch's MMTM gates the next forward replaces by their running means."""
        return self.curating & (self.caring == torch.arange(2, device=self.caring.device))


def learning_speed(sums: Tensor, grad_sq: Tensor, weight_sq: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One step of the BDR bookkeeping for groups (bypass_0, bypass_1, main_0, main_1).

    Returns the new cumulative sums `M += Σ‖∇θ‖²/Σ‖θ‖²`, `BDR_i = log10(M_bypass_i/M_main_i)` and
    `d = BDR_0 − BDR_1`.
    """
    sums = sums + grad_sq / weight_sq.clamp_min(TINY)
    bdr = torch.log10(sums[:2].clamp_min(TINY)) - torch.log10(sums[2:].clamp_min(TINY))
    return sums, bdr, bdr[0] - bdr[1]


def guided_step(state: GreedyState, grad_sq: Tensor, weight_sq: Tensor, epsilon: float, window: int,
                unlocked: bool) -> GreedyState:
    """`Bias_Mitigation_Strong.on_backward_end`, branch-free on the device."""
    sums, bdr, d = learning_speed(state.sums, grad_sq, weight_sq)
    if not unlocked:
        return replace(state, sums=sums, bdr=bdr, d=d, curating=torch.zeros_like(state.curating),
                       counter=torch.zeros_like(state.counter))
    active = ~state.curating  # M and d are only updated outside curation
    start = active & (d.abs() > epsilon)
    counter = torch.where(state.curating, state.counter + 1, torch.zeros_like(state.counter))
    return GreedyState(
        sums=torch.where(active, sums, state.sums),
        bdr=torch.where(active, bdr, state.bdr),
        d=torch.where(active, d, state.d),
        curating=torch.where(state.curating, counter < window, start),
        caring=torch.where(start, (d <= 0).long(), state.caring),
        counter=counter,
    )


def random_step(state: GreedyState, grad_sq: Tensor, weight_sq: Tensor, choice: Tensor,
                unlocked: bool) -> GreedyState:
    """`Bias_Mitigation_Random`: `choice` ∈ {0: normal, 1: curate modality 1, 2: curate modality 0}.

    The BDRs are still tracked (every step), only for reporting.
    """
    sums, bdr, d = learning_speed(state.sums, grad_sq, weight_sq)
    if not unlocked:
        choice = torch.zeros_like(choice)
    return replace(state, sums=sums, bdr=bdr, d=d, curating=choice != 0, caring=(choice == 1).long())


class GreedyParams(Params):
    epsilon: float = Field(0.01, ge=0.0, le=100.0, json_schema_extra={"search": {"log_uniform": [0.001, 0.1]}},
                           description="threshold ε on |d| = |BDR_0 − BDR_1| that starts re-balancing "
                                       "(official 0.01)")
    window: int = Field(5, ge=1, le=100000, json_schema_extra={"search": {"log_int": [1, 20]}},
                        description="Q, number of steps a re-balancing (curation) window lasts (official 5)")
    starting_epoch: int = Field(2, ge=1, le=100000,
                                description="1-indexed epoch from which re-balancing may start (official 2: "
                                            "after one epoch of normal training)")
    mode: Literal["guided", "random"] = Field(
        "guided", description="'guided': Bias_Mitigation_Strong (the method); 'random': the official ablation "
                              "that picks normal / curate 1 / curate 0 uniformly every step")
    curate_in_eval: bool = Field(False, description="let the curation flag reach evaluation forwards "
                                                    "(official: yes)")
    track_eval: bool = Field(False, description="update the running mean gates in evaluation too, once per "
                                                "batch (official: once per validation and test batch, every "
                                                "epoch)")
    shared_gate_mean: bool = Field(False, description="both running means track modality 0's gate (the "
                                                      "official bug; needs equal MMTM widths)")
    utilisation: bool = Field(False, description="estimate conditional utilisation rates on validation each "
                                                 "epoch (two extra no-grad encoder passes over the val set)")


class Greedy(Balancer):
    """Balanced multi-modal learning: curation windows chosen from the conditional learning speed."""

    name = "greedy"
    Params = GreedyParams
    params: GreedyParams
    requires = Requirements(fusions=frozenset({"mmtm"}), max_modalities=2)
    # the official configs exist for ModelNet40 only (ε 0.01, Q 5, starting epoch 2): the defaults above

    def setup(self, ctx: TrainContext) -> None:
        fusion = ctx.model.fusion
        if not isinstance(fusion, MMTMFusion):
            raise Incompatible(f"greedy needs the mmtm fusion, got {type(fusion).__name__}")
        if self.params.utilisation and ctx.task.multilabel:
            raise ValueError("greedy utilisation estimates use accuracy and need a single-label task")
        self.fusion = fusion
        self.order = fusion.order
        fusion.curate_in_eval = self.params.curate_in_eval
        fusion.track_eval = self.params.track_eval
        fusion.shared_gate_mean = self.params.shared_gate_mean
        unequal = [mod.dims for mod in fusion.active_modules() if len(set(mod.dims)) > 1]
        if self.params.shared_gate_mean and unequal:
            raise Incompatible(f"shared_gate_mean (the official running-mean bug) needs equal MMTM widths; "
                               f"got {unequal}")
        model = ctx.model
        self.gate_params = [fusion.gate_parameters(m) for m in self.order]
        self.shared_params = fusion.squeeze_parameters()
        self.main_params = [[*model.encoders[m].parameters(), *fusion.classifier_parameters(m)] for m in self.order]
        self.device = ctx.device
        self.state = GreedyState.initial(ctx.device)
        fusion.curation = self.state.mask()
        self.unlocked = False
        self.stats = EpochMeans()
        self._utilisation: dict[str, float] = {}

    def on_epoch_start(self, ctx: TrainContext) -> None:
        self.unlocked = ctx.epoch + 1 >= self.params.starting_epoch
        if self.params.utilisation:
            self.fusion.reset_squeeze_means()

    def loss(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> Tensor:
        y = batch.label
        losses = [ctx.task_loss(logits, y) for logits in self.fusion.branch_logits(out.features).values()]
        return sum(losses[1:], start=losses[0])

    def _squared_norms(self, params: list[nn.Parameter]) -> tuple[Tensor, Tensor]:
        """(Σ‖∇θ‖², Σ‖θ‖²) over `params` (parameters without a gradient add only to the second)."""
        grads = [p.grad for p in params if p.grad is not None and p.numel() > 0]
        weights = [p.detach() for p in params if p.numel() > 0]

        def total(tensors: list[Tensor]) -> Tensor:
            if not tensors:
                return torch.zeros((), dtype=torch.float64, device=self.device)
            return torch.stack([n.to(self.device) for n in torch._foreach_norm(tensors)]).double().square().sum()

        return total(grads), total(weights)

    def group_norms(self) -> tuple[Tensor, Tensor]:
        """(Σ‖∇θ‖², Σ‖θ‖²) for the groups (bypass_0, bypass_1, main_0, main_1), each `(4,)` float64."""
        shared = self._squared_norms(self.shared_params)
        gates = [self._squared_norms(p) for p in self.gate_params]
        mains = [self._squared_norms(p) for p in self.main_params]
        groups = [(g + shared[0], w + shared[1]) for g, w in gates] + mains
        return torch.stack([g for g, _ in groups]), torch.stack([w for _, w in groups])

    @torch.no_grad()
    def after_backward(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> None:
        curation = self.fusion.curation
        if curation is None:
            raise RuntimeError("greedy sets the mmtm fusion's curation mask in setup and after every step; "
                               "something cleared it")
        self.stats.add("curation_fraction", curation, labels=self.order)  # this step's mode
        grad_sq, weight_sq = self.group_norms()
        if self.params.mode == "guided":
            self.state = guided_step(self.state, grad_sq, weight_sq, self.params.epsilon, self.params.window,
                                     self.unlocked)
        else:
            choice = torch.randint(0, 3, (), device=self.device)
            self.state = random_step(self.state, grad_sq, weight_sq, choice, self.unlocked)
        self.fusion.curation = self.state.mask()

    # ----------------------------------------------------------------------------- reporting

    @torch.no_grad()
    def conditional_utilisation(self, ctx: TrainContext) -> dict[str, float]:
        """u(m|other) on validation: the other branch's accuracy gain from m's sample-specific MMTM input."""
        model, fusion = ctx.model, self.fusion
        was_training = model.training
        model.eval()
        hits = torch.zeros(2, 2, device=self.device)  # [normal, isolated] x branch
        count = 0
        curation, fusion.curation = fusion.curation, None  # both passes without re-balancing
        try:
            for batch in ctx.val_loader:  # on the device already
                y = batch.label
                for row, isolate in enumerate((False, True)):
                    fusion.isolate = isolate
                    with ctx.autocast():
                        logits = fusion.branch_logits(model.encode(batch.inputs))
                    for i, m in enumerate(self.order):
                        hits[row, i] += (logits[m].argmax(-1) == y).sum()
                count += len(y)
        finally:
            fusion.isolate, fusion.curation = False, curation
            model.train(was_training)
        acc = (hits / max(1, count)).tolist()
        util = {}
        for i, m in enumerate(self.order):
            other = 1 - i  # the branch that receives m through the MMTMs
            normal, isolated = acc[0][other], acc[1][other]
            util[m] = (normal - isolated) / normal if normal > 0 else 0.0
        return {**{f"cond_util.{m}": u for m, u in util.items()},
                **{f"branch_acc.{m}": acc[0][i] for i, m in enumerate(self.order)},
                **{f"branch_acc_isolated.{m}": acc[1][i] for i, m in enumerate(self.order)},
                "d_util": util[self.order[1]] - util[self.order[0]]}

    def on_epoch_end(self, ctx: TrainContext, stats: EpochRecord) -> None:
        if self.params.utilisation:
            self._utilisation = self.conditional_utilisation(ctx)

    def coefficients(self) -> dict[str, float]:
        bdr = self.state.bdr.tolist()
        curated = self.stats.read()
        coeffs = {f"bdr.{m}": b for m, b in zip(self.order, bdr)}
        coeffs["d_bdr"] = float(self.state.d)
        coeffs["curation_fraction"] = sum(curated.values())
        coeffs.update(curated)
        coeffs["unlocked"] = float(self.unlocked)
        modules = self.fusion.active_modules()
        for i, m in enumerate(self.order):
            coeffs[f"gate_mean.{m}"] = float(torch.stack([mod.gate_means()[i].mean() for mod in modules]).mean())
        coeffs.update(self._utilisation)
        return coeffs


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [Greedy]
