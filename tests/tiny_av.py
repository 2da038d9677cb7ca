"""A tiny audio-visual task shaped like MLB's CREMA-D inputs, and tiny configs of MLB's encoders, for tests.

The task yields a 16 kHz waveform (`audio`, kind audio) and either face frames `(3, T, H, W)` or
precomputed EfficientNet-B2 features `(T, 1408)` (`visual`, kind visual); the class is written into both so
a few steps can learn it.
"""

from __future__ import annotations

import torch
from pydantic import Field

from mmbench.api import ModalitySpec, Params, Task, TensorDictDataset
from mmbench.training.engine import CellComponents
from mmbench_plugins.encoders.conformer import ConformerEncoderParams, Wav2Vec2Conformer
from mmbench_plugins.encoders.efficientnet_b2 import EfficientNetB2Conformer, EfficientNetB2Params

#: the Conformer stack, a few thousand parameters
TINY_STACK = {"width": 16, "layers": 1, "heads": 2, "ffn": 32, "kernel": 3, "bottleneck": 8}
#: a two-convolution, two-layer Wav2Vec2: 1 frame per 10 samples
TINY_FRONT_END = {"hidden_size": 16, "heads": 2, "intermediate_size": 32, "conv_dim": (8, 8), "conv_kernel": (10, 3),
                  "conv_stride": (5, 2), "position_kernel": 4, "position_groups": 2}
SAMPLES = 400
FRAMES = 2


class AVParams(Params):
    visual: str = Field("features", pattern="^(features|frames)$")
    size: int = Field(16, ge=4)


class TinyAV(Task):
    name = "tiny_av"
    version = "1"
    Params = AVParams

    @property
    def modalities(self):
        visual = (FRAMES, 1408) if self.params.visual == "features" else (3, FRAMES, 32, 32)
        return {"audio": ModalitySpec("audio", "audio", (SAMPLES,)),
                "visual": ModalitySpec("visual", "visual", visual)}

    @property
    def num_classes(self):
        return 3

    def splits(self):
        gen = torch.Generator().manual_seed(0)
        n = self.params.size
        out = {}
        for split in ("train", "val", "test"):
            y = torch.arange(n) % 3
            audio = 0.1 * torch.randn(n, SAMPLES, generator=gen) + torch.sin(
                torch.arange(SAMPLES) * (y.view(-1, 1) + 1) * 0.3)
            visual = torch.randn(n, *self.modalities["visual"].shape, generator=gen)
            visual = visual + y.view(-1, *[1] * (visual.dim() - 1))
            out[split] = TensorDictDataset({"audio": audio, "visual": visual}, y)
        return out


def audio_params(**changes) -> ConformerEncoderParams:
    return ConformerEncoderParams(**{**TINY_STACK, "keep_layers": 2, "front_end": TINY_FRONT_END, **changes})


def visual_params(**changes) -> EfficientNetB2Params:
    return EfficientNetB2Params(**{**TINY_STACK, **changes})


def components(fusion, fusion_params, balancer, visual: str = "features") -> CellComponents:
    """A tiny audio-visual cell: `conformer` on the waveform, `efficientnet_b2` on the visual input."""
    task = TinyAV(AVParams(visual=visual))
    return CellComponents(task=task,
                          encoders={"audio": (Wav2Vec2Conformer, audio_params()),
                                    "visual": (EfficientNetB2Conformer, visual_params())},
                          fusion=(fusion, fusion_params), balancer=(balancer, balancer.Params()))
