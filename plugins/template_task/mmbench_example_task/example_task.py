"""`example_task`: <one line: the dataset, its classes, the paper that releases it (authors, venue, year)>.

Raw layout (`layout` below; `source`: where the release is obtained): `samples.csv` (`id,split,label` per line, the
split `train`, `val` or `test`, the label a class name), `audio/<id>.wav` and `images/<id>.png`. A line that cannot
be read is reported by prepare as a bad sample (`samples.csv:<line>`), with the missing and undecodable files.

Prepared fields: `audio`, the log-magnitude spectrogram of the first second at 8 kHz (tiled when shorter):
(129, 63); `image`, the RGB image resized to `image_size` squared: (3, S, S), uint8. <Say where each step comes
from (the paper; the official code with its repository and commit) and where it departs.>
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from mmbench.api import ModalitySpec, Params, TensorDictDataset, hookimpl
from mmbench.api.data import Item, PreparedTask, fit_length, log_spectrogram, read_audio, read_image, resample

CLASSES = ("negative", "positive")
SPLITS = ("train", "val", "test")
#: the audio preprocessing: it enters the data fingerprint
AUDIO = {"sample_rate": 8000, "seconds": 1, "n_fft": 256, "hop": 128}
SPECTROGRAM = (AUDIO["n_fft"] // 2 + 1, 1 + AUDIO["sample_rate"] * AUDIO["seconds"] // AUDIO["hop"])


class ExampleTaskParams(Params):
    image_size: int = Field(32, ge=8, le=512, description="side of the square images, resized at prepare time")


def process(item: Item, image_size: int) -> dict[str, np.ndarray]:
    """One sample's raw files -> its prepared fields; a module-level function, as it runs in worker processes."""
    wav, png = item.sources
    samples, rate = read_audio(wav)
    wave = fit_length(resample(samples, rate, AUDIO["sample_rate"]), AUDIO["sample_rate"] * AUDIO["seconds"])
    return {"audio": log_spectrogram(wave, AUDIO["n_fft"], AUDIO["hop"]), "image": read_image(png, image_size)}


class ExampleTask(PreparedTask):
    """<One line shown by `mmbench list tasks`.>"""

    name = "example_task"
    version = "1"  # bump it when the splits or the preprocessing change: results then never rank together
    Params = ExampleTaskParams
    params: ExampleTaskParams
    metrics = ("accuracy", "macro_f1")
    primary_metric = "accuracy"
    classes = CLASSES
    source = "<where the release is obtained>"
    layout = ("  <raw>/samples.csv        id,split,label per line (split: train, val or test)\n"
              "  <raw>/audio/<id>.wav     one mono WAV per sample\n"
              "  <raw>/images/<id>.png    one image per sample")

    @property
    def modalities(self) -> dict[str, ModalitySpec]:
        size = self.params.image_size
        return {"audio": ModalitySpec("audio", "spectrogram", (1, *SPECTROGRAM)),
                "image": ModalitySpec("image", "image", (3, size, size))}

    def preprocessing(self) -> dict:
        return {"audio": AUDIO, "image_size": self.params.image_size}

    def items(self, raw: Path) -> list[Item]:
        path = raw / "samples.csv"
        if not path.is_file():
            raise self.raw_error(raw, "has no samples.csv")
        items = []
        with path.open(newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.reader(handle), 1):
                if len(row) != 3 or row[1] not in SPLITS or row[2] not in CLASSES:
                    items.append(Item.bad_line(path, number, f"expected id,split,label with a split of {SPLITS} "
                                                             f"and a label of {CLASSES}, got {row}"))
                    continue
                sample, split, label = row
                items.append(Item(sample, CLASSES.index(label),
                                  (raw / "audio" / f"{sample}.wav", raw / "images" / f"{sample}.png"), split=split))
        return items

    def processor(self):
        return functools.partial(process, image_size=self.params.image_size)

    def fields(self) -> dict[str, tuple[int, ...]]:
        size = self.params.image_size
        return {"audio": SPECTROGRAM, "image": (3, size, size)}

    def datasets(self, arrays, parts):
        """Each split in memory (a small dataset); a large one reads its rows from `arrays` in a Dataset instead."""
        def dataset(rows: list[int], labels: list[int]) -> TensorDictDataset:
            audio = torch.from_numpy(np.array(arrays.fields["audio"][rows]))[:, None]
            image = torch.from_numpy(np.array(arrays.fields["image"][rows])).float() / 255.0
            return TensorDictDataset({"audio": audio, "image": (image - 0.5) / 0.25}, torch.tensor(labels))

        return {split: dataset(rows, labels) for split, (rows, labels) in parts.items()}


@hookimpl
def mmbench_tasks():
    return [ExampleTask]
