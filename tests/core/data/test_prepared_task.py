"""`PreparedTask`'s lifecycle on a toy dataset of the shape a third party writes (a CSV of ids, splits and labels; a
PNG and a WAV per sample): every defect reported under the file at fault and named on the console, splits recorded
from the release, an empty validation hold-out and a class missing from a split reported by `check` (and `mmbench
data check` exits 1, `mmbench validate` of a grid on it exits 2), the same reasons when training would read the
split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from mmbench import registry as registry_lib
from mmbench.api import DataError, ModalitySpec, TensorDictDataset, hookimpl
from mmbench.api.data import HoldoutParams, Item, PreparedTask, read_audio, read_image
from mmbench.cli import app
from mmbench.data import prepare as prepare_lib
from tests.fixtures.release import write_wav

runner = CliRunner()
SAMPLES = 400


def process_pair(item: Item) -> dict[str, np.ndarray]:
    """A sample's 8 x 8 image and its first 400 audio samples (module level: it runs in worker processes)."""
    image, wav = item.sources
    pixels = read_image(image, 8)
    samples, _ = read_audio(wav)
    return {"image": pixels, "audio": samples[:SAMPLES].astype(np.float32)}


class Pairs(PreparedTask):
    name = "pairs"
    version = "1"
    Params = HoldoutParams
    source = "made by the test"
    classes = ("low", "high")
    layout = "  <raw>/labels.csv   id,split,label per line\n  <raw>/<id>.png, <raw>/<id>.wav"

    @property
    def modalities(self):
        return {"image": ModalitySpec("image", "image", (3, 8, 8)), "audio": ModalitySpec("audio", "audio", (SAMPLES,))}

    def items(self, raw: Path) -> list[Item]:
        path = raw / "labels.csv"
        if not path.is_file():
            raise self.raw_error(raw, "has no labels.csv")
        items = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            sample, split, label = line.split(",")
            if label not in self.classes:
                items.append(Item.bad_line(path, number, f"unknown label {label!r}", split))
                continue
            items.append(Item(sample, self.classes.index(label), (raw / f"{sample}.png", raw / f"{sample}.wav"),
                              split=split))
        return items

    def processor(self):
        return process_pair

    def fields(self):
        return {"image": (3, 8, 8), "audio": (SAMPLES,)}

    def datasets(self, arrays, parts):
        def split(rows, labels):
            tensors = {"image": torch.from_numpy(np.array(arrays.fields["image"][rows])).float() / 255,
                       "audio": torch.from_numpy(np.array(arrays.fields["audio"][rows]))}
            return TensorDictDataset(tensors, torch.tensor(labels))

        return {name: split(rows, labels) for name, (rows, labels) in parts.items()}


class Plugin:
    @hookimpl
    def mmbench_tasks(self):
        return [Pairs]


def write_pairs(raw: Path, rows: list[tuple[str, str, str]]) -> Path:
    """labels.csv and a PNG and a WAV per row."""
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "labels.csv").write_text("".join(f"{s},{split},{label}\n" for s, split, label in rows))
    for k, (sample, _, _) in enumerate(rows):
        Image.fromarray(np.full((12, 12, 3), 20 * k, np.uint8)).save(raw / f"{sample}.png")
        write_wav(raw / f"{sample}.wav", 0.05, pitch=300.0 + 50 * k)
    return raw


@pytest.fixture
def registered(monkeypatch):
    registry = registry_lib.load(extra_plugins=[Plugin()])
    monkeypatch.setattr(registry_lib, "default", lambda: registry)
    return registry


def test_a_corrupt_wav_beside_a_png_is_reported_under_its_own_path_in_words(tmp_path):
    raw = write_pairs(tmp_path / "raw", [(f"s{i}", "train", "low") for i in range(3)])
    (raw / "s1.wav").write_bytes(b"RIFF\x00\x00not audio at all")
    (raw / "s2.png").unlink()
    console = Console(record=True, width=300)
    with pytest.raises(DataError, match="1 of the 2 samples present are corrupt") as error:
        prepare_lib.prepare_samples(tmp_path / "root", "pairs", Pairs(HoldoutParams()).items(raw), process_pair, {},
                                    partial=True, console=console)
    [bad] = json.loads((tmp_path / "root" / "prepare-report.json").read_text())["bad"]
    assert bad["id"] == "s1" and bad["path"] == str(raw / "s1.wav")
    assert bad["reason"].startswith(f"{raw / 's1.wav'}: not readable audio: libsndfile says format not recognised, "
                                    "FFmpeg says invalid data found")
    assert "Errno" not in bad["reason"] and "s0.png" not in bad["reason"]
    message = str(error.value)
    assert f"s1: {bad['reason']}" in message and f"s2 (no {raw / 's2.png'})" in message
    assert str(tmp_path / "root" / "prepare-report.json") in message


