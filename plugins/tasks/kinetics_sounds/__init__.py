"""`kinetics_sounds`: Kinetics-Sounds, Kinetics clips of 31 classes with salient audio (the imbalance
literature's version of the subset of Arandjelović & Zisserman, ICCV 2017), as OGM-GE (Peng et al., CVPR 2022;
GeWu-Lab/OGM-GE_CVPR2022 @ 343dc1d, `data/KineticSound/`) lists and prepares it.

Raw layout (Kinetics has no Kinetics-Sounds release, so mmbench defines one): the clips named by the
OGM-GE list ids, `<raw>/train/<id>.mp4` and `<raw>/test/<id>.mp4`, with `my_train.txt` / `my_test.txt` beside
them. The shipped copies of those lists (OGM-GE `data/KineticSound/`, `<id>,10,<label>`, CRLF; 14,799 train and
2,597 test clips) are what is prepared; the raw ones are compared with them and differences reported.

* Class ids 0–30 as in the lists; the id -> name mapping is not published, so classes are named by their id.
* Validation: a stratified share carved out of train (the lists have none).
* Audio (OGM-GE `process_audio.py`, after its ffmpeg conversion to 16 kHz): mono 16 kHz, mean removed, Kaldi
  fbank (torchaudio: 128 mel bins, Hanning window, 10 ms shift, HTK-compatible, no dither, no energy), zero-
  padded or cut to 1,024 frames, normalised as (x + 4.503877) / (2 · 5.141276): 1024 x 128.
* Frames: the first frame of every second, at 224 x 224 (OGM-GE's generic loader takes 3 per clip).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from mmbench.api import DataError, hookimpl
from mmbench.api.data import Item, Label, read_audio, resample
from mmbench_plugins.tasks.common.audiovisual import AudioVisualParams, AudioVisualTask, clip_fields

NUM_CLASSES = 31
AUDIO: dict[str, Any] = {"sample_rate": 16000, "num_mel_bins": 128, "frame_shift_ms": 10, "frames": 1024,
                         "norm_mean": -4.503877, "norm_std": 5.141276}
LISTS = {"train": "my_train.txt", "test": "my_test.txt"}


class KineticsSoundsParams(AudioVisualParams):
    frames: int = Field(3, ge=1, le=32, description="frames per clip (OGM-GE's loader: 3)")


def fbank(samples: np.ndarray) -> np.ndarray:
    """OGM-GE's normalised Kaldi filterbank of 16 kHz mono samples, 1024 x 128."""
    from torchaudio.compliance import kaldi

    wave = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None]
    features = kaldi.fbank(wave - wave.mean(), htk_compat=True, sample_frequency=AUDIO["sample_rate"],
                           use_energy=False, window_type="hanning", num_mel_bins=AUDIO["num_mel_bins"], dither=0.0,
                           frame_shift=AUDIO["frame_shift_ms"])
    out = torch.zeros(AUDIO["frames"], AUDIO["num_mel_bins"])
    keep = min(AUDIO["frames"], features.shape[0])
    out[:keep] = features[:keep]
    return ((out - AUDIO["norm_mean"]) / (AUDIO["norm_std"] * 2)).numpy()


def process_clip(item: Item, frame_size: int) -> dict[str, np.ndarray]:
    [video] = item.sources
    samples, rate = read_audio(video)
    return clip_fields(fbank(resample(samples, rate, AUDIO["sample_rate"])), video, frame_size)


def parse_line(line: str, where: str) -> tuple[str, int]:
    """`<clip id>,<duration>,<label>` -> (clip id, label)."""
    fields = line.strip().split(",")
    if len(fields) != 3 or not fields[2].strip().isdigit():
        raise DataError(f"{where}: expected <clip id>,<duration>,<label>, got {line!r}")
    label = int(fields[2])
    if not 0 <= label < NUM_CLASSES:
        raise DataError(f"{where}: unknown label {label} (Kinetics-Sounds has labels 0..{NUM_CLASSES - 1})")
    return fields[0], label


class KineticsSoundsTask(AudioVisualTask):
    """Kinetics-Sounds (31 classes), log-mel filterbank + video frames; OGM-GE's train/test lists."""

    name = "kinetics_sounds"
    version = "2"  # 2: training crops drawn per sample and finished on the device (common/audiovisual.py)
    prepared_version = "1"  # the prepared arrays are those of version 1
    Params = KineticsSoundsParams
    source = ("Kinetics-400 videos (github.com/cvdfoundation/kinetics-dataset), the clips of OGM-GE's "
              "data/KineticSound lists")
    classes = tuple(str(i) for i in range(NUM_CLASSES))
    audio_shape = (AUDIO["frames"], AUDIO["num_mel_bins"])
    audio_preprocessing = AUDIO
    lists_folder = Path(__file__).parent / "lists"
    process = staticmethod(process_clip)
    layout = ("  <raw>/train/<clip id>.mp4  e.g. --4-0ihtnBU_000058_000068.mp4\n"
              "  <raw>/test/<clip id>.mp4   e.g. -3Mwkq-7TV4_2.mp4\n"
              "  <raw>/my_train.txt, <raw>/my_test.txt  <clip id>,10,<label> per line")

    def _pairs(self, split: str) -> list[tuple[str, int]]:
        name = LISTS[split]
        return [parse_line(line, f"shipped list {name} line {n}")
                for n, line in enumerate(self.split_files().lines(name), 1)]

    def lists(self) -> dict[str, list[tuple[str, Label]]]:
        return {split: [(f"{split}/{clip}", label) for clip, label in self._pairs(split)] for split in LISTS}

    def items(self, raw: Path) -> list[Item]:
        if not (raw / "train").is_dir() and not (raw / "test").is_dir():
            raise self.raw_error(raw, "has neither a train/ nor a test/ folder of clips")
        return [Item(key, label, (raw / f"{key}.mp4",)) for pairs in self.lists().values() for key, label in pairs]

    def annotation_problems(self, raw: Path) -> list[dict[str, str]]:
        problems = []
        for split, name in LISTS.items():
            path = raw / name
            if not path.is_file():
                problems.append({"file": str(path), "problem": "missing (the shipped list is used)"})
                continue
            shipped = dict(self._pairs(split))
            for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    clip, label = parse_line(line, f"{path} line {number}")
                except DataError as exc:
                    problems.append({"file": str(path), "line": str(number), "problem": str(exc)})
                    continue
                if shipped.get(clip, label) != label:
                    problems.append({"file": str(path), "line": str(number),
                                     "problem": f"{clip} has label {label}; the shipped list says {shipped[clip]}"})
        return problems


@hookimpl
def mmbench_tasks():
    return [KineticsSoundsTask]
