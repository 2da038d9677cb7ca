"""`i3d`: Inception-v1 I3D (Carreira & Zisserman, CVPR 2017), the per-modality branch of MIE's, MLA's and
Greedy's NVGesture models, in the module layout of the public pytorch-i3d port (piergiaj/pytorch-i3d @
05783d11f963, `pytorch_i3d.py`).

* Module names are that port's end points (`Conv3d_1a_7x7`, `MaxPool3d_2a_3x3`, …, `Mixed_5c`), each unit a
  `conv3d` (no bias) + `bn` (eps 1e-3, momentum 0.01) + ReLU with TensorFlow "SAME" padding computed from the
  input size (asymmetric: the extra pixel goes after), inception branches `b0, b1a, b1b, b2a, b2b, b3a, b3b`.
  So the port's checkpoints (`rgb_imagenet.pt`, `flow_imagenet.pt`, Kinetics-400 from ImageNet inflation)
  load with `strict=True` after their 400-class `logits.*` are dropped (the port's `replace_logits`).
* Stems follow the modality's channels: RGB 3, optical flow 2 (x, y), depth 1. A 1-channel stem loaded from
  a 3-channel checkpoint gets conv1's weights summed over the input channels, which is exactly the
  3-channel network run on the depth map replicated three times (our choice: the papers do not say how depth
  reuses RGB weights), at a third of conv1's cost. Parameters: 12,287,264 (RGB), 12,265,312 (flow), 12,243,360
  (depth), counted analytically from the port's layer table.
* Input `(B, C, T, H, W)`; the pooled feature `(B, 1024)` is the port's `AvgPool3d((2, 7, 7), stride 1)` on
  Mixed_5c's map, averaged over the remaining time (and space): for a 224 × 224 input the map is 7 × 7, as the
  port assumes; for smaller inputs (tests) the window is clipped to the map so any size runs.
* `blocks()`: up to Mixed_4e | Mixed_4f | MaxPool3d_5a + Mixed_5b | Mixed_5c + pooling, so an intermediate
  fusion placed after the last three blocks sits after Mixed_4f, Mixed_5b and Mixed_5c (MMTM's I3D placement).
* `weights`: a local pytorch-i3d state dict; its sha256 is the weights identity in the cell id. Default:
  random initialisation (PyTorch's defaults for Conv3d and BatchNorm3d). The port's weights were trained on
  pixels scaled to [-1, 1]; the encoder takes its input as the task gives it (`nvgesture`: ImageNet-normalised
  RGB and [0, 1] depth, as the NJUST reader feeds its I3D branches).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from mmbench.api import Encoder, Incompatible, ModalitySpec, Params, hookimpl
from mmbench.api import Params as AnyParams  # `Params` is each class's own attribute
from mmbench_plugins.encoders.narrow import own_params
from mmbench_plugins.encoders.weights import existing_path, local_path, weights_identity

#: (end point, input channels, [b0, b1a, b1b, b2a, b2b, b3b] output channels) of the inception modules
MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}
#: the end points grouped into `blocks()`
BLOCKS = (
    ("Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3", "Mixed_3b",
     "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e"),
    ("Mixed_4f",),
    ("MaxPool3d_5a_2x2", "Mixed_5b"),
    ("Mixed_5c",),
)
FEATURES = 1024
#: the modality kinds of clips (RGB frames, depth maps, optical flow)
CLIP_KINDS = frozenset({"frames", "rgb", "depth", "flow"})
#: the port's final average pool, (time, height, width), stride 1
POOL = (2, 7, 7)


def same_padding(x: Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> Tensor:
    """Zero-pad `(B, C, T, H, W)` as TensorFlow's SAME: total `max(k − s, 0)` when the size divides by the
    stride, else `max(k − size % s, 0)`; the front gets half (rounded down)."""
    pad: list[int] = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pad += [total // 2, total - total // 2]
    return F.pad(x, pad)


class Unit3D(nn.Module):
    """Conv3d (no bias) -> BatchNorm3d -> ReLU with SAME padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1)) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, bias=False)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv3d(same_padding(x, self.kernel, self.stride))))


