"""`vit`: the Vision Transformer (transformers `ViTModel`) for images `(B, 3, H, W)`; the pooled feature is the
final [CLS] token after ViT's last LayerNorm, 768-d for ViT-B/16.

Defaults are ViT-B/16 at 224 x 224 (85,798,656 parameters: no pooler, which nothing here uses); `pretrained:
google/vit-base-patch16-224-in21k` (our default for MMBV, whose paper names ViT-B/16 but no checkpoint) or a local
folder loads weights, null
initialises at random. Joint fusions run it as embed_input (patches + [CLS] + positions) -> layers -> LayerNorm and
[CLS]; it has no padding.
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor, nn

from mmbench.api import Encoder, Inputs, ModalitySpec, hookimpl
from mmbench.api import Params as AnyParams  # `Params` is each class's own attribute
from mmbench_plugins.encoders.narrow import tensor_input
from mmbench_plugins.encoders.transformer import SMOKE, TransformerParams, build, identity, layer_list, run_layer


class ViTParams(TransformerParams):
    patch_size: int = Field(16, ge=1, description="patch side (random initialisation)")


class ViTEncoder(Encoder):
    """ViT on images -> final [CLS] feature (see the module docstring)."""

    name = "vit"
    Params = ViTParams
    accepts = frozenset({"image"})
    params: ViTParams

    def __init__(self, modality: ModalitySpec, params: ViTParams) -> None:
        super().__init__(modality, params)
        from transformers import ViTConfig, ViTModel

        if len(modality.shape) != 3:
            raise ValueError(f"vit takes (3, H, W) images; modality {modality.name!r} has shape {modality.shape}")
        self.model = build(ViTModel, ViTConfig, params, image_size=modality.shape[-1], patch_size=params.patch_size,
                           num_channels=modality.shape[0])
        self.model.pooler = None  # unused: the feature is the normalised [CLS]
        self.layers = layer_list(self.model)
        self.out_dim = self.model.config.hidden_size

    @classmethod
    def weights_identity(cls, params: AnyParams) -> str | None:
        return identity(params)

    @classmethod
    def fake_params(cls, params: AnyParams) -> AnyParams:
        return params.model_copy(update={**SMOKE, "patch_size": 32})

    def forward(self, x: Tensor) -> Tensor:
        return self.model(pixel_values=x).last_hidden_state[:, 0]

    def blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def embed_input(self, x: Inputs) -> tuple[Tensor, None]:
        return self.model.embeddings(tensor_input(x, self.name)), None

    def run_block(self, index: int, hidden: Tensor, mask: Tensor | None) -> Tensor:
        return run_layer(self.layers[index], hidden, mask)

    def readout(self, hidden: Tensor) -> Tensor:
        return self.model.layernorm(hidden)[:, 0]


@hookimpl
def mmbench_encoders():
    return [ViTEncoder]
