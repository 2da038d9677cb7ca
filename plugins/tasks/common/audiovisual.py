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

Where that work happens (`frames.py`): the loader gathers the stored uint8 frames and draws the choices (which
frames, each frame's box and flip) from the sample's own generator, seeded by the cell's seed, the epoch and the
sample's index; `on_device` crops, resizes, flips and normalises the whole batch on the cell's device
(`finish_clips`). Evaluation inputs are what they were, bit for bit on the CPU. Training inputs are not: the
draws come from other generators than torch's global one (version 2 of each task; version 1 drew them per
worker process), and the crop is resized by bilinear sampling in float (the stored frames are 224 x 224, so a box
never exceeds the output and torchvision's antialiasing was the same bilinear filter) where torchvision resized
the uint8 crop and rounded it: the pixels differ by at most one grey level inside the box and blend in the
pixels just outside it along its edge.

A dataset subclasses `AudioVisualTask` (a `PreparedTask`): its raw layout, its `items` (what to prepare, from
the shipped lists), its picklable `process`, and `lists()` (each split's ids and labels).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import Dataset

from mmbench.api import Batch, ModalitySpec
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
from mmbench_plugins.tasks.common.frames import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Reseeded,
    channel_stats,
    crop_box,
    finished,
    normalise,
    resized_crops,
)

CROP = 224
#: the largest share of the frequency or time axis one augmentation mask covers
MASK_SHARE = 0.15


class AudioVisualParams(HoldoutParams):
    frames: int = Field(1, ge=1, le=32, description="frames per clip given to the visual encoder (OGM-GE: 1, "
                                                    "its --fps; MLB: 3 on CREMA-D, 4 on AVE and UCF101)")
    train_frames: Literal["random", "first"] = Field(
        "random", description="which frames training takes: a random sorted pick (OGM-GE's intent) or the first")


# ------------------------------------------------------------------------------------------- frames


def training_clip(frames: torch.Tensor, source: tuple[int, int], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A training clip as the loader hands it over: the stored uint8 frames `(T, 3, S, S)`, each frame's
    `RandomResizedCrop` box drawn in the source video's `(width, height)` and mapped onto the stored frame
    (`boxes`, `(T, 4)`: top, left, height, width), and each frame's coin for a horizontal flip (`flip`, `(T,)`)."""
    size = frames.shape[-1]
    sx, sy = size / source[0], size / source[1]
    boxes, flips = [], []
    for _ in range(len(frames)):
        top, left, h, w = crop_box(*source, generator)
        boxes.append((round(top * sy), round(left * sx), max(1, round(h * sy)), max(1, round(w * sx))))
        flips.append(bool(torch.rand(1, generator=generator) < 0.5))
    return {"frames": frames, "boxes": torch.tensor(boxes, dtype=torch.float32), "flip": torch.tensor(flips)}


def finish_clips(visual: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A batch of loaded clips -> `(B, 3, T, 224, 224)`, ImageNet-normalised: a training clip's frames cut to their
    boxes, resized and flipped (and scaled by an augmented view's `brightness`, clipped to the pixel range),
    an evaluation clip's frames resized to 224 x 224 as OGM-GE's `Resize((224, 224))`, when stored at another
    size. Evaluation computes what the per-sample transform computed, bit for bit on the CPU."""
    frames = visual["frames"]
    b, t = frames.shape[:2]
    flat = frames.flatten(0, 1)
    if "boxes" in visual:
        pixels = resized_crops(flat, visual["boxes"].flatten(0, 1), visual["flip"].flatten(0, 1), CROP)
        if "brightness" in visual:
            factor = visual["brightness"].to(pixels.dtype).repeat_interleave(t).view(-1, 1, 1, 1)
            pixels = pixels.mul_(factor).clamp_(0.0, 255.0)
    elif flat.shape[-1] != CROP:
        from torchvision.transforms.v2 import functional as TF

        pixels = TF.resize(flat, [CROP, CROP], antialias=True)
    else:
        pixels = flat
    mean, std = (channel_stats(v, frames.device, 4) for v in (IMAGENET_MEAN, IMAGENET_STD))
    return normalise(pixels, mean, std).view(b, t, 3, CROP, CROP).transpose(1, 2)


def pick_frames(available: int, wanted: int, generator: torch.Generator | None) -> np.ndarray:
    """Indices of the frames to use: a sorted random pick (with a generator) or the first ones, cycling when too
    few."""
    if available >= wanted:
        if generator is None:
            return np.arange(wanted)
        return np.sort(torch.randperm(available, generator=generator)[:wanted].numpy())
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


class ClipDataset(Reseeded, Dataset):
    """Samples `{"audio": (1, F, T) or the waveform input, "visual": the clip as loaded, "label": ()}` of some
    prepared rows; `audio_input(row)` makes the audio input. A training clip is `training_clip`'s mapping, its
    choices drawn from the sample's generator (`Reseeded`); an evaluation clip is `{"frames": (T, 3, S, S)}`, the
    first frames. `finish_clips` makes either the model's input on the device."""

    def __init__(self, arrays: PreparedArrays, rows: list[int], labels: list[Label], frames: int, train: bool,
                 random_pick: bool, audio_input: Callable[[int], Any]) -> None:
        self.arrays, self.rows, self.labels = arrays, rows, labels
        self.frames, self.train, self.random_pick = frames, train, random_pick
        self.audio_input = audio_input

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        stored = self.arrays.get("frames", row)
        generator = self.generator(index) if self.train else None
        chosen = pick_frames(len(stored), self.frames, generator if self.random_pick else None)
        clip = torch.from_numpy(np.ascontiguousarray(stored[chosen]))
        if generator is None:
            visual: dict[str, torch.Tensor] = {"frames": clip}
        else:
            width, height = (int(v) for v in self.arrays.get("source_size", row))
            visual = training_clip(clip, (width, height), generator)
        return {"audio": self.audio_input(row), "visual": visual,
                "label": torch.tensor(self.labels[index], dtype=torch.long)}


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

    def on_device(self, batch: Batch, training: bool) -> Batch:
        """The loaded clips cropped, resized, flipped and normalised, a batch at a time (`finish_clips`)."""
        return finished(batch, {"visual": finish_clips})

    def augment(self, modality: str, x: Any, generator: torch.Generator) -> Any:
        """A label-preserving view for consistency balancers (UDA): the spectrogram with one frequency band
        and one time span (each up to `MASK_SHARE` of its axis) set to the spectrogram's mean (SpecAugment's
        masks; on a waveform, one span of samples set to 0), or the training clip mirrored with probability 1/2
        (its frames' flips toggled) and its brightness scaled by U(0.8, 1.2), clipped to the pixel range (applied
        on the device by `finish_clips`)."""
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
        mirror = bool(torch.rand((), generator=generator) < 0.5)
        brightness = 0.8 + 0.4 * torch.rand((), generator=generator)
        return {**x, "flip": x["flip"] ^ mirror, "brightness": brightness}

    def fake_sample(self, generator: torch.Generator) -> dict[str, Any]:
        """Generated audio of the prepared shape and a training clip of random frames, as the loader hands it over."""
        audio: Any = wave.fake_waveform(self.waveform_length, generator) if self.reads_waveform \
            else torch.randn((1, *self.audio_shape), generator=generator)
        frames = torch.randint(0, 256, (self.params.frames, 3, CROP, CROP), dtype=torch.uint8, generator=generator)
        return {"audio": audio, "visual": training_clip(frames, (CROP, CROP), generator),
                "label": torch.randint(0, self.num_classes, (), generator=generator)}

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
