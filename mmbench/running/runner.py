"""The matrix runner: expands a grid, hands the unfinished cells to an executor, records every outcome,
resumes, and writes the run's leaderboards.

Every cell ends in a stored result: `ok`, `failed` (exception or out of memory, with its reason),
`diverged` (non-finite loss, with the epoch) or `skipped` (incompatible parts, with the reason).
A failure never stops the grid; an interrupt (Ctrl-C, kill) loses at most the cells in progress.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from mmbench.files import atomic_write_text
from mmbench.registry import Registry
from mmbench.reporting import leaderboard
from mmbench.rundir import RunStore
from mmbench.running.cells import expand
from mmbench.running.executors import (
    CellFinished,
    CellStarted,
    EpochEnded,
    Event,
    Executor,
    Notice,
    build_executor,
)
from mmbench.running.grid import Grid
from mmbench.schema.results import CellResult


def finished_line(result: CellResult, done: int, total: int) -> str:
    """One log line per finished cell (also readable when the output is not a terminal)."""
    head = f"[{done}/{total}] {result.status:<8} {result.label()}"
    if result.status != "ok":
        return f"{head}: {result.reason}"
    split, scores = ("val ", result.val) if result.is_trial else ("", result.test)  # a trial never sees the test
    if scores is None or result.profile is None:  # an ok result always has both
        return head
    shown = split + " ".join(f"{k}={v:.4f}" for k, v in scores.metrics.items() if v is not None)
    return f"{head}: {shown} ({result.profile.train_seconds:.1f} s)"


def lighter_inputs(grid: Grid, registry: Registry) -> list[str]:
    """A line per task whose smoke-run inputs are lighter than the grid's (`Task.fake_params`)."""
    lines = []
    for ref in grid.tasks:
        resolved = registry.resolve("tasks", ref.name, ref.params)
        real, light = resolved.params.model_dump(), resolved.cls.fake_params(resolved.params).model_dump()
        changed = {k: v for k, v in light.items() if v != real[k]}
        if changed:
            settings = ", ".join(f"{k}={v}" for k, v in changed.items())
            lines.append(f"smoke run: {ref.name} runs on lighter inputs ({settings}), the same code paths as its "
                         "real shapes at a fraction of the time")
    return lines


@dataclasses.dataclass
class RunSummary:
    out_dir: Path
    counts: dict[str, int]
    resumed: int
    leaderboards: list[Path]
    #: cells this run executed (resumed ones excluded) and the seconds the executor took for them
    ran: int = 0
    seconds: float = 0.0

    @property
    def cells_per_hour(self) -> float | None:
        return self.ran * 3600.0 / self.seconds if self.ran and self.seconds > 0 else None


class _Progress:
    """The runner's side of an executor's events: observer hooks, saving, the progress display."""

    def __init__(self, store: RunStore, registry: Registry, progress: Progress, total: int) -> None:
        self.store, self.registry, self.progress = store, registry, progress
        self.total, self.done, self.resumed = total, 0, 0
        self.grid_bar = progress.add_task("cells", total=total)
        self.epoch_bars: dict[str, TaskID] = {}

    def skip(self, finished: int) -> None:
        """Count cells finished by an earlier run."""
        self.done += finished
        self.resumed += finished
        self.progress.advance(self.grid_bar, finished)

    def __call__(self, event: Event) -> None:
        if isinstance(event, Notice):
            self.progress.console.print(event.text, markup=False, highlight=False)
            return
        cell = event.cell
        if isinstance(event, CellStarted):
            label = f"  {cell.label()} on {event.where}" if event.where else f"  {cell.label()}"
            self.epoch_bars[cell.cell_id] = self.progress.add_task(label, total=cell.train.epochs)
            self._notify("mmbench_cell_started", cell=cell.to_json())
        elif isinstance(event, EpochEnded):
            self.progress.advance(self.epoch_bars[cell.cell_id])
            self._notify("mmbench_epoch_end", cell=cell.to_json(), stats=event.stats.model_dump(mode="json"))
        elif isinstance(event, CellFinished):
            self.store.save(event.result)
            self._notify("mmbench_cell_finished", cell=cell.to_json(), result=event.result.to_json())
            bar = self.epoch_bars.pop(cell.cell_id, None)
            if bar is not None:
                self.progress.remove_task(bar)
            self.done += 1
            self.progress.advance(self.grid_bar)
            self.progress.console.print(finished_line(event.result, self.done, self.total), markup=False,
                                        highlight=False)

    def _notify(self, hook: str, **kwargs) -> None:
        for problem in self.registry.notify(hook, **kwargs):
            self.progress.console.print(f"warning: {problem} (the run goes on; reported once)", markup=False,
                                        highlight=False)


def run_grid(grid: Grid, registry: Registry, out_dir: Path, executor: Executor | None = None,
             retry_failed: bool = False, console: Console | None = None, grid_text: str | None = None,
             data_root: str | Path | None = None, plots: bool = False,
             fake_data: bool = False) -> RunSummary:
    """Run every unfinished cell of `grid` into `out_dir`, then aggregate and write the leaderboards (and their
    figures when `plots`).

    The run directory is locked for the whole run; results are saved as each cell finishes. Without an
    `executor`, cells run in this process, one after another (the command line's default runs CPU cells side
    by side in worker processes).
    """
    console = console or Console(stderr=True)
    executor = executor or build_executor(registry, "local", {"workers": 1})
    if fake_data:
        for line in lighter_inputs(grid, registry):
            console.print(line, markup=False, highlight=False)
    store = RunStore(out_dir)
    if grid.search is None:
        cells = expand(grid, registry, data_root, fake_data)
        stages, total = iter([cells]), len(cells)
    else:
        from mmbench.running.search import Plan  # Optuna is imported by tuned grids only

        plan = Plan(grid, registry, data_root, fake_data)
        stages, total = plan.stages(store.load), plan.total
    with store.lock():
        if grid_text is not None:
            atomic_write_text(Path(out_dir) / "grid.yaml", grid_text)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        ran: list = []
        started = time.perf_counter()
        with Progress(*columns, console=console, transient=False) as progress:
            tracker = _Progress(store, registry, progress, total)
            for cells in stages:  # one stage, or a search's rounds of trials and then its selected configurations
                todo = []
                for cell in cells:
                    previous = store.load(cell.cell_id)
                    if previous is None or (retry_failed and previous.status == "failed"):
                        todo.append(cell)
                resumed = len(cells) - len(todo)
                if resumed:
                    progress.console.print(f"resuming: {resumed} of {len(cells)} cells already finished in {out_dir}")
                    tracker.skip(resumed)
                executor.run(todo, tracker, registry, Path(out_dir))
                ran += cells
        seconds = time.perf_counter() - started
        results = [r for r in map(store.load, (c.cell_id for c in ran)) if r is not None]
        written = leaderboard.write_run_leaderboards(results, Path(out_dir), plots)
    return RunSummary(Path(out_dir), dict(Counter(r.status for r in results)), tracker.resumed, written,
                      len(ran) - tracker.resumed, seconds)