def test_prepare_names_what_it_left_out_on_the_console_and_records_the_release_s_splits(tmp_path, monkeypatch):
    rows = [(f"t{i}", "train", ("low", "high")[i % 2]) for i in range(8)] + [("e0", "test", "low"),
                                                                              ("e1", "test", "high")]
    raw = write_pairs(tmp_path / "raw", rows + [("x9", "test", "medium")])
    (raw / "t3.wav").unlink()
    monkeypatch.setattr(prepare_lib, "MAX_BAD_FRACTION", 0.2)
    console = Console(record=True, width=300)
    monkeypatch.setattr(prepare_lib, "Console", lambda **_: console)
    task = Pairs(HoldoutParams(), root=tmp_path / "root")
    task.prepare(raw, partial=True)
    shown = console.export_text()
    assert "1 of the 11 listed samples are missing:\n  t3 (no " in shown
    assert f"1 of the 11 listed samples are bad:\n  labels.csv:11: {raw / 'labels.csv'} line 11: unknown label " \
           "'medium'" in shown
    assert f"the report lists every one with its reason: {tmp_path / 'root' / 'prepare-report.json'}" in shown
    assert json.loads((tmp_path / "root" / "splits.json").read_text()) == {
        "train": ["t0", "t1", "t2", "t4", "t5", "t6", "t7"], "test": ["e0", "e1"]}
    splits = task.splits()
    assert {s: len(d) for s, d in splits.items()} == {"train": 5, "test": 2, "val": 2}
    assert task.check() == []


def test_an_empty_hold_out_and_a_missing_class_are_problems_check_names_and_training_meets(tmp_path, registered):
    raw = write_pairs(tmp_path / "raw", [("t0", "train", "low"), ("t1", "train", "high"), ("e0", "test", "low"),
                                         ("e1", "test", "high")])
    task = Pairs(HoldoutParams(), root=tmp_path / "root")
    task.prepare(raw)
    problems = task.check()
    assert problems == ["the val split is empty: it is held out of train (the lists have no validation list), and "
                        "each class among the 2 training samples has a single one, which stays in train; prepare a "
                        "copy with at least two training samples of some class"]
    result = runner.invoke(app, ["data", "check", "pairs", "--root", str(tmp_path / "root")])
    assert result.exit_code == 1 and "the val split is empty" in result.output
    grid = tmp_path / "pairs.yaml"
    grid.write_text(f"name: pairs\ntasks: [{{name: pairs, root: {tmp_path / 'root'}}}]\n"
                    "encoders: [{image: resnet50, audio: conformer}]\nfusions: [concat]\nbalancers: [joint]\n"
                    "train: {epochs: 1, batch_size: 2}\nseeds: [0]\n")
    result = runner.invoke(app, ["validate", str(grid)])  # before any cell would meet it
    assert result.exit_code == 2, result.output
    assert f"pairs: the prepared root {tmp_path / 'root'} cannot be trained on:\n  - the val split is empty" \
        in result.output and "not runnable on this data" in result.output
    with pytest.raises(DataError, match="holds no sample of the val split: it is held out of train .*at least two"):
        task.splits()
    more = write_pairs(tmp_path / "raw2", [(f"t{i}", "train", "low") for i in range(4)] + [("e0", "test", "low"),
                                                                                          ("e1", "test", "high")])
    task = Pairs(HoldoutParams(), root=tmp_path / "root2")
    task.prepare(more)
    assert task.check() == [  # the 4 training samples are all "low": the one held out too
        "the val split has no sample of 1 class(es): high (1); the macro-averaged metrics (macro_f1) count such a "
        "class as 0 (its AP, or its F1 whenever it is predicted): prepare from a copy where every class is in every "
        "split"]


def test_a_partial_copy_may_lack_classes_but_never_a_whole_split(tmp_path):
    raw = write_pairs(tmp_path / "raw", [("t0", "train", "low"), ("t1", "train", "low"), ("e0", "test", "low")])
    task = Pairs(HoldoutParams(), root=tmp_path / "root")
    task.prepare(raw, partial=True)
    assert task.check() == []
    (tmp_path / "raw" / "e0.wav").unlink()
    task = Pairs(HoldoutParams(), root=tmp_path / "root2")
    task.prepare(raw, partial=True)
    assert task.check() == ["the test split is empty: no sample of it is in the root (its samples were missing or "
                            "bad when it was prepared: prepare-report.json); prepare again from a copy that holds "
                            "some of them"]


def test_a_new_protocol_version_reads_roots_of_the_prepared_form_it_keeps(tmp_path):
    """A task version that changes only how samples are read keeps `prepared_version`: the root prepared before
    stays sound and keeps its fingerprint; a version that changes the prepared form asks for a new prepare."""
    raw = write_pairs(tmp_path / "raw", [(f"t{i}", "train", ("low", "high")[i % 2]) for i in range(6)]
                      + [("e0", "test", "low"), ("e1", "test", "high")])
    before = Pairs(HoldoutParams(), root=tmp_path / "root")
    before.prepare(raw)

    class ReadAnew(Pairs):
        version, prepared_version = "2", "1"

    class PreparedAnew(Pairs):
        version = "2"

    assert ReadAnew(HoldoutParams(), root=tmp_path / "root").check() == []
    assert ReadAnew(HoldoutParams(), root=tmp_path / "root").fingerprint() == before.fingerprint()
    assert PreparedAnew(HoldoutParams(), root=tmp_path / "root").check()[0] == \
        "prepared by task version 1; this one reads version 2: prepare again"
