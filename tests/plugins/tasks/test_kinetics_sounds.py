"""Kinetics-Sounds end to end on a tiny copy in its documented layout: the task's contract (`check_task`),
OGM-GE's lists and filterbank, the raw lists compared with the shipped ones, a one-epoch cell."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmbench import registry as registry_lib
from mmbench.testing import check_task
from mmbench_plugins.tasks.kinetics_sounds import KineticsSoundsTask
from tests.fixtures.cells import run_one_epoch
from tests.fixtures.kinetics_sounds import ks_lines, write_kinetics_sounds
from tests.fixtures.release import shipped_lines

KS = ks_lines(labels=2, per_label=2)


def make(root: Path | None, **params) -> KineticsSoundsTask:
    resolved = registry_lib.default().resolve("tasks", "kinetics_sounds", params)
    return resolved.cls(resolved.params, root=root)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """The tiny copy (with a line of an unknown label in the raw my_test.txt) prepared through the contract."""
    base = tmp_path_factory.mktemp("kinetics_sounds")
    raw = base / "kinetics_sounds"
    write_kinetics_sounds(raw, KS)
    (raw / "my_test.txt").write_bytes((raw / "my_test.txt").read_bytes() + b"abcdefghijk_1,10,31\r\n")
    check_task(KineticsSoundsTask, raw=raw, root=base / "prepared", partial=True, encoders={"*": "resnet18"})
    return base / "prepared"


def test_kinetics_sounds_lists_and_the_ogm_ge_filterbank(root):
    lines = {s: shipped_lines("kinetics_sounds", f"my_{s}.txt") for s in ("train", "test")}
    assert len(lines["train"]) == 14799 and len(lines["test"]) == 2597
    assert lines["train"][0] == "--4-0ihtnBU_000058_000068,10,4" and "-3Mwkq-7TV4_2,10,23" in lines["test"]
    splits = make(root).splits()
    assert {s: len(d) for s, d in splits.items()} == {"train": 2, "val": 2, "test": 2}
    assert sorted(splits["val"].labels) == [4, 27] and sorted(splits["test"].labels) == [4, 27]
    sample = splits["test"][0]
    assert sample["audio"].shape == (1, 1024, 128) and sample["visual"]["frames"].shape == (3, 3, 224, 224)
    audio = np.load(root / "arrays" / "audio.npy")
    # 4 s at 16 kHz, 25 ms windows every 10 ms: 1 + (64000 - 400) // 160 = 398 frames (a few more where the AAC
    # encoder pads the clip), then zero rows, normalised
    padded = (0 - -4.503877) / (2 * 5.141276)
    np.testing.assert_allclose(audio[:, 420:], padded, atol=1e-6)
    assert (np.abs(audio[:, :398] - padded) > 1e-3).mean() > 0.95
    problems = json.loads((root / "prepare-report.json").read_text())["annotations"]
    assert any("unknown label 31" in p["problem"] and p["line"] == "3" for p in problems)


def test_a_one_epoch_cell_with_joint_and_ogm_ge(root, tmp_path):
    cells = run_one_epoch("kinetics_sounds", root, tmp_path, frames=1)
    assert {c["task"]["fingerprint"] for c in cells} == {make(root).fingerprint()}
