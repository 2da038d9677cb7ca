"""The executor seam: cells travel as JSON to a worker in another process; every executor's results equal the
in-process ones; the runner fires observer hooks and saves results on its side."""

import json
import subprocess
import sys
from collections.abc import Callable, Sequence

from mmbench import registry as registry_lib
from mmbench.hookspecs import hookimpl
from mmbench.running.executors import CellFinished, CellStarted, Event, Executor, build_executor
from mmbench.running.runner import run_grid
from mmbench.schema import grid as grid_lib
from mmbench.schema.cell import Cell
from mmbench.schema.results import CellResult
from tests.conftest import TINY_GRID


class SubprocessExecutor(Executor):
    """Each cell in a fresh Python process through the worker's command line, in reverse order."""

    name = "subprocess_test"

    def run(self, cells: Sequence[Cell], report: Callable[[Event], None], registry, run_dir) -> None:
        for cell in reversed(cells):
            report(CellStarted(cell))
            folder = run_dir
            (folder / "cell.json").write_text(json.dumps(cell.to_json()))
            subprocess.run([sys.executable, "-m", "mmbench.running.worker", str(folder / "cell.json"),
                            str(folder / "result.json")], check=True, timeout=300)
            result = CellResult.model_validate_json((folder / "result.json").read_text())
            report(CellFinished(cell, result))


class Recorder:
    def __init__(self):
        self.events = []

    @hookimpl
    def mmbench_cell_started(self, cell):
        self.events.append(("started", cell["cell_id"]))

    @hookimpl
    def mmbench_epoch_end(self, cell, stats):
        self.events.append(("epoch", cell["cell_id"], stats["epoch"]))

    @hookimpl
    def mmbench_cell_finished(self, cell, result):
        self.events.append(("finished", cell["cell_id"], result["status"]))


def _metrics(out_dir):
    results = [json.loads(p.read_text()) for p in (out_dir / "cells").glob("*.json")]
    return {r["cell_id"]: (r["status"], r["test"]["metrics"], [h["train_loss"] for h in r["history"]])
            for r in results}


def test_a_cell_run_in_another_process_equals_the_in_process_run(tmp_path, registry):
    text = TINY_GRID.replace("seeds: [0, 1]", "seeds: [0]").replace("fusions: [concat, sum]", "fusions: [sum]")
    grid = grid_lib.parse(text.replace("balancers: [joint]", "balancers: [joint, unimodal]"), registry)
    run_grid(grid, registry, tmp_path / "local")
    executor = SubprocessExecutor(SubprocessExecutor.Params())
    summary = run_grid(grid, registry, tmp_path / "subprocess", executor=executor)
    assert summary.counts == {"ok": 2}
    assert _metrics(tmp_path / "subprocess") == _metrics(tmp_path / "local")
    local = json.loads((tmp_path / "local" / "leaderboard.json").read_text())
    other = json.loads((tmp_path / "subprocess" / "leaderboard.json").read_text())
    for a, b in zip(local["entries"], other["entries"]):
        assert a["metrics"] == b["metrics"] and a["id"] == b["id"]


def test_executors_are_plugins_and_the_runner_reports_every_event(tmp_path):
    recorder = Recorder()

    class Plugin:
        @hookimpl
        def mmbench_executors(self):
            return [SubprocessExecutor]

    registry = registry_lib.load(extra_plugins=[Plugin(), recorder])
    assert isinstance(build_executor(registry, "subprocess_test"), SubprocessExecutor)
    grid = grid_lib.parse(TINY_GRID.replace("seeds: [0, 1]", "seeds: [0]"), registry)
    run_grid(grid, registry, tmp_path)
    ids = sorted(p.stem for p in (tmp_path / "cells").glob("*.json"))
    assert len(ids) == 2
    for cell_id in ids:
        mine = [e for e in recorder.events if e[1] == cell_id]
        assert mine == [("started", cell_id), ("epoch", cell_id, 0), ("epoch", cell_id, 1),
                        ("finished", cell_id, "ok")]


def test_the_worker_refuses_nothing_and_reports_a_bad_cell_as_failed(registry):
    from mmbench.running.cells import expand
    from mmbench.running.worker import run_cell

    [cell, *_] = expand(grid_lib.parse(TINY_GRID, registry), registry)
    broken = cell.model_copy(update={"balancer": cell.balancer.model_copy(update={"name": "no_such_balancer"})})
    result = run_cell(broken.to_json(), registry)
    assert result.status == "failed" and result.error.type == "UnknownComponent"
    assert "no_such_balancer" in result.reason


def test_results_round_trip_through_json(registry):
    from mmbench.running.cells import expand
    from mmbench.running.worker import run_cell

    [cell, *_] = expand(grid_lib.parse(TINY_GRID, registry), registry)
    result = run_cell(cell, registry)
    assert result.status == "ok" and result.cell_id == cell.cell_id
    again = CellResult.model_validate_json(json.dumps(result.to_json()))
    assert again == result and again.schema_ == "mmbench.cell/1"
