"""`mie`: Modal-aware Interactive Enhancement (Jiang, Chi, Yang, "Multimodal Classification via Modal-Aware
Interactive Enhancement", arXiv 2407.04587, 2024).

Late fusion with an independent branch (encoder + head) per modality. Training alternates single-modality
*phases*; a phase trains only its modality's branch with:

1. **SAM** (paper Eq. 2–4, Foret et al.): g = ∇L(θ), ε = ρ_m·g/‖g‖ (global norm over the branch's
   parameters), g_SAM = ∇L(θ + ε) (second-order term dropped), θ restored, then the step uses g_SAM.
2. **Gradient modification (GM)** (paper Eq. 5–8): for each Linear layer of the branch paired with a layer of
   the same weight shape in the branch trained in the previous phase, `grad_W ← grad_W · P`, where P comes from
   that previous layer's accumulated input statistics over the train set (computed once, at the phase switch):
   `C = Σ_t r_tᵀ r_t` with `r_t` the mean layer input of batch t, `C = V Σ Vᵀ`,
   `λ_j = exp(−τ (σ_j − σ_min)/(σ_max − σ_min))`, `P = V diag(λ) Vᵀ`. High-energy ("sharp") directions of the
   other modality are damped to e^{−τ}; its flattest directions keep 1. The first phase uses no P.

Prediction is a late fusion of the per-modality heads: `fusion="average"` (mean of the softmax outputs, as
log-probabilities) or `"entropy"` / `"entropy_batch"` (MLA's gating on the logits: "MIE (weight)" uses "the same
weighting strategy as MLA"; see `mla.py`); a modality the engine drops is left out, as a missing branch would be.
The cell's fusion module is neither used nor trained (`ignores_fusion`: a grid runs MIE with its first fusion
only). The branch heads are the Linear(d, C) the engine adds for `unimodal_heads`; the paper's head is
FC(d)-ReLU-FC(d)-ReLU-FC(C): give each encoder two final FC-ReLU layers of width d (and `gm_depth: 3`) to match.

No official MIE code is public. Where the paper leaves things open (its equations and values are stripped in the
arXiv text) this follows the authors' successor IGM (IJCAI 2025; njustkmg/IJCAI25-IGM @ 19aa8e5d99c9,
`train_CREMA.py`, `models/AudioVideo.py`, `configs/*.json`), whose components match MIE's description:

* Phase schedule `phase_epochs` (cycled; IGM `epoch_list`, e.g. CREMA-D 25/50), modality order = the task's
  (or `order`); at each switch P is computed for the modality just trained with an eval-mode no-grad pass over
  the train set in batches of `cov_batch_size` (paper: 12, NVGesture 6), and the optimizer state is reset
  (`reset_optimizer`, IGM re-creates the optimizer). τ = 0.4 (IGM `temperature1`).
* Reloading the best checkpoint so far (validation primary metric) at a switch: only after a phase of at least
  `reload_after` epochs (default 25, the shortest of IGM's CREMA-D/KS phases; IGM reloads at every switch,
  `reload_after: 1`; null never reloads). A short phase of the weak modality rarely raises the fused validation
  accuracy at once, so a reload after it throws that phase away (measured: `docs/methods/alternating.md`).
* GM scope `gm_depth`: how many of a branch's deepest Linear layers (head first) are modified. Default 1 = the
  head (the paper: "the gradient modification strategy is applied for the classification head"); `null` = every
  Linear with a same-shape counterpart, IGM's scope (IGM pairs all-to-all by shape; here k-th deepest with k-th
  deepest: the same for mirrored branches, never several P's). Conv layers are not modified (IGM never uses their P).

Differences from IGM, and why: the paper's two-pass SAM (its Eqs. 2–4) runs here, not IGM's cheaper mixed objective
(mixup-CE + κ·CE at a never-undone, head-only perturbation with ρ = 1e-10, a near no-op; mixup is not in MIE's
paper). The learning-rate schedule is the engine's (not reset at phase switches). ρ: the paper's values are
stripped in the available text and IGM's is a no-op, so the default 0.05 is SAM's (Foret et al., ICLR 2021).

Safeguards: σ_max = σ_min (e.g. a zero covariance) gives P = I instead of 0/0; the covariance is eigendecomposed
in float64 (symmetric PSD: eigenvalues = singular values); ‖g‖ gets +1e-12 in the SAM denominator (as SAM's
reference code); BatchNorm statistics are frozen during the perturbed pass and untouched in the idle branches
(eval mode, no gradient, run only for the engine's training metrics).

Requirements: per-modality heads, equal feature sizes (GM pairs the heads), single-label targets (softmax fusion).

Coefficients per epoch: `active.<m>` (1 for the modality trained this epoch), `phase`, `sam_gap` (mean
L(θ+ε) − L(θ)), `gm_kept` (mean ‖G·P‖/‖G‖ over modified layers; 1 without P), and after a modality's first
phase `sigma_max.<m>` / `sigma_mean.<m>` / `lambda_min.<m>` of its head-input covariance (paper Table 5).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from pydantic import Field, PositiveInt
from torch import Tensor, nn

from mmbench.api import (
    Balancer,
    Batch,
    Batches,
    EpochMeans,
    EpochRecord,
    ModelOutput,
    Requirements,
    Task,
    TrainContext,
    hookimpl,
    late_fusion,
    unknown_names,
)
from mmbench.api import Params as AnyParams  # in a class body, `Params` is the class's own parameter model
from mmbench.api import metrics as metric_lib

SAM_EPS = 1e-12


def mean_outer(x: Tensor) -> Tensor:
    """r_tᵀ r_t for one batch's layer input, r_t its mean over every leading dimension (float32)."""
    r = x.detach().float().reshape(-1, x.shape[-1]).mean(0, keepdim=True)
    return r.T @ r


