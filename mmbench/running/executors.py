"""The executor seam: where a grid's cells run.

An executor receives the cells still to run and reports, for each, `CellStarted`, any number of
`EpochEnded`, and exactly one `CellFinished` carrying its `CellResult`. It only decides where `run_cell`
(`mmbench.running.worker`) happens — in this process, in worker processes, on a cluster — and keeps no state
the run directory does not have: the runner saves every result, fires the observer hooks and shows progress
on its side, so resume and publish work the same whatever executed the cells.

Executors are plugins (hook `mmbench_executors`); the built-in `local` runs cells one after another in the
calling process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from mmbench.registry import Registry
from mmbench.schema.cell import Cell
from mmbench.schema.params import NoParams, Params
from mmbench.schema.results import CellResult, EpochRecord


@dataclass(frozen=True)
class CellStarted:
    cell: Cell


@dataclass(frozen=True)
class EpochEnded:
    cell: Cell
    stats: EpochRecord


@dataclass(frozen=True)
class CellFinished:
    cell: Cell
    result: CellResult


Event = CellStarted | EpochEnded | CellFinished


class Executor:
    """Runs cells somewhere and reports their events.

    `run` calls `report` from the thread that called `run` (the runner's side), for every event of every
    cell, and returns when every cell has finished. Cells may run concurrently; events of different cells may
    interleave. `registry` holds the runner's plugins: an in-process executor uses it, one that runs cells
    elsewhere lets each worker load the installed plugins itself.
    """

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams

    def __init__(self, params: Params) -> None:
        self.params = params

    def run(self, cells: Sequence[Cell], report: Callable[[Event], None], registry: Registry) -> None:
        raise NotImplementedError


def build_executor(registry: Registry, name: str = "local", params: dict | None = None) -> Executor:
    resolved = registry.resolve("executors", name, params)
    return resolved.cls(resolved.params)
