"""`arl`: Asymmetric Representation Learning (Wei, Luo, Luo, "Improving Multimodal Learning via Imbalanced
Learning", ICCV 2025; official code shicaiwei123/ICCV2025-ARL @ 358af4f67827, `main_arl_variance.py`,
`models/backbone.py`, `models/fusion_modules.py`).

ARL argues that the best split of learning between modalities is not an equal one: a modality should learn in
inverse proportion to its variance. It adds a loss term and scales each encoder's gradient:

    o_m = fusion(features with every other modality zeroed)       the same fusion, no new parameters
    loss = CE(z) + γ·Σ_m CE(o_m)                                   γ = 1 during the warm-up epochs 0..start
    H_m = mean_i entropy(softmax(o_m,i)),  Ĥ_m = max(H_m / Σ_j H_j, 0.3),  ŵ_m = (1/Ĥ_m) / Σ_j (1/Ĥ_j)
    c_m = Σ_classes mean_i |o_m,i|,        ĉ_m = c_m / Σ_j c_j
    w = softmax_m(T·(1 − ĉ_m)·ŵ_m)                                 two modalities: softmax(T·[ĉ_v ŵ_a, ĉ_a ŵ_v])
    grad θ_m ← (1 + w_m)·grad θ_m                                  every parameter of encoder m, after the warm-up

(the code scales the gradient at the encoder's output by `1 + w_m`, which scales every parameter gradient of
the encoder by the same factor), then the gradients are clipped to total norm 40 (L171).

Defaults: γ 4 and T 8 (the paper: "γ is 4 for all datasets; T is 8, 4, 4, 4, 4 for CREMA-D, AVE, KS, MOSI,
UCF101"; per-task T below), start 5 (L69), clip 40, entropy floor 0.3 (L124–125). The scripts use γ 4 / T 8 on
CREMA-D (`cramed_arl.sh`), but γ 3 / T 4 on Kinetics-Sounds and γ 5 / T 4 on AVE, and argparse's γ is 1.0; the
paper's γ is followed.

Differences from the official code, and why:

The released code never applies the asymmetric weights (the defect that changes the method): `weight` is
computed and only printed (L152–157); the encoders read `args.audio_weight` / `args.visual_weight`, set to 0.5
in the warm-up (L163–164) and never updated, so after the warm-up both encoders' gradients are multiplied by
1.5. The default applies the weights (the paper's method); `apply_weights: false` reproduces the release
(`1 + 0.5` for every modality). The released script also stops with `raise EOFError` right after building the
ResNet model (L259–262), so it does not run unmodified.

Other differences, and why:

* The weights of a step come from that step's batch and scale that step's gradients (had the code stored them
  in `args`, its encoders would have read them at the next forward, one step late).
* More than two modalities (the paper claims the method extends; the code has two): `1 − ĉ_m` is the other
  modalities' share of the logit magnitude, `ĉ_other` for two.
* Entropies use `log_softmax` (the code adds 1e-16 inside the log). Everything stays on the device: no host
  sync per step (the code moves each statistic to NumPy).

Requires a late fusion the method can apply to zeroed features (`late_fusion`), like the code's `*_AUXI`
fusions (sum, concat, FiLM, gated).

Coefficients per epoch: `w.<m>` mean asymmetric weight (computed in the warm-up too), `scale.<m>` mean gradient
factor applied (1 in the warm-up).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from mmbench.api import (
    Balancer,
    Batch,
    EpochMeans,
    ModelOutput,
    Params,
    Requirements,
    TrainContext,
    hookimpl,
)

#: the released code's fixed gradient weight (`args.audio_weight = args.visual_weight = 0.5`)
RELEASED_WEIGHT = 0.5


class ARLParams(Params):
    gamma: float = Field(4.0, ge=0.0, le=100.0, json_schema_extra={"search": {"log_uniform": [0.5, 10.0]}},
                         description="γ, weight of the unimodal losses after the warm-up (paper 4 for all "
                                     "datasets; scripts: CREMA-D 4, Kinetics-Sounds 3, AVE 5)")
    temperature: float = Field(8.0, gt=0.0, le=100.0, description="T of the weight softmax (paper: CREMA-D 8; "
                                                                  "AVE, Kinetics-Sounds, MOSI, UCF101 4)")
    start: int = Field(5, ge=0, description="warm-up: epochs 0..start train with γ = 1 and unscaled gradients")
    entropy_floor: float = Field(0.3, ge=0.0, le=1.0, description="floor of the normalised entropy (code 0.3)")
    max_grad_norm: float | None = Field(40.0, gt=0.0, description="clip every gradient to this total norm after "
                                                                  "the scaling (code 40); null: no clipping")
    apply_weights: bool = Field(True, description="scale encoder gradients by 1 + w_m (the paper); false: by 1.5 "
                                                  "for every modality, what the released code applies")


def logit_statistics(logits: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Each modality's mean entropy `H_m` and logit magnitude `c_m = Σ_classes mean_i |o_m,i|`, `(M,)` each."""
    stacked = torch.stack([o.detach().float() for o in logits])  # (M, B, C)
    log_p = stacked.log_softmax(-1)
    return -(log_p.exp() * log_p).sum(-1).mean(-1), stacked.abs().mean(1).sum(-1)


