"""`concat`: one linear classifier on the concatenated features (the "late-linear" / concat fusion)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmbench.api import Fusion, FusionOutput, hookimpl
from mmbench.api import Params as AnyParams  # `Params` is each class's own attribute
from mmbench_plugins.fusions.shares import block_logits


class ConcatFusion(Fusion):
    """`o = W [z_1; ...; z_M] + b`.

    Modality m's exact share of the logits is its column block of W applied to z_m plus b/M (the split
    OGM's official code uses), so the shares sum to the fused logits.
    """

    name = "concat"
    offers_contributions = True

    def __init__(self, feature_dims: Mapping[str, int], num_classes: int, params: AnyParams) -> None:
        super().__init__(feature_dims, num_classes, params)
        self.linear = nn.Linear(sum(feature_dims.values()), num_classes)
        bounds = torch.cumsum(torch.tensor([0, *feature_dims.values()]), 0).tolist()
        self.slices = {m: slice(a, b) for m, a, b in zip(feature_dims, bounds[:-1], bounds[1:])}

    def classifier_blocks(self) -> dict[str, tuple[Tensor, Tensor | None]]:
        share = self.linear.bias / len(self.slices)
        return {m: (self.linear.weight[:, s], share) for m, s in self.slices.items()}

    def forward(self, features: Mapping[str, Tensor]) -> FusionOutput:
        logits = self.linear(torch.cat([features[m] for m in self.slices], dim=-1))
        return FusionOutput(logits, block_logits(features, self.classifier_blocks()))


@hookimpl
def mmbench_fusions():
    return [ConcatFusion]
