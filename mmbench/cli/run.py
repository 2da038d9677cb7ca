"""`mmbench run` and `mmbench validate`: a grid trained, or checked completely without training.

`run` starts the workers' server (`mmbench.running.worker_server`) before anything heavy is imported: the server's
imports (torch, the plugins) then overlap the runner's own, which is most of the quickstart's start-up. It cannot
know yet whether the executor will fork its workers from that server (an executor is a plugin: it says so with
`Executor.uses_worker_server` once the plugins are loaded), so it starts it in any case and stops it at once for
an executor that does not.
"""

from __future__ import annotations

import signal
from pathlib import Path

import typer
from rich.console import Console

from mmbench.cli.boards import warn_anomalies
from mmbench.cli.errors import UNUSABLE, exit_on_error
from mmbench.cli.options import DATA_ROOT, FAKE_DATA, PLUGINS_DIR, key_values, load_registry, use_plugin_dirs
from mmbench.running import worker_server


def run(
    matrix: Path = typer.Option(..., "--matrix", "-m", help="grid YAML file"),
    out_dir: Path | None = typer.Option(None, "--out", help="run directory (default: runs/<grid name>/)"),
    retry_failed: bool = typer.Option(False, help="re-run cells recorded as failed"),
    executor: str = typer.Option("local", help="where cells run (`mmbench list executors`)"),
    executor_param: list[str] = typer.Option(
        [], "--executor-param", "-x", metavar="KEY=VALUE",
        help="an executor parameter, repeatable; the value is read as YAML (e.g. -x cells_per_gpu=2)"),
    data_root: Path | None = DATA_ROOT,
    plots: bool = typer.Option(True, help="write each entry's curves and coefficient figures next to the board"),
    plugins_dir: list[Path] = PLUGINS_DIR,
    fake_data: bool = FAKE_DATA,
) -> None:
    """Run every cell of a grid (resuming finished ones), then write and print the leaderboard."""
    use_plugin_dirs(plugins_dir)  # first: the workers' server loads the same plugin folders
    worker_server.warm_up()
    registry = load_registry()
    from mmbench.running import grid as grid_lib
    from mmbench.running.executors import build_executor
    from mmbench.running.runner import run_grid  # imports torch: after the workers' server has started

    with exit_on_error("cannot run"):
        grid = grid_lib.load(matrix, registry)
        chosen = build_executor(registry, executor, key_values(executor_param, f"executor {executor!r}"))
    if not chosen.uses_worker_server:
        worker_server.stop()
    target = out_dir or Path("runs") / (f"{grid.name}-fake" if fake_data else grid.name)
    if plots:  # imported now, while the workers' server may still be importing, rather than after the cells
        from mmbench.reporting.plots import pyplot

        pyplot()
    signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's kill ends like Ctrl-C: finished cells are kept
    with exit_on_error("cannot run", run_dir=target):
        summary = run_grid(grid, registry, target, executor=chosen, retry_failed=retry_failed,
                           console=Console(stderr=True, soft_wrap=True), grid_text=matrix.read_text(),
                           data_root=data_root, plots=plots, fake_data=fake_data)
    for path in summary.leaderboards:
        typer.echo(path.with_suffix(".md").read_text())
        warn_anomalies(path)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.counts.items()))
    typer.echo(f"cells: {counts}; results in {summary.out_dir}", err=True)
    if summary.cells_per_hour is not None:
        typer.echo(f"ran {summary.ran} cells in {summary.seconds:.1f} s: {summary.cells_per_hour:.0f} cells/hour",
                   err=True)
    failed = summary.counts.get("failed", 0)
    if failed:
        typer.echo(f"{failed} cell(s) failed (their reasons are in the leaderboard's 'Not ranked' table); "
                   "re-run them with --retry-failed", err=True)
        raise typer.Exit(1)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def validate(matrix: Path = typer.Argument(..., help="grid YAML file"), data_root: Path | None = DATA_ROOT,
             plugins_dir: list[Path] = PLUGINS_DIR,
             fake_data: bool = FAKE_DATA) -> None:
    """Validate a grid completely (names, parameters, modalities, prepared data) without training anything."""
    registry = load_registry(plugins_dir)
    from mmbench.running import grid as grid_lib
    from mmbench.running.cells import expand  # torch is imported only by commands that need the plugins' models
    from mmbench.running.preflight import data_problems

    with exit_on_error("data problem"):
        grid = grid_lib.load(matrix, registry)
        cells = expand(grid, registry, data_root, fake_data)
        unusable = [] if fake_data else data_problems(grid, registry, data_root)
    for found in unusable:
        typer.echo(f"{found.task}: the prepared root {found.root} cannot be trained on:", err=True)
        for problem in found.problems:
            typer.echo(f"  - {problem}", err=True)
    if unusable:
        typer.echo(f"{matrix}: not runnable on this data (`mmbench data check` says the same per task)", err=True)
        raise typer.Exit(UNUSABLE)
    skipped = {c.entry_id: c for c in cells if c.skip_reason}
    if grid.search is not None:  # each configuration: its trials, then the chosen one on every seed
        seeds, trials = (1, 1) if fake_data else (len(grid.seeds), grid.search.trials)
        tuned = len(cells) // seeds - len(skipped)
        typer.echo(f"{matrix}: valid; {tuned} configurations tuned with {trials} trials each, then "
                   f"re-run on {seeds} seed(s): {tuned * (trials + seeds)} cells "
                   "to train")
    else:
        typer.echo(f"{matrix}: valid; {len(cells)} cells ({sum(1 for c in cells if not c.skip_reason)} to train)")
    for cell in skipped.values():
        typer.echo(f"  skipped: {cell.label().rsplit(' seed=', 1)[0]}: {cell.skip_reason}")
