"""The raw-waveform audio input of MLB's Conformer setting (Kontras et al., BMVC 2024; kkontras/MLB
@ a3d6911, `datasets/CREMAD/CREMAD_Dataset.py`: `_get_audio`, `get_wav_normalizer`, `collate_fn_padd`), for Wav2Vec2.

MLB feeds the whole clip, resampled to 16 kHz (CREMA-D's WAVs already are), first channel, no cropping, no
clipping, standardised with ONE mean and standard deviation taken over every sample of every clip of the
training split (population variance, `sqsum / count - mean²`), and pads each batch with zeros after
standardising, with an attention mask (1 on real samples) that reaches Wav2Vec2.

Prepared per clip: `waveform` (n,) float32, ragged, and `waveform_moments` (3,) float64 = (n, Σx, Σx²). The
statistics of any training split (OGM-GE's, each MLB fold, after a validation carving) are sums of these
moments, so they are computed exactly from the training rows alone when the splits are built.

Where it differs from MLB, and why: the engine stacks samples of one shape, so every clip is zero-padded to a
fixed `seconds` rather than to the longest clip of its batch. The length is the release's longest clip
(5.005 s, MLB's recorded `max_duration`), so nothing is cut; the mask keeps the padding out of Wav2Vec2's
attention as in MLB, but the Conformer after it (in MLB too) sees more padded frames.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from mmbench.api.data import PreparedArrays, resample

FIELDS = ("waveform", "waveform_moments")


def waveform_fields(samples: np.ndarray, rate: int, target: int) -> dict[str, np.ndarray]:
    """One clip's prepared waveform at `target` Hz and its moments (n, Σx, Σx²)."""
    wave = resample(samples, rate, target).astype(np.float32)
    wide = wave.astype(np.float64)
    return {"waveform": wave, "waveform_moments": np.array([wide.size, wide.sum(), (wide ** 2).sum()])}


def statistics(moments: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation over every sample of the clips whose moments are the rows of `moments`."""
    count, total, squares = np.asarray(moments, dtype=np.float64).sum(axis=0)
    mean = total / count
    return float(mean), float(np.sqrt(squares / count - mean ** 2))


class WaveformInput:
    """A prepared row -> `{"input_values": (length,), "attention_mask": (length,)}`: the standardised clip,
    zero-padded (or cut) to `length`, and 1 where a real sample lies."""

    def __init__(self, arrays: PreparedArrays, mean: float, std: float, length: int) -> None:
        self.arrays, self.mean, self.std, self.length = arrays, mean, std, length

    def __call__(self, row: int) -> dict[str, torch.Tensor]:
        wave = np.array(self.arrays.get("waveform", row)[: self.length], dtype=np.float32)  # a copy: writable
        values = torch.zeros(self.length)
        values[: wave.size] = (torch.from_numpy(wave) - self.mean) / self.std
        mask = torch.zeros(self.length, dtype=torch.long)
        mask[: wave.size] = 1
        return {"input_values": values, "attention_mask": mask}


def fake_waveform(length: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A generated input of the prepared form: standard-normal values, every sample real."""
    return {"input_values": torch.randn(length, generator=generator),
            "attention_mask": torch.ones(length, dtype=torch.long)}


def mask_span(x: Mapping[str, torch.Tensor], share: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A view with one span of up to `share` of the real samples set to 0, the standardised mean (the
    waveform counterpart of SpecAugment's time mask)."""
    real = int(x["attention_mask"].sum())
    width = int(torch.randint(0, max(1, int(share * real)) + 1, (1,), generator=generator))
    start = int(torch.randint(0, real - width + 1, (1,), generator=generator))
    values = x["input_values"].clone()
    values[start:start + width] = 0.0
    return {"input_values": values, "attention_mask": x["attention_mask"]}
