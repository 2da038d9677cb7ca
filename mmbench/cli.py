"""The `mmbench` command line."""

from __future__ import annotations

import json
import signal
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from mmbench import registry as registry_lib
from mmbench.reporting import leaderboard as lb
from mmbench.schema import grid as grid_lib
from mmbench.schema.leaderboard import Leaderboard

app = typer.Typer(help="Benchmark multimodal balancing methods: grids of encoders x fusions x balancers x tasks.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
leaderboard_app = typer.Typer(help="Leaderboard files.", no_args_is_help=True)
app.add_typer(leaderboard_app, name="leaderboard")
out = Console()
err = Console(stderr=True, soft_wrap=True)


class Kind(str, Enum):
    encoders = "encoders"
    fusions = "fusions"
    balancers = "balancers"
    tasks = "tasks"
    executors = "executors"


class SchemaName(str, Enum):
    grid = "grid"
    leaderboard = "leaderboard"


def _registry() -> registry_lib.Registry:
    """The installed plugins; broken ones are named in one line (`mmbench plugins` shows the details)."""
    registry = registry_lib.default()
    if registry.problems:
        names = sorted({p.plugin for p in registry.problems})
        typer.echo(f"warning: {len(names)} plugin(s) with problems, left out: {', '.join(names)} "
                   "(`mmbench plugins` shows why)", err=True)
    return registry


def _load_grid(path: Path, registry: registry_lib.Registry) -> grid_lib.Grid:
    try:
        return grid_lib.load(path, registry)
    except grid_lib.GridError as exc:
        typer.echo(f"invalid grid {exc.source}: {len(exc.problems)} problem(s)", err=True)
        for problem in exc.problems:
            typer.echo(f"  - {problem}", err=True)
        raise typer.Exit(2) from None


def _expand(grid: grid_lib.Grid, registry: registry_lib.Registry, data_root: Path | None):
    """The grid's cells, or a clear message and exit 2 when a task's data is missing or malformed."""
    from mmbench.data.prepared import DataError
    from mmbench.running.cells import expand  # torch is imported only by commands that need the plugins' models

    try:
        return expand(grid, registry, data_root)
    except DataError as exc:
        typer.echo(f"data problem: {exc}", err=True)
        raise typer.Exit(2) from None


DATA_ROOT = typer.Option(None, "--data-root", help="folder holding prepared datasets as <folder>/<task>/ "
                                                   "(default: the grid's data_root, $MMBENCH_DATA, the user cache)")


@app.command()
def run(
    matrix: Path = typer.Option(..., "--matrix", "-m", help="grid YAML file"),
    out_dir: Path | None = typer.Option(None, "--out", help="run directory (default: runs/<grid name>/)"),
    retry_failed: bool = typer.Option(False, help="re-run cells recorded as failed"),
    executor: str = typer.Option("local", help="where cells run (`mmbench list executors`)"),
    data_root: Path | None = DATA_ROOT,
) -> None:
    """Run every cell of a grid (resuming finished ones), then write and print the leaderboard."""
    from mmbench.data.prepared import DataError
    from mmbench.running.executors import build_executor
    from mmbench.running.runner import run_grid
    from mmbench.running.store import RunStoreError

    registry = _registry()
    grid = _load_grid(matrix, registry)
    target = out_dir or Path("runs") / grid.name
    try:
        chosen = build_executor(registry, executor)
    except registry_lib.UnknownComponent as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's kill ends like Ctrl-C: finished cells are kept
    try:
        summary = run_grid(grid, registry, target, executor=chosen, retry_failed=retry_failed, console=err,
                           grid_text=matrix.read_text(), data_root=data_root)
    except (RunStoreError, DataError) as exc:
        typer.echo(f"cannot run: {exc}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        typer.echo(f"cannot write the run directory {target}: {exc.strerror or exc}{where}; finished cells are "
                   "kept there, run the same command to resume once the problem is fixed", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo(f"interrupted: finished cells are saved in {target}; run the same command to resume", err=True)
        raise typer.Exit(130) from None
    for path in summary.leaderboards:
        typer.echo(path.with_suffix(".md").read_text())
        _warn_anomalies(path)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.counts.items()))
    typer.echo(f"cells: {counts}; results in {summary.out_dir}", err=True)
    failed = summary.counts.get("failed", 0)
    if failed:
        typer.echo(f"{failed} cell(s) failed (their reasons are in the leaderboard's 'Not ranked' table); "
                   "re-run them with --retry-failed", err=True)
        raise typer.Exit(1)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _warn_anomalies(board_path: Path) -> None:
    from mmbench.reporting.anomalies import anomalies

    flagged = anomalies(lb.read(board_path))
    if flagged:
        typer.echo(f"{len(flagged)} row(s) of {board_path} to explain before publishing (a defect until a run "
                   "shows otherwise):", err=True)
        for line in flagged:
            typer.echo(f"  - {line}", err=True)


