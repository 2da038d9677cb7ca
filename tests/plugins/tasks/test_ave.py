"""AVE end to end on a tiny copy in its release layout: the task's contract (`check_task`), the official lists and
class ids, event windows and PMR's spectrogram, Annotations.txt compared with the lists, a one-epoch cell."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmbench import registry as registry_lib
from mmbench.testing import check_task
from mmbench_plugins.tasks.ave import CLASSES as AVE_CLASSES
from mmbench_plugins.tasks.ave import AveTask
from tests.fixtures.ave import ave_lines, write_ave
from tests.fixtures.cells import run_one_epoch
from tests.fixtures.release import shipped_lines

AVE = ave_lines(per_list=2)


def make(root: Path | None, **params) -> AveTask:
    resolved = registry_lib.default().resolve("tasks", "ave", params)
    return resolved.cls(resolved.params, root=root)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """The tiny copy (with an unknown category in Annotations.txt) prepared through the task's contract."""
    base = tmp_path_factory.mktemp("ave")
    raw = base / "AVE_Dataset"
    write_ave(raw, AVE["train"] + AVE["val"] + AVE["test"])
    with (raw / "Annotations.txt").open("a") as handle:
        handle.write("Kazoo&zzzzzzzzzzz&good&0&10\n")
    check_task(AveTask, raw=raw, root=base / "prepared", partial=True, encoders={"*": "resnet18"})
    return base / "prepared"


def test_ave_lists_and_class_ids_are_the_official_ones():
    lines = {n: shipped_lines("ave", f"{n}Set.txt") for n in ("train", "val", "test")}
    assert {n: len(v) for n, v in lines.items()} == {"train": 3339, "val": 402, "test": 402}
    first_seen = list(dict.fromkeys(line.split("&")[0] for line in lines["test"]))
    assert tuple(first_seen) == AVE_CLASSES and len(AVE_CLASSES) == 28
    assert "Male speech, man speaking&-ccciEuH9FE&good&5&10" in lines["train"]
    task = make(None)
    train = dict(task.lists()["train"])
    assert train["-ccciEuH9FE&5&10"] == AVE_CLASSES.index("Male speech, man speaking")  # the first line wins
    last = dict(make(None, duplicates="last").lists()["train"])
    assert last["-ccciEuH9FE&5&10"] == AVE_CLASSES.index("Female speech, woman speaking")
    assert len(train) == 3312


def test_ave_prepares_event_windows_with_pmr_s_spectrogram(root):
    task = make(root)
    splits = task.splits()
    assert {s: len(d) for s, d in splits.items()} == {"train": 2, "val": 2, "test": 2}
    sample = splits["train"][0]
    assert sample["audio"].shape == (1, 257, 1004) and sample["visual"]["frames"].shape == (4, 3, 224, 224)
    ids = json.loads((root / "samples.json").read_text())["ids"]
    offsets = np.load(root / "arrays" / "frames.offsets.npy")
    for row, key in enumerate(ids):
        _, start, end = key.split("&")
        assert offsets[row + 1] - offsets[row] == min(int(end), 9) - int(start) + 1  # 1 fps inside the window
    categories = {line.split("&")[1]: line.split("&")[0] for line in AVE["test"]}
    assert [AVE_CLASSES[y] for y in splits["test"].labels] == [categories[ids[r].split("&")[0]]
                                                               for r in splits["test"].rows]
    problems = json.loads((root / "prepare-report.json").read_text())["annotations"]
    assert [p["line"] for p in problems if "unknown category 'Kazoo'" in p["problem"]] == ["8"]


def test_a_one_epoch_cell_with_joint_and_ogm_ge(root, tmp_path):
    cells = run_one_epoch("ave", root, tmp_path, frames=1)
    assert {c["task"]["fingerprint"] for c in cells} == {make(root).fingerprint()}