def asymmetric_weights(entropy: Tensor, magnitude: Tensor, temperature: float, entropy_floor: float = 0.3) -> Tensor:
    """`w = softmax_m(T·(1 − ĉ_m)·ŵ_m)`, `ŵ_m ∝ 1/max(H_m/ΣH, floor)`, `ĉ_m = c_m/Σc`, an `(M,)` tensor."""
    inverse = 1 / (entropy / entropy.sum()).clamp_min(entropy_floor)
    others = 1 - magnitude / magnitude.sum()
    return torch.softmax(temperature * others * inverse / inverse.sum(), 0)


class ARL(Balancer):
    """Unimodal losses through the shared fusion, and encoder gradients scaled by reliability weights."""

    name = "arl"
    Params = ARLParams
    params: ARLParams
    requires = Requirements(late_fusion=True, single_label=True)
    task_defaults = {"ave": {"temperature": 4.0}, "kinetics_sounds": {"temperature": 4.0},
                     "ucf101": {"temperature": 4.0}}

    def setup(self, ctx: TrainContext) -> None:
        self.modalities = tuple(ctx.model.modalities)
        groups = ctx.model.parameter_groups()
        self.encoder_params = {m: groups[f"encoder.{m}"] for m in self.modalities}
        self.stats = EpochMeans()
        self.scales: Tensor | None = None

    def _unimodal_logits(self, ctx: TrainContext, out: ModelOutput) -> list[Tensor]:
        fusion = ctx.model.fusion
        if fusion is None:
            raise RuntimeError("arl applies the cell's fusion to zeroed features, but the model has none")
        inputs = out.fusion_inputs
        zeros = {m: torch.zeros_like(f) for m, f in inputs.items()}
        return [fusion({**zeros, m: inputs[m]}).logits for m in self.modalities]

    def loss(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> Tensor:
        unimodal = self._unimodal_logits(ctx, out)
        warm = ctx.epoch <= self.params.start
        gamma = 1.0 if warm else self.params.gamma
        entropy, magnitude = logit_statistics(unimodal)
        weights = asymmetric_weights(entropy, magnitude, self.params.temperature, self.params.entropy_floor)
        self.stats.add("w", weights, labels=self.modalities)
        if warm:
            self.scales = None
        elif self.params.apply_weights:
            self.scales = 1 + weights
        else:
            self.scales = torch.full_like(weights, 1 + RELEASED_WEIGHT)
        applied = torch.ones_like(weights) if self.scales is None else self.scales
        self.stats.add("scale", applied, labels=self.modalities)
        losses = torch.stack([ctx.task_loss(o, batch.label) for o in unimodal])
        return ctx.task_loss(out.fused_logits(), batch.label) + gamma * losses.sum()

    @torch.no_grad()
    def after_backward(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> None:
        if self.scales is not None:
            for i, m in enumerate(self.modalities):
                for p in self.encoder_params[m]:
                    if p.grad is not None:
                        p.grad.mul_(self.scales[i].to(p.grad.dtype))
        if self.params.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(ctx.model.parameters(), self.params.max_grad_norm)

    def coefficients(self) -> dict[str, float]:
        return self.stats.read()


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [ARL]
