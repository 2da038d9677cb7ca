"""The one way a command ends on an error it knows: one line on stderr (no traceback) and exit code 2.

Exit codes: 0 done; 1 `run` finished with failed cells, `plugins` found a broken plugin, `data check` found
problems, `compare --fail-on` found a regression; 2 the input, the data, the run directory or a plugin cannot be
used; 130 `run` interrupted (Ctrl-C or SIGTERM: finished cells are kept). The global option `--traceback` (or
`MMBENCH_TRACEBACK=1`) prints the traceback above the line. An exception not listed here is a bug in mmbench and
shows its traceback.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

UNUSABLE = 2
INTERRUPTED = 130
#: the environment variable that turns `--traceback` on
TRACEBACK_VARIABLE = "MMBENCH_TRACEBACK"
#: set by the global options at each invocation (`mmbench.cli._options`)
_settings = {"traceback": False}


def show_tracebacks(wanted: bool) -> None:
    """Whether errors show their traceback; the global option sets it at each invocation."""
    _settings["traceback"] = wanted


class ParameterError(ValueError):
    """A command-line value that cannot be used; the message names the option or the component it was for."""


@contextmanager
def exit_on_error(doing: str | None = None, *, run_dir: Path | None = None,
                  also: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Turn the known exceptions of the block into one line and the exit code.

    `doing` starts the line of an error that does not name its subject ("cannot run: ..."); errors that do
    (an unknown component, a bad parameter, a failing plugin, an invalid grid) are shown as they are. Within
    `run_dir`'s block, a failing disk and an interrupt say that the finished cells are kept there. `also`: more
    exception types a command expects (shown like the known ones).
    """
    try:
        yield
    except typer.Exit:  # the command's own ending
        raise
    except KeyboardInterrupt:
        if run_dir is None:
            raise
        typer.echo(f"interrupted: finished cells are saved in {run_dir}; run the same command to resume", err=True)
        raise typer.Exit(INTERRUPTED) from None
    except Exception as exc:
        line = _line(exc, doing, run_dir, also)
        if line is None:
            raise
        if _settings["traceback"]:
            typer.echo("".join(traceback.format_exception(exc)), err=True, nl=False)
        typer.echo(line, err=True)
        raise typer.Exit(UNUSABLE) from None


def _line(exc: Exception, doing: str | None, run_dir: Path | None, also: tuple[type[Exception], ...]) -> str | None:
    """The message for a known exception; None for any other. (The classes are imported here, when a command has
    failed, so that no command imports more than it needs to succeed.)"""
    from pydantic import ValidationError

    from mmbench.contract.errors import DataError
    from mmbench.registry import PluginError, UnknownComponent
    from mmbench.reporting.leaderboard import LeaderboardError
    from mmbench.rundir import RunStoreError
    from mmbench.running.executors import ExecutorError
    from mmbench.running.grid import GridError, describe

    prefix = f"{doing}: " if doing else ""
    if isinstance(exc, PluginError) and not _settings["traceback"]:
        return f"{exc} (`mmbench --traceback ...` shows where)"
    if isinstance(exc, (UnknownComponent, ParameterError, PluginError, GridError)):
        return str(exc)
    if isinstance(exc, ValidationError):
        return prefix + "; ".join(describe(exc))
    if isinstance(exc, OSError):
        reason = f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
        if run_dir is not None:
            return (f"cannot write the run directory {run_dir}: {reason}; finished cells are kept there, run the "
                    "same command to resume once the problem is fixed")
        return prefix + reason
    if isinstance(exc, (DataError, RunStoreError, ExecutorError, LeaderboardError, *also)):
        return prefix + str(exc)
    return None

