"""The contract every mmbench task keeps, on a tiny copy of the release written here, and what the dataset's own
files say (labels, a bad line)."""

import json

import numpy as np
import pytest
import soundfile
from mmbench_example_task.example_task import CLASSES, ExampleTask
from PIL import Image

from mmbench.api import DataError
from mmbench.testing import check_task


def write_release(raw, per_split=None):
    """samples.csv, a WAV (a tone whose pitch says the class) and a PNG (whose brightness says it) per sample."""
    rows = []
    for split, count in (per_split or {"train": 3, "val": 2, "test": 2}).items():
        for label in CLASSES:
            for k in range(count):
                sample = f"{split}_{label}_{k}"
                pitch, shade = (300.0, 40) if label == CLASSES[0] else (900.0, 200)
                (raw / "audio").mkdir(parents=True, exist_ok=True)
                (raw / "images").mkdir(parents=True, exist_ok=True)
                tone = 0.3 * np.sin(2 * np.pi * pitch * np.arange(8000) / 16000).astype(np.float32)
                soundfile.write(str(raw / "audio" / f"{sample}.wav"), tone, 16000)
                Image.fromarray(np.full((48, 64, 3), shade + 3 * k, np.uint8)).save(raw / "images" / f"{sample}.png")
                rows.append(f"{sample},{split},{label}\n")
    (raw / "samples.csv").write_text("".join(rows))
    return raw


def test_contract(tmp_path):
    """Prepare, check, read and train one step; the image read by the grid's encoder (a ResNet's batch norms need
    more than the two 32 x 32 images of a training step)."""
    check_task(ExampleTask, raw=write_release(tmp_path / "raw"), root=tmp_path / "root", encoders={"image": "vit"})


def test_labels_and_splits_are_the_csv_s(tmp_path):
    task = ExampleTask(ExampleTask.Params(), root=tmp_path / "root")
    task.prepare(write_release(tmp_path / "raw"))
    splits = task.splits()
    assert {s: len(d) for s, d in splits.items()} == {"train": 6, "val": 4, "test": 4}
    for sample in (splits["test"][i] for i in range(4)):
        bright = float(sample["image"].mean()) > 0
        assert int(sample["label"]) == int(bright)  # the positive class's images are the bright ones


def test_a_bad_line_and_a_missing_image_are_reported_together(tmp_path):
    raw = write_release(tmp_path / "raw")
    with (raw / "samples.csv").open("a") as handle:
        handle.write("extra,train,unknown\n")
    (raw / "images" / "test_positive_1.png").unlink()
    with pytest.raises(DataError, match="1 of the 14 samples present are corrupt"):
        ExampleTask(ExampleTask.Params(), root=tmp_path / "root").prepare(raw, partial=True)
    report = json.loads((tmp_path / "root" / "prepare-report.json").read_text())
    assert [b["id"] for b in report["bad"]] == ["samples.csv:15"]
    assert [m["id"] for m in report["missing"]] == ["test_positive_1"]
