"""`conformer`: MLB's audio encoder — a Wav2Vec2 front end cut to its first 12 transformer layers, then a
Conformer over its frames, mean-pooled over time (Kontras et al., BMVC 2024, arXiv 2405.07930; kkontras/MLB @
357b5ce1bcb7, `models/ViT_OGM.py::AClassifier_VaVL_linearcls`, Wav2Vec2 from `facebook/wav2vec2-large-robust`).

    waveform (B, S) 16 kHz -> Wav2Vec2 (B, T, 1024), ~50 frames/s -> bias-free 1×1 conv 1024->50
    -> Linear(50->512) + dropout -> sinusoidal positions -> 5 Conformer blocks (B, T, 512) -> mean over T

The Wav2Vec2 front end is part of this encoder, as in MLB (one audio module, fine-tuned end to end apart from
its convolutional feature encoder). The file also holds what MLB's whole stack shares: `ConformerStack` (the
projection and torchaudio's Conformer blocks, also used by `efficientnet_b2` and the `tf` fusion) and
`FrontEndConformer` (front end -> stack -> mean over time).

Where it differs from MLB's released code, and why:
* The blocks are torchaudio's `Conformer` layers, not the sooftware copy MLB vendors: standard multi-head
  attention without relative positions (a fixed sinusoidal position encoding is added after the projection,
  `positional`), scores scaled by √d_head, a bias in the depthwise convolution; MLB's unused convolutional
  subsampler (2.36 M dead parameters) is not built. 5 blocks: 30,302,720 parameters instead of 31,616,000.
* Batch-first by default. MLB's encoders hand `(time, batch, dim)` to blocks that expect `(batch, time, dim)`,
  so attention and the depthwise convolution run across the samples of a batch; `layout: seq_first`
  reproduces that layout (results then depend on batch composition).
* The attention mask of a padded waveform reaches Wav2Vec2 only, as in MLB: the Conformer and the mean run
  over every frame, so a task should pad little (MLB pads each batch to its longest clip).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn
from torchaudio.models import Conformer

from mmbench.api import Encoder, Incompatible, Inputs, ModalitySpec, Params, hookimpl
from mmbench.api import Params as AnyParams  # `Params` is each class's own attribute
from mmbench_plugins.encoders.narrow import own_params
from mmbench_plugins.encoders.weights import weights_identity

if TYPE_CHECKING:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

# ------------------------------------------------------------------------------------ the shared stack


class ConformerParams(Params):
    width: int = Field(512, ge=1, description="model width of the blocks (MLB 512)")
    layers: int = Field(5, ge=1, le=48, description="Conformer blocks (MLB: 5 per encoder, 2 in the tf fusion)")
    heads: int = Field(8, ge=1, description="attention heads; must divide width (MLB 8)")
    ffn: int = Field(2048, ge=1, description="feed-forward width (MLB 4 × 512)")
    kernel: int = Field(31, ge=1, description="depthwise convolution kernel, odd (MLB 31)")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="one rate for the input projection and the blocks")
    positional: Literal["sinusoidal", "none"] = Field(
        "sinusoidal", description="position encoding added after the projection (MLB's blocks use relative "
                                  "positions inside attention, which torchaudio's do not have)")

    @model_validator(mode="after")
    def _valid_shape(self) -> ConformerParams:
        if self.width % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide width ({self.width})")
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (same-length depthwise convolution), got {self.kernel}")
        return self


def sinusoid(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """The fixed position encoding `(length, dim)`: sin(t·ω_i) in even columns, cos(t·ω_i) in odd ones,
    ω_i = 10000^(−2i/dim)."""
    t = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    omega = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(t * omega)
    table[:, 1::2] = torch.cos(t * omega[: dim // 2])
    return table


class ConformerStack(nn.Module):
    """`(B, T, in_dim)` -> `(B, T, width)`: [bias-free bottleneck] -> Linear + dropout -> positions -> blocks.

    The bottleneck is MLB's 1×1 `Conv1d(in_dim -> bottleneck, bias=False)`, written as the equivalent linear
    map over channels. `seq_first` reproduces MLB's layout quirk (see the module docstring): the blocks then
    treat the batch axis as time.
    """

    def __init__(self, in_dim: int, params: ConformerParams, bottleneck: int | None = None,
                 seq_first: bool = False) -> None:
        super().__init__()
        self.reduce = nn.Linear(in_dim, bottleneck, bias=False) if bottleneck else nn.Identity()
        self.project = nn.Sequential(nn.Linear(bottleneck or in_dim, params.width), nn.Dropout(params.dropout))
        self.blocks = Conformer(params.width, params.heads, params.ffn, params.layers, params.kernel,
                                dropout=params.dropout).conformer_layers
        self.positional = params.positional == "sinusoidal"
        self.seq_first = seq_first

    def forward(self, x: Tensor) -> Tensor:
        h = self.project(self.reduce(x))
        if not self.seq_first:
            h = h.transpose(0, 1)  # torchaudio's blocks take (time, batch, dim)
        if self.positional:
            h = h + sinusoid(h.shape[0], h.shape[-1], h.device).to(h.dtype).unsqueeze(1)
        for block in self.blocks:
            h = block(h, None)  # no padding mask: every sequence runs at full length
        return h if self.seq_first else h.transpose(0, 1)


class FrontEndParams(ConformerParams):
    bottleneck: int = Field(50, ge=1, description="width of MLB's bias-free 1×1 convolution before the blocks (50)")
    layout: Literal["batch_first", "seq_first"] = Field(
        "batch_first", description="batch_first (correct); seq_first reproduces MLB's released code, whose blocks "
                                   "attend and convolve across the samples of a batch")


class FrontEndConformer(Encoder):
    """A front end giving frames `(B, T, F)`, the Conformer stack on them, the mean over time."""

    Params = FrontEndParams

    def __init__(self, modality: ModalitySpec, params: FrontEndParams, frame_dim: int) -> None:
        super().__init__(modality, params)
        self.stack = ConformerStack(frame_dim, params, params.bottleneck, params.layout == "seq_first")
        self.out_dim = params.width

    #: what a `--fake-data` smoke run changes (`fake_params`): a one-block stack a few thousand parameters big
    smoke: ClassVar[dict] = {"width": 16, "layers": 1, "heads": 2, "ffn": 32, "kernel": 3, "bottleneck": 8}

    @classmethod
    def fake_params(cls, params: AnyParams) -> AnyParams:
        """Small and randomly initialised: MLB's sizes and pretrained weights are for real runs."""
        return cls.Params(**{**params.model_dump(), **cls.smoke})

    def front_end(self, x: Inputs) -> Tensor:
        raise NotImplementedError

    def tokens(self, x: Inputs) -> Tensor:
        return self.stack(self.front_end(x))

    def forward(self, x: Inputs) -> Tensor:
        return self.tokens(x).mean(1)


