"""`tf`: MLB's transformer fusion over the encoders' token sequences (Kontras et al., BMVC 2024; kkontras/MLB @
357b5ce1bcb7, `models/OGM_Model.py::TF_Fusion`).

    s = [c; x_1 + e_1; …; x_M + e_M]    x_m: modality m's token sequence (T_m, D) from `Encoder.tokens`;
                                         c (class token) and e_m (one per modality, added at every step):
                                         learned (D,) vectors drawn from N(0, 1)
    h = ConformerStack(s)                Linear(D -> width) + dropout -> positions -> 2 Conformer blocks
    o = W h_0 + b                        the class token's output -> C classes

The blocks run batch-first (MLB's fusion does, unlike its encoders). The Conformer is torchaudio's, so the
stack differs from MLB's as described in `conformer`: 2 blocks hold 12,121,088 parameters instead of
12,646,400, and MLB's unused third modality token and convolutional subsampler are not built. Every modality
must give tokens of the same width D. The class token's output mixes all modalities: no contributions.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field
from torch import Tensor, nn

from mmbench.api import Fusion, FusionOutput, hookimpl
from mmbench_plugins.encoders.conformer import ConformerParams, ConformerStack


class TFParams(ConformerParams):
    layers: int = Field(2, ge=1, le=48, description="Conformer blocks over the joint sequence (MLB 2)")


class TFFusion(Fusion):
    """A Conformer over all modalities' token sequences with a class token, a linear classifier on its output."""

    name = "tf"
    Params = TFParams
    uses_tokens = True
    equal_dims = True

    def __init__(self, feature_dims: Mapping[str, int], num_classes: int, params: TFParams) -> None:
        super().__init__(feature_dims, num_classes, params)
        self.order = tuple(feature_dims)
        dim = feature_dims[self.order[0]]
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.modality_token = nn.ParameterDict({m: nn.Parameter(torch.randn(1, 1, dim)) for m in self.order})
        self.stack = ConformerStack(dim, params)
        self.out = nn.Linear(params.width, num_classes)

    def forward(self, features: Mapping[str, Tensor]) -> FusionOutput:
        for m in self.order:
            if features[m].dim() != 3:
                raise ValueError(f"the tf fusion reads token sequences (B, T, D); modality {m!r} gave shape "
                                 f"{tuple(features[m].shape)} (pooled features cannot be fused over time)")
        first = features[self.order[0]]
        parts = [self.cls.expand(first.shape[0], -1, -1).to(first.dtype)]
        parts += [features[m] + self.modality_token[m].to(first.dtype) for m in self.order]
        return FusionOutput(self.out(self.stack(torch.cat(parts, dim=1))[:, 0]))


@hookimpl
def mmbench_fusions():
    return [TFFusion]
