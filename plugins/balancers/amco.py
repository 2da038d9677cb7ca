"""`amco`: Adaptive Mask Co-optimization (Zhou, Liang, Zheng, Xuan, Kumada, "Adaptive Mask Co-optimization for
Modal Dependence in Multimodal Learning", ICASSP 2023).

The paper: an adaptive mask makes the modality the model depends on harder to learn, so the others are fitted
better, while a co-optimization term keeps the dependent modality's own performance. No official code was found;
the reference is BalanceBenchmark (GeWu-Lab/BalanceBenchmark @ 4c1482fca5aa: `balancemm/trainer/AMCo_trainer.py`,
`balancemm/models/avclassify_model.py::BaseClassifierAMCoModel`; σ 0.5 and ε 0.3 in
`configs/trainer_config.yaml`, whose α 0.1 and U 512 the trainer never reads). Its form, followed here:

* Logits. Each modality's share `z_m` of the fused logits (the concat fusion's `W_m f_m + b/M`, read from the
  fusion's contributions) may be masked; the prediction is `ŷ = L*(Σ_m z̃_m)`, with `L*` an extra C → C linear
  layer (`model.extras["amco_linear_star"]`), at training and at evaluation (where nothing is masked).
* Dependence. After each step, modality m is flagged dependent for the *next* step when its block holds more
  than σ of the softmax mass over all the concatenated logits, `mean_i Σ_{c} softmax([z̃_1 … z̃_M])[i, (m, c)] > σ`.
  Flags start cleared each epoch.
* Mask. A dependent modality's logits are multiplied by a 0/1 class mask with `N = ⌊p_t·C⌋` zeros at random
  classes, one mask for the whole batch. `p_t = sin(π/2 · min(ε, l_t)/ε)`; `l_t` starts at 0 each epoch and
  grows by `ramp·epoch` after every batch (BalanceBenchmark: `epoch/10`), so nothing is masked in epoch 0 and,
  from epoch 1 on, all of a dependent modality's logits within a few batches.
* Loss = `CE(ŷ, y) + Σ_m CE(z̃_m, y)` (co-optimization: every modality keeps its own, masked, objective).

Departure from BalanceBenchmark, a portability fix: its mask is expanded to **two rows** before it multiplies
the `(B, C)` logits (`mask_t.expand(2, -1)` in `train_loop`). That broadcasts only when DataParallel scatters the
mask over exactly two GPUs, so that each replica receives one row; on one device it fails for any batch size
but 2. Here the mask is one row applied to every sample of the batch, which is what each replica of the
two-GPU run receives. The mask is drawn on the device from the balancer's own generator (seeded from the run
seed; BalanceBenchmark uses NumPy's global state), so runs repeat.

Coefficients per epoch: `dependent.<m>` (fraction of steps where m was masked), `mass.<m>` (mean softmax mass of
m's block), `p_t` (mean mask rate).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import Tensor, nn

from mmbench.api import Balancer, Batch, EpochMeans, ModelOutput, Requirements, TrainContext, hookimpl
from mmbench.api import Params as AnyParams  # in a class body, `Params` is the class's own parameter model

LINEAR_STAR = "amco_linear_star"
#: offset so the mask stream differs from the data-order stream seeded with the same run seed
_MASK_SEED_OFFSET = 0xA3C0


def mask_rate(l_t: float, eps: float) -> float:
    """`p_t = sin(π/2 · min(ε, l_t)/ε)`: the share of a dependent modality's class logits masked."""
    return math.sin(math.pi / 2 * min(eps, l_t) / eps)


def class_mask(num_classes: int, rate: float, generator: torch.Generator, device: torch.device) -> Tensor:
    """A `(C,)` 0/1 mask with `⌊rate·C⌋` zeros at random classes."""
    zeros = int(rate * num_classes)
    order = torch.rand(num_classes, generator=generator, device=device).argsort()
    mask = torch.ones(num_classes, device=device)
    mask[order[:zeros]] = 0.0
    return mask


def block_mass(logits: list[Tensor]) -> Tensor:
    """`(M,)` mean over the batch of each modality's share of `softmax([z_1 … z_M])` over the M·C logits."""
    joint = torch.cat([z.float() for z in logits], dim=1).softmax(-1)  # (B, M·C)
    return joint.view(joint.shape[0], len(logits), -1).sum(-1).mean(0)


class AMCoParams(AnyParams):
    sigma: float = Field(0.5, gt=0.0, lt=1.0, json_schema_extra={"search": {"uniform": [0.3, 0.9]}},
                         description="σ: a modality whose block holds more softmax mass than this is dependent "
                                     "(BalanceBenchmark 0.5)")
    eps: float = Field(0.3, gt=0.0, le=10.0, json_schema_extra={"search": {"log_uniform": [0.05, 3.0]}},
                       description="ε: p_t = sin(π/2·min(ε, l_t)/ε) reaches 1 at l_t = ε (BalanceBenchmark 0.3)")
    ramp: float = Field(0.1, ge=0.0, le=10.0,
                        description="l_t grows by ramp·epoch after each batch and restarts each epoch "
                                    "(BalanceBenchmark: epoch/10)")


class AMCo(Balancer):
    """Mask the dependent modality's logits at random classes; fused CE through L* plus each modality's CE."""

    name = "amco"
    Params = AMCoParams
    params: AMCoParams
    requires = Requirements(fusion_contributions=True, single_label=True)

    def extra_modules(self, feature_dims: dict[str, int], num_classes: int) -> dict[str, nn.Module]:
        return {LINEAR_STAR: nn.Linear(num_classes, num_classes)}

    def setup(self, ctx: TrainContext) -> None:
        self.modalities = tuple(ctx.model.modalities)
        self.num_classes = ctx.task.num_classes
        seed = ctx.generator.initial_seed() if ctx.generator is not None else torch.initial_seed()
        self.generator = torch.Generator(device=ctx.device).manual_seed(seed + _MASK_SEED_OFFSET)
        self.dependent = torch.zeros(len(self.modalities), dtype=torch.bool, device=ctx.device)
        self.level = 0.0
        self.stats = EpochMeans()

    def on_epoch_start(self, ctx: TrainContext) -> None:
        self.dependent.zero_()
        self.level = 0.0

    def loss(self, ctx: TrainContext, batch: Batch, out: ModelOutput) -> Tensor:
        rate = mask_rate(self.level, self.params.eps)
        self.level += self.params.ramp * ctx.epoch
        mask = class_mask(self.num_classes, rate, self.generator, ctx.device)
        masked = [torch.where(self.dependent[i], out.contributions[m] * mask.to(out.contributions[m].dtype),
                              out.contributions[m]) for i, m in enumerate(self.modalities)]
        fused = ctx.model.extras[LINEAR_STAR](sum(masked))
        y = batch.label
        loss = ctx.task_loss(fused, y) + sum(ctx.task_loss(z, y) for z in masked)
        with torch.no_grad():
            mass = block_mass([z.detach() for z in masked])
            self.stats.add("dependent", self.dependent.float(), labels=self.modalities)
            self.stats.add("mass", mass, labels=self.modalities)
            self.stats.add("p_t", torch.tensor(rate))
            self.dependent = mass > self.params.sigma  # decides the next step's masking
        return loss

    def eval_logits(self, ctx: TrainContext, out: ModelOutput) -> Tensor:
        return ctx.model.extras[LINEAR_STAR](out.fused_logits())

    def coefficients(self) -> dict[str, float]:
        return self.stats.read()


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [AMCo]