# ------------------------------------------------------------------------------ the audio encoder


class Wav2Vec2Size(Params):
    """The front end's shape for random initialisation; the defaults mirror wav2vec2-large-robust."""

    hidden_size: int = Field(1024, ge=1)
    heads: int = Field(16, ge=1)
    intermediate_size: int = Field(4096, ge=1)
    conv_dim: tuple[int, ...] = Field((512,) * 7, min_length=1, description="channels of each feature-encoder conv")
    conv_kernel: tuple[int, ...] = Field((10, 3, 3, 3, 3, 2, 2), min_length=1)
    conv_stride: tuple[int, ...] = Field((5, 2, 2, 2, 2, 2, 2), min_length=1)
    position_kernel: int = Field(128, ge=2, description="kernel of the convolutional position embedding")
    position_groups: int = Field(16, ge=1, description="groups of the convolutional position embedding")

    @model_validator(mode="after")
    def _consistent(self) -> Wav2Vec2Size:
        if not len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride):
            raise ValueError("conv_dim, conv_kernel and conv_stride must have one entry per convolution")
        if self.hidden_size % self.heads or self.hidden_size % self.position_groups:
            raise ValueError(f"heads ({self.heads}) and position_groups ({self.position_groups}) must divide "
                             f"hidden_size ({self.hidden_size})")
        return self


class ConformerEncoderParams(FrontEndParams):
    pretrained: str | None = Field(
        None, description="Wav2Vec2 weights: a hub name (MLB: facebook/wav2vec2-large-robust; needs network), a "
                          "local directory saved with save_pretrained, or null for random initialisation")
    revision: str | None = Field(None, description="hub revision (commit) of `pretrained`; enters the cell id")
    keep_layers: int = Field(12, ge=1, description="transformer layers of Wav2Vec2 kept, from the first (MLB 12)")
    freeze_feature_encoder: bool | None = Field(
        None, description="freeze Wav2Vec2's convolutional feature encoder; null: frozen when weights are loaded "
                          "(MLB), trained from random initialisation")
    front_end: Wav2Vec2Size = Field(Wav2Vec2Size(), description="Wav2Vec2 shape for random initialisation")

    @model_validator(mode="after")
    def _size_only_for_random_init(self) -> ConformerEncoderParams:
        if self.pretrained is not None and self.front_end != Wav2Vec2Size():
            raise ValueError("front_end sets the shape of a randomly initialised Wav2Vec2; pretrained weights bring "
                             "their own (drop front_end or pretrained)")
        return self


