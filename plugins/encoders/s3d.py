"""`s3d`: torchvision's S3D (Xie et al., ECCV 2018), the separable-convolution relative of I3D, as the
alternative branch where I3D's weights are unavailable (torchvision ships Kinetics-400 weights for it).

* The trunk is `torchvision.models.video.s3d(...).features` (7,910,048 parameters with the 3-channel stem);
  the first convolution takes the modality's channels (1 depth, 2 flow, 3 RGB).
* Pooled feature `(B, 1024)`: torchvision's `AvgPool3d((2, 7, 7), stride 1)` then the mean over what remains
  (the window clipped to small test inputs), as `i3d` does.
* `blocks()` at the same places as `i3d`: up to Mixed_4e | Mixed_4f | pool + Mixed_5b | Mixed_5c + pooling.
* `weights`: `"KINETICS400_V1"` (torchvision's weights, downloaded: needs network) or a local torchvision S3D
  state dict; the 400-class classifier is dropped and a 3-channel stem is summed over its input channels for a
  1-channel (depth) modality. Default: random initialisation.
"""

from __future__ import annotations

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from mmbench.api import Encoder, ModalitySpec, Params, hookimpl
from mmbench.api import Params as AnyParams  # `Params` is each class's own attribute
from mmbench_plugins.encoders.i3d import CLIP_KINDS, FEATURES, Chain, clip_channels, pooled
from mmbench_plugins.encoders.narrow import own_params
from mmbench_plugins.encoders.weights import existing_path, local_path, weights_identity

#: torchvision's weights enum member, fetched by name
HUB = "KINETICS400_V1"
#: `features` indices grouped into `blocks()` (12 = Mixed_4f, 13 = MaxPool 5a, 14/15 = Mixed_5b/5c)
BLOCKS = (range(0, 12), range(12, 13), range(13, 15), range(15, 16))


class S3DParams(Params):
    weights: str | None = Field(None, description=f"{HUB!r} (torchvision's Kinetics-400 weights; needs network) or "
                                                  "the path of a torchvision S3D state dict; null: random init")

    @field_validator("weights")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        if value is not None and value != HUB and local_path(value) is None:
            raise ValueError(f"weights {value!r}: give {HUB!r} or the path of a torchvision S3D state dict")
        return value


class S3DEncoder(Encoder):
    """torchvision S3D trunk for clips `(B, C, T, H, W)`, C in 1..3: 1024-d."""

    name = "s3d"
    Params = S3DParams
    params: S3DParams
    accepts = CLIP_KINDS

    def __init__(self, modality: ModalitySpec, params: S3DParams) -> None:
        super().__init__(modality, params)
        from torchvision.models.video import S3D_Weights, s3d

        channels = clip_channels(modality, self.name)
        if params.weights is not None and channels == 2:
            raise ValueError(f"s3d weights {params.weights!r} have an RGB stem; modality {modality.name!r} has 2 "
                             f"channels (only a 1-channel depth stem is derived from an RGB one)")
        model = s3d(weights=S3D_Weights.KINETICS400_V1 if params.weights == HUB else None)
        if params.weights not in (None, HUB):
            self._load(model, params.weights)
        if channels != 3:
            rgb = model.features[0][0][0]
            stem = nn.Conv3d(channels, 64, rgb.kernel_size, rgb.stride, rgb.padding, bias=False)
            if params.weights is not None:
                stem.weight.data.copy_(rgb.weight.detach().sum(dim=1, keepdim=True))
            model.features[0][0][0] = stem
        self.features = model.features
        self.out_dim = FEATURES

    @staticmethod
    def _load(model: nn.Module, path: str) -> None:
        state = torch.load(existing_path(path), map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        del model.classifier
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{path} is not a torchvision S3D state dict: {exc}") from None

    @classmethod
    def weights_identity(cls, params: AnyParams) -> str | None:
        return weights_identity(own_params(S3DParams, params).weights)

    def blocks(self) -> list[nn.Module]:
        return [Chain([self.features[i] for i in indices], pool=k == len(BLOCKS) - 1)
                for k, indices in enumerate(BLOCKS)]

    def forward(self, x: Tensor) -> Tensor:
        return pooled(self.features(x))


@hookimpl
def mmbench_encoders():
    return [S3DEncoder]
