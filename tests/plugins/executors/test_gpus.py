"""`gpus`: worker processes per GPU with packing, a worker killed mid-cell, no GPU at all. This machine has no
GPU, so the executor is shown fake GPU names; its workers are real processes training CPU cells."""

from collections import Counter

import pytest

from mmbench.running import grid as grid_lib
from mmbench.running.executors import CellStarted, ExecutorError
from mmbench.running.runner import run_grid
from mmbench_plugins.executors import gpus, workers
from tests.conftest import TINY_GRID, Spy, assert_failed_mid_cell, results_without_timings

#: two cells of a few seconds each, so a kill after the first epoch lands mid-cell
LONG_GRID = TINY_GRID.replace("train_size: 128", "train_size: 2048").replace("epochs: 2", "epochs: 6") \
    .replace("seeds: [0, 1]", "seeds: [0]")


def fake_gpus(monkeypatch, names):
    monkeypatch.setattr(gpus, "visible_gpus", lambda: list(names))


def test_workers_are_packed_per_gpu_and_results_equal_the_in_process_run(tmp_path, registry, monkeypatch):
    grid = grid_lib.parse(TINY_GRID, registry)
    run_grid(grid, registry, tmp_path / "local")
    fake_gpus(monkeypatch, ["3", "7"])
    spy = Spy(gpus.GpusExecutor(gpus.GpusParams(cells_per_gpu=2)))
    summary = run_grid(grid, registry, tmp_path / "gpus", executor=spy)
    assert summary.counts == {"ok": 4} and summary.ran == 4
    assert results_without_timings(tmp_path / "gpus") == results_without_timings(tmp_path / "local")
    where = [e.where.split(" pid ")[1] for e in spy.events if isinstance(e, CellStarted)]  # "PID gpu G"
    assert len(set(where)) == 4  # four workers, each with one cell
    assert Counter(w.split(" gpu ")[1] for w in where) == {"3": 2, "7": 2}  # each saw only its GPU, two per GPU
    for cell_id in results_without_timings(tmp_path / "gpus"):
        assert spy.story(cell_id) == ["started", "epoch 0", "epoch 1", "finished ok"]


def test_a_cell_whose_worker_is_killed_is_retried_then_recorded_failed(tmp_path, registry, monkeypatch):
    grid = grid_lib.parse(LONG_GRID, registry)
    run_grid(grid, registry, tmp_path / "local")
    expected = results_without_timings(tmp_path / "local")
    fake_gpus(monkeypatch, ["0"])

    retried = Spy(gpus.GpusExecutor(gpus.GpusParams(max_retries=1)), kill_at_epoch=0)
    assert run_grid(grid, registry, tmp_path / "retried", executor=retried).counts == {"ok": 2}
    assert results_without_timings(tmp_path / "retried") == expected
    [(killed, pid)] = retried.killed
    assert retried.story(killed) == ["started"] + [f"epoch {i}" for i in range(6)] + ["finished ok"]

    lost = Spy(gpus.GpusExecutor(gpus.GpusParams(max_retries=0)), kill_at_epoch=0)
    assert run_grid(grid, registry, tmp_path / "lost", executor=lost).counts == {"failed": 1, "ok": 1}
    [(killed, pid)] = lost.killed
    assert_failed_mid_cell(lost.story(killed), epochs=6)
    failed = results_without_timings(tmp_path / "lost")[killed]
    assert "died 1 time(s), last killed by SIGKILL" in failed["reason"] and failed["error"]["type"] == "WorkerLost"

    # resume: only the failed cell runs again, and the directory ends as the in-process one
    again = run_grid(grid, registry, tmp_path / "lost", retry_failed=True,
                     executor=gpus.GpusExecutor(gpus.GpusParams()))
    assert again.ran == 1 and again.counts == {"ok": 2}
    assert results_without_timings(tmp_path / "lost") == expected


def test_no_gpu_is_a_clear_error_before_anything_runs(monkeypatch):
    fake_gpus(monkeypatch, [])
    with pytest.raises(ExecutorError, match=r"found no GPU on this machine .* use --executor local"):
        gpus.GpusExecutor(gpus.GpusParams())


def test_a_grid_naming_another_gpu_than_the_workers_own_is_refused(tmp_path, registry, monkeypatch):
    fake_gpus(monkeypatch, ["0", "1"])
    grid = grid_lib.parse(TINY_GRID.replace("device: cpu", "device: cuda:1"), registry)
    with pytest.raises(ExecutorError, match="asks for cuda:1: set train.device to auto or cuda"):
        run_grid(grid, registry, tmp_path, executor=gpus.GpusExecutor(gpus.GpusParams()))


def test_cpu_slices_are_disjoint_and_equal(monkeypatch):
    monkeypatch.setattr(workers.os, "sched_getaffinity", lambda pid: set(range(10)))
    assert workers.cpu_slices(3) == [{0, 1, 2}, {3, 4, 5}, {6, 7, 8}]
    assert workers.cpu_slices(11) == [None] * 11


def test_nothing_to_run_starts_no_worker(monkeypatch):
    fake_gpus(monkeypatch, ["0"])
    monkeypatch.setattr(workers, "Slot", lambda *args: pytest.fail("a worker was started"))
    gpus.GpusExecutor(gpus.GpusParams()).run([], lambda event: pytest.fail("an event"), None, None)