def batch_mean_covariance(inputs: Sequence[Tensor]) -> Tensor:
    """C = Σ_t r_tᵀ r_t over the batches' layer inputs (the paper's uncentred cumulative statistic)."""
    return sum((mean_outer(x) for x in inputs[1:]), start=mean_outer(inputs[0]))


def flat_projection(cov: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """P = V diag(λ) Vᵀ with λ_j = exp(−τ (σ_j − σ_min)/(σ_max − σ_min)); returns (P, σ descending)."""
    sigma, V = torch.linalg.eigh(cov.double())  # symmetric PSD: eigenvalues are the singular values
    sigma = sigma.clamp_min(0.0)
    span = sigma.max() - sigma.min()
    scaled = torch.where(span > 0, (sigma - sigma.min()) / torch.where(span > 0, span, 1.0), 0.0)
    lam = torch.exp(-tau * scaled)
    return (V * lam) @ V.T, sigma.flip(0)


def sam_perturbation(grads: Sequence[Tensor], rho: float) -> list[Tensor]:
    """SAM's ascent step ε = ρ·g/(‖g‖ + 1e-12), ‖g‖ the global norm over the branch's gradients."""
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = rho / (norm + SAM_EPS)
    return [g * scale for g in grads]


def linear_layers(branch: Sequence[nn.Module]) -> list[nn.Linear]:
    """The Linear layers of a branch (encoder, then head), deepest first (by module registration order)."""
    return [mod for part in branch for mod in part.modules() if isinstance(mod, nn.Linear)][::-1]


def pair_layers(current: Sequence[nn.Module], previous: Sequence[nn.Module],
                depth: int | None) -> list[tuple[nn.Linear, nn.Linear]]:
    """(current layer, previous-branch layer) pairs with identical weight shapes, deepest first.

    The k-th deepest Linear of one branch is paired with the k-th deepest of the other, among the `depth`
    deepest (all when None); pairs whose shapes differ are left out. Raises when nothing can be paired.
    """
    cur, prev = linear_layers(current), linear_layers(previous)
    n = min(len(cur), len(prev)) if depth is None else min(depth, len(cur), len(prev))
    pairs = [(a, b) for a, b in zip(cur[:n], prev[:n], strict=True) if a.weight.shape == b.weight.shape]
    if not pairs:
        shapes = ([tuple(layer.weight.shape) for layer in cur[: n or 1]],
                  [tuple(layer.weight.shape) for layer in prev[: n or 1]])
        raise ValueError(
            "mie's gradient modification needs Linear layers of identical shape in both branches (it multiplies "
            f"one branch's weight gradient by a matrix built from the other's layer inputs); the deepest layers "
            f"have shapes {shapes[0]} vs {shapes[1]}. Give the modalities equal feature sizes (the heads are "
            "Linear(d, C)), raise gm_depth, or set gm: false.")
    return pairs


def phase_of(epoch: int, phase_epochs: Sequence[int]) -> int:
    """Index of the phase containing `epoch`, the phase lengths cycling through `phase_epochs`."""
    phase, start = 0, 0
    while True:
        start += phase_epochs[phase % len(phase_epochs)]
        if epoch < start:
            return phase
        phase += 1


class MIEParams(AnyParams):
    rho: float = Field(0.05, ge=0.0, le=10.0, json_schema_extra={"search": {"log_uniform": [0.01, 0.5]}},
                       description="SAM radius ρ (paper values stripped; 0.05 = Foret et al.); 0 disables SAM")
    rho_per_modality: dict[str, float] = Field(
        default_factory=dict, description="ρ overrides by modality name (the paper uses one per modality kind)")
    tau: float = Field(0.4, gt=0.0, le=100.0, json_schema_extra={"search": {"log_uniform": [0.1, 2.0]}},
                       description="scaling factor τ of λ = exp(−τ·normalised σ); IGM temperature1 = 0.4")
    gm: bool = Field(True, description="apply the gradient modification (false: SAM + alternation only)")
    gm_depth: int | None = Field(1, ge=1, description="number of deepest Linear layers per branch (head first) to "
                                 "modify; 1 = the head only (paper); null = every Linear with a same-shape "
                                 "counterpart (IGM)")
    phase_epochs: tuple[PositiveInt, ...] = Field((1,), min_length=1, description="epochs per single-modality "
                                                  "phase, cycled (IGM epoch_list); (1,) alternates every epoch")
    order: tuple[str, ...] | None = Field(
        None, description="modality order of the phases (None: the task's modality order)")
    fusion: Literal["average", "entropy", "entropy_batch"] = Field(
        "average", description="test-time late fusion: mean of softmax ('average'), or MLA's entropy gating on "
                               "the logits per sample ('entropy') / per batch as MLA's code ('entropy_batch')")
    cov_batch_size: int | None = Field(12, ge=1, description="batch size of the covariance pass (paper: 12, 6 "
                                       "on NVGesture); None = the training batch size")
    reload_after: PositiveInt | None = Field(
        25, description="reload the best checkpoint so far at a phase switch after a phase of at least this many "
                        "epochs (IGM's phases: 25-50); 1 = at every switch (IGM); null = never")
    reset_optimizer: bool = Field(True, description="clear the optimizer state at each phase switch (IGM)")


class MIE(Balancer):
    """Alternating single-modality phases, two-pass SAM, flat-direction gradient modification; late fusion."""

    name = "mie"
    Params = MIEParams
    params: MIEParams
    requires = Requirements(unimodal_heads=True, equal_feature_dims=True, single_label=True, ignores_fusion=True)
    #: IJCAI25-IGM configs (epoch_list; NVGesture batch 6)
    task_defaults = {"cremad": {"phase_epochs": (25, 50)}, "kinetics_sounds": {"phase_epochs": (25, 50)},
                     "twitter2015": {"phase_epochs": (10, 30)}, "sarcasm": {"phase_epochs": (2, 30)},
                     "nvgesture": {"cov_batch_size": 6, "phase_epochs": (50,)}}

    def __init__(self, params: MIEParams) -> None:
        super().__init__(params)
        self.phase: int | None = None
        self.active: str | None = None
        self.projections: list[tuple[nn.Linear, Tensor]] = []
        self.best_score: float | None = None
        self.best_state: dict[str, Tensor] | None = None
        self.spectra: dict[str, dict[str, float]] = {}

    @classmethod
    def check(cls, params: AnyParams, task: Task) -> list[str]:
        if not isinstance(params, MIEParams):
            raise TypeError(f"{cls.name} checks MIEParams, got {type(params).__name__}")
        problems = unknown_names("rho_per_modality", params.rho_per_modality, task.modalities)
        if params.order is not None and sorted(params.order) != sorted(task.modalities):
            problems.append(f"order {list(params.order)} must list each of the task's modalities "
                            f"({', '.join(task.modalities)}) once")
        return problems

    def setup(self, ctx: TrainContext) -> None:
        self.order = tuple(self.params.order or ctx.model.modalities)
        self.pairs: dict[str, list[tuple[nn.Linear, nn.Linear]]] = {}
        if self.params.gm:  # fail at set-up, not at the first phase switch
            for i, m in enumerate(self.order):
                prev = self.order[i - 1]
                self.pairs[m] = pair_layers(self._branch(ctx, m), self._branch(ctx, prev), self.params.gm_depth)
        self.stats = EpochMeans()
        self.device = ctx.device

    @staticmethod
    def _branch(ctx: TrainContext, m: str) -> list[nn.Module]:
        return [ctx.model.encoders[m], ctx.model.heads[m]]

    def on_epoch_start(self, ctx: TrainContext) -> None:
        phase = phase_of(ctx.epoch, self.params.phase_epochs)
        if phase == self.phase:
            return
        previous = self.active  # None before the first phase, else the modality just trained: a switch
        if self.phase is not None and self._reloads_after(self.phase) and self.best_state is not None:
            ctx.model.load_state_dict(self.best_state)
        if previous is not None and self.params.reset_optimizer:
            ctx.optimizer.state.clear()
        self.phase, self.active = phase, self.order[phase % len(self.order)]
        if previous is not None and self.params.gm and self.active != previous:
            self.projections = self._projections(ctx, previous, self.pairs[self.active])

    def _reloads_after(self, phase: int) -> bool:
        after, lengths = self.params.reload_after, self.params.phase_epochs
        return after is not None and lengths[phase % len(lengths)] >= after

    @torch.no_grad()
    def _projections(self, ctx: TrainContext, previous: str, pairs: list[tuple[nn.Linear, nn.Linear]]) -> list:
        """GM's P per pair, from one eval-mode pass of the previous branch over the train set (at a switch)."""
        model = ctx.model
        branch = self._branch(ctx, previous)
        modes = [part.training for part in branch]
        for part in branch:
            part.eval()
        covs: dict[int, Tensor] = {}

        def accumulate(module: nn.Module, args: tuple) -> None:
            covs[id(module)] = covs[id(module)] + mean_outer(args[0]) if id(module) in covs else mean_outer(args[0])

        handles = [prev.register_forward_pre_hook(accumulate) for _, prev in pairs]
        try:
            for batch in self._cov_loader(ctx):
                x = batch.inputs[previous]  # already on the device
                with ctx.autocast():
                    model.heads[previous](model.encoders[previous](x))
        finally:
            for handle in handles:
                handle.remove()
            for part, mode in zip(branch, modes, strict=True):
                part.train(mode)
        out = []
        for k, (current, prev) in enumerate(pairs):
            P, sigma = flat_projection(covs[id(prev)].cpu(), self.params.tau)
            out.append((current, P.to(device=ctx.device, dtype=torch.float32)))
            if k == 0:  # the deepest pair: the head's input (the paper's Table 5 statistic)
                lam_min = math.exp(-self.params.tau) if float(sigma[0] - sigma[-1]) > 0 else 1.0
                self.spectra[previous] = {"sigma_max": float(sigma[0]), "sigma_mean": float(sigma.mean()),
                                          "lambda_min": lam_min}
        return out

    def _cov_loader(self, ctx: TrainContext) -> Batches:
        if self.params.cov_batch_size is None:
            return ctx.train_loader
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.generator)) if ctx.generator is not None else 0
        order = torch.randperm(ctx.train_size, generator=torch.Generator().manual_seed(seed)).tolist()
        return ctx.split_batches("train", indices=order, batch_size=self.params.cov_batch_size)

    def _rho(self, m: str) -> float:
        return self.params.rho_per_modality.get(m, self.params.rho)

    def train_step(self, ctx: TrainContext, batch: Batch) -> tuple[Tensor, ModelOutput]:
        """One step of the active modality's phase: ∇L(θ), SAM's gradient at θ + ε, GM, the optimizer step."""
        m = self.active
        if m is None:
            raise RuntimeError("mie: a training step before on_epoch_start chose the phase's modality")
        params: list[Tensor] = [p for part in self._branch(ctx, m) for p in part.parameters() if p.requires_grad]
        ctx.optimizer.zero_grad(set_to_none=True)
        loss, logits, z = self._branch_loss(ctx, batch, m)
        loss.backward()
        if self._rho(m) > 0:
            self.stats.add("sam_gap", self._sam_gradient(ctx, batch, m, params, loss))
        self.stats.add("gm_kept", self.modify_gradients())
        ctx.optimizer.step()
        return loss.detach(), self._training_output(ctx, batch, m, logits, z)

    @staticmethod
    def _branch_loss(ctx: TrainContext, batch: Batch, m: str) -> tuple[Tensor, Tensor, Tensor]:
        """L(θ) of modality m's branch alone, with its logits and features."""
        with ctx.autocast():
            z = ctx.model.encoders[m](batch.inputs[m])
            logits = ctx.model.heads[m](z)
            return ctx.task_loss(logits, batch.label), logits, z

    def _sam_gradient(self, ctx: TrainContext, batch: Batch, m: str, params: list[Tensor], loss: Tensor) -> Tensor:
        """SAM's second pass: the gradient at θ + ε replaces ∇L(θ), θ is restored; returns L(θ + ε) − L(θ)."""
        eps = sam_perturbation([p.grad if p.grad is not None else torch.zeros_like(p) for p in params], self._rho(m))
        with torch.no_grad():
            torch._foreach_add_(params, eps)
        ctx.optimizer.zero_grad(set_to_none=True)
        encoder, head = self._branch(ctx, m)
        with _frozen_batchnorm(encoder, head), ctx.autocast():
            perturbed = ctx.task_loss(head(encoder(batch.inputs[m])), batch.label)
        perturbed.backward()
        with torch.no_grad():
            torch._foreach_sub_(params, eps)
        return perturbed - loss

    def modify_gradients(self) -> Tensor:
        """GM: grad_W ← grad_W · P for every paired layer; returns the mean kept norm ratio (1 without P)."""
        ratios = []
        for layer, P in self.projections:
            grad = layer.weight.grad
            if grad is None:
                continue
            new = grad @ P.to(grad.dtype)
            ratios.append(torch.linalg.matrix_norm(new) / torch.linalg.matrix_norm(grad).clamp_min(1e-30))
            layer.weight.grad = new
        return torch.stack(ratios).mean() if ratios else torch.ones((), device=self.device)

    @torch.no_grad()
    def _training_output(self, ctx: TrainContext, batch: Batch, m: str, logits: Tensor, z: Tensor) -> ModelOutput:
        """The late-fused prediction of the step, the idle branches run in eval mode (BatchNorm untouched)."""
        model = ctx.model
        unimodal, features = {m: logits.detach()}, {m: z.detach()}
        for other in model.modalities:
            if other != m:
                for part in self._branch(ctx, other):
                    part.eval()
                with ctx.autocast():
                    features[other] = model.encoders[other](batch.inputs[other])
                    unimodal[other] = model.heads[other](features[other])
        out = ModelOutput(logits.detach(), features, unimodal=unimodal)
        out.logits = self._fuse(out, model.modalities)  # the late-fused prediction, not the cell's fusion
        return out

    def _fuse(self, out: ModelOutput, modalities: Sequence[str]) -> Tensor:
        """Late fusion of the heads; a dropped modality is left out, as a missing branch would be."""
        logits = [out.unimodal[m].float() for m in modalities]
        mask = late_fusion.presence(modalities, out.dropped, logits[0].device)
        if self.params.fusion == "average":
            weights = late_fusion.mask_weights(torch.full_like(mask, 1.0 / len(logits)), mask)
            logp = torch.stack([torch.log_softmax(o, dim=1) for o in logits])  # (M, B, C)
            return torch.logsumexp(weights.log().unsqueeze(-1) + logp, dim=0)  # log Σ_m w_m softmax(o_m)
        weights = late_fusion.gate_weights(logits, self.params.fusion)
        return late_fusion.fuse_logits(logits, late_fusion.mask_weights(weights, mask))

    def eval_logits(self, ctx: TrainContext, out: ModelOutput) -> Tensor:
        return self._fuse(out, ctx.model.modalities)

    def on_epoch_end(self, ctx: TrainContext, stats: EpochRecord) -> None:
        if not any(map(self._reloads_after, range(len(self.params.phase_epochs)))) or stats.val is None:
            return
        primary = ctx.task.primary_metric
        score = stats.val.metrics[primary]  # None: not finite, never the best
        if score is not None and (self.best_score is None or metric_lib.better(primary, score, self.best_score)):
            self.best_score = score
            self.best_state = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}

    def coefficients(self) -> dict[str, float]:
        coeffs = {f"active.{m}": float(m == self.active) for m in self.order}
        coeffs["phase"] = float(self.phase or 0)
        coeffs.update(self.stats.read())
        for m, stats in self.spectra.items():
            coeffs.update({f"{k}.{m}": v for k, v in stats.items()})
        return coeffs


@contextlib.contextmanager
def _frozen_batchnorm(*modules: nn.Module) -> Iterator[None]:
    """BatchNorm layers keep their running statistics (momentum 0) inside the block."""
    norms = [mod for part in modules for mod in part.modules()
             if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.track_running_stats]
    saved = [mod.momentum for mod in norms]
    for mod in norms:
        mod.momentum = 0.0
    try:
        yield
    finally:
        for mod, momentum in zip(norms, saved, strict=True):
            mod.momentum = momentum


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [MIE]