def build_wav2vec2(params: ConformerEncoderParams) -> Wav2Vec2Model:
    """Wav2Vec2 with its first `keep_layers` transformer layers, pretrained or randomly initialised."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model  # imported when built: every command loads plugins

    if params.pretrained is None:
        size = params.front_end
        return Wav2Vec2Model(Wav2Vec2Config(
            hidden_size=size.hidden_size, num_hidden_layers=params.keep_layers, num_attention_heads=size.heads,
            intermediate_size=size.intermediate_size, conv_dim=list(size.conv_dim),
            conv_kernel=list(size.conv_kernel), conv_stride=list(size.conv_stride),
            num_conv_pos_embeddings=size.position_kernel,
            num_conv_pos_embedding_groups=size.position_groups, feat_extract_norm="layer",
            do_stable_layer_norm=True, conv_bias=True))
    model = Wav2Vec2Model.from_pretrained(
        params.pretrained, revision=params.revision)  # type: ignore[arg-type]  # None: the default branch
    if len(model.encoder.layers) < params.keep_layers:
        raise ValueError(f"{params.pretrained} has {len(model.encoder.layers)} transformer layers; keep_layers is "
                         f"{params.keep_layers}")
    del model.encoder.layers[params.keep_layers:]
    model.config.num_hidden_layers = params.keep_layers
    return model


def frames_of(samples: int, config: Wav2Vec2Config) -> int:
    """How many frames Wav2Vec2's feature encoder makes of `samples` samples."""
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        samples = (samples - kernel) // stride + 1
    return samples


class Wav2Vec2Conformer(FrontEndConformer):
    """MLB's audio encoder: Wav2Vec2 (12 layers) -> 1×1 conv 1024->50 -> 5 Conformer blocks -> mean over time.

    Input, modality kind `audio` of shape `(S,)`: a raw 16 kHz mono waveform, normalised by the task (MLB: the
    training set's mean and std), as a tensor `(B, S)` or as `{"input_values": (B, S), "attention_mask": (B, S)}`
    with 1 on real samples and 0 on padding. Output `(B, width)`; `tokens` gives `(B, T, width)`, T ≈ 50 per
    second.
    """

    name = "conformer"
    Params = ConformerEncoderParams
    accepts = frozenset({"audio"})
    smoke = {**FrontEndConformer.smoke, "pretrained": None, "revision": None, "keep_layers": 1,
             "front_end": {"hidden_size": 16, "heads": 2, "intermediate_size": 32, "conv_dim": (8, 8, 8),
                           "conv_kernel": (10, 8, 8), "conv_stride": (5, 8, 8), "position_kernel": 4,
                           "position_groups": 2}}

    def __init__(self, modality: ModalitySpec, params: ConformerEncoderParams) -> None:
        if len(modality.shape) != 1:
            raise Incompatible(f"conformer reads a raw waveform of shape (samples,); modality {modality.name!r} has "
                               f"shape {modality.shape} (a spectrogram needs a 2-D encoder such as resnet18)")
        wav2vec2 = build_wav2vec2(params)
        if frames_of(modality.shape[0], wav2vec2.config) < 1:
            raise Incompatible(f"modality {modality.name!r} has {modality.shape[0]} samples, too few for one "
                               f"Wav2Vec2 frame")
        super().__init__(modality, params, wav2vec2.config.hidden_size)
        self.wav2vec2 = wav2vec2
        freeze = params.pretrained is not None if params.freeze_feature_encoder is None \
            else params.freeze_feature_encoder
        if freeze:
            self.wav2vec2.freeze_feature_encoder()

    @classmethod
    def weights_identity(cls, params: AnyParams) -> str | None:
        own = own_params(ConformerEncoderParams, params)
        return weights_identity(own.pretrained, own.revision)

    def front_end(self, x: Inputs) -> Tensor:
        if isinstance(x, Mapping):
            if "input_values" not in x:
                raise ValueError(f"the conformer encoder reads a waveform tensor or a mapping with 'input_values' "
                                 f"(and 'attention_mask'); modality {self.modality.name!r} gave keys {sorted(x)}")
            return self.wav2vec2(x["input_values"], attention_mask=x.get("attention_mask")).last_hidden_state
        return self.wav2vec2(x).last_hidden_state

    def absent_input(self, x: Inputs) -> Inputs:
        """Silence at full length: a zero waveform whose mask marks every sample real (an all-zero mask would
        leave Wav2Vec2's attention nothing to attend to)."""
        if isinstance(x, Mapping):
            return {k: torch.ones_like(v) if k == "attention_mask" else torch.zeros_like(v) for k, v in x.items()}
        return torch.zeros_like(x)


@hookimpl
def mmbench_encoders():
    return [Wav2Vec2Conformer]
