"""`mmbench run` starts the workers' server before it loads the plugins, and stops it when the executor, which
it knows only then, does not fork its workers from it (`Executor.uses_worker_server`)."""

import os
from multiprocessing import forkserver

import pytest
from typer.testing import CliRunner

from mmbench import registry as registry_lib
from mmbench.api import hookimpl
from mmbench.api.running import CellFinished, CellStarted, Executor, run_cell
from mmbench.cli import app
from mmbench.running import worker_server
from tests.conftest import TINY_GRID

ONE_CELL = TINY_GRID.replace("seeds: [0, 1]", "seeds: [0]").replace("fusions: [concat, sum]", "fusions: [sum]")


class InProcess(Executor):
    """Each cell in the calling process, without worker processes."""

    name = "in_process"

    def run(self, cells, report, registry, run_dir):
        for cell in cells:
            report(CellStarted(cell))
            report(CellFinished(cell, run_cell(cell, registry)))


class Plugin:
    @hookimpl
    def mmbench_executors(self):
        return [InProcess]


@pytest.mark.parametrize("executor, stopped", [(["--executor", "in_process"], True),
                                               (["--executor", "local", "-x", "workers=1"], False)])
def test_the_server_started_first_is_stopped_only_for_an_executor_that_does_not_use_it(
        executor, stopped, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(worker_server, "warm_up", lambda: calls.append("warm_up"))
    monkeypatch.setattr(worker_server, "stop", lambda: calls.append("stop"))
    registry = registry_lib.load(extra_plugins=[Plugin()])
    monkeypatch.setattr(registry_lib, "default", lambda: calls.append("plugins") or registry)
    grid = tmp_path / "grid.yaml"
    grid.write_text(ONE_CELL)
    result = CliRunner().invoke(app, ["run", "--matrix", str(grid), "--out", str(tmp_path / "run"), "--no-plots",
                                      *executor])
    assert result.exit_code == 0, result.output
    assert calls == ["warm_up", "plugins", *(["stop"] if stopped else [])]
    assert "cells: 1 ok" in result.output


def test_stop_ends_the_server_at_once_and_a_later_start_makes_a_new_one():
    assert worker_server.context().get_start_method() == "forkserver"  # Linux: the platforms CI runs on
    worker_server.warm_up()
    pid = forkserver._forkserver._forkserver_pid
    worker_server.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone and reaped
    worker_server.warm_up()
    assert forkserver._forkserver._forkserver_pid not in (None, pid)
