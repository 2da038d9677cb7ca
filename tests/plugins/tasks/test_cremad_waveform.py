"""CREMA-D's second audio representation, MLB's standardised 16 kHz waveform, on a tiny copy in the release's
layout: prepared beside the spectrogram in one root, statistics from the training split alone, its own
fingerprint, and a one-epoch cell of MLB's Conformer stack (tiny configs) on it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from typer.testing import CliRunner

from mmbench.cli import app
from mmbench.contract.errors import DataError
from mmbench.data.prepared import Manifest
from mmbench_plugins.encoders.conformer import Wav2Vec2Conformer
from mmbench_plugins.encoders.efficientnet_b2 import EfficientNetB2Conformer
from mmbench_plugins.tasks.cremad import CremadTask
from tests.fixtures.cremad import cremad_stems, write_cremad

STEMS = cremad_stems(per_class_train=2, per_class_test=1)
ALL = STEMS["train"] + STEMS["test"]
SECONDS = 2.2  # the fixture's clips; 200 + 40 k Hz tones fit a whole number of periods in it
TEST_SECONDS = 1.0
LENGTH = 80080  # 5.005 s at 16 kHz


def amplitude(k: int) -> float:
    return 0.1 + 0.04 * k


def write_wav(path: Path, k: int, seconds: float) -> None:
    t = np.arange(int(seconds * 16000)) / 16000
    soundfile.write(str(path), amplitude(k) * np.sin(2 * np.pi * (200.0 + 40 * k) * t), 16000, subtype="FLOAT")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """Each clip's tone has its own amplitude; the test clips are shorter, so padding shows."""
    raw = tmp_path_factory.mktemp("cremad") / "CREMA-D"
    write_cremad(raw, ALL)
    for k, stem in enumerate(ALL):
        write_wav(raw / "AudioWAV" / f"{stem}.wav", k, TEST_SECONDS if stem in STEMS["test"] else SECONDS)
    root = tmp_path_factory.mktemp("prepared") / "cremad"
    result = CliRunner().invoke(app, ["data", "prepare", "cremad", "--raw", str(raw), "--root", str(root),
                                      "--partial"])
    assert result.exit_code == 0, result.output
    return root


def task(root: Path | None, **params) -> CremadTask:
    return CremadTask(CremadTask.Params(**params), root=root)


def test_one_prepare_holds_both_representations_and_check_passes(prepared):
    arrays = prepared / "arrays"
    waves = np.load(arrays / "waveform.npy", mmap_mode="r")
    offsets = np.load(arrays / "waveform.offsets.npy")
    ids = json.loads((prepared / "samples.json").read_text())["ids"]
    lengths = [int(n) for n in np.diff(offsets)]
    assert lengths == [int((TEST_SECONDS if i in STEMS["test"] else SECONDS) * 16000) for i in ids]
    k = ALL.index(ids[0])
    assert waves.dtype == np.float32 and float(np.abs(waves[: lengths[0]]).max()) == pytest.approx(amplitude(k), 1e-3)
    assert np.load(arrays / "audio.npy", mmap_mode="r").shape[1:] == (257, 188)
    result = CliRunner().invoke(app, ["data", "check", "cremad", "--root", str(prepared)])
    assert result.exit_code == 0, result.output


def test_the_waveform_is_standardised_by_the_training_split_alone_padded_and_masked(prepared):
    splits = task(prepared, audio="waveform").splits()
    ids = json.loads((prepared / "samples.json").read_text())["ids"]
    train = [ALL.index(ids[r]) for r in splits["train"].rows]
    # zero-mean tones of equal length and whole periods: variance a²/2 per clip, averaged over the clips
    std = math.sqrt(sum(amplitude(k) ** 2 / 2 for k in train) / len(train))
    everything = math.sqrt(sum(amplitude(k) ** 2 / 2 for k in range(len(ALL))) / len(ALL))
    assert abs(std - everything) > 0.01  # the test clips' louder tones would show
    for split, seconds in (("train", SECONDS), ("val", SECONDS), ("test", TEST_SECONDS)):
        dataset = splits[split]
        sample = dataset[0]
        audio = sample["audio"]
        real = int(seconds * 16000)
        assert audio["input_values"].shape == (LENGTH,) and audio["attention_mask"].shape == (LENGTH,)
        assert int(audio["attention_mask"].sum()) == real and bool(audio["attention_mask"][:real].all())
        assert torch.count_nonzero(audio["input_values"][real:]) == 0
        k = ALL.index(ids[dataset.rows[0]])
        peak = float(audio["input_values"][:real].abs().max())
        assert peak == pytest.approx(amplitude(k) / std, rel=2e-3)
        assert sample["visual"]["frames"].shape == (1, 3, 224, 224)  # as loaded: (T, 3, S, S)


