"""`local`: CPU cells side by side in worker processes (as many as the CPUs allow), or in this process."""

import pytest

from mmbench.running import grid as grid_lib
from mmbench.running.cells import expand
from mmbench.running.executors import CellStarted
from mmbench.running.runner import run_grid
from mmbench_plugins.executors import local, workers
from tests.conftest import TINY_GRID, Spy, results_without_timings


def test_cpu_cells_in_worker_processes_equal_the_in_process_run(tmp_path, registry):
    grid = grid_lib.parse(TINY_GRID, registry)
    run_grid(grid, registry, tmp_path / "in-process")
    spy = Spy(local.LocalExecutor(local.LocalParams(workers=2)))
    summary = run_grid(grid, registry, tmp_path / "workers", executor=spy)
    assert summary.counts == {"ok": 4}
    assert results_without_timings(tmp_path / "workers") == results_without_timings(tmp_path / "in-process")
    where = {e.where.split(" pid ")[1] for e in spy.events if isinstance(e, CellStarted)}
    assert len(where) == 2 and {w.split(" ", 1)[1] for w in where} == {"cpu worker 0", "cpu worker 1"}


@pytest.mark.parametrize(("cpus", "threads", "device", "expected"), [
    (8, 1, "cpu", 4),   # a worker per cell, up to the CPUs
    (3, 1, "cpu", 3),   # a worker per CPU
    (8, 3, "cpu", 2),   # each cell's threads get their own CPUs
    (2, 4, "cpu", 1),   # a cell needs more threads than there are CPUs: in this process
    (8, 1, "cuda", 1),  # GPU cells run in this process, one after another
])
def test_auto_runs_as_many_cpu_cells_at_once_as_the_cpus_allow(registry, monkeypatch, cpus, threads, device,
                                                                 expected):
    monkeypatch.setattr(local, "usable_cpus", lambda: cpus)
    text = TINY_GRID.replace("device: cpu", f"device: {device}\n  cpu_threads: {threads}")
    cells = expand(grid_lib.parse(text, registry), registry)
    assert len(cells) == 4
    assert local.LocalExecutor(local.LocalParams()).workers_for(cells) == expected
    assert local.LocalExecutor(local.LocalParams(workers=3)).workers_for(cells) == 3
    assert local.LocalExecutor(local.LocalParams(workers=9)).workers_for(cells) == 4  # never more than cells


def test_one_worker_runs_in_this_process_with_the_runners_registry(tmp_path, registry, monkeypatch):
    monkeypatch.setattr(workers, "Slot", lambda *args: pytest.fail("a worker process was started"))
    grid = grid_lib.parse(TINY_GRID.replace("seeds: [0, 1]", "seeds: [0]"), registry)
    summary = run_grid(grid, registry, tmp_path, executor=local.LocalExecutor(local.LocalParams(workers=1)))
    assert summary.counts == {"ok": 2}
