"""`resnet18`: torchvision's ResNet-18 trunk for spectrograms and video frames, as OGM-GE uses it.

* The trunk is `torchvision.models.resnet18` without `avgpool`/`fc` (11,176,512 parameters with a 3-channel
  stem, 11,170,240 with the 1-channel stem a spectrogram gets). torchvision's initialisation (Kaiming-normal
  fan-out convolutions, BatchNorm weight 1, bias 0) is what OGM-GE trains from: its `main.py` applies
  `weight_init` after building the model, which resets the backbone's N(1, 0.02) BatchNorm weights to 1.
* A spectrogram `(B, C, F, T)` runs as an image. A clip `(B, 3, T, H, W)` has its frames folded into the
  batch, `(B*T, 3, H, W)`, and between blocks is kept as `(B, C', T, H', W')` (a view, no copy).
* The pooled feature `(B, 512)` is the global average over everything but channels (OGM-GE:
  `adaptive_avg_pool2d` for audio, `adaptive_avg_pool3d` over time and space for video).
* `blocks()`: stem + layer1, layer2, layer3, layer4 + pooling. Intermediate fusions attach after the last
  three, which is Greedy's MMTM placement (after layer2, layer3, layer4: a per-channel gate commutes with the
  average pool, so gating the pooled feature equals gating layer4's map and then pooling).
* `weights`: a local torchvision ResNet-18 state_dict (e.g. ImageNet `resnet18-f37072fd.pth`); `fc.*` is
  dropped and, for a 1-channel stem, `conv1` is averaged over its RGB input channels. Its sha256 is the
  weights identity that enters the cell id. Default: random initialisation (OGM-GE and MLB train from scratch).
* `width`: 64 is ResNet-18. A `--fake-data` smoke run builds the same layout from torchvision's blocks with
  stages 8, 16, 32, 64 wide (64-d features): it reads the same inputs at about 1/50 of the arithmetic.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from pydantic import Field, PositiveInt, field_validator, model_validator
from torch import Tensor, nn

from mmbench.api import Encoder, ModalitySpec, Params, hookimpl
from mmbench.api import Params as AnyParams  # `Params` is each class's own attribute
from mmbench_plugins.encoders.narrow import own_params

RESNET18_WIDTH = 64
SMOKE_WIDTH = 8


class ResNet18Params(Params):
    weights: str | None = Field(None, description="path of a local torchvision ResNet-18 state_dict (.pth); "
                                                  "None: random initialisation")
    width: PositiveInt = Field(RESNET18_WIDTH, description="the first stage's channels, the others 2x, 4x, 8x "
                                                           "(64: ResNet-18; smaller for smoke runs only)")

    @field_validator("weights")
    @classmethod
    def _is_file(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).expanduser().is_file():
            raise ValueError(f"no weights file at {value!r}: give the path of a torchvision ResNet-18 state_dict")
        return value

    @model_validator(mode="after")
    def _weights_fit(self) -> ResNet18Params:
        if self.weights is not None and self.width != RESNET18_WIDTH:
            raise ValueError(f"weights are a ResNet-18's, which is {RESNET18_WIDTH} wide, not {self.width}")
        return self


def narrow_trunk(width: int) -> nn.Module:
    """ResNet-18's layout (stem, four stages of two `BasicBlock`s, strides 1, 2, 2, 2) from torchvision's own
    blocks, `width` x (1, 2, 4, 8) channels wide, initialised as torchvision initialises a ResNet."""
    from torchvision.models.resnet import BasicBlock, conv1x1

    def stage(inplanes: int, planes: int, stride: int) -> nn.Sequential:
        downsample = None if stride == 1 and inplanes == planes else \
            nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
        return nn.Sequential(BasicBlock(inplanes, planes, stride, downsample), BasicBlock(planes, planes))

    trunk = nn.Module()
    trunk.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    trunk.bn1, trunk.relu = nn.BatchNorm2d(width), nn.ReLU(inplace=True)
    trunk.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    for i, (inplanes, planes, stride) in enumerate(((1, 1, 1), (1, 2, 2), (2, 4, 2), (4, 8, 2)), start=1):
        setattr(trunk, f"layer{i}", stage(inplanes * width, planes * width, stride))
    for module in trunk.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return trunk


class Stage(nn.Module):
    """Some of the trunk's modules; for clips it folds the frames into the batch and back."""

    def __init__(self, *modules: nn.Module, clip: bool, pool: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(*modules)
        self.clip, self.pool = clip, pool

    def forward(self, x: Tensor) -> Tensor:
        if self.clip:
            b, c, t, h, w = x.shape
            x = x.transpose(1, 2).reshape(b * t, c, h, w)
        x = self.body(x)
        if self.clip:
            x = x.view(b, t, *x.shape[1:]).transpose(1, 2)
        return x.flatten(2).mean(-1) if self.pool else x


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(Path(path).expanduser(), "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ResNet18Encoder(Encoder):
    """torchvision ResNet-18 trunk for spectrograms (B, C, F, T) and frame clips (B, 3, T, H, W), 512-d."""

    name = "resnet18"
    Params = ResNet18Params
    accepts = frozenset({"spectrogram", "frames"})
    params: ResNet18Params

    def __init__(self, modality: ModalitySpec, params: ResNet18Params) -> None:
        super().__init__(modality, params)
        from torchvision.models import resnet18

        clip = len(modality.shape) == 4
        if len(modality.shape) not in (3, 4):
            raise ValueError(f"resnet18 takes (C, H, W) images or (C, T, H, W) clips; modality {modality.name!r} "
                             f"has shape {modality.shape}")
        channels, width = modality.shape[0], params.width
        trunk: nn.Module = resnet18(weights=None) if width == RESNET18_WIDTH else narrow_trunk(width)
        if channels != 3:
            trunk.conv1 = stem = nn.Conv2d(channels, width, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(stem.weight, mode="fan_out", nonlinearity="relu")
        if params.weights is not None:
            self._load(trunk, params.weights, channels)
        part = trunk.get_submodule
        self.stages = nn.ModuleList([
            Stage(part("conv1"), part("bn1"), part("relu"), part("maxpool"), part("layer1"), clip=clip),
            Stage(part("layer2"), clip=clip),
            Stage(part("layer3"), clip=clip),
            Stage(part("layer4"), clip=clip, pool=True),
        ])
        self.out_dim = 8 * width

    @staticmethod
    def _load(trunk: nn.Module, path: str, channels: int) -> None:
        state = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        stem = state.get("conv1.weight")
        if stem is not None and stem.shape[1] != channels:
            if channels != 1:
                raise ValueError(f"{path}: conv1 takes {stem.shape[1]} channels, the modality has {channels}")
            state["conv1.weight"] = stem.mean(dim=1, keepdim=True)
        del trunk.fc
        missing, unexpected = trunk.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path} is not a torchvision ResNet-18 state_dict: missing {missing[:4]}, "
                             f"unexpected {unexpected[:4]}")

    @classmethod
    def fake_params(cls, params: AnyParams) -> AnyParams:
        """Random and narrow: a smoke run checks the wiring at the real input shapes, never the model."""
        return params.model_copy(update={"weights": None, "width": SMOKE_WIDTH})

    @classmethod
    def weights_identity(cls, params: AnyParams) -> str | None:
        weights = own_params(ResNet18Params, params).weights
        return None if weights is None else f"sha256:{file_sha256(weights)}"

    def blocks(self) -> list[nn.Module]:
        return list(self.stages)

    def forward(self, x: Tensor) -> Tensor:
        for stage in self.stages:
            x = stage(x)
        return x


@hookimpl
def mmbench_encoders():
    return [ResNet18Encoder]
