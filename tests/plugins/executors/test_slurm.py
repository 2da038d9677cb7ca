"""`slurm` through submitit's local executor (the array's tasks run as processes here): a preempted task is
requeued and its cell trained again, a task killed for good leaves its cell failed, a rerun with --retry-failed
completes it, and every result equals the in-process one. The sbatch script for a real cluster is checked as
text."""

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from mmbench.running import grid as grid_lib
from mmbench.running.executors import CellStarted, ExecutorError
from mmbench.running.runner import run_grid
from mmbench_plugins.executors import slurm
from tests.conftest import TINY_GRID, Spy, results_without_timings

#: two cells of a few seconds each, so a signal after training began lands mid-cell
LONG_GRID = TINY_GRID.replace("train_size: 128", "train_size: 2048").replace("epochs: 2", "epochs: 6") \
    .replace("seeds: [0, 1]", "seeds: [0]")


def local(**params):
    return slurm.SlurmExecutor(slurm.SlurmParams(cluster="local", gpus_per_cell=0, poll_seconds=0.2, **params))


class Interrupting(Spy):
    """Sends each started cell's task process a signal once it is training: the first cell SIGUSR2 (what Slurm
    sends before preempting or timing out a job), the second SIGKILL."""

    def __init__(self, inner, run_dir: Path):
        super().__init__(inner)
        self.run_dir, self.sent = run_dir, []

    def observe(self, event):
        if isinstance(event, CellStarted):
            job = event.where.removeprefix("slurm task ")
            sig = (signal.SIGUSR2, signal.SIGKILL)[len(self.sent)]
            os.kill(self._training(job), sig)
            self.sent.append((event.cell.cell_id, job, sig))

    def _training(self, job: str) -> int:
        """The pid of the job's task process, once its log says the cell is training."""
        log = self.run_dir / "slurm" / job / f"{job}_0_log.out"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if log.exists() and "mmbench: training cell" in log.read_text():
                [task] = psutil.Process(int(job)).children()  # local jobs: the job id is the controller's pid
                return task.pid
            time.sleep(0.1)
        raise AssertionError(f"job {job} never started training")


def test_a_preempted_cell_is_requeued_and_a_killed_one_is_failed_then_resumed(tmp_path, registry):
    grid = grid_lib.parse(LONG_GRID, registry)
    run_grid(grid, registry, tmp_path / "local")
    spy = Interrupting(local(), tmp_path / "slurm")
    assert run_grid(grid, registry, tmp_path / "slurm", executor=spy).counts == {"ok": 1, "failed": 1}
    (preempted, job, _), (killed, killed_job, _) = spy.sent
    results = results_without_timings(tmp_path / "slurm")
    assert results[preempted] == results_without_timings(tmp_path / "local")[preempted]
    log = (tmp_path / "slurm" / "slurm" / job / f"{job}_0_log.out").read_text()
    assert log.count("mmbench: training cell") == 2 and "interrupted; requeued to start again" in log
    assert results[killed]["reason"].startswith(f"slurm task {killed_job} failed: UncompletedJobError")
    assert spy.story(preempted) == ["started", "finished ok"] and spy.story(killed) == ["started", "finished failed"]

    again = run_grid(grid, registry, tmp_path / "slurm", retry_failed=True, executor=local())
    assert again.ran == 1 and again.counts == {"ok": 2}
    assert results_without_timings(tmp_path / "slurm") == results_without_timings(tmp_path / "local")


def test_the_sbatch_script_carries_the_parameters(tmp_path, monkeypatch):
    monkeypatch.setattr(slurm.shutil, "which", lambda name: f"/usr/bin/{name}")
    executor = slurm.SlurmExecutor(slurm.SlurmParams(partition="gpu", account="lab", time_min=90, cpus_per_cell=6,
                                                     mem_gb=32, setup=("module load cuda",),
                                                     additional={"mail-type": "FAIL"}))
    script = executor._submitit(tmp_path)._executor._make_submission_file_text("python -m job", "uid")
    for line in ("--partition=gpu", "--account=lab", "--time=90", "--cpus-per-task=6", "--gpus-per-node=1",
                 "--mem=32GB", "--requeue", "--mail-type=FAIL", "--signal=USR2@90"):
        assert f"#SBATCH {line}\n" in script, line
    assert "\nmodule load cuda\n" in script


def test_without_sbatch_the_error_says_what_to_do(monkeypatch):
    monkeypatch.setattr(slurm.shutil, "which", lambda name: None)
    with pytest.raises(ExecutorError, match="needs sbatch, .* or pass -x cluster=local"):
        slurm.SlurmExecutor(slurm.SlurmParams())
