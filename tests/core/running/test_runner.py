"""The matrix runner end to end: results, statuses, resume, interruption, leaderboard files."""

import json
import os
import signal
import subprocess
import sys
import time

import jsonschema
import pytest
import torch

from mmbench import registry as registry_lib
from mmbench.contract.balancer import Balancer
from mmbench.contract.hooks import hookimpl
from mmbench.reporting import leaderboard as lb
from mmbench.reporting import markdown as md
from mmbench.running import grid as grid_lib
from mmbench.running.runner import run_grid
from tests.conftest import TINY_GRID


class Explodes(Balancer):
    name = "explodes"

    def loss(self, ctx, batch, out):
        raise RuntimeError("boom in the loss")


class Diverges(Balancer):
    name = "diverges"

    def loss(self, ctx, batch, out):
        return super().loss(ctx, batch, out) * float("inf")


class RunsOutOfMemory(Balancer):
    name = "runs_out_of_memory"

    def loss(self, ctx, batch, out):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


class NeedsSum(Balancer):
    name = "needs_sum"
    from mmbench.contract.balancer import Requirements
    requires = Requirements(fusions=frozenset({"sum"}))


class TestPlugin:
    @hookimpl
    def mmbench_balancers(self):
        return [Explodes, Diverges, NeedsSum, RunsOutOfMemory]


@pytest.fixture
def registry_with_test_balancers():
    return registry_lib.load(extra_plugins=[TestPlugin()])


def run(text, registry, out_dir):
    return run_grid(grid_lib.parse(text, registry), registry, out_dir, grid_text=text)


def test_every_status_is_recorded_and_the_grid_goes_on(registry_with_test_balancers, tmp_path):
    text = TINY_GRID.replace("balancers: [joint]", "balancers: [explodes, diverges, needs_sum, joint]")
    summary = run(text, registry_with_test_balancers, tmp_path)
    assert summary.counts == {"failed": 4, "diverged": 4, "skipped": 2, "ok": 6}
    board = lb.read(tmp_path / "leaderboard.json")
    by_status = {}
    for e in board.entries:
        by_status.setdefault(e.status, []).append(e)
    assert by_status["failed"][0].reason.endswith("RuntimeError: boom in the loss")
    assert "non-finite training loss in epoch 0" in by_status["diverged"][0].reason
    assert by_status["skipped"][0].reason == "needs_sum supports fusions ['sum'], not 'concat'"
    assert {e.balancer.name for e in md.ranked(board)} == {"joint", "needs_sum"}
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert "## Not ranked" in markdown and "boom in the loss" in markdown


def test_out_of_memory_is_recorded_as_failed_with_its_reason(registry_with_test_balancers, tmp_path):
    text = TINY_GRID.replace("balancers: [joint]", "balancers: [runs_out_of_memory, joint]")
    summary = run(text, registry_with_test_balancers, tmp_path)
    assert summary.counts == {"failed": 4, "ok": 4}
    failed = [json.loads(p.read_text()) for p in (tmp_path / "cells").glob("*.json")]
    failed = [r for r in failed if r["status"] == "failed"]
    assert failed[0]["reason"] == "out of memory: CUDA out of memory. Tried to allocate 20.00 GiB"
    assert failed[0]["error"]["type"] == "OutOfMemoryError" and "Traceback" in failed[0]["error"]["traceback"]


def test_rerun_resumes_and_only_runs_missing_cells(registry, tmp_path):
    first = run(TINY_GRID, registry, tmp_path)
    assert first.counts == {"ok": 4} and first.resumed == 0
    cells = sorted((tmp_path / "cells").glob("*.json"))
    stamps = {p.name: p.stat().st_mtime_ns for p in cells}
    cells[0].unlink()
    second = run(TINY_GRID, registry, tmp_path)
    assert second.resumed == 3 and second.counts == {"ok": 4}
    for p in cells[1:]:
        assert p.stat().st_mtime_ns == stamps[p.name]
    assert cells[0].exists()


def test_retry_failed_reruns_only_failed_cells(registry_with_test_balancers, tmp_path):
    text = TINY_GRID.replace("balancers: [joint]", "balancers: [explodes, joint]")
    first = run(text, registry_with_test_balancers, tmp_path)
    assert first.counts == {"failed": 4, "ok": 4}
    resumed = run(text, registry_with_test_balancers, tmp_path)  # without --retry-failed: nothing is re-run
    assert (resumed.resumed, resumed.ran) == (8, 0)
    again = run_grid(grid_lib.parse(text, registry_with_test_balancers), registry_with_test_balancers,
                     tmp_path, retry_failed=True)
    assert (again.resumed, again.ran) == (4, 4)  # the ok cells are kept, the failed ones re-run


def test_leaderboard_validates_against_its_schema_and_round_trips(registry, tmp_path):
    run(TINY_GRID, registry, tmp_path)
    data = json.loads((tmp_path / "leaderboard.json").read_text())
    jsonschema.validate(data, lb.Leaderboard.model_json_schema(by_alias=True))
    board = lb.Leaderboard.model_validate(data)
    assert board.to_json() == data
    entry = board.entries[0]
    assert entry.seeds == [0, 1] and len(entry.metrics["accuracy"].per_seed) == 2
    assert entry.profile.params["total"] > 0 and entry.env["torch"]
    assert set(entry.unimodal) == {"fast", "slow"}
    fast, slow = (entry.unimodal[m]["accuracy"].mean for m in ("fast", "slow"))
    assert slow < fast  # the synthetic task's slow modality trails after two epochs
    assert (entry.imbalance.weakest, entry.imbalance.strongest) == ("slow", "fast")
    assert entry.imbalance.ratio == pytest.approx(slow / fast)


def test_killing_a_run_midway_and_rerunning_completes_only_missing_cells(tmp_path):
    """A real `mmbench run` process is killed (SIGKILL) after its first cell; the re-run finishes the rest."""
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(TINY_GRID.replace("epochs: 2", "epochs: 6").replace("seeds: [0, 1]", "seeds: [0, 1, 2]"))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mmbench.cli", "run", "--matrix", str(grid_file), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "cells").glob("*.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    survivors = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    assert 1 <= len(survivors) < 6
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resuming: {len(survivors)} of 6 cells" in done.stderr.replace("\n", " ")
    assert len(list((out / "cells").glob("*.json"))) == 6
    for name, stamp in survivors.items():
        assert (out / "cells" / name).stat().st_mtime_ns == stamp
    assert (out / "leaderboard.json").exists() and (out / "leaderboard.md").exists()
    os.sync()
