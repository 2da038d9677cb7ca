"""What the four audio-visual tasks (`cremad`, `ave`, `ucf101`, `kinetics_sounds`) share: two modalities,
`audio` (a log-magnitude spectrogram, `(1, F, T)`) and `visual` (`T` RGB frames, `(3, T, 224, 224)`), a
prepared root of memory-mapped arrays, and the frame transforms of OGM-GE (Peng et al., CVPR 2022;
GeWu-Lab/OGM-GE_CVPR2022 @ 343dc1d).

Prepared fields per clip: `audio` (F, T) float32, `frames` (n, 3, S, S) uint8 (every second's first frame,
resized to S x S as OGM-GE's evaluation `Resize((224, 224))` does), `source_size` (width, height) of the video;
a task with a `waveform` preprocessing also prepares the raw waveform (`waveform.py`). One root holds every
representation; the `audio` parameter (`spectrogram` or, where prepared, `waveform`: `(S,)`, kind `audio`)
selects the one a cell reads, and only that one's preprocessing enters the cell's data fingerprint.

Frames given to the model (OGM-GE's `dataset/CramedDataset.py`; the loaders of MLB, Kontras et al., BMVC 2024,
kkontras/MLB @ a3d6911): `frames` of the clip's frames — training picks them at random (sorted), evaluation
takes the first ones; a clip with fewer frames repeats them. Training applies
`RandomResizedCrop(224)` (scale 0.08–1, ratio 3/4–4/3) and a horizontal flip to each frame independently,
then ImageNet normalisation. The crop box is drawn in the *source* video's geometry and mapped onto the
stored square frame, so the crops cover the same regions as the official crops of the full-size frame; only
the resolution they are cut from differs.

A dataset subclasses `AudioVisualTask` (a `PreparedTask`): its raw layout, its `items` (what to prepare, from
the shipped lists), its picklable `process`, and `lists()` (each split's ids and labels).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import Dataset

from mmbench.api import ModalitySpec
from mmbench.api.data import (
    HoldoutParams,
    Item,
    Label,
    PreparedArrays,
    PreparedTask,
    fit_length,
    log_spectrogram,
    read_frames,
    resample,
)
from mmbench_plugins.tasks.common import waveform as wave

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1, 1)
CROP = 224
#: the largest share of the frequency or time axis one augmentation mask covers
MASK_SHARE = 0.15


class AudioVisualParams(HoldoutParams):
    frames: int = Field(1, ge=1, le=32, description="frames per clip given to the visual encoder (OGM-GE: 1, "
                                                    "its --fps; MLB: 3 on CREMA-D, 4 on AVE and UCF101)")
    train_frames: Literal["random", "first"] = Field(
        "random", description="which frames training takes: a random sorted pick (OGM-GE's intent) or the first")


# ------------------------------------------------------------------------------------------- frames


def crop_box(width: int, height: int, scale: tuple[float, float] = (0.08, 1.0),
             ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[float, float, float, float]:
    """A random-resized-crop box (top, left, height, width) in a width x height image, drawn as torchvision's
    `RandomResizedCrop` draws it: ten tries of a random area share and log-uniform aspect ratio, else the
    largest centred box within the ratio range. Uses torch's global generator (seeded per worker)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * torch.empty(1).uniform_(*scale).item()
        aspect = math.exp(torch.empty(1).uniform_(*log_ratio).item())
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = torch.randint(0, height - h + 1, (1,)).item()
            left = torch.randint(0, width - w + 1, (1,)).item()
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def train_transform(frame: torch.Tensor, source: tuple[int, int]) -> torch.Tensor:
    """A stored uint8 frame (3, S, S) -> a random resized crop of it (3, 224, 224), flipped half the time."""
    from torchvision.transforms.v2 import functional as TF

    size = frame.shape[-1]
    top, left, h, w = crop_box(*source)
    sx, sy = size / source[0], size / source[1]
    box = [round(top * sy), round(left * sx), max(1, round(h * sy)), max(1, round(w * sx))]
    out = TF.resized_crop(frame, *box, size=[CROP, CROP], antialias=True)
    return TF.horizontal_flip(out) if torch.rand(1).item() < 0.5 else out


