"""`late_linear`: MLB's Late-Linear fusion, one linear classifier on the concatenated features.

    o = Σ_m W_m z_m + b        (W_m: d_m -> C; the bias b belongs to the first modality's layer)

As in MLB's `ConcatClassifier_CREMAD_OGM_pre` with `cls_type: linear` (kkontras/MLB @ 357b5ce1bcb7,
`models/OGM_Model.py`): one `Linear(d_m, C)` per modality, only the first with a bias. Mathematically this is
`concat`; what differs is MLB's initialisation (each block drawn for its own fan-in d_m, the bias for the first
modality's) and the per-modality parameters. Modality m's exact share of the logits is `W_m z_m + b/M` (the bias
split evenly, as MLB reports its unimodal logits), so the fusion offers contributions and its weight blocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from torch import Tensor, nn

from mmbench.api import Fusion, FusionOutput, NoParams, hookimpl
from mmbench_plugins.fusions.shares import block_logits, summed


class SplitLinear(nn.Module):
    """`Σ_m W_m z_m + b`: a linear layer on the concatenation, held as one `Linear(d_m, out)` per modality,
    the bias on the first only (MLB's parameterisation)."""

    def __init__(self, feature_dims: Mapping[str, int], out_dim: int) -> None:
        super().__init__()
        self.order = tuple(feature_dims)
        self.linears = nn.ModuleDict(
            {m: nn.Linear(d, out_dim, bias=m == self.order[0]) for m, d in feature_dims.items()})

    def block(self, modality: str) -> nn.Linear:
        """Modality `modality`'s layer `W_m` (the first also holds `b`)."""
        return cast(nn.Linear, self.linears[modality])

    @property
    def bias(self) -> Tensor:
        return self.block(self.order[0]).bias

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        return sum(self.linears[m](features[m]) for m in self.order)


class LateLinearFusion(Fusion):
    """MLB's Late-Linear: `Σ_m W_m z_m + b`; modality m's share is `W_m z_m + b/M`."""

    name = "late_linear"
    offers_contributions = True

    def __init__(self, feature_dims: Mapping[str, int], num_classes: int, params: NoParams) -> None:
        super().__init__(feature_dims, num_classes, params)
        self.linear = SplitLinear(feature_dims, num_classes)

    def classifier_blocks(self) -> dict[str, tuple[Tensor, Tensor | None]]:
        share = self.linear.bias / len(self.linear.order)
        return {m: (self.linear.block(m).weight, share) for m in self.linear.order}

    def forward(self, features: Mapping[str, Tensor]) -> FusionOutput:
        contributions = block_logits(features, self.classifier_blocks())
        return FusionOutput(summed(contributions.values()), contributions)


@hookimpl
def mmbench_fusions():
    return [LateLinearFusion]
