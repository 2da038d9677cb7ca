"""`mid_mlp`: MLB's Mid-MLP fusion, a two-hidden-layer MLP on the concatenated features.

    h_1 = ReLU(Σ_m W_m z_m + b)        (W_m: d_m -> inner, bias on the first modality's layer, as MLB)
    h_2 = ReLU(W_2 drop(h_1) + b_2)    (inner -> inner)
    o   = W_3 drop(h_2) + b_3          (inner -> C)

MLB's `cls_type: nonlinear` (kkontras/MLB @ 357b5ce1bcb7, `models/OGM_Model.py::ConcatClassifier_CREMAD_OGM_pre` and
`configs/`): inner = 64 and dropout 0.1 in every shipped config; at d = 512 it has 69,760 + 65·C parameters. The mix
is not separable into per-modality logits: MLB's OGM path feeds the 64-d partial pre-activations of the first layer
as "unimodal predictions", which are not class logits, so this fusion offers no contributions (balancers that need
them use unimodal heads).
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field
from torch import Tensor, nn

from mmbench.api import Fusion, FusionOutput, Params, hookimpl
from mmbench_plugins.fusions.late_linear import SplitLinear


class MidMLPParams(Params):
    inner: int = Field(64, ge=1, description="width of both hidden layers (MLB's fc_inner, 64)")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout after each hidden ReLU (MLB 0.1)")


class MidMLPFusion(Fusion):
    """MLB's Mid-MLP: split linear layer on the concatenation -> ReLU -> Linear -> ReLU -> Linear to classes."""

    name = "mid_mlp"
    Params = MidMLPParams

    def __init__(self, feature_dims: Mapping[str, int], num_classes: int, params: MidMLPParams) -> None:
        super().__init__(feature_dims, num_classes, params)
        self.first = SplitLinear(feature_dims, params.inner)
        self.rest = nn.Sequential(
            nn.ReLU(), nn.Dropout(params.dropout), nn.Linear(params.inner, params.inner),
            nn.ReLU(), nn.Dropout(params.dropout), nn.Linear(params.inner, num_classes))

    def forward(self, features: Mapping[str, Tensor]) -> FusionOutput:
        return FusionOutput(self.rest(self.first(features)))


@hookimpl
def mmbench_fusions():
    return [MidMLPFusion]
