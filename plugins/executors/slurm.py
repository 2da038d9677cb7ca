"""`slurm`: the grid's cells as one Slurm job array, submitted through submitit; preempted cells are requeued.

- Each array task trains one cell (`run_cell`) and returns its result. The runner waits where it was started
  (keep it alive: tmux, or a small job of its own) and saves each result when its task ends, into the same
  run directory as any other executor, so resume and publish work unchanged. submitit's job scripts, pickles
  and logs go to `<run dir>/slurm/`.
- A preempted task is requeued (submitit's checkpoint hook) and its cell starts again from the beginning: a
  cell keeps no mid-training checkpoint. A task that reaches its time limit is requeued at most
  `max_requeues` times. A task that fails for good (node failure, requeues spent, cancelled) is recorded
  failed with submitit's reason; `--retry-failed` submits it again.
- Stopping the runner (Ctrl-C) cancels the tasks still pending or running: no cell trains with nobody to save
  its result.
- `cluster: local` runs the array as processes on this machine (submitit's local executor): to try a grid, and
  for the tests.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from mmbench.api import Params, hookimpl
from mmbench.api.running import Cell, Event, Executor, ExecutorError, Relay, run_cell


class SlurmParams(Params):
    partition: str | None = Field(None, description="sbatch --partition")
    account: str | None = Field(None, description="sbatch --account")
    qos: str | None = Field(None, description="sbatch --qos")
    constraint: str | None = Field(None, description="sbatch --constraint, e.g. a100")
    time_min: int = Field(240, ge=1, description="time limit of each cell's task, in minutes")
    gpus_per_cell: int = Field(1, ge=0)
    cpus_per_cell: int = Field(8, ge=1)
    mem_gb: float | None = Field(None, gt=0, description="host memory per cell (null: the partition's default)")
    array_parallelism: int = Field(64, ge=1, description="cells of the array running at the same time")
    max_requeues: int = Field(3, ge=0, description="requeues of a cell whose task hit its time limit "
                                                   "(preempted tasks are always requeued)")
    setup: tuple[str, ...] = Field((), description="shell lines run first in each task, e.g. 'module load cuda'")
    additional: dict[str, str | int | bool] = Field(default_factory=dict,
                                             description="further sbatch options, e.g. {mail-type: FAIL}")
    cluster: Literal["slurm", "local"] = Field("slurm", description="'local': the tasks run on this machine")
    poll_seconds: float = Field(15.0, gt=0, description="how often the tasks' states are read")


class CellTask:
    """What one array task runs. Its `checkpoint` (submitit's preemption hook) requeues the same cell."""

    def __call__(self, cell: dict[str, Any]) -> dict[str, Any]:
        print(f"mmbench: training cell {cell['cell_id']}", flush=True)
        return run_cell(cell).to_json()

    def checkpoint(self, cell: dict[str, Any]) -> Any:
        from submitit.helpers import DelayedSubmission

        print(f"mmbench: cell {cell['cell_id']} interrupted; requeued to start again", flush=True)
        return DelayedSubmission(self, cell)


#: job states in which a task has begun (Slurm's names; submitit's local executor says RUNNING/FINISHED)
_BEGUN = {"RUNNING", "COMPLETING", "COMPLETED", "FINISHED", "REQUEUED", "PREEMPTED"}


class SlurmExecutor(Executor):
    """One Slurm job array per grid through submitit; preempted cells are requeued."""

    name = "slurm"
    Params = SlurmParams
    params: SlurmParams

    def __init__(self, params: SlurmParams) -> None:
        super().__init__(params)
        if params.cluster == "slurm" and shutil.which("sbatch") is None:
            raise ExecutorError("executor 'slurm' needs sbatch, which is not on this machine's PATH: run mmbench "
                                "on a Slurm login node, or pass -x cluster=local to run the tasks here")

    def _submitit(self, folder: Path):
        import submitit

        p = self.params
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster=p.cluster,
                                         slurm_max_num_timeout=p.max_requeues, local_max_num_timeout=p.max_requeues)
        slurm = {"partition": p.partition, "account": p.account, "qos": p.qos, "constraint": p.constraint}
        executor.update_parameters(
            name="mmbench", timeout_min=p.time_min, gpus_per_node=p.gpus_per_cell, cpus_per_task=p.cpus_per_cell,
            tasks_per_node=1, nodes=1, **({"mem_gb": p.mem_gb} if p.mem_gb is not None else {}),
            slurm_array_parallelism=p.array_parallelism, slurm_setup=list(p.setup),
            slurm_additional_parameters={"requeue": True, **p.additional},  # requeueable where the default is not
            **{f"slurm_{k}": v for k, v in slurm.items() if v is not None})
        return executor

    def run(self, cells: Sequence[Cell], report: Callable[[Event], None], registry, run_dir: Path) -> None:
        from submitit.core.utils import FailedJobError, UncompletedJobError

        if not cells:
            return
        jobs = self._submitit(Path(run_dir) / "slurm").map_array(CellTask(), [cell.to_json() for cell in cells])
        relay = Relay(cells, report)
        waiting = {job: cell.cell_id for job, cell in zip(jobs, cells)}
        try:
            while waiting:
                for job, cell_id in list(waiting.items()):
                    if job.done():
                        del waiting[job]
                        try:
                            relay.finished(cell_id, job.result())
                        except (FailedJobError, UncompletedJobError) as exc:  # killed, requeues spent, node lost
                            last = (str(exc).strip().splitlines() or [""])[-1]
                            relay.lost(cell_id, f"slurm task {job.job_id} failed: {type(exc).__name__}: {last}")
                    elif job.state in _BEGUN:
                        relay.started(cell_id, f"slurm task {job.job_id}")
                if waiting:
                    time.sleep(self.params.poll_seconds)
        finally:
            for job in waiting:
                job.cancel(check=False)


@hookimpl
def mmbench_executors():
    return [SlurmExecutor]
