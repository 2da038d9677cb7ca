"""`mlp`: a small multilayer perceptron for feature-vector modalities."""

from __future__ import annotations

from pydantic import Field
from torch import Tensor, nn

from mmbench.api import Encoder, ModalitySpec, Params, hookimpl


class MLPParams(Params):
    hidden: int = Field(64, ge=1, description="width of the hidden layers")
    layers: int = Field(2, ge=1, le=8, description="number of Linear+ReLU blocks")
    out_dim: int = Field(32, ge=1, description="size of the pooled feature")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class MLPEncoder(Encoder):
    """Linear+ReLU blocks ending in a ReLU feature of size `out_dim`, for inputs of shape `(D,)`."""

    name = "mlp"
    Params = MLPParams
    accepts = frozenset({"vector"})

    def __init__(self, modality: ModalitySpec, params: MLPParams) -> None:
        super().__init__(modality, params)
        if len(modality.shape) != 1:
            raise ValueError(f"mlp encodes 1-D feature vectors; modality {modality.name!r} has shape {modality.shape}")
        widths = [modality.shape[0]] + [params.hidden] * (params.layers - 1) + [params.out_dim]
        layers = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            last = i == len(widths) - 2
            dropout = [nn.Dropout(params.dropout)] if params.dropout and not last else []
            layers.append(nn.Sequential(nn.Linear(a, b), nn.ReLU(), *dropout))
        self.layers = nn.ModuleList(layers)
        self.out_dim = params.out_dim

    def blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.layers:
            x = block(x)
        return x


@hookimpl
def mmbench_encoders():
    return [MLPEncoder]
