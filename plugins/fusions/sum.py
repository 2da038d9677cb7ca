"""`sum`: one linear classifier per modality, logits summed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from torch import Tensor, nn

from mmbench.api import Fusion, FusionOutput, NoParams, hookimpl


class SumFusion(Fusion):
    """`o = Σ_m (W_m z_m + b_m)`; modality m's share is exactly `W_m z_m + b_m` (its own full bias)."""

    name = "sum"
    offers_contributions = True

    def __init__(self, feature_dims: Mapping[str, int], num_classes: int, params: NoParams) -> None:
        super().__init__(feature_dims, num_classes, params)
        self.linears = nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in feature_dims.items()})

    def classifier_blocks(self) -> dict[str, tuple[Tensor, Tensor | None]]:
        linears = {m: cast(nn.Linear, lin) for m, lin in self.linears.items()}
        return {m: (lin.weight, lin.bias) for m, lin in linears.items()}

    def forward(self, features: Mapping[str, Tensor]) -> FusionOutput:
        contributions = {m: lin(features[m]) for m, lin in self.linears.items()}
        return FusionOutput(sum(contributions.values()), contributions)


@hookimpl
def mmbench_fusions():
    return [SumFusion]
