"""`cremad`: CREMA-D audio-visual emotion recognition, 6 classes (Cao et al., IEEE Transactions on Affective
Computing 2014), as OGM-GE (Peng et al., CVPR 2022; GeWu-Lab/OGM-GE_CVPR2022 @ 343dc1d) prepares it.

Raw release (github.com/CheyneyComputerScience/CREMA-D, Git LFS): `AudioWAV/<stem>.wav` (16 kHz mono) and
`VideoFlash/<stem>.flv`, stems `ActorID_Sentence_Emotion_Level` (e.g. `1001_DFA_ANG_XX`).

* Splits (`split`): `ogm_ge` (default) — OGM-GE's `data/CREMAD/train.csv` (6,698 clips) / `test.csv` (744),
  with a stratified validation share carved out of train (the release has none; OGM-GE selected on test);
  `mlb_folds` — the actor-independent train/val/test folds of MLB (Kontras et al., BMVC 2024; kkontras/MLB
  @ a3d6911, `datasets/CREMAD/data_splits_VALV.pkl`, shipped as `data_splits_VALV.json`, folds 1–5; fold 1:
  4,043 / 878 / 899). Both ship in `lists/` with their sha256; prepare keeps every clip either names.
* Class ids (all reference repositories): NEU 0, HAP 1, SAD 2, FEA 3, DIS 4, ANG 5.
* Audio (OGM-GE `CramedDataset`): resampled to 22,050 Hz, tiled to 3 s (66,150 samples), clipped to [-1, 1],
  STFT n_fft 512 / hop 353 (Hann, centred, reflect padding as librosa < 0.10), log(|S| + 1e-7): 257 x 188.
* Waveform (`audio: waveform`, MLB's Conformer setting; `common/waveform.py`): the whole 16 kHz clip, standardised by
  the training split's mean and std, zero-padded to 5.005 s (the release's longest clip) with an attention
  mask. Prepare writes it beside the spectrogram, so one root serves both.
* Frames: the first frame of every second (OGM-GE `video2frame_update`, 1 fps), stored at 224 x 224. MLB's
  Conformer setting reads EfficientNet-B2 features of face crops of every video frame instead (HSEmotion's
  face detection and alignment, kept outside MLB's code); that pipeline is not reproducible offline, so
  `efficientnet_b2` reads these full 1-fps frames (the videos are close-up faces) as the documented
  substitute, `frames` of them (MLB's ResNet setting: 3).
A WAV that is not 16 kHz is not the release's and is reported as bad.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from mmbench.api import DataError, hookimpl
from mmbench.api.data import Item, Label, MediaError, read_audio
from mmbench_plugins.tasks.common.audiovisual import AudioVisualParams, AudioVisualTask, clip_fields, stft_features
from mmbench_plugins.tasks.common.waveform import waveform_fields

CLASSES = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
RELEASE_RATE = 16000
AUDIO = {"sample_rate": 22050, "seconds": 3, "n_fft": 512, "hop": 353, "pad_mode": "reflect"}
#: MLB's Wav2Vec2 input; 5.005 s is the longest clip (MLB's recorded `max_duration`, wav_norm_16000_fold1.pkl)
WAVEFORM: dict[str, Any] = {"sample_rate": 16000, "seconds": 5.005}


class CremadParams(AudioVisualParams):
    split: Literal["ogm_ge", "mlb_folds"] = Field(
        "ogm_ge", description="OGM-GE's train/test csv (validation carved from train) or MLB's actor-independent "
                              "train/val/test folds")
    fold: int = Field(1, ge=1, le=5, description="the MLB fold (split: mlb_folds), the key of "
                                                "data_splits_VALV.json; MLB reports folds 1-3 (its config's 0-2)")
    audio: Literal["spectrogram", "waveform"] = Field(
        "spectrogram", description="OGM-GE's log spectrogram (1, 257, 188) or MLB's standardised 16 kHz waveform "
                                   "(80,080 samples with an attention mask, for the conformer encoder)")


def process_clip(item: Item, frame_size: int) -> dict[str, np.ndarray]:
    """One CREMA-D clip -> its spectrogram, waveform, 1-fps frames and the video's size."""
    wav, flv = item.sources
    samples, rate = read_audio(wav)
    if rate != RELEASE_RATE:
        raise MediaError(f"{wav}: sample rate {rate} Hz; the release's AudioWAV files are {RELEASE_RATE} Hz "
                         "(replace it with the released file)", wav)
    fields = clip_fields(stft_features(samples, rate, AUDIO), flv, frame_size)
    return fields | waveform_fields(samples, rate, WAVEFORM["sample_rate"])


class CremadTask(AudioVisualTask):
    """CREMA-D (6 emotions), audio spectrogram + face video frames; OGM-GE split or MLB's actor folds."""

    name = "cremad"
    version = "2"  # 2: training crops drawn per sample and finished on the device (common/audiovisual.py)
    prepared_version = "1"  # the prepared arrays are those of version 1
    Params = CremadParams
    params: CremadParams
    source = "github.com/CheyneyComputerScience/CREMA-D (AudioWAV/ and VideoFlash/, via Git LFS)"
    classes = CLASSES
    audio_shape = (257, 188)
    audio_preprocessing = AUDIO
    waveform = WAVEFORM
    lists_folder = Path(__file__).parent / "lists"
    process = staticmethod(process_clip)
    layout = ("  <raw>/AudioWAV/<stem>.wav    e.g. 1001_DFA_ANG_XX.wav (16 kHz mono)\n"
              "  <raw>/VideoFlash/<stem>.flv  e.g. 1001_DFA_ANG_XX.flv")

    def _csv(self, name: str) -> list[tuple[str, Label]]:
        pairs: list[tuple[str, Label]] = []
        for number, row in enumerate(csv.reader(self.split_files().lines(name)), 1):
            stem, emotion = row[0].strip(), row[1].strip()
            if emotion not in CLASSES or stem.split("_")[2] != emotion:
                raise DataError(f"shipped list {name} line {number}: unknown or inconsistent label {emotion!r} "
                                f"for {stem!r} (classes: {', '.join(CLASSES)})")
            pairs.append((stem, CLASSES.index(emotion)))
        return pairs

    def _folds(self) -> dict[str, list[tuple[str, Label]]]:
        folds = json.loads(self.split_files().text("data_splits_VALV.json"))
        stems = {split: [name.split("-")[0].removesuffix(".wav") for name in names]
                 for split, names in folds[str(self.params.fold)].items()}
        return {split: [(s, CLASSES.index(s.split("_")[2])) for s in names] for split, names in stems.items()}

    def lists(self) -> dict[str, list[tuple[str, Label]]]:
        if self.params.split == "mlb_folds":
            return self._folds()
        return {"train": self._csv("train.csv"), "test": self._csv("test.csv")}

    def items(self, raw: Path) -> list[Item]:
        if not (raw / "AudioWAV").is_dir() or not (raw / "VideoFlash").is_dir():
            raise self.raw_error(raw, "has no AudioWAV/ or VideoFlash/ folder")
        pairs = dict(self._csv("train.csv") + self._csv("test.csv"))
        return [Item(stem, label, (raw / "AudioWAV" / f"{stem}.wav", raw / "VideoFlash" / f"{stem}.flv"))
                for stem, label in pairs.items()]


@hookimpl
def mmbench_tasks():
    return [CremadTask]
