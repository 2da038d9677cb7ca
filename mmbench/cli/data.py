"""`mmbench data prepare|check|list`: prepared datasets."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from mmbench import registry as registry_lib
from mmbench.cli.errors import ParameterError, exit_on_error
from mmbench.cli.options import DATA_ROOT, PLUGINS_DIR, key_values, load_registry, resolve

data_app = typer.Typer(help="Prepared datasets: prepare an official release, check a prepared root, list them.",
                       no_args_is_help=True)
TASK_ROOT = typer.Option(None, "--root", help="the task's prepared folder (default: <$MMBENCH_DATA or the user "
                                              "cache>/<task>)")
TASK_PARAM = typer.Option([], "--param", metavar="KEY=VALUE",
                          help="a task parameter, repeatable; the value is read as YAML, e.g. the tokenizer of an "
                               "image-text task: --param tokenizer=/models/bert-base-uncased")


def _data_task(name: str, root: Path | None, pairs: list[str], plugins_dir: list[Path] | None):
    """The named task with its default parameters (or those given as --param), bound to its prepared folder."""
    from mmbench.data.roots import resolve_data_root

    registry = load_registry(plugins_dir)
    resolved = resolve(registry, "tasks", name, key_values(pairs, f"task {name!r}"))
    if not resolved.cls.needs_data:
        raise ParameterError(f"task {name!r} generates its data; there is nothing to prepare")
    with registry_lib.plugin_code(resolved.component, "in its constructor"):
        return resolved.component, resolved.cls(resolved.params, root=root or resolve_data_root(name))


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
    plugins_dir: list[Path] = PLUGINS_DIR,
) -> None:
    """Read a release, preprocess it once and write the prepared root (resumable; a report lists bad media)."""
    from mmbench.data.prepared import read_manifest

    with exit_on_error("data problem"):
        component, instance = _data_task(task, root, param, plugins_dir)
        with registry_lib.plugin_code(component, "in prepare()"):
            instance.prepare(raw, partial=partial, workers=workers)
        manifest = read_manifest(instance.root, task, instance.source)
    typer.echo(f"prepared {_summary(instance, manifest)}")
    typer.echo(f"report of missing and bad samples: {Path(instance.root) / 'prepare-report.json'}")


@data_app.command("check")
def data_check(task: str = typer.Argument(..., help="task name"), root: Path | None = TASK_ROOT,
               param: list[str] = TASK_PARAM, plugins_dir: list[Path] = PLUGINS_DIR) -> None:
    """Check a prepared root: class count, split sizes, shapes; says precisely what is wrong (exit 1)."""
    from mmbench.data.prepared import read_manifest

    with exit_on_error("data problem"):
        component, instance = _data_task(task, root, param, plugins_dir)
        with registry_lib.plugin_code(component, "in check()"):
            problems = instance.check()
        manifest = read_manifest(instance.root, task, instance.source)
    for problem in problems:
        typer.echo(f"  - {problem}", err=True)
    if problems:
        typer.echo(f"{instance.root}: {len(problems)} problem(s)", err=True)
        raise typer.Exit(1)
    note = " (partial: compared with what prepare kept)" if manifest.partial else ""
    typer.echo(f"ok{note}: {_summary(instance, manifest)}")


@data_app.command("list")
def data_list(data_root: Path | None = DATA_ROOT, plugins_dir: list[Path] = PLUGINS_DIR) -> None:
    """Every installed task that reads data: where its prepared root is, whether it is prepared, its fingerprint."""
    from rich.console import Console
    from rich.table import Table

    from mmbench.contract.errors import DataError
    from mmbench.data.prepared import read_manifest
    from mmbench.data.roots import resolve_data_root

    registry = load_registry(plugins_dir)
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
    Console().print(table)
