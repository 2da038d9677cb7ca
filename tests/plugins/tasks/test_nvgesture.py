"""NVGesture end to end on a tiny copy in the release layout: the `.lst` format (label token, trailing space, each
sensor's own window), the task's contract (`check_task`: prepare, check, samples, a training step) -> clip
sampling -> a one-epoch three-modality cell with I3D; optical flow computed (Farneback, DIS) or read from the
reader's arrays; bad list lines, bad and missing videos reported together, in one pass."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mmbench.cli import app
from mmbench.contract.errors import DataError
from mmbench.data.media import optical_flow
from mmbench.data.store import PreparedArrays
from mmbench.testing import check_task
from mmbench.training.batches import collate
from mmbench_plugins.tasks.nvgesture import NVGestureParams, NVGestureTask, parse_list
from tests.fixtures.nvgesture import (
    LIST_NAMES,
    REAL_TRAIN_LINES,
    TEST_LINES,
    TRAIN_LINES,
    folder_of,
    write_avi,
    write_flow_arrays,
    write_nvgesture,
)

runner = CliRunner()
SMALL = {"size": 32, "crop": 16, "clip_frames": 8}
ARGS = [arg for key, value in SMALL.items() for arg in ("--param", f"{key}={value}")]


def task(root: Path, **params) -> NVGestureTask:
    return NVGestureTask(NVGestureParams(**{**SMALL, **params}), root=root)


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return write_nvgesture(tmp_path_factory.mktemp("nv") / "nvGesture_v1")


@pytest.fixture(scope="module")
def small_release(tmp_path_factory) -> Path:
    """The release with only the real train lines (31 recordings), for the tests that prepare copies of it."""
    return write_nvgesture(tmp_path_factory.mktemp("nv-small") / "nvGesture_v1", REAL_TRAIN_LINES)


@pytest.fixture(scope="module")
def root(release, tmp_path_factory) -> Path:
    """The tiny release prepared through the task's contract (I3D reads the clips in its training step)."""
    root = tmp_path_factory.mktemp("prepared") / "nvgesture"
    check_task(NVGestureTask, SMALL, raw=release, root=root, encoders={"*": "i3d"})
    check = runner.invoke(app, ["data", "check", "nvgesture", "--root", str(root), *ARGS])
    assert check.exit_code == 0 and "full copy" in check.output, check.output
    return root


def test_list_lines_give_the_label_token_and_each_sensor_s_window():
    text = "".join(line + " \n" for line in (*TRAIN_LINES, TEST_LINES[1]))  # trailing space, as released
    entries, bad = parse_list(text)
    first, relabelled, apart = entries[0], entries[1], entries[-1]
    assert bad == [] and len(entries) == len(TRAIN_LINES) + 1
    assert first.folder == "class_01/subject3_r0" and first.label == 0 and first.index == 0
    assert first.windows == {"color": ("sk_color", 146, 226), "depth": ("sk_depth", 146, 226)}
    assert relabelled.folder == "class_01/subject4_r2" and relabelled.label == 1  # label:2 in folder class_01
    assert apart.windows["color"][1:] == (12, 92) and apart.windows["depth"][1:] == (13, 93)


@pytest.mark.parametrize("line, problem", [
    ("path:./Video_data/class_01/subject3_r0 color:sk_color:1:81 label:1", "expected 'path:"),
    ("path:./x depth:sk_depth:a:81 color:sk_color:1:81 label:1", "not <sensor>:<stem>:<start>:<end>"),
    ("path:./x depth:sk_depth:1:81 color:sk_color:1:81 label:26", "label 26 is outside 1..25"),
])
def test_a_malformed_line_is_set_aside_with_its_line_number_and_problem(line, problem):
    entries, [(number, reason)] = parse_list(TRAIN_LINES[0] + " \n" + line + " \n" + TRAIN_LINES[1] + " \n")
    assert number == 2 and problem in reason
    assert [e.folder for e in entries] == [folder_of(TRAIN_LINES[0]), folder_of(TRAIN_LINES[1])]
    assert [e.index for e in entries] == [0, 2]  # a line's index is its place in the list (the flow file's name)


