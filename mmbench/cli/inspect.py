"""What is installed and what files look like: `plugins`, `list KIND` and `schema grid|leaderboard`."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer

from mmbench import registry as registry_lib
from mmbench.cli.errors import exit_on_error
from mmbench.cli.options import PLUGINS_DIR, load_registry


class Kind(StrEnum):
    encoders = "encoders"
    fusions = "fusions"
    balancers = "balancers"
    tasks = "tasks"
    executors = "executors"


class SchemaName(StrEnum):
    grid = "grid"
    leaderboard = "leaderboard"


def schema(name: SchemaName = typer.Argument(..., help="which JSON Schema to print")) -> None:
    """Print the JSON Schema of grid files or leaderboard files."""
    from mmbench.running.grid import Grid
    from mmbench.schema.leaderboard import Leaderboard

    model = Grid if name is SchemaName.grid else Leaderboard
    typer.echo(json.dumps(model.model_json_schema(by_alias=True), indent=2))


def plugins(plugins_dir: list[Path] = PLUGINS_DIR) -> None:
    """What is installed: every component, its plugin and the distribution that provides it; then each
    plugin that could not be used, with its distribution and error (exit code 1 when there is one)."""
    from rich.console import Console
    from rich.table import Table

    if plugins_dir:
        load_registry(plugins_dir)
    registry = registry_lib.default()
    table = Table("kind", "name", "plugin", "distribution", "version")
    for kind in registry_lib.KINDS:
        for name in registry.names(kind):
            c = registry.get(kind, name)
            table.add_row(kind[:-1], name, c.plugin, c.distribution, c.version)
    Console().print(table)
    for balancer, tasks in registry.unknown_task_defaults().items():
        typer.echo(f"note: balancer {balancer!r} has defaults for tasks that are not installed: {', '.join(tasks)}")
    for problem in registry.problems:
        typer.echo(f"problem: {problem}", err=True)
    if registry.problems:
        raise typer.Exit(1)


def list_components(kind: Kind = typer.Argument(..., help="encoders, fusions, balancers, tasks or executors"),
                    plugins_dir: list[Path] = PLUGINS_DIR) -> None:
    """Names of the registered components of one kind, with their one-line description; for encoders the
    modality kinds each reads, for tasks their modalities and kinds."""
    registry = load_registry(plugins_dir)
    detail = {Kind.encoders: _accepts, Kind.tasks: _modalities}.get(kind)
    with exit_on_error():
        rows = [(name, detail(registry, name) if detail else "", _summary(registry.get(kind.value, name).cls))
                for name in registry.names(kind.value)]
    width = max((len(row[1]) for row in rows), default=0)
    for name, details, summary in rows:
        typer.echo((f"{name:<20} {details:<{width}}  {summary}" if detail else f"{name:<20} {summary}").rstrip())


def _summary(cls: type) -> str:
    doc = (cls.__doc__ or "").strip().splitlines()
    return doc[0] if doc else ""


def _accepts(registry: registry_lib.Registry, name: str) -> str:
    """The modality kinds the encoder reads (`Encoder.accepts`; None: any)."""
    accepts = registry.get("encoders", name).cls.accepts
    return "any kind" if accepts is None else ", ".join(sorted(accepts))


def _modalities(registry: registry_lib.Registry, name: str) -> str:
    """The task's modalities with their kinds, at its default parameters."""
    from pydantic import ValidationError

    try:
        resolved = registry.resolve("tasks", name)
    except ValidationError:
        return "(set by its parameters)"
    with registry_lib.plugin_code(resolved.component, "in its constructor or modalities"):
        modalities = resolved.cls(resolved.params).modalities
    return ", ".join(f"{m} ({spec.kind})" for m, spec in modalities.items())
