"""`local`: this machine. CPU cells run side by side, each in a worker process (`workers.py`) on its own share
of the cores, as many as the cores allow; a GPU's cells run one after another in this process."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt

from mmbench.api import EpochRecord, Params, hookimpl
from mmbench.api.running import (
    Cell,
    CellFinished,
    CellStarted,
    EpochEnded,
    Event,
    Executor,
    Registry,
    run_cell,
    stored_needs,
    usable_cpus,
)
from mmbench_plugins.executors.workers import Place, cpu_slices, run_pool


class LocalParams(Params):
    workers: PositiveInt | Literal["auto"] = Field(
        "auto", description="cells trained at the same time, each in a worker process (1: one after another in "
                            "this process). 'auto': when the cells run on the CPU, this process's CPUs divided by "
                            "the cells' cpu_threads; else 1")
    max_retries: int = Field(1, ge=0, description="times a cell is re-run after its worker process died")


def on_cpu(cell: Cell) -> bool:
    import torch

    return cell.train.device == "cpu" or (cell.train.device == "auto" and not torch.cuda.is_available())


class LocalExecutor(Executor):
    """Runs the cells on this machine: in worker processes side by side, or in this process in order."""

    name = "local"
    Params = LocalParams
    params: LocalParams
    uses_worker_server = True  # workers.py forks its workers from it

    def workers_for(self, cells: Sequence[Cell]) -> int:
        if self.params.workers != "auto":
            return min(self.params.workers, len(cells)) or 1
        if not cells or not all(map(on_cpu, cells)):
            return 1
        return max(1, min(len(cells), usable_cpus() // max(c.train.cpu_threads for c in cells)))

    def run(self, cells: Sequence[Cell], report: Callable[[Event], None], registry: Registry,
            run_dir: Path) -> None:
        workers = self.workers_for(cells)
        if workers > 1:
            places = [Place(f"cpu worker {i}", cpus=cpus) for i, cpus in enumerate(cpu_slices(workers))]
            run_pool(cells, report, places, self.params.max_retries, stored_needs(cells, run_dir))
            return
        for cell in cells:  # in this process, with the runner's registry (plugins registered in-process too)
            report(CellStarted(cell))

            def on_epoch(stats: EpochRecord, cell: Cell = cell) -> None:
                report(EpochEnded(cell, stats))

            result = run_cell(cell, registry, on_epoch=on_epoch)
            report(CellFinished(cell, result))


@hookimpl
def mmbench_executors():
    return [LocalExecutor]
