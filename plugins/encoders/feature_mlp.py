"""`feature_mlp`: precomputed feature vectors `(B, D)` (MM-IMDb's word2vec and VGG-16 features), passed on as
they are (`layers: 0`, the default: the GMU protocol of PM+MO and Arevalo et al. normalises and projects them
inside the fusion) or through `layers` blocks of BatchNorm -> Dropout -> Linear -> ReLU (their baselines' MLPs).

Unlike `mlp`, the identity is allowed (an encoder with no parameters) and the blocks normalise their inputs,
because these features come with very different scales (word2vec means ~0.1, VGG fc7 activations ~1-10).
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor, nn

from mmbench.api import Encoder, ModalitySpec, Params, hookimpl


class FeatureMLPParams(Params):
    layers: int = Field(0, ge=0, le=8, description="BatchNorm-Dropout-Linear-ReLU blocks; 0: the features as they are")
    hidden: int = Field(512, ge=1, description="width of every block")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class FeatureMLPEncoder(Encoder):
    """Feature vectors -> themselves, or `layers` normalised MLP blocks of width `hidden`."""

    name = "feature_mlp"
    Params = FeatureMLPParams
    accepts = frozenset({"vector"})

    def __init__(self, modality: ModalitySpec, params: FeatureMLPParams) -> None:
        super().__init__(modality, params)
        if len(modality.shape) != 1:
            raise ValueError(f"feature_mlp takes feature vectors (D,); modality {modality.name!r} has shape "
                             f"{modality.shape}")
        widths = [modality.shape[0]] + [params.hidden] * params.layers
        self.layers = nn.ModuleList(
            nn.Sequential(nn.BatchNorm1d(a), nn.Dropout(params.dropout), nn.Linear(a, b), nn.ReLU())
            for a, b in zip(widths[:-1], widths[1:]))
        self.out_dim = widths[-1]

    def blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.layers:
            x = block(x)
        return x


@hookimpl
def mmbench_encoders():
    return [FeatureMLPEncoder]
