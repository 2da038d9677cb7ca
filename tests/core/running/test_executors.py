"""The executor seam: cells travel as JSON to a worker in another process; every executor's results equal the
in-process ones; the runner fires observer hooks and saves results on its side."""

import json
import subprocess
import sys
from collections.abc import Callable, Sequence

import pytest

from mmbench import registry as registry_lib
from mmbench.contract.hooks import hookimpl
from mmbench.running import grid as grid_lib
from mmbench.running.executors import CellFinished, CellStarted, Event, Executor, build_executor
from mmbench.running.runner import run_grid
from mmbench.schema.cell import Cell
from mmbench.schema.results import CellResult
from tests.conftest import TINY_GRID, results_without_timings


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


def test_a_cell_run_in_another_process_equals_the_in_process_run(tmp_path, registry):
    text = TINY_GRID.replace("seeds: [0, 1]", "seeds: [0]").replace("fusions: [concat, sum]", "fusions: [sum]")
    grid = grid_lib.parse(text.replace("balancers: [joint]", "balancers: [joint, unimodal]"), registry)
    run_grid(grid, registry, tmp_path / "local")
    executor = SubprocessExecutor(SubprocessExecutor.Params())
    summary = run_grid(grid, registry, tmp_path / "subprocess", executor=executor)
    assert summary.counts == {"ok": 2}
    assert results_without_timings(tmp_path / "subprocess") == results_without_timings(tmp_path / "local")
    local = json.loads((tmp_path / "local" / "leaderboard.json").read_text())
    other = json.loads((tmp_path / "subprocess" / "leaderboard.json").read_text())
    for a, b in zip(local["entries"], other["entries"], strict=True):
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
    assert again == result and again.schema_ == "mmbench.cell/1.1"


def test_a_result_records_the_plugins_of_its_own_components_only(registry):
    from mmbench.running.cells import expand
    from mmbench.running.worker import run_cell

    text = TINY_GRID.replace("balancers: [joint]", "balancers: [modality_dropout]").replace("seeds: [0, 1]",
                                                                                           "seeds: [0]")
    [cell, _] = expand(grid_lib.parse(text, registry), registry)
    result = run_cell(cell, registry)
    assert result.env["plugins"] == {"mmbench": registry.get("tasks", "synthetic").version,
                                     "mmbench-example-balancer": "0.1.0"}


def test_the_relay_reports_each_cell_once_whatever_retried_workers_send(registry):
    from mmbench.running.cells import expand
    from mmbench.running.executors import EpochEnded, Relay

    a, b = expand(grid_lib.parse(TINY_GRID, registry), registry)[:2]
    events = []
    relay = Relay([a, b], events.append)

    def epoch(i):
        return {"epoch": i, "train_loss": 1.0 - i / 10, "lr": 0.1}

    relay.started(a.cell_id, "node1 pid 11")
    relay.epoch(a.cell_id, epoch(0))
    relay.epoch(a.cell_id, epoch(1))
    relay.started(a.cell_id, "node2 pid 22")  # its worker died; the retry starts over
    for i in range(3):
        relay.epoch(a.cell_id, epoch(i))
    relay.epoch(b.cell_id, epoch(0))  # b's start message never came: a start is reported first
    relay.finished(a.cell_id, CellResult(**a.result_fields(), status="ok").to_json())
    relay.finished(a.cell_id, CellResult(**a.result_fields(), status="ok"))  # a late duplicate
    relay.epoch(a.cell_id, epoch(3))  # anything after the result is ignored
    relay.lost(b.cell_id, "its worker died 2 time(s)")

    def word(e):
        if isinstance(e, CellStarted):
            return ("started", e.cell.cell_id, e.where)
        if isinstance(e, EpochEnded):
            return ("epoch", e.cell.cell_id, e.stats.epoch)
        return ("finished", e.cell.cell_id, e.result.status)

    assert [word(e) for e in events] == [
        ("started", a.cell_id, "node1 pid 11"), ("epoch", a.cell_id, 0), ("epoch", a.cell_id, 1),
        ("epoch", a.cell_id, 2), ("started", b.cell_id, ""), ("epoch", b.cell_id, 0),
        ("finished", a.cell_id, "ok"), ("finished", b.cell_id, "failed")]
    assert relay.pending == set()
    lost = events[-1].result
    assert lost.reason == "its worker died 2 time(s)" and lost.error.type == "WorkerLost"
    assert lost.cell_id == b.cell_id and lost.test is None


def test_executor_parameters_come_from_the_command_line_as_yaml_values():
    from mmbench.cli.options import key_values

    assert key_values(["n=2", "f=0.25", "s=auto", "l=[a, b]", "d={k: 1}", "e="], "x") == \
        {"n": 2, "f": 0.25, "s": "auto", "l": ["a", "b"], "d": {"k": 1}, "e": None}


def test_bad_executor_parameters_exit_2_before_the_run_directory_exists(tiny_grid_file, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mmbench.cli import app
    from mmbench_plugins.executors import gpus

    monkeypatch.setattr(gpus, "visible_gpus", lambda: ["0"])
    out = tmp_path / "run"
    for args, message in [
        (["--executor", "local", "-x", "nope=1"], "cannot run: executor 'local' parameters: nope: unknown key "
                                                  "'nope' (allowed: max_retries, workers)"),
        (["--executor", "local", "-x", "worker=2"], "executor 'local' parameters: worker: unknown key 'worker'; "
                                                    "did you mean 'workers'?"),
        (["--executor", "gpus", "-x", "cells_per_gpu"], "executor 'gpus': parameter 'cells_per_gpu': expected "
                                                        "KEY=VALUE"),
        (["--executor", "gpus", "-x", "cells_per_gpu=two"], "cells_per_gpu: Input should be a valid integer, unable to "
                                                            "parse string as an integer (got 'two')"),
        (["--executor", "gpus", "-x", "cells_per_gpu=[1"],
         "executor 'gpus': the value of 'cells_per_gpu' is not valid YAML"),
    ]:
        result = CliRunner().invoke(app, ["run", "--matrix", str(tiny_grid_file), "--out", str(out), *args])
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output and not out.exists()
    monkeypatch.setattr(gpus, "visible_gpus", lambda: [])
    result = CliRunner().invoke(app, ["run", "--matrix", str(tiny_grid_file), "--out", str(out), "--executor", "gpus"])
    assert result.exit_code == 2 and "executor 'gpus' found no GPU on this machine" in result.output
    assert not out.exists()


def test_a_run_reports_its_cells_per_hour(tmp_path, registry):
    grid = grid_lib.parse(TINY_GRID.replace("seeds: [0, 1]", "seeds: [0]"), registry)
    first = run_grid(grid, registry, tmp_path)
    assert first.ran == 2 and first.cells_per_hour == pytest.approx(2 * 3600 / first.seconds)
    again = run_grid(grid, registry, tmp_path)
    assert again.ran == 0 and again.resumed == 2 and again.cells_per_hour is None
