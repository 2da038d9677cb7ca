"""The matrix runner: runs a grid's cells, records every outcome, resumes, and writes the leaderboard.

Every cell ends in a stored result: `ok`, `failed` (exception or out of memory, with its reason),
`diverged` (non-finite loss, with the epoch) or `skipped` (incompatible parts, with the reason).
A failure never stops the grid; an interrupt (Ctrl-C, kill) loses at most the cell in progress.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mmbench import leaderboard, profiling
from mmbench.cells import Cell, expand
from mmbench.engine import CellComponents, train
from mmbench.grid import Grid
from mmbench.protocols import Incompatible
from mmbench.registry import Registry
from mmbench.store import RunStore, atomic_write_text


def jsonable(value: Any) -> Any:
    """Dataclasses to dicts and non-finite floats to None, so results are strict JSON."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def components_of(cell: Cell, registry: Registry) -> CellComponents:
    task_cls = registry.get("tasks", cell.task["name"]).cls
    task = task_cls(task_cls.Params.model_validate(cell.task["params"]),
                    root=Path(cell.task_root) if cell.task_root else None)

    def resolved(kind: str, desc: dict[str, Any]):
        cls = registry.get(kind, desc["name"]).cls
        return cls, cls.Params.model_validate(desc["params"])

    return CellComponents(
        task=task,
        encoders={m: resolved("encoders", d) for m, d in cell.encoders.items()},
        fusion=resolved("fusions", cell.fusion),
        balancer=resolved("balancers", cell.balancer),
    )


def run_cell(cell: Cell, registry: Registry, on_epoch: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train one cell and return its result record (never raises for a failing cell)."""
    result: dict[str, Any] = {
        **cell.describe(), "status": "ok", "reason": None, "error": None,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "env": profiling.environment(registry.distributions()),
    }
    if cell.skip_reason:
        return {**result, "status": "skipped", "reason": cell.skip_reason}

    def epoch_done(stats) -> None:
        if on_epoch is not None:
            on_epoch(jsonable(stats))

    try:
        outcome = train(components_of(cell, registry), cell.train, cell.seed, on_epoch_end=epoch_done)
    except Incompatible as exc:
        return {**result, "status": "skipped", "reason": str(exc)}
    except (torch.OutOfMemoryError, MemoryError) as exc:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {**result, "status": "failed", "reason": f"out of memory: {exc}".strip(),
                "error": {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}}
    except Exception as exc:
        return {**result, "status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                "error": {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}}
    result.update(
        status=outcome.status,
        reason=f"non-finite training loss in epoch {outcome.diverged_epoch}" if outcome.status == "diverged" else None,
        diverged_epoch=outcome.diverged_epoch,
        best_epoch=outcome.best_epoch,
        selection=f"best validation {_primary_metric(cell, registry)} over epochs",
        metrics=outcome.test.metrics if outcome.test else {},
        unimodal=outcome.test.unimodal if outcome.test else {},
        missing_modality=outcome.test.missing_modality if outcome.test else {},
        val_metrics=outcome.val.metrics if outcome.val else {},
        history=outcome.history,
        profile=outcome.profile,
    )
    return jsonable(result)


def _primary_metric(cell: Cell, registry: Registry) -> str:
    return registry.get("tasks", cell.task["name"]).cls.primary_metric


def _finished_line(result: dict[str, Any], cell: Cell, done: float, total: int) -> str:
    """One log line per finished cell (also readable when the output is not a terminal)."""
    head = f"[{int(done)}/{total}] {result['status']:<8} {cell.label()}"
    if result["status"] != "ok":
        return f"{head}: {result['reason']}"
    scores = " ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items())
    return f"{head}: {scores} ({result['profile']['train_seconds']:.1f} s)"


@dataclasses.dataclass
class RunSummary:
    out_dir: Path
    counts: dict[str, int]
    resumed: int
    leaderboards: list[Path]


def run_grid(grid: Grid, registry: Registry, out_dir: Path, retry_failed: bool = False,
             console: Console | None = None, grid_text: str | None = None) -> RunSummary:
    """Run every unfinished cell of `grid` into `out_dir`, then aggregate and write the leaderboards."""
    console = console or Console(stderr=True)
    store = RunStore(out_dir)
    if grid_text is not None:
        atomic_write_text(out_dir / "grid.yaml", grid_text)
    cells = expand(grid, registry)
    todo, resumed = [], 0
    for cell in cells:
        previous = store.load(cell.cell_id)
        if previous is None or (retry_failed and previous["status"] == "failed"):
            todo.append(cell)
        else:
            resumed += 1
    if resumed:
        console.print(f"resuming: {resumed} of {len(cells)} cells already finished in {out_dir}")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        grid_bar = progress.add_task("cells", total=len(cells), completed=resumed)
        for cell in todo:
            epochs_bar = progress.add_task(f"  {cell.label()}", total=cell.train.epochs)
            description = cell.describe()
            registry.hook.mmbench_cell_started(cell=description)

            def on_epoch(stats: dict, description=description, bar=epochs_bar) -> None:
                progress.advance(bar)
                registry.hook.mmbench_epoch_end(cell=description, stats=stats)

            result = run_cell(cell, registry, on_epoch)
            store.save(result)
            registry.hook.mmbench_cell_finished(cell=description, result=result)
            progress.remove_task(epochs_bar)
            progress.advance(grid_bar)
            progress.console.print(_finished_line(result, cell, done=progress.tasks[grid_bar].completed,
                                                  total=len(cells)), markup=False, highlight=False)
    results = [r for r in map(store.load, (c.cell_id for c in cells)) if r is not None]
    written = leaderboard.write_run_leaderboards(results, out_dir, registry)
    counts: dict[str, int] = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return RunSummary(out_dir, counts, resumed, written)