def pick_frames(available: int, wanted: int, random: bool) -> np.ndarray:
    """Indices of the frames to use: a sorted random pick or the first ones, cycling when too few."""
    if available >= wanted:
        return np.sort(torch.randperm(available)[:wanted].numpy()) if random else np.arange(wanted)
    return np.resize(np.arange(available), wanted)


def stft_features(samples: np.ndarray, rate: int, audio: Mapping[str, Any]) -> np.ndarray:
    """OGM-GE's and MLB's audio: resampled to `sample_rate`, tiled and cut to `seconds`, clipped to [-1, 1],
    log-magnitude STFT (`n_fft`, `hop`, `pad_mode`)."""
    wave = fit_length(resample(samples, rate, audio["sample_rate"]), audio["sample_rate"] * audio["seconds"])
    return log_spectrogram(wave, audio["n_fft"], audio["hop"], audio["pad_mode"])


def clip_fields(audio: np.ndarray, video: Path, frame_size: int, start: float = 0.0,
                end: float | None = None) -> dict[str, np.ndarray]:
    """The prepared fields of one clip: its audio features, its 1-fps frames and the video's size."""
    frames, source = read_frames(video, (frame_size, frame_size), start=start, end=end)
    return {"audio": audio, "frames": frames, "source_size": np.array(source, dtype=np.int32)}


def spectrogram_input(arrays: PreparedArrays, row: int) -> torch.Tensor:
    return torch.from_numpy(np.array(arrays.get("audio", row)))[None]