class MaxPoolSame(nn.Module):
    """Max-pooling with SAME zero padding (the inputs are ReLU outputs, so zeros never win wrongly)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool3d(same_padding(x, self.kernel, self.stride), self.kernel, self.stride)


class Inception(nn.Module):
    """Four branches: 1x1x1 | 1x1x1 -> 3x3x3 | 1x1x1 -> 3x3x3 | max-pool 3x3x3 -> 1x1x1, concatenated."""

    def __init__(self, in_channels: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        o0, o1, o2, o3, o4, o5 = widths
        self.b0 = Unit3D(in_channels, o0)
        self.b1a, self.b1b = Unit3D(in_channels, o1), Unit3D(o1, o2, (3, 3, 3))
        self.b2a, self.b2b = Unit3D(in_channels, o3), Unit3D(o3, o4, (3, 3, 3))
        self.b3a, self.b3b = MaxPoolSame((3, 3, 3), (1, 1, 1)), Unit3D(in_channels, o5)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


def pooled(x: Tensor) -> Tensor:
    """The port's average pool (window clipped to the map), then the mean over what remains: `(B, 1024)`."""
    window = tuple(min(k, size) for k, size in zip(POOL, x.shape[2:]))
    return F.avg_pool3d(x, window, stride=1).flatten(2).mean(-1)


class Chain(nn.Module):
    """Some of the encoder's end points run in order (one of `blocks()`), optionally ending in the pooling."""

    def __init__(self, parts: list[nn.Module], pool: bool) -> None:
        super().__init__()
        self.parts, self.pool = nn.ModuleList(parts), pool

    def forward(self, x: Tensor) -> Tensor:
        for part in self.parts:
            x = part(x)
        return pooled(x) if self.pool else x


def clip_channels(modality: ModalitySpec, encoder: str) -> int:
    """The channels of a clip modality `(C, T, H, W)` with C in 1..3, or `Incompatible` for anything else."""
    if len(modality.shape) != 4 or modality.shape[0] not in (1, 2, 3):
        raise Incompatible(f"{encoder} reads clips (C, T, H, W) with 1, 2 or 3 channels; modality "
                           f"{modality.name!r} has shape {modality.shape}")
    return modality.shape[0]


class I3DParams(Params):
    weights: str | None = Field(None, description="path of a pytorch-i3d state dict (rgb_imagenet.pt for RGB and "
                                                  "depth, flow_imagenet.pt for flow); null: random initialisation")

    @field_validator("weights")
    @classmethod
    def _exists(cls, value: str | None) -> str | None:
        if value is not None and local_path(value) is None:
            raise ValueError(f"no weights file at {value!r}: give the path of a pytorch-i3d state dict")
        return value


class I3DEncoder(Encoder):
    """InceptionI3d trunk for clips `(B, C, T, H, W)` with C = 3 (RGB), 2 (flow) or 1 (depth): 1024-d."""

    name = "i3d"
    Params = I3DParams
    params: I3DParams
    accepts = CLIP_KINDS

    def __init__(self, modality: ModalitySpec, params: I3DParams) -> None:
        super().__init__(modality, params)
        channels = clip_channels(modality, self.name)
        self.Conv3d_1a_7x7 = Unit3D(channels, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b, self.Mixed_3c = (Inception(*MIXED[k]) for k in ("Mixed_3b", "Mixed_3c"))
        self.MaxPool3d_4a_3x3 = MaxPoolSame((3, 3, 3), (2, 2, 2))
        for k in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            setattr(self, k, Inception(*MIXED[k]))
        self.MaxPool3d_5a_2x2 = MaxPoolSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b, self.Mixed_5c = (Inception(*MIXED[k]) for k in ("Mixed_5b", "Mixed_5c"))
        self.out_dim = FEATURES
        if params.weights is not None:
            self.load(params.weights)

    def load(self, path: str) -> None:
        """A pytorch-i3d checkpoint, strictly: every key must match after its `logits.*` are dropped; a
        3-channel conv1 is summed over its input channels for a 1-channel stem."""
        state = torch.load(existing_path(path), map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("logits.")}
        stem = state.get("Conv3d_1a_7x7.conv3d.weight")
        channels = self.modality.shape[0]
        if stem is not None and stem.shape[1] != channels:
            if not (channels == 1 and stem.shape[1] == 3):
                raise ValueError(f"{path}: conv1 takes {stem.shape[1]} input channels; modality "
                                 f"{self.modality.name!r} has {channels} (use rgb_imagenet.pt for RGB or depth, "
                                 f"flow_imagenet.pt for flow)")
            state["Conv3d_1a_7x7.conv3d.weight"] = stem.sum(dim=1, keepdim=True)
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{path} is not a pytorch-i3d InceptionI3d state dict: {exc}") from None

    @classmethod
    def weights_identity(cls, params: AnyParams) -> str | None:
        return weights_identity(own_params(I3DParams, params).weights)

    def blocks(self) -> list[nn.Module]:
        return [Chain([getattr(self, k) for k in names], pool=i == len(BLOCKS) - 1) for i, names in enumerate(BLOCKS)]

    def forward(self, x: Tensor) -> Tensor:
        for names in BLOCKS:
            for k in names:
                x = getattr(self, k)(x)
        return pooled(x)


@hookimpl
def mmbench_encoders():
    return [I3DEncoder]