def test_prepare_keeps_every_recording_with_its_token_label(root):
    samples = json.loads((root / "samples.json").read_text())
    labels = dict(zip(samples["ids"], samples["labels"], strict=True))
    assert len(labels) == len(TRAIN_LINES) + len(TEST_LINES) == 75
    assert labels["class_01/subject4_r2"] == 1 and labels["class_25/subject13_r1"] == 24
    manifest = json.loads((root / "mmbench-prepared.json").read_text())
    assert manifest["counts"] == {"train": 50, "test": 25}
    assert manifest["preprocessing"]["flow"]["method"] == "farneback"
    arrays = PreparedArrays(root / "arrays")
    assert arrays.fields["rgb"].shape == (75, 80, 3, 32, 32) and arrays.fields["rgb"].dtype == np.uint8
    assert arrays.fields["depth"].shape == (75, 80, 1, 32, 32)
    assert arrays.fields["flow"].shape == (75, 80, 2, 32, 32) and arrays.fields["flow"].dtype == np.float16


def test_the_fixture_s_box_moves_right_so_the_flow_does(root):
    flow = PreparedArrays(root / "arrays").fields["flow"][0].astype(np.float32)
    moving = np.abs(flow).sum(axis=1) > 0.2  # where something moved
    assert moving.any() and flow[:, 0][moving].mean() > 0.3 and abs(flow[:, 1][moving].mean()) < 0.3


def finished(nv: NVGestureTask, samples: list[dict], training: bool) -> dict[str, torch.Tensor]:
    """Samples as the model reads them: collated and finished on the CPU, as the engine does."""
    return nv.on_device(collate(samples), training).inputs


