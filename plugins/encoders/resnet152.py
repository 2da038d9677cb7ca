"""`resnet152`: torchvision's ResNet-152 trunk for images `(B, 3, H, W)`, as MMBT's image encoder (`resnet50`,
MIE's image encoder on Twitter2015 and Sarcasm, is the same with torchvision's ResNet-50).

* The trunk is `torchvision.models.resnet152` without `avgpool`/`fc` (58,143,808 parameters; ResNet-50:
  23,508,032): a `(B, 2048, 7, 7)` map at 224 x 224.
* `tokens(x)`: MMBT's image tokens — the map adaptively average-pooled to a grid of `tokens` cells and flattened
  to `(B, N, 2048)`; the grid is MMBT's: N in {1, 2, 3, 5, 7} -> (N, 1), 4 -> (2, 2), 6 -> (3, 2), 8 -> (4, 2),
  9 -> (3, 3). MMBT's default is 3.
* The pooled feature `(B, 2048)` is the mean of those tokens (with `tokens: 1`, the default, the global
  average pool of a late-fusion image encoder).
* `weights`: a local torchvision state_dict of the architecture (e.g. ImageNet `resnet152-394f9c45.pth`, what
  MMBT and TomBERT start from); `fc.*` is ignored. Its sha256 enters the cell id. Default: random initialisation.
"""

from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from mmbench.api import Encoder, Inputs, ModalitySpec, Params, hookimpl
from mmbench.api import Params as AnyParams  # `Params` is each class's own attribute
from mmbench_plugins.encoders.narrow import own_params, tensor_input
from mmbench_plugins.encoders.weights import load_state_dict, weights_identity

GRIDS = {1: (1, 1), 2: (2, 1), 3: (3, 1), 4: (2, 2), 5: (5, 1), 6: (3, 2), 7: (7, 1), 8: (4, 2), 9: (3, 3)}


class ResNet152Params(Params):
    weights: str | None = Field(None, description="local torchvision state_dict of the architecture; null: random "
                                                  "initialisation")
    tokens: int = Field(1, ge=1, le=9, description="image tokens N of MMBT's pooled grid (MMBT: 3)")
    width_per_group: int = Field(64, ge=1, description="torchvision's bottleneck width (64: the standard "
                                                       "architecture; `--fake-data` smoke runs use 8)")


class ResNet152Encoder(Encoder):
    """torchvision ResNet-152 trunk -> N pooled grid tokens of 2048 channels (see the module docstring)."""

    name = "resnet152"
    Params = ResNet152Params
    accepts = frozenset({"image"})
    #: the torchvision builder of the trunk
    arch = "resnet152"
    params: ResNet152Params

    def __init__(self, modality: ModalitySpec, params: ResNet152Params) -> None:
        super().__init__(modality, params)
        import torchvision

        if len(modality.shape) != 3 or modality.shape[0] != 3:
            raise ValueError(f"{self.name} takes (3, H, W) images; modality {modality.name!r} has shape "
                             f"{modality.shape}")
        trunk = getattr(torchvision.models, self.arch)(weights=None, width_per_group=params.width_per_group)
        del trunk.fc
        if params.weights is not None:
            load_state_dict(trunk, Path(params.weights).expanduser())
        self.trunk = nn.Sequential(*[m for n, m in trunk.named_children() if n != "avgpool"])
        self.grid = GRIDS[params.tokens]
        self.out_dim = 2048

    @classmethod
    def weights_identity(cls, params: AnyParams) -> str | None:
        return weights_identity(own_params(ResNet152Params, params).weights)

    @classmethod
    def fake_params(cls, params: AnyParams) -> AnyParams:
        return params.model_copy(update={"weights": None, "width_per_group": 8})

    def tokens(self, x: Inputs) -> Tensor:
        return F.adaptive_avg_pool2d(self.trunk(tensor_input(x, self.name)), self.grid).flatten(2).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.tokens(x).mean(1)


@hookimpl
def mmbench_encoders():
    return [ResNet152Encoder]
