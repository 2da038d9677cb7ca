"""What the commands share: the options that load plugins or name data, the registry as a command loads it, and
the one reading of `KEY=VALUE` options.

`KEY=VALUE` (`run -x`, `data prepare|check --param`): VALUE is read as YAML, as it would be written in a grid
(`2` a number, `true` a boolean, `[a, b]` a list, `{k: 1}` a mapping, other text a string). An empty VALUE is
null, as `KEY:` with nothing after it is in a grid; `KEY=''` is the empty string. The parameters are then checked
against the component's parameter model as a grid's are: unknown ones with close-match suggestions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import typer

from mmbench import registry as registry_lib
from mmbench.cli.errors import ParameterError

PLUGINS_DIR = typer.Option(None, "--plugins-dir", help="also load the plugin modules (*.py) of this folder, "
                                                       "without installing them; may be repeated")
DATA_ROOT = typer.Option(None, "--data-root", help="folder holding prepared datasets as <folder>/<task>/ "
                                                   "(default: the grid's data_root, $MMBENCH_DATA, the user cache)")
FAKE_DATA = typer.Option(False, "--fake-data", help="smoke test: generated tensors of the prepared shapes instead "
                                                    "of the data, one short epoch, first seed; never publishable")


def use_plugin_dirs(plugins_dir: list[Path] | None) -> None:
    """Load the plugin modules of these folders too, here and in every worker process (through the environment)."""
    if plugins_dir:
        os.environ[registry_lib.PLUGINS_DIR_VARIABLE] = os.pathsep.join(str(p.resolve()) for p in plugins_dir)


def load_registry(plugins_dir: list[Path] | None = None) -> registry_lib.Registry:
    """The installed plugins (and those of `plugins_dir`); broken ones are named in one line (`mmbench plugins`
    shows the details)."""
    use_plugin_dirs(plugins_dir)
    registry = registry_lib.default()
    if registry.problems:
        names = sorted({p.plugin for p in registry.problems})
        typer.echo(f"warning: {len(names)} plugin(s) with problems, left out: {', '.join(names)} "
                   "(`mmbench plugins` shows why)", err=True)
    return registry


def key_values(pairs: Iterable[str], owner: str) -> dict[str, Any]:
    """`KEY=VALUE` options -> a mapping, by the rule above; a malformed one raises `ParameterError` naming
    `owner` (e.g. "executor 'gpus'")."""
    import yaml

    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ParameterError(f"{owner}: parameter {pair!r}: expected KEY=VALUE")
        try:
            values[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ParameterError(f"{owner}: the value of {key.strip()!r} is not valid YAML: {exc}") from None
    return values


def resolve(registry: registry_lib.Registry, kind: str, name: str, params: dict[str, Any]) -> registry_lib.Resolved:
    """The named component with `params` validated; bad ones raise `ParameterError` saying which and why."""
    from pydantic import ValidationError

    from mmbench.running.grid import describe

    try:
        return registry.resolve(kind, name, params)
    except ValidationError as exc:
        problems = "; ".join(describe(exc, registry.get(kind, name).cls.Params))
        raise ParameterError(f"{kind[:-1]} {name!r} parameters: {problems}") from None