def old_sample(arrays: PreparedArrays, row: int, params: NVGestureParams, frames: slice, top: int,
               left: int) -> dict[str, torch.Tensor]:
    """The previous `GestureClips.__getitem__` for a window and crop, kept as the reference."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1, 1)

    def cut(field: str) -> torch.Tensor:
        window = arrays.get(field, row)[frames, :, top:top + params.crop, left:left + params.crop]
        return torch.from_numpy(np.ascontiguousarray(window)).permute(1, 0, 2, 3).float()

    flow = cut("flow")
    if params.flow_bound is not None:
        flow = (flow / params.flow_bound).clamp(-1.0, 1.0)
    return {"rgb": (cut("rgb") / 255.0 - mean) / std, "depth": cut("depth") / 255.0, "flow": flow}


def test_training_clips_share_one_window_and_crop_and_evaluation_takes_the_centre(root):
    nv = task(root)
    splits = nv.splits()
    assert {s: len(d) for s, d in splits.items()} == {"train": 25, "val": 25, "test": 25}  # one per class held out
    arrays = PreparedArrays(root / "arrays")
    row = splits["train"].rows[0]
    loaded = splits["train"][0]
    assert loaded["rgb"].shape == (8, 3, 16, 16) and loaded["rgb"].dtype == torch.uint8
    assert loaded["flow"].dtype == torch.float16
    sample = {m: x[0] for m, x in finished(nv, [loaded], training=True).items()}
    assert sample["rgb"].shape == (3, 8, 16, 16) and sample["flow"].shape == (2, 8, 16, 16)
    depth = arrays.fields["depth"][row].astype(np.float32) / 255.0  # (80, 1, 32, 32)
    matches = [(t, y, x) for t in range(73) for y in range(17) for x in range(17)
               if np.allclose(depth[t:t + 8, 0, y:y + 16, x:x + 16], sample["depth"][0].numpy())]
    assert matches, "the depth clip is not a window and crop of the stored frames"
    t, y, x = matches[0]
    rgb = arrays.fields["rgb"][row, t:t + 8, :, y:y + 16, x:x + 16].astype(np.float32) / 255.0
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = (rgb.transpose(1, 0, 2, 3) - mean[:, None, None, None]) / std[:, None, None, None]
    np.testing.assert_allclose(sample["rgb"].numpy(), expected, rtol=1e-5, atol=1e-5)
    flow = arrays.fields["flow"][row, t:t + 8, :, y:y + 16, x:x + 16].astype(np.float32).transpose(1, 0, 2, 3)
    np.testing.assert_allclose(sample["flow"].numpy(), np.clip(flow / 20.0, -1, 1), rtol=1e-5, atol=1e-6)
    test = finished(nv, [splits["test"][0]], training=False)
    stored = arrays.fields["depth"][splits["test"].rows[0], :, 0, 8:24, 8:24].astype(np.float32) / 255.0
    assert test["depth"].shape == (1, 1, 80, 16, 16)
    np.testing.assert_allclose(test["depth"][0, 0].numpy(), stored, rtol=1e-6)


def test_evaluation_clips_are_the_per_sample_transform_s_bit_for_bit(root):
    for params in ({}, {"flow_bound": None}):
        nv = task(root, **params)
        test = nv.splits()["test"]
        batch = finished(nv, [test[i] for i in range(3)], training=False)
        arrays = PreparedArrays(root / "arrays")
        old = [old_sample(arrays, test.rows[i], nv.params, slice(0, 80), 8, 8) for i in range(3)]
        for m in ("rgb", "depth", "flow"):
            assert torch.equal(batch[m], torch.stack([o[m] for o in old])), m


def test_a_training_clip_s_window_follows_the_seed_and_the_epoch(root):
    train = task(root).splits()["train"]

    def drawn() -> list[torch.Tensor]:
        return [train[i]["depth"] for i in range(5)]

    train.reseed(0, 0)
    first = drawn()
    assert all(torch.equal(a, b) for a, b in zip(first, drawn(), strict=True))
    train.reseed(0, 1)
    assert any(not torch.equal(a, b) for a, b in zip(first, drawn(), strict=True))


def test_smoke_runs_read_small_clips_of_the_declared_shapes():
    light = NVGestureTask.fake_params(NVGestureParams())
    assert (light.clip_frames, light.crop) == (8, 16) and NVGestureTask.fake_params(light) == light
    nv = NVGestureTask(light)
    generator = torch.Generator().manual_seed(0)
    batch = finished(nv, [nv.fake_sample(generator) for _ in range(2)], training=True)
    assert {m: tuple(x.shape[1:]) for m, x in batch.items()} == {m: s.shape for m, s in nv.modalities.items()}
    assert all(x.dtype == torch.float32 and torch.isfinite(x).all() for x in batch.values())
    assert batch["flow"].abs().max() <= 1.0


def test_other_preprocessing_parameters_need_another_prepare(root):
    with pytest.raises(DataError, match="prepare again with them"):
        task(root, flow="dis").splits()
    assert any("preprocessing" in p for p in task(root, size=40).check())
    result = runner.invoke(app, ["data", "check", "nvgesture", "--root", str(root), "--param", "flow=dis"])
    assert result.exit_code == 1 and "prepare again" in result.output


@pytest.mark.parametrize("method", ["farneback", "dis"])
def test_optical_flow_measures_a_two_pixel_shift(method):
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (80, 80), dtype=np.uint8)
    texture = np.asarray(torch.nn.functional.avg_pool2d(torch.tensor(texture[None].astype(np.float32)), 5, 1, 2)[0])
    frames = np.stack([np.roll(texture, 2 * k, axis=1) for k in range(3)]).astype(np.uint8)
    flow = optical_flow(np.repeat(frames[:, None], 3, axis=1), method)
    assert flow.shape == (2, 2, 80, 80) and flow.dtype == np.float32
    interior = flow[:, :, 20:60, 20:60]
    assert abs(float(interior[:, 0].mean()) - 2.0) < 0.3 and abs(float(interior[:, 1].mean())) < 0.3


def test_precomputed_flow_arrays_are_read_as_the_reader_lays_them_out(small_release, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(small_release, raw)
    arrays = write_flow_arrays(raw, 32, REAL_TRAIN_LINES)
    nv = task(tmp_path / "root", flow="precomputed")
    nv.prepare(raw)
    prepared = PreparedArrays(tmp_path / "root" / "arrays")
    ids = json.loads((tmp_path / "root" / "samples.json").read_text())["ids"]
    row = ids.index(folder_of(TEST_LINES[3]))
    expected = arrays[("test", 3)].transpose(3, 2, 0, 1).astype(np.float16)  # (H, W, 2, T) -> (T, 2, H, W)
    np.testing.assert_array_equal(prepared.fields["flow"][row], expected)
    (raw / "Video_data" / "flow_data" / "test" / "3.npy").unlink()
    with pytest.raises(DataError, match="missing from the raw folder"):
        task(tmp_path / "root2", flow="precomputed").prepare(raw)


def test_a_video_that_ends_inside_its_window_is_reported(small_release, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(small_release, raw)
    write_avi(raw / "Video_data" / "class_03" / "subject3_r1" / "sk_color.avi", 180, 0, False)  # window 138..217
    with pytest.raises(DataError, match="1 of the 31 samples present are corrupt"):
        task(tmp_path / "root").prepare(raw)
    bad = json.loads((tmp_path / "root" / "prepare-report.json").read_text())["bad"]
    assert [b["id"] for b in bad] == ["class_03/subject3_r1"] and "the video ends after 180 frames" in bad[0]["reason"]


def test_bad_list_lines_bad_and_missing_videos_are_reported_in_one_pass(small_release, tmp_path):
    """Two unreadable lines, a video that ends inside its window and a missing one: one prepare reports all four
    (a bad line as `<list>:<line>`), names them on the console, and fails on the bad ones."""
    raw = tmp_path / "raw"
    shutil.copytree(small_release, raw)
    listed = raw / LIST_NAMES["train"]
    lines = listed.read_text().splitlines()
    lines[1] = lines[1].replace("label:2", "label:26")
    lines[4] = lines[4].replace("color:sk_color:", "color:")
    listed.write_text("".join(line + "\n" for line in lines))
    write_avi(raw / "Video_data" / "class_02" / "subject3_r0" / "sk_color.avi", 150, 0, False)  # window 125..204
    (raw / "Video_data" / folder_of(TEST_LINES[5]) / "sk_depth.avi").unlink()
    result = runner.invoke(app, ["data", "prepare", "nvgesture", "--raw", str(raw), "--root", str(tmp_path / "r"),
                                 "--workers", "1", "--partial", *ARGS])
    assert result.exit_code == 2 and "3 of the 30 samples present are corrupt" in result.output
    report = json.loads((tmp_path / "r" / "prepare-report.json").read_text())
    bad = {b["id"]: b for b in report["bad"]}
    assert set(bad) == {f"{LIST_NAMES['train']}:2", f"{LIST_NAMES['train']}:5", "class_02/subject3_r0"}
    assert bad[f"{LIST_NAMES['train']}:2"]["reason"] == f"{listed} line 2: label 26 is outside 1..25"
    assert "not <sensor>:<stem>:<start>:<end>" in bad[f"{LIST_NAMES['train']}:5"]["reason"]
    assert "the video ends after 150 frames" in bad["class_02/subject3_r0"]["reason"]
    assert bad["class_02/subject3_r0"]["path"].endswith("class_02/subject3_r0/sk_color.avi")
    assert report["missing"] == [{"id": folder_of(TEST_LINES[5]),
                                  "path": str(raw / "Video_data" / folder_of(TEST_LINES[5]) / "sk_depth.avi")}]
    for entry in bad.values():
        assert f"{entry['id']}: {entry['reason']}" in result.output
    assert f"{folder_of(TEST_LINES[5])} (no " in result.output


def test_a_release_without_its_lists_says_what_the_layout_is(tmp_path):
    (tmp_path / "raw" / "Video_data").mkdir(parents=True)
    with pytest.raises(DataError, match="lacks the train list") as error:
        task(tmp_path / "root").prepare(tmp_path / "raw")
    assert "Video_data/class_XX/subjectS_rR/sk_color.avi" in str(error.value)


def test_a_one_epoch_three_modality_cell_with_i3d(root, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(json.dumps({
        "name": "nvgesture-tiny", "tasks": [{"name": "nvgesture", "root": str(root), "params": SMALL}],
        "encoders": [{"*": "i3d"}], "fusions": ["concat"], "balancers": ["joint"],
        "train": {"epochs": 1, "batch_size": 5, "eval_batch_size": 25, "optimizer": {"name": "sgd", "lr": 0.01},
                  "device": "cpu"},
        "seeds": [0]}))
    result = runner.invoke(app, ["run", "--matrix", str(grid), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    [cell] = [json.loads(p.read_text()) for p in (tmp_path / "run" / "cells").glob("*.json")]
    assert cell["status"] == "ok", cell.get("reason")
    assert cell["task"]["fingerprint"] == task(root).fingerprint()
    test = cell["test"]
    assert set(test["metrics"]) == {"accuracy", "macro_f1"}
    assert set(test["unimodal"]) == set(test["missing_modality"]) == {"rgb", "depth", "flow"}


@pytest.mark.parametrize("param, message", [("flow", "expected KEY=VALUE"), ("flow=tvl1", "'farneback', 'dis' or "
                                                                                           "'precomputed'")])
def test_prepare_refuses_a_malformed_or_unknown_parameter(param, message, tmp_path):
    result = runner.invoke(app, ["data", "prepare", "nvgesture", "--raw", str(tmp_path), "--root",
                                 str(tmp_path / "root"), "--param", param])
    assert result.exit_code == 2 and message in result.output and not (tmp_path / "root").exists()
