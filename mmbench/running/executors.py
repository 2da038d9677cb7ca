"""The executor seam: where a grid's cells run.

An executor receives the cells still to run and reports, for each, `CellStarted`, any number of
`EpochEnded`, and exactly one `CellFinished` carrying its `CellResult`. It only decides where `run_cell`
(`mmbench.running.worker`) happens — in this process, in worker processes, on a cluster — and keeps no state
the run directory does not have: the runner saves every result, fires the observer hooks and shows progress
on its side, so resume and publish work the same whatever executed the cells.

Executors are plugins (hook `mmbench_executors`); built in: `local` (one after another in the calling process),
`gpus` (a worker process per GPU of this machine), `ray` (a Ray cluster) and `slurm` (a Slurm job array through
submitit). An executor whose cells run elsewhere passes what its workers send through a `Relay`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from mmbench.registry import Registry, plugin_code
from mmbench.schema.cell import Cell
from mmbench.schema.params import NoParams
from mmbench.schema.params import Params as AnyParams  # `Params` is each class's own attribute
from mmbench.schema.results import CellResult, EpochRecord, ErrorInfo


class ExecutorError(Exception):
    """An executor cannot run here (no GPU, no cluster, bad parameters); the message says what to do."""


@dataclass(frozen=True)
class CellStarted:
    cell: Cell
    #: where the cell runs, for people reading the log (e.g. "node7 pid 4242 gpu 1"); empty when in-process
    where: str = ""


@dataclass(frozen=True)
class EpochEnded:
    cell: Cell
    stats: EpochRecord


@dataclass(frozen=True)
class CellFinished:
    cell: Cell
    result: CellResult


@dataclass(frozen=True)
class Notice:
    """A line for the person running the grid about how the executor runs the cells (e.g. why some run one
    after another); `cell` is the cell it concerns, if one."""

    text: str
    cell: Cell | None = None


Event = CellStarted | EpochEnded | CellFinished | Notice


class Executor:
    """Runs cells somewhere and reports their events.

    `run` calls `report` from the thread that called `run` (the runner's side), for every event of every
    cell, and returns when every cell has finished. Cells may run concurrently; events of different cells may
    interleave. `registry` holds the runner's plugins: an in-process executor uses it, one that runs cells
    elsewhere lets each worker load the installed plugins itself. `run_dir` is the run directory, for an
    executor's own logs (the runner writes the results). An executor that cannot run raises `ExecutorError`
    before any cell starts.
    """

    name: ClassVar[str]
    Params: ClassVar[type[AnyParams]] = NoParams
    #: trains in worker processes started from `worker_context` (`mmbench.running.worker_server`): `mmbench run`
    #: then starts that server before it loads the plugins, so that the server's imports overlap its own
    uses_worker_server: ClassVar[bool] = False

    def __init__(self, params: AnyParams) -> None:
        self.params = params

    def run(self, cells: Sequence[Cell], report: Callable[[Event], None], registry: Registry,
            run_dir: Path) -> None:
        raise NotImplementedError


def build_executor(registry: Registry, name: str = "local", params: Mapping[str, Any] | None = None) -> Executor:
    """The named executor with validated parameters; bad parameters raise `ExecutorError` naming them (unknown
    ones with close matches, as grids report them), an executor that cannot run here raises `ExecutorError`, and
    its constructor raising anything else a `PluginError`."""
    from pydantic import ValidationError

    try:
        resolved = registry.resolve("executors", name, params)
    except ValidationError as exc:
        from mmbench.running.grid import describe

        problems = "; ".join(describe(exc, registry.get("executors", name).cls.Params))
        raise ExecutorError(f"executor {name!r} parameters: {problems}") from None
    with plugin_code(resolved.component, "in its constructor", expected=(ExecutorError,)):
        return resolved.cls(resolved.params)


class Relay:
    """Turns what remote workers send into the runner's events, whatever the transport.

    Workers send `started`, `epoch` and `finished` for their cell, possibly more than once: a cell whose worker
    died is retried from its start. The relay reports one `CellStarted` per cell, each epoch once and in order
    (a retry's replay of epochs already reported is dropped; cells are deterministic, so the replay repeats
    them) and exactly one `CellFinished`; anything about a finished cell is ignored. The method names are the
    message kinds, so a worker's `(kind, cell_id, payload)` is relayed as `getattr(relay, kind)(cell_id, payload)`.
    """

    def __init__(self, cells: Iterable[Cell], report: Callable[[Event], None]) -> None:
        self.cells = {cell.cell_id: cell for cell in cells}
        self.report = report
        self.pending = set(self.cells)
        self._next_epoch: dict[str, int] = {}

    def started(self, cell_id: str, where: str = "") -> None:
        if cell_id in self.pending and cell_id not in self._next_epoch:
            self._next_epoch[cell_id] = 0
            self.report(CellStarted(self.cells[cell_id], where))

    def epoch(self, cell_id: str, stats: EpochRecord | Mapping[str, Any]) -> None:
        stats = stats if isinstance(stats, EpochRecord) else EpochRecord.model_validate(stats)
        self.started(cell_id)
        if cell_id in self.pending and stats.epoch >= self._next_epoch[cell_id]:
            self._next_epoch[cell_id] = stats.epoch + 1
            self.report(EpochEnded(self.cells[cell_id], stats))

    def finished(self, cell_id: str, result: CellResult | Mapping[str, Any]) -> None:
        self.started(cell_id)
        if cell_id in self.pending:
            self.pending.discard(cell_id)
            result = result if isinstance(result, CellResult) else CellResult.model_validate(result)
            self.report(CellFinished(self.cells[cell_id], result))

    def lost(self, cell_id: str, reason: str) -> None:
        """The cell's worker is gone for good (retries spent, job failed): record the cell as failed, so the
        grid's summary shows it and `--retry-failed` runs it again."""
        cell = self.cells[cell_id]
        self.finished(cell_id, CellResult(**cell.result_fields(), status="failed", reason=reason,
                                          error=ErrorInfo(type="WorkerLost", message=reason)))
