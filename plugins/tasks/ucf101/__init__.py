"""`ucf101`: UCF101's audio-visual subset, the 51 action classes whose clips carry sound (Soomro, Zamir & Shah,
arXiv 1212.0402, 2012), under the 51-class protocol of MLB (Kontras et al., BMVC 2024; kkontras/MLB @ a3d6911,
`datasets/UCF/`).

Raw release (crcv.ucf.edu/data/UCF101.php): `UCF-101/<Class>/v_<Class>_gGG_cCC.avi` and the recognition split
archive `ucfTrainTestlist/` (`classInd.txt` "<id> <Class>", `trainlist0k.txt` "<Class>/<file>.avi <id>",
`testlist0k.txt` "<Class>/<file>.avi"; CRLF). Note the release's quirk: folder `HandstandPushups`, files
`v_HandStandPushups_...`; class names are matched without regard to case.

* The split lists come with the release, so prepare copies them into the prepared root and their sha256
  enter the fingerprint (no verified copy of the official lists was available to ship). The 51 class names
  ship as `lists/audio_classes.txt` (the UCF101 classes with an audio track; MLB's `class_change.pkl`, which
  holds its list, is unpublished); ids 0–50 follow that file, which is in `classInd.txt` order.
* Splits: official fold `fold` (1–3): its train list (a stratified validation share carved out) and test list,
  restricted to the 51 classes. A clip of those classes without an audio stream is reported as bad.
* Audio (MLB `UCF101_Dataset`): mono 16 kHz, clipped to [-1, 1], the first 3 s (tiled when shorter),
  `librosa.stft(n_fft=512, hop=353)` with librosa >= 0.10's zero padding (MLB's era), log(|S| + 1e-7): 257 x 136.
* Frames: the first frame of every second (MLB: frame index divisible by the fps), at 224 x 224. MLB drops
  clips shorter than its 4 frames; here they repeat their frames. MLB normalises 0–255 pixel values with the
  ImageNet statistics (no /255); here pixels are scaled to [0, 1] first, as torchvision's models expect.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from mmbench.api import DataError, hookimpl
from mmbench.api.data import Item, Label, SplitFiles, read_audio
from mmbench_plugins.tasks.common.audiovisual import AudioVisualParams, AudioVisualTask, clip_fields, stft_features

#: the shipped list of the 51 audio classes
CLASS_LIST = Path(__file__).parent / "lists" / "audio_classes.txt"
CLASSES = tuple(CLASS_LIST.read_text().split())
AUDIO = {"sample_rate": 16000, "seconds": 3, "n_fft": 512, "hop": 353, "pad_mode": "constant"}
RELEASE_LISTS = ("classInd.txt", *(f"{kind}list0{k}.txt" for kind in ("train", "test") for k in (1, 2, 3)))


class Ucf101Params(AudioVisualParams):
    frames: int = Field(4, ge=1, le=32, description="frames per clip (MLB: 4)")
    fold: int = Field(1, ge=1, le=3, description="the official train/test split (MLB reports the mean over 1-3)")


def process_clip(item: Item, frame_size: int) -> dict[str, np.ndarray]:
    [video] = item.sources
    samples, rate = read_audio(video)
    return clip_fields(stft_features(samples, rate, AUDIO), video, frame_size)


class Ucf101Task(AudioVisualTask):
    """UCF101's 51 audio classes, audio spectrogram + video frames; official folds 1-3 (MLB's protocol)."""

    name = "ucf101"
    version = "2"  # 2: training crops drawn per sample and finished on the device (common/audiovisual.py)
    prepared_version = "1"  # the prepared arrays are those of version 1
    Params = Ucf101Params
    params: Ucf101Params
    source = "crcv.ucf.edu/data/UCF101.php (UCF101.rar and UCF101TrainTestSplits-RecognitionTask.zip)"
    classes = CLASSES
    audio_shape = (257, 136)
    audio_preprocessing = AUDIO
    process = staticmethod(process_clip)
    layout = ("  <raw>/UCF-101/<Class>/v_<Class>_gGG_cCC.avi   e.g. ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi\n"
              "  <raw>/ucfTrainTestlist/classInd.txt, trainlist01..03.txt, testlist01..03.txt")

    def import_lists(self, raw: Path) -> None:
        """The release's lists and the shipped class list, copied into `<root>/lists` (`split_files` reads them)."""
        source = raw / "ucfTrainTestlist"
        absent = [name for name in RELEASE_LISTS if not (source / name).is_file()]
        if absent:
            raise self.raw_error(raw, f"lacks the split file(s) {', '.join(f'ucfTrainTestlist/{a}' for a in absent)}")
        SplitFiles.copy({**{name: source / name for name in RELEASE_LISTS}, CLASS_LIST.name: CLASS_LIST},
                        self._root / "lists")

    def _class_ids(self, files: SplitFiles) -> dict[str, int]:
        """classInd's 1-based id of every class, by lower-case name."""
        ids = {}
        for number, line in enumerate(files.lines("classInd.txt"), 1):
            fields = line.split()
            if len(fields) != 2 or not fields[0].isdigit():
                raise DataError(f"classInd.txt line {number}: expected '<id> <Class>', got {line!r}")
            ids[fields[1].lower()] = int(fields[0])
        missing = [c for c in CLASSES if c.lower() not in ids]
        if missing:
            raise DataError(f"classInd.txt lacks the audio classes {missing}; is it UCF101's?")
        return ids

    def _fold(self, files: SplitFiles, kind: str, fold: int) -> list[tuple[str, Label]]:
        """(Class/file.avi, label 0-50) of one list, audio classes only."""
        audio = {c.lower(): i for i, c in enumerate(CLASSES)}
        pairs: list[tuple[str, Label]] = []
        for line in files.lines(f"{kind}list0{fold}.txt"):
            path = line.split()[0]
            name = path.split("/")[0].lower()
            if name in audio:
                pairs.append((path, audio[name]))
        return pairs

    def lists(self) -> dict[str, list[tuple[str, Label]]]:
        files = self.split_files()
        self._class_ids(files)
        return {kind: self._fold(files, kind, self.params.fold) for kind in ("train", "test")}

    def items(self, raw: Path) -> list[Item]:
        if not (raw / "UCF-101").is_dir():
            raise self.raw_error(raw, "has no UCF-101/ folder of videos")
        files = self.split_files()
        self._class_ids(files)
        clips = {path: label for fold in (1, 2, 3) for kind in ("train", "test")
                 for path, label in self._fold(files, kind, fold)}
        return [Item(path, label, (raw / "UCF-101" / path,)) for path, label in clips.items()]

    def annotation_problems(self, raw: Path) -> list[dict[str, str]]:
        files = self.split_files()
        ids = self._class_ids(files)
        problems = []
        for fold in (1, 2, 3):
            name = f"trainlist0{fold}.txt"
            for number, line in enumerate(files.lines(name), 1):
                fields = line.split()
                folder = fields[0].split("/")[0].lower()
                if folder not in ids:
                    problems.append({"file": name, "line": str(number), "problem": f"unknown class {folder!r}"})
                elif len(fields) != 2 or not fields[1].isdigit() or int(fields[1]) != ids[folder]:
                    problems.append({"file": name, "line": str(number),
                                     "problem": f"label {fields[1:]} is not classInd's {ids[folder]}"})
        return problems


@hookimpl
def mmbench_tasks():
    return [Ucf101Task]
