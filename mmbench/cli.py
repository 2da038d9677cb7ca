"""The `mmbench` command line."""

from __future__ import annotations

import atexit
import gc
import json
import os
import signal
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from mmbench import registry as registry_lib

if TYPE_CHECKING:  # `run` starts the workers' server before it builds the schemas (pydantic models, YAML)
    from mmbench.running.grid import Grid

app = typer.Typer(help="Benchmark multimodal balancing methods: grids of encoders x fusions x balancers x tasks.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
leaderboard_app = typer.Typer(help="Leaderboard files.", no_args_is_help=True)
app.add_typer(leaderboard_app, name="leaderboard")
new_app = typer.Typer(help="Start a plugin distribution.", no_args_is_help=True)
app.add_typer(new_app, name="new")
out = Console()
err = Console(stderr=True, soft_wrap=True)
# at exit (after the handlers registered later, such as multiprocessing's), freeze the heap: the interpreter's
# final collections then skip what a run built (with torch loaded they take about half a second:
# benchmarks/README.md)
atexit.register(gc.freeze)


class Kind(str, Enum):
    encoders = "encoders"
    fusions = "fusions"
    balancers = "balancers"
    tasks = "tasks"
    executors = "executors"


class SchemaName(str, Enum):
    grid = "grid"
    leaderboard = "leaderboard"


#: the built-in executors that train in worker processes forked from `mmbench.running.worker_server`
WORKER_EXECUTORS = frozenset({"local", "gpus"})

PLUGINS_DIR = typer.Option(None, "--plugins-dir", help="also load the plugin modules (*.py) of this folder, "
                                                       "without installing them; may be repeated")


def _registry(plugins_dir: list[Path] | None = None, warm_up_workers: bool = False) -> registry_lib.Registry:
    """The installed plugins (and those of `plugins_dir`); broken ones are named in one line (`mmbench plugins`
    shows the details). The folders go into the environment so that worker processes load them too."""
    if plugins_dir:
        os.environ[registry_lib.PLUGINS_DIR_VARIABLE] = os.pathsep.join(str(p.resolve()) for p in plugins_dir)
    if warm_up_workers:  # their server imports torch on a spare core while this process loads the plugins
        from mmbench.running import worker_server

        worker_server.warm_up()
    registry = registry_lib.default()
    if registry.problems:
        names = sorted({p.plugin for p in registry.problems})
        typer.echo(f"warning: {len(names)} plugin(s) with problems, left out: {', '.join(names)} "
                   "(`mmbench plugins` shows why)", err=True)
    return registry


def _load_grid(path: Path, registry: registry_lib.Registry) -> Grid:
    from mmbench.running import grid as grid_lib

    try:
        return grid_lib.load(path, registry)
    except grid_lib.GridError as exc:
        typer.echo(f"invalid grid {exc.source}: {len(exc.problems)} problem(s)", err=True)
        for problem in exc.problems:
            typer.echo(f"  - {problem}", err=True)
        raise typer.Exit(2) from None


def _expand(grid: Grid, registry: registry_lib.Registry, data_root: Path | None, fake_data: bool = False):
    """The grid's cells, or a clear message and exit 2 when a task's data is missing or malformed."""
    from mmbench.contract.errors import DataError
    from mmbench.running.cells import expand  # torch is imported only by commands that need the plugins' models

    try:
        return expand(grid, registry, data_root, fake_data)
    except DataError as exc:
        typer.echo(f"data problem: {exc}", err=True)
        raise typer.Exit(2) from None


def _key_values(pairs: list[str], owner: str) -> dict:
    """`KEY=VALUE` options -> a mapping; each value is read as a YAML scalar or flow collection."""
    import yaml

    from mmbench.running.executors import ExecutorError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ExecutorError(f"{owner}: parameter {pair!r} is not KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as exc:
            raise ExecutorError(f"{owner}: the value of {key.strip()!r} is not valid YAML: {exc}") from None
    return out


DATA_ROOT = typer.Option(None, "--data-root", help="folder holding prepared datasets as <folder>/<task>/ "
                                                   "(default: the grid's data_root, $MMBENCH_DATA, the user cache)")
FAKE_DATA = typer.Option(False, "--fake-data", help="smoke test: generated tensors of the prepared shapes instead "
                                                    "of the data, one short epoch, first seed; never publishable")


@app.command()
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
    registry = _registry(plugins_dir, warm_up_workers=executor in WORKER_EXECUTORS)  # first: it starts the server
    from mmbench.contract.errors import DataError
    from mmbench.rundir import RunStoreError
    from mmbench.running.executors import ExecutorError, build_executor
    from mmbench.running.runner import run_grid  # imports torch: after the workers' server has started
    grid = _load_grid(matrix, registry)
    target = out_dir or Path("runs") / (f"{grid.name}-fake" if fake_data else grid.name)
    try:
        chosen = build_executor(registry, executor, _key_values(executor_param, f"executor {executor!r}"))
    except registry_lib.UnknownComponent as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    except ExecutorError as exc:
        typer.echo(f"cannot run: {exc}", err=True)
        raise typer.Exit(2) from None
    if plots:  # imported now, while the workers' server may still be importing, rather than after the cells
        from mmbench.reporting.plots import pyplot

        pyplot()
    signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's kill ends like Ctrl-C: finished cells are kept
    try:
        summary = run_grid(grid, registry, target, executor=chosen, retry_failed=retry_failed, console=err,
                           grid_text=matrix.read_text(), data_root=data_root, plots=plots,
                           fake_data=fake_data)
    except (RunStoreError, DataError, ExecutorError) as exc:
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


def _warn_anomalies(board_path: Path) -> None:
    from mmbench.reporting import leaderboard as lb
    from mmbench.reporting.anomalies import anomalies

    flagged = anomalies(lb.read(board_path))
    if flagged:
        typer.echo(f"{len(flagged)} row(s) of {board_path} to explain before publishing (a defect until a run "
                   "shows otherwise):", err=True)
        for line in flagged:
            typer.echo(f"  - {line}", err=True)


@app.command()
def validate(matrix: Path = typer.Argument(..., help="grid YAML file"), data_root: Path | None = DATA_ROOT,
             plugins_dir: list[Path] = PLUGINS_DIR,
             fake_data: bool = FAKE_DATA) -> None:
    """Validate a grid completely (names, parameters, modalities, prepared data) without training anything."""
    registry = _registry(plugins_dir)
    grid = _load_grid(matrix, registry)
    cells = _expand(grid, registry, data_root, fake_data)
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


@app.command()
def schema(name: SchemaName = typer.Argument(..., help="which JSON Schema to print")) -> None:
    """Print the JSON Schema of grid files or leaderboard files."""
    from mmbench.running.grid import Grid
    from mmbench.schema.leaderboard import Leaderboard

    model = Grid if name is SchemaName.grid else Leaderboard
    typer.echo(json.dumps(model.model_json_schema(by_alias=True), indent=2))


@app.command()
def plugins(plugins_dir: list[Path] = PLUGINS_DIR) -> None:
    """What is installed: every component, its plugin and the distribution that provides it; then each
    plugin that could not be used, with its distribution and error (exit code 1 when there is one)."""
    if plugins_dir:
        _registry(plugins_dir)
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
def list_components(kind: Kind = typer.Argument(..., help="encoders, fusions, balancers or tasks"),
                    plugins_dir: list[Path] = PLUGINS_DIR) -> None:
    """Names of the registered components of one kind, with their one-line description."""
    registry = _registry(plugins_dir)
    for name in registry.names(kind.value):
        doc = (registry.get(kind.value, name).cls.__doc__ or "").strip().splitlines()
        typer.echo(f"{name:<20} {doc[0] if doc else ''}")


@app.command()
def compare(
    a: Path = typer.Argument(..., help="leaderboard JSON or run directory (A, the reference)"),
    b: Path = typer.Argument(..., help="leaderboard JSON or run directory (B)"),
    metric: list[str] = typer.Option(None, "--metric", help="metrics to compare (default: the primary one)"),
    fail_on: list[str] = typer.Option(None, "--fail-on", help="METRIC:POINTS — exit 1 when an entry of B is "
                                                              "worse than A by more than POINTS"),
) -> None:
    """Per-entry differences between two leaderboards or runs (B − A, in points, + = better)."""
    from mmbench.reporting import compare as comparing
    from mmbench.reporting import leaderboard as lb

    try:
        board_a, board_b = comparing.load(a), comparing.load(b)
        thresholds = {}
        for item in fail_on or []:
            name, _, points = item.partition(":")
            thresholds[name] = float(points)
    except lb.LeaderboardError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    except ValueError:
        typer.echo(f"--fail-on takes METRIC:POINTS (e.g. accuracy:1.0), got {item!r}", err=True)
        raise typer.Exit(2) from None
    metrics = list(metric or [board_a.primary_metric]) + [m for m in thresholds if m not in (metric or [])]
    unknown = sorted(set(metrics) - set(board_a.metrics))
    if unknown:
        typer.echo(f"unknown metric(s) {unknown}; the boards report {', '.join(board_a.metrics)}", err=True)
        raise typer.Exit(2)
    found, only = comparing.differences(board_a, board_b, list(dict.fromkeys(metrics)))
    typer.echo(comparing.render(board_a, board_b, found, only))
    worse = comparing.regressions(board_a, found, thresholds)
    if worse:
        typer.echo(f"{len(worse)} regression(s) beyond the allowed drop:", err=True)
        for line in worse:
            typer.echo(f"  - {line}", err=True)
        raise typer.Exit(1)


@new_app.command("balancer")
def new_balancer(
    name: str = typer.Argument(..., help="the balancer's name, as grids will write it (e.g. my_method)"),
    directory: Path = typer.Option(Path("."), "--dir", help="where to create the distribution folder"),
) -> None:
    """Create `mmbench-NAME/`: a balancer plugin distribution that installs, registers and passes its tests."""
    from mmbench.scaffold import new_balancer as scaffold

    try:
        root = scaffold(name, directory)
    except (ValueError, FileExistsError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    typer.echo(f"created {root}; next: cd {root} && pip install -e '.[dev]' && python -m pytest -q, or try it "
               f"uninstalled with `mmbench run --matrix GRID --plugins-dir {root / root.name.replace('-', '_')}`")


@new_app.command("task")
def new_task(
    name: str = typer.Argument(..., help="the task's name, as grids will write it (e.g. my_dataset)"),
    directory: Path = typer.Option(Path("."), "--dir", help="where to create the distribution folder"),
) -> None:
    """Create `mmbench-NAME/`: a dataset plugin distribution that installs, registers and passes its tests."""
    from mmbench.scaffold import new_task as scaffold

    try:
        root = scaffold(name, directory)
    except (ValueError, FileExistsError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    typer.echo(f"created {root}; next: cd {root} && pip install -e '.[dev]' && python -m pytest -q, then replace the "
               f"layout, items and processing in {root / root.name.replace('-', '_') / (name + '.py')}")


@leaderboard_app.command("render")
def render(file: Path = typer.Argument(..., help="leaderboard JSON")) -> None:
    """Render a leaderboard JSON file to Markdown on stdout."""
    from mmbench.reporting import leaderboard as lb

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
    plots: bool = typer.Option(True, help="write the board's figures next to it (<benchmark>-plots/)"),
) -> None:
    """Add a run's cell results to leaderboards/<benchmark>.cells.jsonl and rebuild <benchmark>.json/.md.

    Publishing never removes evidence: new seeds are added, cells the run reproduces are left as they were, and
    a cell whose outcome differs is replaced and named."""
    from mmbench.reporting import leaderboard as lb
    from mmbench.reporting.publish import publish as publish_run
    from mmbench.rundir import RunStoreError

    try:
        done = publish_run(run_dir, to, plots)
    except (lb.LeaderboardError, RunStoreError) as exc:
        typer.echo(f"cannot publish: {exc}", err=True)
        raise typer.Exit(2) from None
    for report in done:
        typer.echo(f"published {report.summary()}")
        _warn_anomalies(report.board)


# ------------------------------------------------------------------------------- data: prepare, check, list

data_app = typer.Typer(help="Prepared datasets: prepare an official release, check a prepared root, list them.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")
TASK_ROOT = typer.Option(None, "--root", help="the task's prepared folder (default: <$MMBENCH_DATA or the user "
                                              "cache>/<task>)")


TASK_PARAM = typer.Option([], "--param", help="a task parameter as KEY=VALUE (repeatable), e.g. the tokenizer "
                                             "of an image-text task: --param tokenizer=/models/bert-base-uncased")


def _task_params(pairs: list[str]) -> dict:
    """`KEY=VALUE` pairs -> parameters (each value read as a YAML scalar: numbers, booleans, null)."""
    import yaml

    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            typer.echo(f"--param {pair!r}: expected KEY=VALUE", err=True)
            raise typer.Exit(2)
        params[key.strip()] = yaml.safe_load(value) if value else ""
    return params


def _data_task(name: str, root: Path | None, pairs: list[str] = ()):
    """The named task with its default parameters (or those given as --param), bound to its prepared folder."""
    from mmbench.data.roots import resolve_data_root

    registry = _registry()
    try:
        resolved = registry.resolve("tasks", name, _task_params(list(pairs)))
    except registry_lib.UnknownComponent as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    except ValueError as exc:  # pydantic's ValidationError: a --param the task does not take or cannot use
        typer.echo(f"task {name!r} parameters: {exc}", err=True)
        raise typer.Exit(2) from None
    if not resolved.cls.needs_data:
        typer.echo(f"task {name!r} generates its data; there is nothing to prepare", err=True)
        raise typer.Exit(2)
    return resolved.cls(resolved.params, root=root or resolve_data_root(name))


def _summary(task, manifest) -> str:
    counts = ", ".join(f"{split} {n}" for split, n in manifest.counts.items())
    kind = "partial copy" if manifest.partial else "full copy" + (", some samples left out" if manifest.kept else "")
    return f"{task.root}: {task.name} v{manifest.version} ({kind}); {counts}; fingerprint {manifest.fingerprint}"


@data_app.command("prepare")
def data_prepare(
    task: str = typer.Argument(..., help="task name (`mmbench data list`)"),
    raw: Path = typer.Option(..., "--raw", help="the dataset as its official source distributes it"),
    root: Path | None = TASK_ROOT,
    partial: bool = typer.Option(False, "--partial", help="the raw folder holds a subset of the release: keep "
                                                          "the listed samples present (results never rank with "
                                                          "full-data ones)"),
    workers: int = typer.Option(os.cpu_count() or 1, "--workers", min=1, help="processes decoding media"),
    param: list[str] = TASK_PARAM,
) -> None:
    """Read a release, preprocess it once and write the prepared root (resumable; a report lists bad media)."""
    from mmbench.contract.errors import DataError
    from mmbench.data.prepared import read_manifest

    instance = _data_task(task, root, param)
    try:
        instance.prepare(raw, partial=partial, workers=workers)
    except DataError as exc:
        typer.echo(f"data problem: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"prepared {_summary(instance, read_manifest(instance.root, task, instance.source))}")
    typer.echo(f"report of missing and bad samples: {Path(instance.root) / 'prepare-report.json'}")


@data_app.command("check")
def data_check(task: str = typer.Argument(..., help="task name"), root: Path | None = TASK_ROOT,
               param: list[str] = TASK_PARAM) -> None:
    """Check a prepared root: class count, split sizes, shapes; says precisely what is wrong (exit 1)."""
    from mmbench.contract.errors import DataError
    from mmbench.data.prepared import read_manifest

    instance = _data_task(task, root, param)
    try:
        problems = instance.check()
        manifest = read_manifest(instance.root, task, instance.source)
    except DataError as exc:
        typer.echo(f"data problem: {exc}", err=True)
        raise typer.Exit(2) from None
    for problem in problems:
        typer.echo(f"  - {problem}", err=True)
    if problems:
        typer.echo(f"{instance.root}: {len(problems)} problem(s)", err=True)
        raise typer.Exit(1)
    note = " (partial: compared with what prepare kept)" if manifest.partial else ""
    typer.echo(f"ok{note}: {_summary(instance, manifest)}")


@data_app.command("list")
def data_list(data_root: Path | None = DATA_ROOT) -> None:
    """Every installed task that reads data: where its prepared root is, whether it is prepared, its fingerprint."""
    from mmbench.contract.errors import DataError
    from mmbench.data.prepared import read_manifest
    from mmbench.data.roots import resolve_data_root

    registry = _registry()
    table = Table("task", "status", "root", "samples", "fingerprint")
    for name in registry.names("tasks"):
        cls = registry.get("tasks", name).cls
        if not cls.needs_data:
            continue
        root = resolve_data_root(name, data_root)
        try:
            manifest = read_manifest(root, name, cls.source)
        except DataError:
            table.add_row(name, "not prepared", str(root), "", "")
            continue
        status = "partial" if manifest.partial else "prepared"
        table.add_row(name, status, str(root), str(sum(manifest.counts.values())), manifest.fingerprint)
    out.print(table)


if __name__ == "__main__":
    app()
