"""`inforeg`: Information Acquisition Regulation (Huang, Wei, Yang, Hu, "Adaptive Unimodal Regulation for Balanced
Multimodal Information Acquisition", CVPR 2025; official code GeWu-Lab/InfoReg_CVPR2025 @ 939b2ed11dcb, `main.py`).

InfoReg slows the dominant ("information-sufficient") modality down while its *prime learning window* is open, so
the others acquire information meanwhile. It acts after backward, on the encoders' gradients:

    loss = CE(z) + Σ_m CE(o_m)                    o_m the modality's share of the fused logits (not detached)
    s_m = Σ_i softmax(o_m)[i, y_i]                batch sum
    β_m = β·exp(tanh(s_m − min_j s_j))            for every modality above the weakest whose window is open,
                                                  else 0 (two modalities: the dominant one)
    grad θ_m += β_m·(θ_m − θ_m^ref)               every parameter of encoder m; θ^ref = its values at the
                                                  epoch's start: the gradient of the proximal term β/2‖θ − θ^ref‖²

The window is judged once per epoch from the encoder's Fisher-information trace
`T_m(e) = Σ_layers mean_weights Σ_steps grad²` (over its weight tensors — ≥2 dimensions, the code's Conv2d and
Linear weights — measured after the proximal addition): with the history of traces pre-filled with
`window_length` zeros, `k = (T̄_new − T̄_old) / T̄_new`, `T̄_new` the mean of the last `window_length` entries and
`T̄_old` the mean of the `window_length` before the last one; the window is open while `k > window_threshold`
(epoch 0: k = 1). A trace still growing means the modality is still acquiring information quickly.

Defaults: threshold 0.05 and length 10 (`main.py` L237–243, L465, L693–694); the loss with the unimodal terms
(L361–363, L456–458); the scores as batch sums (L460–461).

Differences from the official code, and why:

The released code's constants are tied to CREMA-D's audio/visual pair (its default dataset). That code is the
evidence for each choice below; the default follows the paper's description (regulate the information-sufficient
modality during its own window), and parameters reproduce the release:

* β: the code uses 0.95 when audio dominates and 0.1 when visual dominates (L468, L476). Here one `beta` for
  every modality, 0.95 (the value of the branch that acts on CREMA-D, where audio dominates);
  `beta_per_modality: {audio: 0.95, visual: 0.1}` reproduces the release.
* Window: the code judges it from the *audio* encoder's trace alone (L237–243) for both modalities. Here each
  modality's window is judged from its own trace; `window_from: audio` reproduces the release.
* More than two modalities (the code has two): every modality scoring above the weakest is regulated, with its
  gap to the weakest; with two modalities this is the code's rule (a tie regulates neither, as there).

Other differences, and why:

* One backward pass of the summed loss. The code runs six (three only to record per-loss gradients for its
  logging, then the three losses again); the resulting gradients are the same.
* θ^ref holds the encoders' parameters only (the code deep-copies the whole model), and only those of
  modalities whose window is open this epoch (a closed window has β = 0).
* The trace sums each weight's per-step `mean(grad²)` (the same number as the mean of the summed squares) on
  the device, read once per epoch; no host sync per step. Scores are float32.

Requires per-modality shares of the fused logits (`fusion_contributions`, e.g. `concat`, `sum`).

Coefficients per epoch: `beta.<m>` mean β applied per step, `k.<m>` the window statistic at the epoch's start,
`open.<m>` 1 while the window is open, `trace.<m>` the epoch's Fisher trace.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field
from torch import Tensor

from mmbench.api import (
    Balancer,
    Batch,
    EpochMeans,
    EpochRecord,
    ModelOutput,
    Params,
    Requirements,
    Task,
    TrainContext,
    hookimpl,
    unknown_names,
)
from mmbench.api import Params as AnyParams  # in a class body, `Params` is the class's own parameter model
from mmbench_plugins.balancers.confidence import true_class_score_sums


class InfoRegParams(Params):
    beta: float = Field(0.95, ge=0.0, le=100.0, json_schema_extra={"search": {"log_uniform": [0.05, 5.0]}},
                        description="β: strength of the pull toward the epoch's start (the code's 0.95 for the "
                                    "dominant audio of CREMA-D)")
    beta_per_modality: dict[str, float] = Field(
        default_factory=dict,
        description="β by modality name, over `beta` (the release: {audio: 0.95, visual: 0.1})")
    window_threshold: float = Field(0.05, description="the window is open while k exceeds it (official 0.05)")
    window_length: int = Field(10, ge=1, description="epochs averaged in the window test (official 10)")
    window_from: str | None = Field(
        None, description="null: each modality's window from its own Fisher trace; a modality name: that "
                          "modality's trace opens and closes every window (the release: audio)")


def window_statistic(traces: Sequence[float], length: int) -> float:
    """`k = (T̄_new − T̄_old) / T̄_new` over a trace history pre-filled with `length` zeros (0 if T̄_new is 0)."""
    history = [0.0] * length + list(traces)
    new = sum(history[-length:]) / length
    old = sum(history[-length - 1:-1]) / length
    return (new - old) / new if new > 0 else 0.0


def regulation_strengths(scores: Tensor, betas: Tensor, open_windows: Tensor) -> Tensor:
    """`β_m·exp(tanh(s_m − min_j s_j))` for modalities above the weakest whose window is open, else 0."""
    gaps = scores - scores.min()
    return torch.where((gaps > 0) & open_windows, betas * torch.exp(torch.tanh(gaps)), torch.zeros_like(gaps))


class InfoReg(Balancer):
    """Pull the dominant modality's encoder toward its epoch-start weights while its learning window is open."""

    name = "inforeg"
    Params = InfoRegParams
    params: InfoRegParams
    requires = Requirements(fusion_contributions=True, single_label=True)

    @classmethod
    def check(cls, params: AnyParams, task: Task) -> list[str]:
        if not isinstance(params, InfoRegParams):
            raise TypeError(f"{cls.name} checks InfoRegParams, got {type(params).__name__}")
        problems = unknown_names("beta_per_modality", params.beta_per_modality, task.modalities)
        return problems + unknown_names("window_from", [params.window_from] if params.window_from else [],
                                        task.modalities)

    def setup(self, ctx: TrainContext) -> None:
        self.modalities = tuple(ctx.model.modalities)
        groups = ctx.model.parameter_groups()
        self.encoder_params = {m: groups[f"encoder.{m}"] for m in self.modalities}
        betas = [self.params.beta_per_modality.get(m, self.params.beta) for m in self.modalities]
        self.betas = torch.tensor(betas, device=ctx.device)
        self.traces: dict[str, list[float]] = {m: [] for m in self.modalities}
        self.epoch_trace = torch.zeros(len(self.modalities), device=ctx.device)
        self.references: dict[str, list[Tensor]] = {}
        self.stats = EpochMeans()
        self.windows: dict[str, float] = {}

    def on_epoch_start(self, ctx: TrainContext) -> None:
        length = self.params.window_length
        k = {m: 1.0 if ctx.epoch == 0 else window_statistic(self.traces[m], length) for m in self.modalities}
        judge = self.params.window_from
        is_open = [(k[judge] if judge else k[m]) > self.params.window_threshold for m in self.modalities]
        self.open = torch.tensor(is_open, device=ctx.device)
        self.references = {m: [p.detach().clone() for p in self.encoder_params[m]]
                           for m, o in zip(self.modalities, is_open) if o}
        self.windows = {**{f"k.{m}": k[m] for m in self.modalities},
                        **{f"open.{m}": float(o) for m, o in zip(self.modalities, is_open)}}

    def loss(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> Tensor:
        unimodal = [ctx.task_loss(out.contributions[m], batch.label) for m in self.modalities]
        return ctx.task_loss(out.fused_logits(), batch.label) + torch.stack(unimodal).sum()

    @torch.no_grad()
    def after_backward(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> None:
        scores = true_class_score_sums({m: out.contributions[m] for m in self.modalities}, batch.label)
        strengths = regulation_strengths(scores, self.betas, self.open)
        self.stats.add("beta", strengths, labels=self.modalities)
        traces = []
        for i, m in enumerate(self.modalities):
            for p, ref in zip(self.encoder_params[m], self.references.get(m, ())):
                if p.grad is not None:
                    p.grad.add_((p - ref) * strengths[i].to(p.grad.dtype))
            weights = [p.grad for p in self.encoder_params[m] if p.grad is not None and p.dim() >= 2]
            traces.append(sum((g.float().pow(2).mean() for g in weights), torch.zeros((), device=ctx.device)))
        self.epoch_trace += torch.stack(traces)

    def on_epoch_end(self, ctx: TrainContext, stats: EpochRecord) -> None:
        for m, trace in zip(self.modalities, self.epoch_trace.tolist()):
            self.traces[m].append(trace)
        self.epoch_trace.zero_()

    def coefficients(self) -> dict[str, float]:
        coeffs = {**self.stats.read(), **self.windows}
        coeffs.update({f"trace.{m}": t[-1] for m, t in self.traces.items() if t})
        return coeffs


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [InfoReg]