class ClipDataset(Dataset):
    """Samples `{"audio": (1, F, T) or the waveform input, "visual": (3, T, 224, 224), "label": ()}` of some
    prepared rows; `audio_input(row)` makes the audio input."""

    def __init__(self, arrays: PreparedArrays, rows: list[int], labels: list[Label], frames: int, train: bool,
                 random_pick: bool, audio_input: Callable[[int], Any]) -> None:
        self.arrays, self.rows, self.labels = arrays, rows, labels
        self.frames, self.train, self.random_pick = frames, train, random_pick
        self.audio_input = audio_input

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = self.rows[index]
        audio = self.audio_input(row)
        stored = self.arrays.get("frames", row)
        chosen = pick_frames(len(stored), self.frames, self.train and self.random_pick)
        clip = torch.from_numpy(np.ascontiguousarray(stored[chosen]))
        if self.train:
            width, height = (int(v) for v in self.arrays.get("source_size", row))
            clip = torch.stack([train_transform(frame, (width, height)) for frame in clip])
        elif clip.shape[-1] != CROP:
            from torchvision.transforms.v2 import functional as TF

            clip = TF.resize(clip, [CROP, CROP], antialias=True)
        visual = (clip.permute(1, 0, 2, 3).float() / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        return {"audio": audio, "visual": visual, "label": torch.tensor(self.labels[index], dtype=torch.long)}


# --------------------------------------------------------------------------------------------- task


class AudioVisualTask(PreparedTask):
    """Base of the audio-visual tasks (see the module docstring); subclasses fill in the dataset."""

    Params = AudioVisualParams
    params: AudioVisualParams
    metrics = ("accuracy", "macro_f1", "map_macro")
    primary_metric = "accuracy"
    ragged = frozenset({"frames", "waveform"})
    #: (F, T) of the prepared spectrogram
    audio_shape: ClassVar[tuple[int, int]]
    #: the audio preprocessing parameters (they enter the fingerprint)
    audio_preprocessing: ClassVar[dict[str, Any]]
    #: the raw-waveform preprocessing (`sample_rate`, `seconds` padded to), for a task that also prepares it
    waveform: ClassVar[dict[str, Any] | None] = None
    #: side of the stored square frames
    frame_size: ClassVar[int] = CROP
    #: a module-level function (item, frame_size) -> the item's prepared fields; it runs in worker processes
    process: ClassVar[Callable[..., Mapping[str, np.ndarray]]]

    @property
    def reads_waveform(self) -> bool:
        """The cell reads the raw waveform (the `audio` parameter, on tasks that prepare one)."""
        return getattr(self.params, "audio", "spectrogram") == "waveform"

    @property
    def waveform_length(self) -> int:
        if self.waveform is None:
            raise TypeError(f"task {self.name!r} prepares no waveform")
        return round(self.waveform["sample_rate"] * self.waveform["seconds"])

    @property
    def modalities(self) -> dict[str, ModalitySpec]:
        audio = ModalitySpec("audio", "audio", (self.waveform_length,)) if self.reads_waveform \
            else ModalitySpec("audio", "spectrogram", (1, *self.audio_shape))
        return {"audio": audio, "visual": ModalitySpec("visual", "frames", (3, self.params.frames, CROP, CROP))}

    def augment(self, modality: str, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A label-preserving view for consistency balancers (UDA): the spectrogram with one frequency band
        and one time span (each up to `MASK_SHARE` of its axis) set to the spectrogram's mean (SpecAugment's
        masks; on a waveform, one span of samples set to 0), or the clip mirrored with probability 1/2 and its
        brightness scaled by U(0.8, 1.2)."""
        if modality == "audio" and isinstance(x, Mapping):
            return wave.mask_span(x, MASK_SHARE, generator)
        if modality == "audio":
            out = x.clone()
            for axis in (-2, -1):
                size = x.shape[axis]
                width = int(torch.randint(0, max(1, int(MASK_SHARE * size)) + 1, (1,), generator=generator))
                start = int(torch.randint(0, size - width + 1, (1,), generator=generator))
                out.narrow(axis, start, width).fill_(x.mean())
            return out
        pixels = x * IMAGENET_STD + IMAGENET_MEAN
        if torch.rand((), generator=generator) < 0.5:
            pixels = pixels.flip(-1)
        pixels = (pixels * (0.8 + 0.4 * torch.rand((), generator=generator))).clamp(0.0, 1.0)
        return (pixels - IMAGENET_MEAN) / IMAGENET_STD

    def fake_sample(self, generator: torch.Generator) -> dict[str, Any]:
        sample = super().fake_sample(generator)
        if self.reads_waveform:
            sample["audio"] = wave.fake_waveform(self.waveform_length, generator)
        return sample

    # --------------------------------------------------------------------- the PreparedTask hooks

    def preprocessing(self) -> dict[str, Any]:
        """The preprocessing parameters of every representation the root holds (see `read_sections`)."""
        sections = {"audio": self.audio_preprocessing, "frames_per_second": 1, "frame_size": self.frame_size}
        return sections | ({"waveform": self.waveform} if self.waveform else {})

    def read_sections(self) -> list[str]:
        """The preprocessing sections of what this cell reads; only they enter its fingerprint."""
        unread = "audio" if self.reads_waveform else "waveform"
        return [k for k in self.preprocessing() if k != unread]

    def fields(self) -> dict[str, tuple[int, ...]]:
        frames = {"frames": (3, self.frame_size, self.frame_size), "source_size": (2,)}
        audio = {"waveform": (), "waveform_moments": (3,)} if self.reads_waveform else {"audio": self.audio_shape}
        return audio | frames

    def processor(self) -> Callable[[Item], Mapping[str, np.ndarray]]:
        """`process` bound to this task's frame size (picklable, for the worker processes)."""
        return functools.partial(type(self).process, frame_size=self.frame_size)

    def sample_problems(self, arrays: PreparedArrays, ids: list[str], labels: list[Label]) -> list[str]:
        empty = [ids[i] for i in range(len(ids)) if arrays.rows("frames", i) == 0]
        return [f"{len(empty)} clips have no frame, e.g. {empty[0]}"] if empty else []

    def datasets(self, arrays: PreparedArrays, parts: dict[str, tuple[list[int], list[Label]]]) -> dict[str, Dataset]:
        random_pick = self.params.train_frames == "random"
        audio_input: Callable[[int], Any] = functools.partial(spectrogram_input, arrays)
        if self.reads_waveform:
            moments = arrays.fields["waveform_moments"][parts["train"][0]]
            audio_input = wave.WaveformInput(arrays, *wave.statistics(moments), self.waveform_length)
        return {split: ClipDataset(arrays, rows, labels, self.params.frames, train=split == "train",
                                   random_pick=random_pick, audio_input=audio_input)
                for split, (rows, labels) in parts.items()}
