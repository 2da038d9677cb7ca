"""AVE, Kinetics-Sounds and UCF101-51 end to end on tiny copies in their release layouts: prepare -> check ->
class ids, split membership, shapes and audio parameters -> a one-epoch cell; malformed annotation files,
a clip without audio and a missing split file are reported with their documented errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mmbench import registry as registry_lib
from mmbench.cli import app
from mmbench.contract.errors import DataError
from mmbench_plugins.tasks.ave import CLASSES as AVE_CLASSES
from tests.fixtures.av import (
    UCF_CLASSES,
    ave_lines,
    ks_lines,
    run_one_epoch,
    shipped_lines,
    ucf_clip,
    write_ave,
    write_kinetics_sounds,
    write_ucf101,
)

runner = CliRunner()
UCF_USED = ["ApplyEyeMakeup", "HandstandPushups"]
AVE = ave_lines(per_list=2)
KS = ks_lines(labels=2, per_label=2)


def make(name: str, root: Path, **params):
    resolved = registry_lib.default().resolve("tasks", name, params)
    return resolved.cls(resolved.params, root=root)


def prepare(name: str, raw: Path, root: Path) -> CliRunner:
    result = runner.invoke(app, ["data", "prepare", name, "--raw", str(raw), "--root", str(root), "--partial",
                                 "--workers", "1"])
    assert result.exit_code == 0, result.output
    check = runner.invoke(app, ["data", "check", name, "--root", str(root)])
    assert check.exit_code == 0 and "partial" in check.output, check.output
    return result


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("av")
    ave_raw = base / "AVE_Dataset"
    write_ave(ave_raw, AVE["train"] + AVE["val"] + AVE["test"])
    with (ave_raw / "Annotations.txt").open("a") as handle:
        handle.write("Kazoo&zzzzzzzzzzz&good&0&10\n")
    ks_raw = base / "kinetics_sounds"
    write_kinetics_sounds(ks_raw, KS)
    (ks_raw / "my_test.txt").write_bytes((ks_raw / "my_test.txt").read_bytes() + b"abcdefghijk_1,10,31\r\n")
    ucf_raw = base / "UCF101"
    write_ucf101(ucf_raw, UCF_USED)
    for name, raw in (("ave", ave_raw), ("kinetics_sounds", ks_raw), ("ucf101", ucf_raw)):
        prepare(name, raw, base / "prepared" / name)
    return {"raw_ucf": ucf_raw, **{n: base / "prepared" / n for n in ("ave", "kinetics_sounds", "ucf101")}}


def report(root: Path) -> dict:
    return json.loads((root / "prepare-report.json").read_text())


# ---------------------------------------------------------------------------------------------- AVE


def test_ave_lists_and_class_ids_are_the_official_ones():
    lines = {n: shipped_lines("ave", f"{n}Set.txt") for n in ("train", "val", "test")}
    assert {n: len(v) for n, v in lines.items()} == {"train": 3339, "val": 402, "test": 402}
    first_seen = list(dict.fromkeys(line.split("&")[0] for line in lines["test"]))
    assert tuple(first_seen) == AVE_CLASSES and len(AVE_CLASSES) == 28
    assert "Male speech, man speaking&-ccciEuH9FE&good&5&10" in lines["train"]
    task = make("ave", None)
    train = dict(task.lists()["train"])
    assert train["-ccciEuH9FE&5&10"] == AVE_CLASSES.index("Male speech, man speaking")  # the first line wins
    last = dict(make("ave", None, duplicates="last").lists()["train"])
    assert last["-ccciEuH9FE&5&10"] == AVE_CLASSES.index("Female speech, woman speaking")
    assert len(train) == 3312


def test_ave_prepares_event_windows_with_pmr_s_spectrogram(roots):
    task = make("ave", roots["ave"])
    splits = task.splits()
    assert {s: len(d) for s, d in splits.items()} == {"train": 2, "val": 2, "test": 2}
    sample = splits["train"][0]
    assert sample["audio"].shape == (1, 257, 1004) and sample["visual"].shape == (3, 4, 224, 224)
    ids = json.loads((roots["ave"] / "samples.json").read_text())["ids"]
    offsets = np.load(roots["ave"] / "arrays" / "frames.offsets.npy")
    for row, key in enumerate(ids):
        _, start, end = key.split("&")
        assert offsets[row + 1] - offsets[row] == min(int(end), 9) - int(start) + 1  # 1 fps inside the window
    categories = {line.split("&")[1]: line.split("&")[0] for line in AVE["test"]}
    assert [AVE_CLASSES[y] for y in splits["test"].labels] == [categories[ids[r].split("&")[0]]
                                                               for r in splits["test"].rows]
    problems = report(roots["ave"])["annotations"]
    assert [p["line"] for p in problems if "unknown category 'Kazoo'" in p["problem"]] == ["8"]


# ---------------------------------------------------------------------------------- Kinetics-Sounds


def test_kinetics_sounds_lists_and_the_ogm_ge_filterbank(roots):
    lines = {s: shipped_lines("kinetics_sounds", f"my_{s}.txt") for s in ("train", "test")}
    assert len(lines["train"]) == 14799 and len(lines["test"]) == 2597
    assert lines["train"][0] == "--4-0ihtnBU_000058_000068,10,4" and "-3Mwkq-7TV4_2,10,23" in lines["test"]
    task = make("kinetics_sounds", roots["kinetics_sounds"])
    splits = task.splits()
    assert {s: len(d) for s, d in splits.items()} == {"train": 2, "val": 2, "test": 2}
    assert sorted(splits["val"].labels) == [4, 27] and sorted(splits["test"].labels) == [4, 27]
    sample = splits["test"][0]
    assert sample["audio"].shape == (1, 1024, 128) and sample["visual"].shape == (3, 3, 224, 224)
    audio = np.load(roots["kinetics_sounds"] / "arrays" / "audio.npy")
    # 4 s at 16 kHz, 25 ms windows every 10 ms: 1 + (64000 - 400) // 160 = 398 frames (a few more where the AAC
    # encoder pads the clip), then zero rows, normalised
    padded = (0 - -4.503877) / (2 * 5.141276)
    np.testing.assert_allclose(audio[:, 420:], padded, atol=1e-6)
    assert (np.abs(audio[:, :398] - padded) > 1e-3).mean() > 0.95
    problems = report(roots["kinetics_sounds"])["annotations"]
    assert any("unknown label 31" in p["problem"] and p["line"] == "3" for p in problems)


# -------------------------------------------------------------------------------------------- UCF101


def test_ucf101_keeps_the_audio_classes_of_the_fold(roots):
    task = make("ucf101", roots["ucf101"], fold=1)
    splits = task.splits()
    classes = task.classes
    assert len(classes) == 51 and [c for c in UCF_CLASSES if c in classes] == list(classes)  # classInd order
    ids = json.loads((roots["ucf101"] / "samples.json").read_text())["ids"]
    test_clips = [ids[r] for r in splits["test"].rows]
    assert sorted(test_clips) == sorted(ucf_clip(c, 1, 1) for c in UCF_USED)  # fold 1 tests groups 1-7
    assert sorted(classes[y] for y in splits["test"].labels) == sorted(UCF_USED)
    assert "HandstandPushups/v_HandStandPushups_g01_c01.avi" in test_clips
    sample = splits["train"][0]
    assert sample["audio"].shape == (1, 257, 136) and sample["visual"].shape == (3, 4, 224, 224)
    fold2 = make("ucf101", roots["ucf101"], fold=2).splits()
    assert sorted(ids[r] for r in fold2["test"].rows) == sorted(ucf_clip(c, 8, 1) for c in UCF_USED)


def test_ucf101_reports_a_clip_without_audio_and_needs_its_split_files(roots, tmp_path):
    raw = tmp_path / "UCF101"
    write_ucf101(raw, ["ApplyEyeMakeup", "Typing"], silent=["Typing"], seconds=1.0)
    result = runner.invoke(app, ["data", "prepare", "ucf101", "--raw", str(raw), "--root", str(tmp_path / "r"),
                                 "--partial"])
    assert result.exit_code == 2 and "4 of the 8 samples present are corrupt" in result.output
    bad = report(tmp_path / "r")["bad"]
    assert len(bad) == 4 and all("no audio stream" in b["reason"] and "Typing" in b["id"] for b in bad)
    (raw / "ucfTrainTestlist" / "testlist02.txt").unlink()
    with pytest.raises(DataError, match=r"lacks the split file\(s\) ucfTrainTestlist/testlist02.txt"):
        make("ucf101", tmp_path / "r2").prepare(raw, partial=True)


# ------------------------------------------------------------------------------------ one-epoch cells


@pytest.mark.parametrize("name", ["ave", "kinetics_sounds", "ucf101"])
def test_a_one_epoch_cell_with_joint_and_ogm_ge(roots, name, tmp_path):
    cells = run_one_epoch(name, roots[name], tmp_path, frames=1)
    assert {c["task"]["fingerprint"] for c in cells} == {make(name, roots[name]).fingerprint()}


def test_a_copied_ucf_list_that_changed_is_refused(roots, tmp_path):
    root = tmp_path / "ucf101"
    shutil.copytree(roots["ucf101"], root)
    (root / "lists" / "testlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
    with pytest.raises(DataError, match="testlist01.txt does not match its sha256"):
        make("ucf101", root).splits()
