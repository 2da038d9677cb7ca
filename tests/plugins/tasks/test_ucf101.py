"""UCF101-51 end to end on a tiny copy in its release layout: the task's contract (`check_task`), the audio
classes of a fold, a clip without audio reported, a missing or changed split file refused, a one-epoch cell."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmbench import registry as registry_lib
from mmbench.cli import app
from mmbench.contract.errors import DataError
from mmbench.testing import check_task
from mmbench_plugins.tasks.ucf101 import Ucf101Task
from tests.fixtures.cells import run_one_epoch
from tests.fixtures.ucf101 import UCF_CLASSES, ucf_clip, write_ucf101

runner = CliRunner()
UCF_USED = ["ApplyEyeMakeup", "HandstandPushups"]


def make(root: Path | None, **params) -> Ucf101Task:
    resolved = registry_lib.default().resolve("tasks", "ucf101", params)
    return resolved.cls(resolved.params, root=root)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("ucf101")
    raw = base / "UCF101"
    write_ucf101(raw, UCF_USED)
    check_task(Ucf101Task, raw=raw, root=base / "prepared", partial=True, encoders={"*": "resnet18"})
    return base / "prepared"


def test_ucf101_keeps_the_audio_classes_of_the_fold(root):
    task = make(root, fold=1)
    splits = task.splits()
    classes = task.classes
    assert len(classes) == 51 and [c for c in UCF_CLASSES if c in classes] == list(classes)  # classInd order
    ids = json.loads((root / "samples.json").read_text())["ids"]
    test_clips = [ids[r] for r in splits["test"].rows]
    assert sorted(test_clips) == sorted(ucf_clip(c, 1, 1) for c in UCF_USED)  # fold 1 tests groups 1-7
    assert sorted(classes[y] for y in splits["test"].labels) == sorted(UCF_USED)
    assert "HandstandPushups/v_HandStandPushups_g01_c01.avi" in test_clips
    sample = splits["train"][0]
    assert sample["audio"].shape == (1, 257, 136) and sample["visual"]["frames"].shape == (4, 3, 224, 224)
    fold2 = make(root, fold=2).splits()
    assert sorted(ids[r] for r in fold2["test"].rows) == sorted(ucf_clip(c, 8, 1) for c in UCF_USED)


def test_ucf101_reports_a_clip_without_audio_and_needs_its_split_files(tmp_path):
    raw = tmp_path / "UCF101"
    write_ucf101(raw, ["ApplyEyeMakeup", "Typing"], silent=["Typing"], seconds=1.0)
    result = runner.invoke(app, ["data", "prepare", "ucf101", "--raw", str(raw), "--root", str(tmp_path / "r"),
                                 "--partial"])
    assert result.exit_code == 2 and "4 of the 8 samples present are corrupt" in result.output
    bad = json.loads((tmp_path / "r" / "prepare-report.json").read_text())["bad"]
    assert len(bad) == 4 and all("no audio stream" in b["reason"] and "Typing" in b["id"] for b in bad)
    (raw / "ucfTrainTestlist" / "testlist02.txt").unlink()
    with pytest.raises(DataError, match=r"lacks the split file\(s\) ucfTrainTestlist/testlist02.txt"):
        make(tmp_path / "r2").prepare(raw, partial=True)


def test_a_one_epoch_cell_with_joint_and_ogm_ge(root, tmp_path):
    cells = run_one_epoch("ucf101", root, tmp_path, frames=1)
    assert {c["task"]["fingerprint"] for c in cells} == {make(root).fingerprint()}


def test_a_copied_ucf_list_that_changed_is_refused(root, tmp_path):
    copy = tmp_path / "ucf101"
    shutil.copytree(root, copy)
    (copy / "lists" / "testlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
    with pytest.raises(DataError, match="testlist01.txt does not match its sha256"):
        make(copy).splits()
