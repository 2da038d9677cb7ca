"""MM-IMDb's processed hdf5 end to end: a tiny Fuel/h5py file -> the task's contract (`check_task`) -> one epoch
of the gmu fusion with PM+MO's protocol; every bad row reported in one pass; the gmu's max-norm."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mmbench.cli import app
from mmbench.contract.errors import DataError
from mmbench.testing import check_task
from mmbench_plugins.fusions.gmu import GMUFusion, GMUParams
from mmbench_plugins.tasks.mmimdb_features import MMIMDbFeaturesTask
from tests.fixtures.cells import TEXT_TRAIN, run_cells
from tests.fixtures.mmimdb_features import MMIMDB_IDS, write_mmimdb_hdf5

runner = CliRunner()
COUNTS = {"train": 8, "dev": 3, "test": 4}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    raw = tmp_path_factory.mktemp("mmimdb") / "raw"
    arrays = write_mmimdb_hdf5(raw, COUNTS)
    return raw, arrays


@pytest.fixture(scope="module")
def prepared(written, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prepared") / "mmimdb_features"
    check_task(MMIMDbFeaturesTask, raw=written[0], root=root)
    return root


def test_splits_follow_fuel_s_split_attribute(prepared, written):
    _, arrays = written
    splits = MMIMDbFeaturesTask(MMIMDbFeaturesTask.Params(), root=prepared).splits()
    assert {s: len(d) for s, d in splits.items()} == {"train": 8, "val": 3, "test": 4}
    first_test = splits["test"][0]  # row 11 of the file: train 0-7, dev 8-10, test 11-14
    np.testing.assert_array_equal(first_test["text"].numpy(), arrays["features"][11])
    np.testing.assert_array_equal(first_test["image_features"].numpy(), arrays["vgg_features"][11])
    np.testing.assert_array_equal(first_test["label"].numpy(), arrays["genres"][11])
    recorded = json.loads((prepared / "splits.json").read_text())
    assert recorded["train"][:3] == MMIMDB_IDS[:3] and len(recorded["val"]) == 3
    assert json.loads((prepared / "target_names.json").read_text())[0] == "Drama"
    result = runner.invoke(app, ["data", "check", "mmimdb_features", "--root", str(prepared)])
    assert result.exit_code == 0, result.output


def test_every_bad_row_is_reported_in_one_pass_and_a_file_without_fuel_s_split_is_refused(written, tmp_path):
    raw, _ = written
    copy = tmp_path / "raw"
    copy.mkdir()
    data = (raw / "multimodal_imdb.hdf5").read_bytes()
    (copy / "multimodal_imdb.hdf5").write_bytes(data)
    with h5py.File(copy / "multimodal_imdb.hdf5", "r+") as h5:
        h5["features"][2] = np.nan
        h5["genres"][5] = 0
        h5["vgg_features"][12, 7] = np.inf
    result = runner.invoke(app, ["data", "prepare", "mmimdb_features", "--raw", str(copy),
                                 "--root", str(tmp_path / "p")])
    assert result.exit_code == 2 and "3 of the 15 samples present are corrupt" in result.output
    report = json.loads((tmp_path / "p" / "prepare-report.json").read_text())
    file = copy / "multimodal_imdb.hdf5"
    assert report["bad"] == [{"id": MMIMDB_IDS[2], "path": f"{file}#2",
                              "reason": "row 2: non-finite values in `features`"},
                             {"id": MMIMDB_IDS[5], "path": f"{file}#5", "reason": "row 5: no genre"},
                             {"id": "0000012", "path": f"{file}#12",
                              "reason": "row 12: non-finite values in `vgg_features`"}]
    for entry in report["bad"]:
        assert f"{entry['id']}: {entry['reason']}" in result.output
    with h5py.File(copy / "multimodal_imdb.hdf5", "r+") as h5:
        del h5.attrs["split"]
    task = MMIMDbFeaturesTask(MMIMDbFeaturesTask.Params(), root=tmp_path / "q")
    with pytest.raises(DataError, match="lacks \\['the split attribute'\\]"):
        task.prepare(copy)


def test_max_norm_clips_every_row_before_use():
    fusion = GMUFusion({"text": 6, "image_features": 5}, 3, GMUParams(hidden=4, max_norm=0.5, init_range=None))
    with torch.no_grad():
        fusion.classifier.net[-1].weight.mul_(100)
    fusion.eval()
    fusion({"text": torch.randn(2, 6), "image_features": torch.randn(2, 5)})
    for module in fusion.modules():
        if isinstance(module, torch.nn.Linear):
            assert module.weight.norm(dim=1).max() <= 0.5 + 1e-6
    short = torch.full((3, 4), 0.1)  # rows of norm 0.2 stay as they are
    fusion.classifier.net[-1].weight.data.copy_(short)
    fusion({"text": torch.randn(2, 6), "image_features": torch.randn(2, 5)})
    assert torch.equal(fusion.classifier.net[-1].weight, short)


def test_one_epoch_of_gmu_with_joint_and_pm_mo(prepared, tmp_path):
    cells = run_cells("mmimdb_features", prepared, tmp_path, {"*": "feature_mlp"},
                      {"name": "gmu", "params": {"hidden": 16, "max_norm": 10.0}}, ["joint", "pm_mo"], TEXT_TRAIN)
    for cell in cells:
        assert set(cell["test"]["metrics"]) == {"f1_micro", "f1_macro", "f1_weighted", "f1_samples", "map_micro",
                                                "map_macro"}
