"""`smv`: Sample-level Modality Valuation (Wei, Feng, Wang, Hu, "Enhancing Multimodal Cooperation via Sample-level
Modality Valuation", CVPR 2024, arXiv 2309.06255; official code GeWu-Lab/Valuate-and-Enhance-Multimodal-Cooperation
@ 7ed12b07ee7d, `code/sample_level.py`, `code/modality_level.py`, `code/datasets/dataloader.py`,
`code/models/models.py`).

Where it acts: the composition of each epoch's data (the training split grows by unimodal copies of samples).
The loss is the fused CE only.

Valuation (no grad, eval mode; before every epoch from `warmup_epochs` on, i.e. after the epoch before it, as the
official end-of-epoch pass): one encoder pass per sample, then the cell's late fusion on the features with
every subset S of the modalities kept and the others zeroed. A coalition is worth `v(S) = |S|·[argmax z_S = y]`
(the official values: 1 for one modality, 2 for both, 0 for a wrong prediction) and each modality's
contribution is its Shapley value `φ_m = Σ_{S ∌ m} |S|!(M−|S|−1)!/M!·(v(S ∪ {m}) − v(S))`; for two modalities
`φ_a = (v_a + v_av − v_v)/2` (sample_level.py L107–122).

* `method: sample` (sample_level.py, dataloader.py L154–186): every sample stays once, and a modality that
  contributes little to it gets unimodal copies of it (the others' features zeroed): 1 copy if 0.4 < φ_m < 1,
  2 if −0.1 < φ_m < 0.4, 3 if φ_m < −0.1.
* `method: modality` (modality_level.py L143–161, dataloader.py L259–316): the mean contributions on a random
  `part_ratio` share of the split give gaps `g_m = 1 − mean φ_m`; `n = int(α·(2/3)·(max g − min g)·N)`
  random samples (with repeats, as `np.random.choice`) are added with only the weakest modality (largest gap)
  kept. For two modalities this is the official rule (the stronger modality zeroed).

Defaults: `warmup_epochs` 5 (sample_level.py L44), `part_ratio` 0.2 and `alpha` 1 (modality_level.py L51–52);
`method` sample, the paper's title method. The official recipe (Adam lr 5e-5, wd 1e-4, StepLR(30, 0.1), batch
64, 60 epochs) is the grid's to set.

Departures from the official code, and why:

* More than two modalities: the official code has two; the Shapley value with `v(S) = |S|·correct(S)` is the
  form its two-modality values take, and the copies keep only the modality they value. Thresholds unchanged.
* Modality level: only the `part_ratio` subset is valued (the official pass values the whole split and then
  averages a random subset of it: the same estimate at a fifth of the cost, the subset being the paper's point).
* Randomness (the modality-level subset and copies) comes from a generator of the balancer seeded from the run
  seed, not from numpy's global state.
* The released scripts do not run as published (`loader=` passed to dataset classes that do not accept it,
  `args.dynamic`/`args.method` undefined): nothing of that is reproduced.
* Zeroing is per sample on the pooled features (`kept.py`), the cell's late fusion applied again: the official
  concatenation head with a zeroed half for `concat`; any late fusion works.

Coefficients per epoch: `phi.<m>` (mean contribution of the last valuation), `copies.<m>` (copies of the epoch
that keep m, as a fraction of the split; 0 in warm-up).
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from mmbench.api import (
    Balancer,
    EpochData,
    Params,
    Requirements,
    TrainContext,
    hookimpl,
)
from mmbench_plugins.balancers.kept import ALL, TaggedBalancer, fuse_kept, only

#: offset so the balancer's stream differs from the data-order stream seeded with the same run seed
_SEED_OFFSET = 0x53D1


def subsets(m: int) -> list[frozenset[int]]:
    """Every non-empty subset of range(m), smallest first."""
    return [frozenset(c) for k in range(1, m + 1) for c in combinations(range(m), k)]


def shapley_values(correct: dict[frozenset[int], Tensor], m: int) -> Tensor:
    """(M, N) Shapley values with `v(S) = |S|·correct[S]` (`correct[S]`: (N,) 0/1 for the subset kept), v(∅) = 0."""
    n = next(iter(correct.values())).shape[0]
    value: dict[frozenset[int], Tensor] = {frozenset(): torch.zeros(n, device=next(iter(correct.values())).device)}
    value.update({s: len(s) * c.float() for s, c in correct.items()})
    phi = []
    for i in range(m):
        total = torch.zeros_like(value[frozenset()])
        for s in (s for s in value if i not in s):
            weight = math.factorial(len(s)) * math.factorial(m - len(s) - 1) / math.factorial(m)
            total = total + weight * (value[s | {i}] - value[s])
        phi.append(total)
    return torch.stack(phi)


def sample_copies(phi: Tensor) -> Tensor:
    """Unimodal copies per contribution: 1 if 0.4 < φ < 1, 2 if −0.1 < φ < 0.4, 3 if φ < −0.1, else 0."""
    return ((phi > 0.4) & (phi < 1)).long() + 2 * ((phi > -0.1) & (phi < 0.4)).long() + 3 * (phi < -0.1).long()


def modality_copies(mean_phi: Tensor, alpha: float, n: int) -> tuple[int, int]:
    """(how many copies, which modality they keep): `int(α·(2/3)·(max g − min g)·N)` of the weakest, g = 1 − φ
    (in the official order of operations, so the rounding down is the official one)."""
    gap = 1.0 - mean_phi.double()
    return int(float(gap.max() - gap.min()) / 3 * 2 * alpha * n), int(gap.argmax())


class SMVParams(Params):
    method: Literal["sample", "modality"] = Field(
        "sample", description="sample: copies per sample by its contribution values; modality: copies of the "
                              "weakest modality in proportion to the gap of the mean contributions")
    warmup_epochs: int = Field(5, ge=0, description="epochs of plain joint training before re-sampling (official 5)")
    part_ratio: float = Field(0.2, gt=0.0, le=1.0, description="modality level: share of the split valued "
                                                               "(official 0.2)")
    alpha: float = Field(1.0, ge=0.0, description="modality level: α scaling the number of copies (official 1; "
                                                  "BalanceBenchmark 0.5)")


class SMV(TaggedBalancer):
    """Shapley valuation of each modality per sample; low-contribution samples get unimodal copies."""

    name = "smv"
    Params = SMVParams
    params: SMVParams
    requires = Requirements(late_fusion=True, single_label=True)

    def setup(self, ctx: TrainContext) -> None:
        self.modalities = tuple(ctx.model.modalities)
        self.subsets = subsets(len(self.modalities))
        seed = ctx.generator.initial_seed() if ctx.generator is not None else torch.initial_seed()
        self.generator = torch.Generator().manual_seed(seed + _SEED_OFFSET)
        self.plan: EpochData | None = None
        self.mean_phi = [0.0] * len(self.modalities)

    @torch.no_grad()
    def contributions(self, ctx: TrainContext, indices: list[int] | None = None) -> Tensor:
        """(M, N) contributions of the listed samples of the training split (all, in order, when None)."""
        ctx.model.eval()
        phis = []
        for batch in ctx.split_batches("train", indices=indices):
            with ctx.autocast():
                features = ctx.model.encode(batch.inputs)
                correct = {s: fuse_kept(ctx.model, features, only(self.modalities, s, ctx.device))[1].logits
                           .argmax(-1).eq(batch.label) for s in self.subsets}
            phis.append(shapley_values(correct, len(self.modalities)))
        return torch.cat(phis, dim=1)

    def on_epoch_start(self, ctx: TrainContext) -> None:
        self.plan = None
        if ctx.epoch < self.params.warmup_epochs:
            return
        n = ctx.train_size
        if self.params.method == "sample":
            phi = self.contributions(ctx)
            copies = sample_copies(phi).cpu()  # (M, N), once per epoch
            indices, tags = list(range(n)), [ALL] * n
            for i in range(len(self.modalities)):
                extra = torch.repeat_interleave(torch.arange(n), copies[i]).tolist()
                indices += extra
                tags += [i] * len(extra)
        else:
            part = torch.randperm(n, generator=self.generator)[:max(1, int(n * self.params.part_ratio))].tolist()
            phi = self.contributions(ctx, part)
            count, weakest = modality_copies(phi.mean(1).cpu(), self.params.alpha, n)
            extra = torch.randint(0, n, (count,), generator=self.generator).tolist()
            indices, tags = list(range(n)) + extra, [ALL] * n + [weakest] * count
        self.mean_phi = phi.mean(1).tolist()
        self.plan = EpochData(indices=indices, tags=tags)

    def epoch_data(self, ctx: TrainContext) -> EpochData | None:
        return self.plan

    def coefficients(self) -> dict[str, float]:
        coeffs = {f"phi.{m}": v for m, v in zip(self.modalities, self.mean_phi, strict=True)}
        tags = list(self.plan.tags or []) if self.plan is not None else []
        n = max(1, tags.count(ALL))
        coeffs.update({f"copies.{m}": tags.count(i) / n for i, m in enumerate(self.modalities)})
        return coeffs


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [SMV]