@app.command()
def validate(matrix: Path = typer.Argument(..., help="grid YAML file"), data_root: Path | None = DATA_ROOT) -> None:
    """Validate a grid completely (names, parameters, modalities, prepared data) without training anything."""
    registry = _registry()
    grid = _load_grid(matrix, registry)
    cells = _expand(grid, registry, data_root)
    skipped = {c.entry_id: c for c in cells if c.skip_reason}
    if grid.search is not None:  # each configuration: its trials, then the chosen one on every seed
        tuned = len(cells) // len(grid.seeds) - len(skipped)
        typer.echo(f"{matrix}: valid; {tuned} configurations tuned with {grid.search.trials} trials each, then "
                   f"re-run on {len(grid.seeds)} seed(s): {tuned * (grid.search.trials + len(grid.seeds))} cells "
                   "to train")
    else:
        typer.echo(f"{matrix}: valid; {len(cells)} cells ({len(cells) - len(skipped) * len(grid.seeds)} to train)")
    for cell in skipped.values():
        typer.echo(f"  skipped: {cell.label().rsplit(' seed=', 1)[0]}: {cell.skip_reason}")


@app.command()
def schema(name: SchemaName = typer.Argument(..., help="which JSON Schema to print")) -> None:
    """Print the JSON Schema of grid files or leaderboard files."""
    model = grid_lib.Grid if name is SchemaName.grid else Leaderboard
    typer.echo(json.dumps(model.model_json_schema(by_alias=True), indent=2))


@app.command()
def plugins() -> None:
    """What is installed: every component, its plugin and the distribution that provides it; then each
    plugin that could not be used, with its distribution and error (exit code 1 when there is one)."""
    registry = registry_lib.default()
    table = Table("kind", "name", "plugin", "distribution", "version")
    for kind in registry_lib.KINDS:
        for name in registry.names(kind):
            c = registry.get(kind, name)
            table.add_row(kind[:-1], name, c.plugin, c.distribution, c.version)
    out.print(table)
    for balancer, tasks in registry.unknown_task_defaults().items():
        typer.echo(f"note: balancer {balancer!r} has defaults for tasks that are not installed: {', '.join(tasks)}")
    for problem in registry.problems:
        typer.echo(f"problem: {problem}", err=True)
    if registry.problems:
        raise typer.Exit(1)


@app.command("list")
def list_components(kind: Kind = typer.Argument(..., help="encoders, fusions, balancers or tasks")) -> None:
    """Names of the registered components of one kind, with their one-line description."""
    registry = _registry()
    for name in registry.names(kind.value):
        doc = (registry.get(kind.value, name).cls.__doc__ or "").strip().splitlines()
        typer.echo(f"{name:<20} {doc[0] if doc else ''}")


@leaderboard_app.command("render")
def render(file: Path = typer.Argument(..., help="leaderboard JSON")) -> None:
    """Render a leaderboard JSON file to Markdown on stdout."""
    try:
        board = lb.read(file)
    except lb.LeaderboardError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    from mmbench.reporting.markdown import render_markdown

    typer.echo(render_markdown(board))


@app.command()
def publish(
    run_dir: Path = typer.Argument(..., help="a run directory (holding cells/*.json)"),
    to: Path = typer.Option(Path("leaderboards"), help="published leaderboards directory"),
) -> None:
    """Add a run's cell results to leaderboards/<benchmark>.cells.jsonl and rebuild <benchmark>.json/.md.

    Publishing never removes evidence: new seeds are added, cells the run reproduces are left as they were, and
    a cell whose outcome differs is replaced and named."""
    from mmbench.reporting.publish import publish as publish_run
    from mmbench.running.store import RunStoreError

    try:
        done = publish_run(run_dir, to)
    except (lb.LeaderboardError, RunStoreError) as exc:
        typer.echo(f"cannot publish: {exc}", err=True)
        raise typer.Exit(2) from None
    for report in done:
        typer.echo(f"published {report.summary()}")
        _warn_anomalies(report.board)


if __name__ == "__main__":
    app()
