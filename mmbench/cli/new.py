"""`mmbench new KIND NAME`: start a plugin distribution that installs, registers and passes its tests (the
files come from `mmbench.scaffold`; one command per kind of component)."""

from __future__ import annotations

from pathlib import Path

import typer

from mmbench.cli.errors import exit_on_error

new_app = typer.Typer(help="Start a plugin distribution.", no_args_is_help=True)
DIRECTORY = typer.Option(Path("."), "--dir", help="where to create the distribution folder")


@new_app.command("balancer")
def new_balancer(
    name: str = typer.Argument(..., help="the balancer's name, as grids will write it (e.g. my_method)"),
    directory: Path = DIRECTORY,
) -> None:
    """Create `mmbench-NAME/`: a balancer plugin distribution that installs, registers and passes its tests."""
    from mmbench.scaffold import new_balancer as scaffold

    with exit_on_error(also=(ValueError,)):  # a name that is not an identifier
        root = scaffold(name, directory)
    _next_steps(root)


@new_app.command("task")
def new_task(
    name: str = typer.Argument(..., help="the task's name, as grids will write it (e.g. my_dataset)"),
    directory: Path = DIRECTORY,
) -> None:
    """Create `mmbench-NAME/`: a dataset plugin distribution (a task read from a small raw layout, its prepare,
    its test and a grid) that installs, registers and passes its tests."""
    from mmbench.scaffold import new_task as scaffold

    with exit_on_error(also=(ValueError,)):  # a name that is not an identifier
        root = scaffold(name, directory)
    _next_steps(root, f"then replace the layout, items and processing in "
                      f"{root / root.name.replace('-', '_') / (name + '.py')}")


def _next_steps(root: Path, then: str | None = None) -> None:
    after = then or f"or try it uninstalled with `mmbench run --matrix GRID --plugins-dir " \
                    f"{root / root.name.replace('-', '_')}`"
    typer.echo(f"created {root}; next: cd {root} && pip install -e '.[dev]' && python -m pytest -q, {after}")
