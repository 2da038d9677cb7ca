"""`ray` against a real Ray instance this module starts (CPU only, shared by its tests: Ray starts slowly):
results equal the in-process ones, resume, a worker killed mid-cell, requests this machine cannot meet."""

import pytest
import ray

from mmbench.running import grid as grid_lib
from mmbench.running.executors import ExecutorError
from mmbench.running.runner import run_grid
from mmbench_plugins.executors.ray import RayExecutor, RayParams, _check_fits
from tests.conftest import TINY_GRID, Spy, assert_failed_mid_cell, results_without_timings

#: two cells of a few seconds each, so a kill after the first epoch lands mid-cell
LONG_GRID = TINY_GRID.replace("train_size: 128", "train_size: 2048").replace("epochs: 2", "epochs: 6") \
    .replace("seeds: [0, 1]", "seeds: [0]")


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_results_equal_the_in_process_run_and_a_rerun_resumes(tmp_path, registry):
    grid = grid_lib.parse(TINY_GRID.replace("seeds: [0, 1]", "seeds: [0]"), registry)
    run_grid(grid, registry, tmp_path / "local")
    spy = Spy(RayExecutor(RayParams()))
    summary = run_grid(grid, registry, tmp_path / "ray", executor=spy)
    assert summary.counts == {"ok": 2}
    assert results_without_timings(tmp_path / "ray") == results_without_timings(tmp_path / "local")
    for cell_id in results_without_timings(tmp_path / "ray"):
        assert spy.story(cell_id) == ["started", "epoch 0", "epoch 1", "finished ok"]

    lost = sorted((tmp_path / "ray" / "cells").glob("*.json"))[0]
    lost.unlink()
    again = run_grid(grid, registry, tmp_path / "ray", executor=RayExecutor(RayParams()))
    assert again.ran == 1 and again.resumed == 1
    assert results_without_timings(tmp_path / "ray") == results_without_timings(tmp_path / "local")


def test_a_cell_whose_worker_is_killed_mid_cell_is_retried(tmp_path, registry):
    grid = grid_lib.parse(LONG_GRID, registry)
    run_grid(grid, registry, tmp_path / "local")
    spy = Spy(RayExecutor(RayParams(max_retries=2)), kill_at_epoch=0)
    assert run_grid(grid, registry, tmp_path / "ray", executor=spy).counts == {"ok": 2}
    assert results_without_timings(tmp_path / "ray") == results_without_timings(tmp_path / "local")
    [(killed, pid)] = spy.killed
    assert spy.story(killed) == ["started"] + [f"epoch {i}" for i in range(6)] + ["finished ok"]


def test_without_retries_a_killed_worker_leaves_its_cell_failed(tmp_path, registry):
    grid = grid_lib.parse(LONG_GRID, registry)
    spy = Spy(RayExecutor(RayParams(max_retries=0)), kill_at_epoch=0)
    assert run_grid(grid, registry, tmp_path, executor=spy).counts == {"failed": 1, "ok": 1}
    [(killed, pid)] = spy.killed
    failed = results_without_timings(tmp_path)[killed]
    assert failed["reason"].startswith("its Ray task failed after 0 retries: WorkerCrashedError")
    assert_failed_mid_cell(spy.story(killed), epochs=6)


def test_a_request_this_machine_cannot_meet_is_refused_before_waiting_forever():
    have = {"CPU": 2.0, "memory": 8.0 * 2**30}
    _check_fits({"num_cpus": 2.0, "num_gpus": 0.0, "memory": 8 * 2**30}, have)  # exactly what there is: fine
    with pytest.raises(ExecutorError, match=r"has \(CPU 4 > 2; GPU 0.5 > 0\); lower num_cpus, num_gpus or memory_gb"):
        _check_fits({"num_cpus": 4.0, "num_gpus": 0.5}, have)


def test_fractional_gpus_above_one_are_refused():
    with pytest.raises(ValueError, match="fractions of one GPU or whole GPUs, not 1.5"):
        RayParams(num_gpus=1.5)