def test_each_representation_has_its_own_fingerprint(prepared):
    spectrogram, waveform = task(prepared).fingerprint(), task(prepared, audio="waveform").fingerprint()
    assert spectrogram.startswith("partial-") and waveform.startswith("partial-") and spectrogram != waveform
    manifest = Manifest.model_validate(json.loads((prepared / "mmbench-prepared.json").read_text()))
    assert spectrogram == manifest.fingerprint_of(["audio", "frames_per_second", "frame_size"])
    assert waveform == manifest.fingerprint_of(["waveform", "frames_per_second", "frame_size"])
    assert manifest.preprocessing["waveform"] == {"sample_rate": 16000, "seconds": 5.005}
    # adding the waveform left the spectrogram's fingerprint what a root without it has
    without = {k: v for k, v in manifest.preprocessing.items() if k != "waveform"}
    assert manifest.model_copy(update={"preprocessing": without}).fingerprint == spectrogram


def test_a_root_prepared_without_the_waveform_says_to_prepare_again(prepared, tmp_path):
    manifest = json.loads((prepared / "mmbench-prepared.json").read_text())
    del manifest["preprocessing"]["waveform"]
    (tmp_path / "mmbench-prepared.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="holds no waveform .*prepare it again"):
        task(tmp_path, audio="waveform").fingerprint()


def test_modalities_fake_samples_and_augmented_views_of_the_waveform():
    t = task(None, audio="waveform", frames=3)
    assert t.modalities["audio"].shape == (LENGTH,) and t.modalities["audio"].kind == "audio"
    assert task(None).modalities["audio"].shape == (1, 257, 188)
    generator = torch.Generator().manual_seed(0)
    fake = t.fake_sample(generator)
    assert fake["audio"]["input_values"].shape == (LENGTH,) and bool(fake["audio"]["attention_mask"].all())
    x = {"input_values": torch.ones(100), "attention_mask": torch.cat([torch.ones(60), torch.zeros(40)]).long()}
    for _ in range(5):
        view = t.augment("audio", x, generator)
        zeroed = (view["input_values"] == 0).nonzero().flatten()
        assert len(zeroed) <= int(0.15 * 60) and torch.equal(view["attention_mask"], x["attention_mask"])
        if len(zeroed):
            assert zeroed.max() < 60 and len(zeroed) == zeroed.max() - zeroed.min() + 1  # one span of real samples


def test_a_one_epoch_cell_of_mlb_s_conformer_stack_trains_on_the_waveform(prepared, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(json.dumps({
        "name": "cremad-mlb-tiny",
        "tasks": [{"name": "cremad", "root": str(prepared), "params": {"audio": "waveform"}}],
        "encoders": [{"audio": {"name": "conformer", "params": Wav2Vec2Conformer.smoke},
                      "visual": {"name": "efficientnet_b2", "params": EfficientNetB2Conformer.smoke}}],
        "fusions": ["late_linear"], "balancers": ["mlb"],
        "train": {"epochs": 1, "batch_size": 4, "optimizer": {"name": "adam", "lr": 1e-4}, "device": "cpu"},
        "seeds": [0]}))
    result = CliRunner().invoke(app, ["run", "--matrix", str(grid), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    cells = [json.loads(p.read_text()) for p in (tmp_path / "run" / "cells").glob("*.json")]
    assert [c["balancer"]["name"] for c in cells] == ["mlb"]
    assert all(c["status"] == "ok" for c in cells), [c.get("reason") for c in cells]
    assert {c["task"]["fingerprint"] for c in cells} == {task(prepared, audio="waveform").fingerprint()}
