"""`local`: every cell in this process, one after another (a CPU, or one GPU)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from mmbench.hookspecs import hookimpl
from mmbench.registry import Registry
from mmbench.running.executors import CellFinished, CellStarted, EpochEnded, Event, Executor
from mmbench.running.worker import run_cell
from mmbench.schema.cell import Cell


class LocalExecutor(Executor):
    """Runs the cells in the calling process, in order; progress is reported after every epoch."""

    name = "local"

    def run(self, cells: Sequence[Cell], report: Callable[[Event], None], registry: Registry,
            run_dir: Path) -> None:
        for cell in cells:
            report(CellStarted(cell))
            result = run_cell(cell, registry, on_epoch=lambda stats, cell=cell: report(EpochEnded(cell, stats)))
            report(CellFinished(cell, result))


@hookimpl
def mmbench_executors():
    return [LocalExecutor]
