"""`film`: Feature-wise Linear Modulation (Perez et al., AAAI 2018) as MLB uses it to fuse two modalities.

    (γ, β) = split(W_f a + b_f)        W_f: d_a -> 2·d_v, γ first (MLB's `FiLM`, models/fusion_gates.py)
    o      = W_o (γ ⊙ v + β) + b_o     W_o: d_v -> C

`a` is the acting modality (default the task's first: audio conditions video, as MLB's `x_film=True`), `v`
the other. At d = 512: 525,312 + 513·C parameters. The output layer reads a fused vector, so no part of the
logits belongs to one modality: the fusion offers no contributions (the OGM-GE code's "half of fc_out" split
of FiLM, GeWu-Lab/OGM-GE_CVPR2022 @ 343dc1d95c9b `main.py`, cuts a fused vector in two halves that belong to no
modality, and is not reproduced). MLB's code: kkontras/MLB @ 357b5ce1bcb7.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from mmbench.api import Fusion, FusionOutput, hookimpl
from mmbench_plugins.fusions.two_modalities import PairParams, pair


class FiLMFusion(Fusion):
    """FiLM: one modality's features give a scale γ and shift β for the other's, then a linear classifier."""

    name = "film"
    #: one modality acts on one other
    max_modalities = 2
    Params = PairParams

    def __init__(self, feature_dims: Mapping[str, int], num_classes: int, params: PairParams) -> None:
        super().__init__(feature_dims, num_classes, params)
        self.acting, self.target = pair(feature_dims, params.acting, self.name)
        width = feature_dims[self.target]
        self.film = nn.Linear(feature_dims[self.acting], 2 * width)
        self.out = nn.Linear(width, num_classes)

    def forward(self, features: Mapping[str, Tensor]) -> FusionOutput:
        gamma, beta = self.film(features[self.acting]).chunk(2, dim=-1)
        return FusionOutput(self.out(gamma * features[self.target] + beta))


@hookimpl
def mmbench_fusions():
    return [FiLMFusion]
