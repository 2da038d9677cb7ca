"""`ave`: AVE, audio-visual event localisation videos classified by their event, 28 classes (Tian et al.,
ECCV 2018), as PMR (Fan et al., CVPR 2023; fanyunfeng-bit/Modal-Imbalance-PMR @ 3615e48) and MLB (Kontras et al.,
BMVC 2024; kkontras/MLB @ a3d6911, `datasets/AVE/`) prepare it.

Raw release (github.com/YapengTian/AVE-ECCV18, linked archive): `AVE/<VideoID>.mp4` (10 s YouTube clips) and
`Annotations.txt` (header `Category&VideoID&Quality&StartTime&EndTime`, then one `&`-separated line per event).

* Splits: the official `trainSet.txt` / `valSet.txt` / `testSet.txt` (3,339 / 402 / 402 lines, no header,
  LF), shipped with their sha256. Split lines on `&` only: categories contain commas and parentheses.
  A video listed twice in one list with two categories keeps its first line (PMR, MLB; `duplicates: last` is
  OGM-GE's choice). A sample is one (video, event window): 8 videos are in both train and test lists, as
  released.
* Class ids: the order of first appearance in `testSet.txt` (PMR builds it so; MLB hard-codes the same).
* Audio (MLB `extractWav_SE`): the clip's audio at 16 kHz, the samples of [StartTime, EndTime) seconds, tiled
  and cut to 10 s (160,000 samples), clipped to [-1, 1], `scipy.signal.spectrogram(nperseg=512,
  noverlap=353)`, log(S + 1e-7): 257 x 1004.
* Frames (MLB `video2frame_update_SE`): the first frame of every second from StartTime to EndTime, at 224 x 224.
  MLB pads short events to 10 stored frames with random extra frames; here a clip with fewer frames than
  requested repeats them (`frames`, MLB: 4).
`Annotations.txt` is compared with the shipped lists; an unknown category or a listed event it lacks is
reported (the shipped lists are what is prepared).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from mmbench.api import DataError, hookimpl
from mmbench.api.data import Item, Label, fit_length, log_power_spectrogram, read_audio, resample
from mmbench_plugins.tasks.common.audiovisual import AudioVisualParams, AudioVisualTask, clip_fields

CLASSES = (
    "Church bell", "Male speech, man speaking", "Bark", "Fixed-wing aircraft, airplane", "Race car, auto racing",
    "Female speech, woman speaking", "Helicopter", "Violin, fiddle", "Flute", "Ukulele", "Frying (food)", "Truck",
    "Shofar", "Motorcycle", "Acoustic guitar", "Train horn", "Clock", "Banjo", "Goat", "Baby cry, infant cry", "Bus",
    "Chainsaw", "Cat", "Horse", "Toilet flush", "Rodents, rats, mice", "Accordion", "Mandolin",
)
AUDIO = {"sample_rate": 16000, "seconds": 10, "nperseg": 512, "noverlap": 353}
LISTS = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}


class AveParams(AudioVisualParams):
    frames: int = Field(4, ge=1, le=32, description="frames per clip (MLB and PMR: 4)")
    duplicates: Literal["first", "last"] = Field(
        "first", description="a video listed twice in one list keeps its first line (PMR, MLB) or last (OGM-GE)")


def event_key(video: str, start: int, end: int) -> str:
    return f"{video}&{start}&{end}"


def process_event(item: Item, frame_size: int) -> dict[str, np.ndarray]:
    """One AVE event -> the spectrogram of its window's audio, its 1-fps frames and the video's size."""
    [video] = item.sources
    start, end = item.extra
    samples, rate = read_audio(video)
    wave = resample(samples, rate, AUDIO["sample_rate"])
    wave = wave[AUDIO["sample_rate"] * start:AUDIO["sample_rate"] * end]
    wave = fit_length(wave, AUDIO["sample_rate"] * AUDIO["seconds"])
    spectrogram = log_power_spectrogram(wave, AUDIO["sample_rate"], AUDIO["nperseg"], AUDIO["noverlap"])
    return clip_fields(spectrogram, video, frame_size, start=start, end=end)


def parse_line(line: str, where: str) -> tuple[str, str, int, int]:
    """`Category&VideoID&Quality&StartTime&EndTime` -> (category, video, start, end)."""
    fields = line.split("&")
    if len(fields) != 5:
        raise DataError(f"{where}: expected Category&VideoID&Quality&StartTime&EndTime, got {line!r}")
    category, video, _, start, end = fields
    return category, video, int(start), int(end)


class AveTask(AudioVisualTask):
    """AVE (28 audio-visual events), audio spectrogram + video frames of the event window; official splits."""

    name = "ave"
    version = "2"  # 2: training crops drawn per sample and finished on the device (common/audiovisual.py)
    prepared_version = "1"  # the prepared arrays are those of version 1
    Params = AveParams
    params: AveParams
    source = "github.com/YapengTian/AVE-ECCV18 (the AVE_Dataset archive it links: AVE/*.mp4, Annotations.txt)"
    classes = CLASSES
    audio_shape = (257, 1004)
    audio_preprocessing = AUDIO
    lists_folder = Path(__file__).parent / "lists"
    process = staticmethod(process_event)
    layout = ("  <raw>/AVE/<VideoID>.mp4   e.g. c---zaDCTaE.mp4 (10 s clips)\n"
              "  <raw>/Annotations.txt     Category&VideoID&Quality&StartTime&EndTime (header line first)")

    def preprocessing(self) -> dict:
        return {**super().preprocessing(), "window": "event"}

    def _events(self, name: str) -> list[tuple[str, int, int, int]]:
        """(key, label, start, end) of each line of a shipped list, duplicates resolved by `duplicates`."""
        chosen: dict[str, tuple[str, int, int, int]] = {}
        for number, line in enumerate(self.split_files().lines(name), 1):
            category, video, start, end = parse_line(line, f"shipped list {name} line {number}")
            if category not in CLASSES:
                raise DataError(f"shipped list {name} line {number}: unknown category {category!r}")
            if video in chosen and self.params.duplicates == "first":
                continue
            chosen.pop(video, None)
            chosen[video] = (event_key(video, start, end), CLASSES.index(category), start, end)
        return list(chosen.values())

    def lists(self) -> dict[str, list[tuple[str, Label]]]:
        return {split: [(key, label) for key, label, _, _ in self._events(name)] for split, name in LISTS.items()}

    def items(self, raw: Path) -> list[Item]:
        if not (raw / "AVE").is_dir():
            raise self.raw_error(raw, "has no AVE/ folder of videos")
        items: dict[str, Item] = {}
        for name in LISTS.values():
            for key, label, start, end in self._events(name):
                video = key.split("&")[0]
                items.setdefault(key, Item(key, label, (raw / "AVE" / f"{video}.mp4",), (start, end)))
        return list(items.values())

    def annotation_problems(self, raw: Path) -> list[dict[str, str]]:
        path = raw / "Annotations.txt"
        if not path.is_file():
            return [{"file": str(path), "problem": "missing: the release's annotation file is not in the raw folder"}]
        problems, seen = [], set()
        lines = path.read_text(encoding="utf-8-sig").splitlines()
        for number, line in enumerate(lines[1:], 2):
            if not line.strip():
                continue
            try:
                category, video, start, end = parse_line(line, f"{path} line {number}")
            except (DataError, ValueError) as exc:
                problems.append({"file": str(path), "line": str(number), "problem": f"malformed: {exc}"})
                continue
            if category not in CLASSES:
                problems.append({"file": str(path), "line": str(number),
                                 "problem": f"unknown category {category!r} (not one of AVE's 28 classes)"})
            seen.add(event_key(video, start, end))
        present = {p.stem for p in (raw / "AVE").glob("*.mp4")}
        listed = {key for events in map(self._events, LISTS.values()) for key, *_ in events
                  if key.split("&")[0] in present}
        for key in sorted(listed - seen):
            problems.append({"file": str(path), "problem": f"the shipped lists' event {key} is not annotated here"})
        return problems


@hookimpl
def mmbench_tasks():
    return [AveTask]
