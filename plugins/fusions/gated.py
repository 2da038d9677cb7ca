"""`gated`: the gated fusion of Kiela et al. (AAAI 2018) as MLB uses it for two modalities.

    o = W_o (σ(W_a a + b_a) ⊙ (W_v v + b_v)) + b_o     W_a: d_a -> k, W_v: d_v -> k, W_o: k -> C

`a` is the acting (gating) modality — default the task's first, audio gates video as MLB's `x_gate=True` — and k =
`inner` (512 in MLB's `GatedFusion`, kkontras/MLB @ 357b5ce1bcb7 `models/fusion_gates.py`). At d = k = 512:
525,312 + 513·C parameters. The classifier reads the gated product, so the logits do not split by modality: no
contributions.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field
from torch import Tensor, nn

from mmbench.api import Fusion, FusionOutput, hookimpl
from mmbench_plugins.fusions.two_modalities import PairParams, pair


class GatedParams(PairParams):
    inner: int = Field(512, ge=1, description="width k of both projections and the gate (MLB 512)")


class GatedFusion(Fusion):
    """Gated fusion: one modality's sigmoid gate times the other's projection, then a linear classifier."""

    name = "gated"
    #: one modality acts on one other
    max_modalities = 2
    Params = GatedParams

    def __init__(self, feature_dims: Mapping[str, int], num_classes: int, params: GatedParams) -> None:
        super().__init__(feature_dims, num_classes, params)
        self.acting, self.target = pair(feature_dims, params.acting, self.name)
        self.gate = nn.Linear(feature_dims[self.acting], params.inner)
        self.value = nn.Linear(feature_dims[self.target], params.inner)
        self.out = nn.Linear(params.inner, num_classes)

    def forward(self, features: Mapping[str, Tensor]) -> FusionOutput:
        gate = torch.sigmoid(self.gate(features[self.acting]))
        return FusionOutput(self.out(gate * self.value(features[self.target])))


@hookimpl
def mmbench_fusions():
    return [GatedFusion]
