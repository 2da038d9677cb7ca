"""`efficientnet_b2`: MLB's video encoder — per-frame EfficientNet-B2 face features (timm), then a Conformer
over them, mean-pooled over time (Kontras et al., BMVC 2024, arXiv 2405.07930; kkontras/MLB @ 357b5ce1bcb7,
`models/ViT_OGM.py::VClassifier_FacesVaVL_linearcls`).

    face frames (B, 3, T, H, W) -> EfficientNet-B2 per frame, frozen (B, T, 1408) -> 1×1 conv 1408->50
    -> Linear(50->512) + dropout -> sinusoidal positions -> 5 Conformer blocks (B, T, 512) -> mean over T

MLB detects and crops the faces (224×224, ImageNet normalisation), runs a frozen facial-expression
EfficientNet-B2 (HSEmotion's AffectNet-trained `enet_b2_8`, kept in MLB's git tree) over them once, and trains
on the stored 1408-d features. Both forms are accepted: frames, run through timm's EfficientNet-B2 here
(frozen — eval mode, no gradients — when its weights are loaded), or the precomputed features `(T, 1408)`,
which skip the CNN and are the fast way to train. The Conformer stack and its differences from MLB's: see `conformer`.

HSEmotion's checkpoint pickles a whole timm model: save its `state_dict()` once and give that file as
`pretrained` (its 8-class classifier is ignored with a warning). Which timm architecture it was trained as is
not documented in MLB; `architecture` selects timm's `efficientnet_b2` or the TensorFlow-ported
`tf_efficientnet_b2` (same weights layout, "same" padding and other batch-norm epsilon). A `--fake-data` smoke
run keeps the first block of each of the CNN's 7 stages (`blocks_per_stage: 1`): its stages' strides, widths and
1408-d output, at about a third of the compute.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, PositiveInt, model_validator
from torch import Tensor, nn

from mmbench.api import Incompatible, Inputs, ModalitySpec, hookimpl
from mmbench.api import Params as AnyParams  # `Params` is each class's own attribute
from mmbench_plugins.encoders.conformer import FrontEndConformer, FrontEndParams
from mmbench_plugins.encoders.narrow import own_params, tensor_input
from mmbench_plugins.encoders.weights import load_state_dict, local_path, weights_identity

#: EfficientNet-B2's pooled feature width
FEATURES = 1408


class EfficientNetB2Params(FrontEndParams):
    pretrained: str | None = Field(
        None, description="CNN weights: a local state-dict file (e.g. HSEmotion's enet_b2_8 saved as a state "
                          "dict), a timm name with its pretrained tag (e.g. efficientnet_b2.ra_in1k; needs "
                          "network), or null for random initialisation")
    architecture: Literal["efficientnet_b2", "tf_efficientnet_b2"] = Field(
        "efficientnet_b2", description="timm architecture of the CNN; a timm `pretrained` name must match it")
    freeze: bool | None = Field(
        None, description="keep the CNN fixed (eval mode, no gradients); null: fixed when weights are loaded (MLB's "
                          "frozen face descriptor), trained from random initialisation")
    blocks_per_stage: PositiveInt | None = Field(
        None, description="keep only the first N blocks of each of the CNN's 7 stages (null: all 23, "
                          "EfficientNet-B2); for smoke runs, which check the wiring: same stages, strides, widths and "
                          "1408-d output, a fraction of the compute. Random initialisation only")

    @model_validator(mode="after")
    def _whole_cnn_for_weights(self) -> EfficientNetB2Params:
        if self.pretrained is not None and self.blocks_per_stage is not None:
            raise ValueError("pretrained weights are a whole EfficientNet-B2's; drop blocks_per_stage")
        return self


def build_cnn(params: EfficientNetB2Params) -> nn.Module:
    """The EfficientNet-B2 trunk without classifier: images `(N, 3, H, W)` -> `(N, 1408)`."""
    import timm  # imported when built: every command loads plugins

    source = params.pretrained
    path = local_path(source) if source is not None else None
    if source is None or path is not None:
        cnn = timm.create_model(params.architecture, pretrained=False, num_classes=0)
        if params.blocks_per_stage is not None:  # a stage's first block changes stride and width, the rest repeat
            stages = cnn.get_submodule("blocks").children()
            cnn.blocks = nn.Sequential(*(nn.Sequential(*list(stage.children())[:params.blocks_per_stage])
                                         for stage in stages))
        if path is not None:
            load_state_dict(cnn, path)
        return cnn
    cnn = timm.create_model(source, pretrained=True, num_classes=0)
    config: dict[str, Any] = cnn.pretrained_cfg  # type: ignore[assignment]  # timm's dict, not a submodule
    built = config.get("architecture")
    if built != params.architecture:
        raise ValueError(f"pretrained {source!r} is a {built} checkpoint; set architecture: {built} (or name a "
                         f"{params.architecture} checkpoint)")
    return cnn


class EfficientNetB2Conformer(FrontEndConformer):
    """MLB's video encoder: EfficientNet-B2 per frame -> 1×1 conv -> 5 Conformer blocks -> mean over time.

    Input, modality kind `visual`: face frames `(3, T, H, W)` per sample (channels, then time; ImageNet
    normalisation; MLB: 224×224 crops), or precomputed EfficientNet-B2 features `(T, 1408)`. Output
    `(B, width)`; `tokens` gives `(B, T, width)`.
    """

    name = "efficientnet_b2"
    Params = EfficientNetB2Params
    params: EfficientNetB2Params
    accepts = frozenset({"visual", "frames"})
    #: a smoke run keeps one block per stage of the CNN, fixed (no backward through it) as MLB's descriptor is
    smoke = {**FrontEndConformer.smoke, "pretrained": None, "freeze": True, "blocks_per_stage": 1}

    def __init__(self, modality: ModalitySpec, params: EfficientNetB2Params) -> None:
        shape = modality.shape
        frames = len(shape) == 4 and shape[0] == 3
        if not frames and shape[1:] != (FEATURES,):
            raise Incompatible(f"efficientnet_b2 reads frames (3, T, H, W) or EfficientNet-B2 features "
                               f"(T, {FEATURES}); modality {modality.name!r} has shape {shape}")
        if not frames and params.pretrained is not None:
            raise ValueError(f"modality {modality.name!r} carries precomputed features, so the CNN is not built; "
                             f"drop `pretrained` (it would only change the cell id)")
        super().__init__(modality, params, FEATURES)
        self.cnn = build_cnn(params) if frames else None
        self.frozen = False
        if self.cnn is not None and (params.pretrained is not None if params.freeze is None else params.freeze):
            self.frozen = True
            self.cnn.requires_grad_(False)
            self.cnn.eval()

    @classmethod
    def weights_identity(cls, params: AnyParams) -> str | None:
        return weights_identity(own_params(EfficientNetB2Params, params).pretrained)

    def train(self, mode: bool = True) -> EfficientNetB2Conformer:
        super().train(mode)
        if self.cnn is not None and self.frozen:
            self.cnn.eval()  # a frozen descriptor keeps its batch-norm statistics and no dropout
        return self

    def front_end(self, x: Inputs) -> Tensor:
        x = tensor_input(x, self.name)
        if self.cnn is None:
            return x
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)  # a sample's frames stay contiguous
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            features = self.cnn(frames)
        return features.view(b, t, -1)


@hookimpl
def mmbench_encoders():
    return [EfficientNetB2Conformer]
