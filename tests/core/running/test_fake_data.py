"""`--fake-data`: every shipped grid runs on generated tensors of the prepared shapes; such results are marked
and can never be published."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from mmbench.cli import app
from mmbench.data.fake import FAKE_BATCH, FAKE_SIZES, fake_splits
from mmbench.running import grid as grid_lib
from mmbench.running.cells import expand
from mmbench.training.batches import collate
from tests import ROOT

#: grids run by a test of their own (synthetic3: its test trains every cell for real)
HEAVY = {"synthetic3": "tests/plugins/balancers/test_three_modalities.py"}
GRIDS = sorted(g for g in (ROOT / "grids").glob("*.yaml") if g.stem not in HEAVY)
runner = CliRunner()


def test_fake_cells_are_marked_cut_short_and_never_share_an_identity(registry, tiny_grid_file):
    grid = grid_lib.load(tiny_grid_file, registry)
    real, fake = expand(grid, registry), expand(grid, registry, fake_data=True)
    assert len(real) == 4 and len(fake) == 2  # two fusions; the fake run keeps the first seed only
    assert all(c.task.fake and c.seed == 0 for c in fake) and not any(c.task.fake for c in real)
    assert {(c.train.epochs, c.train.batch_size) for c in fake} == {(1, FAKE_BATCH)}
    assert not {c.cell_id for c in fake} & {c.cell_id for c in real}
    assert {c.benchmark_version for c in fake}.isdisjoint({c.benchmark_version for c in real})


def test_fake_cells_build_encoders_small_and_without_downloads(registry):
    grid = grid_lib.load(ROOT / "grids" / "cremad-mlb.yaml", registry)
    assert grid.encoders[0]["audio"].params["pretrained"] == "facebook/wav2vec2-large-robust"
    cell = expand(grid, registry, fake_data=True)[0]
    audio, visual = cell.encoders["audio"], cell.encoders["visual"]
    assert (audio.weights, audio.params["pretrained"], audio.params["keep_layers"], audio.params["width"]) == \
        (None, None, 1, 16)
    assert (visual.weights, visual.params["pretrained"], visual.params["freeze"], visual.params["layers"]) == \
        (None, None, True, 1)


def test_fake_samples_have_the_task_s_shapes(registry):
    resolved = registry.resolve("tasks", "cremad", {"frames": 3})
    task = resolved.cls(resolved.params)
    splits = fake_splits(task, seed=0)
    assert {s: len(d) for s, d in splits.items()} == FAKE_SIZES
    sample = splits["train"][0]  # as a loader hands it over: the clip's frames and draws, finished on the device
    assert sample["audio"].shape == (1, 257, 188) and sample["visual"]["frames"].shape == (3, 3, 224, 224)
    assert sample["label"].dtype == torch.long and 0 <= int(sample["label"]) < 6
    assert task.on_device(collate([sample]), training=True).inputs["visual"].shape == (1, 3, 3, 224, 224)
    again = fake_splits(task, seed=0)["train"][0]
    assert all(torch.equal(again["visual"][k], v) for k, v in sample["visual"].items())


def test_validate_needs_the_data_unless_it_is_fake(tmp_path, registry):
    grid = str(ROOT / "grids" / "cremad.yaml")
    result = runner.invoke(app, ["validate", grid, "--data-root", str(tmp_path)])
    assert result.exit_code == 2 and "data problem" in result.output and "AudioWAV/<stem>.wav" in result.output
    result = runner.invoke(app, ["validate", grid, "--fake-data", "--data-root", str(tmp_path)])
    cells = expand(grid_lib.load(grid, registry), registry, fake_data=True)
    trained = sum(1 for c in cells if not c.skip_reason)
    assert result.exit_code == 0 and f"{len(cells)} cells ({trained} to train)" in result.output
    assert 0 < trained < len(cells)  # mslr's cell (a sum-only method) is skipped, with its reason


def test_a_fake_run_is_marked_in_its_leaderboard_and_publish_refuses_it(tiny_grid_file, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", "--matrix", str(tiny_grid_file), "--fake-data", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "**FAKE DATA**" in (out / "leaderboard.md").read_text()
    board = json.loads((out / "leaderboard.json").read_text())
    assert all(entry["task"]["fake"] for entry in board["entries"])
    result = runner.invoke(app, ["publish", str(out), "--to", str(tmp_path / "boards")])
    assert result.exit_code == 2 and "fake data" in result.output and not (tmp_path / "boards").exists()


def one_task_per_shape(grid: Path, registry, out: Path) -> Path:
    """The grid keeping one task for each task name and set of modality shapes: tasks that differ only in
    what generated data cannot show (e.g. MLB's folds) would train the same fake cells again."""
    data = yaml.safe_load(grid.read_text())
    kept = {}
    for ref in data["tasks"]:
        ref = {"name": ref} if isinstance(ref, str) else ref
        resolved = registry.resolve("tasks", ref["name"], ref.get("params", {}))
        shapes = tuple((m, s.kind, s.shape) for m, s in resolved.cls(resolved.params).modalities.items())
        kept.setdefault((ref["name"], shapes), ref)
    out.write_text(yaml.safe_dump({**data, "tasks": list(kept.values())}))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("grid", GRIDS, ids=[g.stem for g in GRIDS])
def test_every_shipped_grid_runs_on_fake_data(grid, tmp_path, monkeypatch, registry):
    monkeypatch.setenv("MMBENCH_DATA", str(tmp_path / "no-data-here"))
    result = runner.invoke(app, ["validate", str(grid), "--fake-data"])
    assert result.exit_code == 0, result.output
    grid = one_task_per_shape(grid, registry, tmp_path / grid.name)
    result = runner.invoke(app, ["run", "--matrix", str(grid), "--fake-data", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    cells = [json.loads(p.read_text()) for p in (tmp_path / "run" / "cells").glob("*.json")]
    statuses = {c["status"] for c in cells}
    failures = [(c["balancer"]["name"], c["fusion"]["name"], c.get("reason")) for c in cells
                if c["status"] not in ("ok", "skipped")]
    assert statuses <= {"ok", "skipped"} and "ok" in statuses, failures
    assert all(c["task"]["fake"] for c in cells)


def test_a_task_s_lighter_smoke_inputs_reach_the_cells_and_are_announced():
    from mmbench import registry as registry_lib
    from mmbench.api import hookimpl
    from mmbench.running.runner import lighter_inputs
    from mmbench_plugins.tasks.synthetic import SyntheticTask

    class LightSynthetic(SyntheticTask):
        name = "light_synthetic"

        @classmethod
        def fake_params(cls, params):
            return params.model_copy(update={"train_size": 8})

    class Plugin:
        @hookimpl
        def mmbench_tasks(self):
            return [LightSynthetic]

    registry = registry_lib.load(extra_plugins=[Plugin()])
    text = (ROOT / "grids" / "quickstart.yaml").read_text().replace("  - synthetic\n", "  - light_synthetic\n")
    grid = grid_lib.parse(text, registry)
    assert {c.task.params["train_size"] for c in expand(grid, registry, fake_data=True)} == {8}
    assert {c.task.params["train_size"] for c in expand(grid, registry)} != {8}
    [line] = lighter_inputs(grid, registry)
    assert line.startswith("smoke run: light_synthetic runs on lighter inputs (train_size=8)")
