"""Leaderboard commands: `leaderboard render`, `leaderboard summary`, `publish` and `compare` (no plugin, no
torch)."""

from __future__ import annotations

from pathlib import Path

import typer

from mmbench.cli.errors import ParameterError, exit_on_error

leaderboard_app = typer.Typer(help="Leaderboard files.", no_args_is_help=True)


@leaderboard_app.command("render")
def render(file: Path = typer.Argument(..., help="leaderboard JSON")) -> None:
    """Render a leaderboard JSON file to Markdown on stdout."""
    from mmbench.reporting import leaderboard as lb

    with exit_on_error():
        board = lb.read(file)
    from mmbench.reporting.markdown import render_markdown

    typer.echo(render_markdown(board))


@leaderboard_app.command("summary")
def summary(folder: Path = typer.Argument(Path("leaderboards"), help="published leaderboards directory")) -> None:
    """Rebuild a published folder's README.md (every method over every board) and methods/<name>.md pages from its
    boards (`publish` does it after each run)."""
    from mmbench.reporting.summary import write_summary

    with exit_on_error():
        written = write_summary(folder)
    typer.echo(f"wrote {len(written)} page(s) in {folder}")


def publish(
    run_dir: Path = typer.Argument(..., help="a run directory (holding cells/*.json)"),
    to: Path = typer.Option(Path("leaderboards"), help="published leaderboards directory"),
    plots: bool = typer.Option(True, help="write the board's figures next to it (<benchmark>-plots/)"),
) -> None:
    """Add a run's cell results to leaderboards/<benchmark>.cells.jsonl and rebuild <benchmark>.json/.md.

    Publishing never removes evidence: new seeds are added, cells the run reproduces are left as they were, and
    a cell whose outcome differs is replaced and named."""
    from mmbench.reporting.publish import publish as publish_run

    with exit_on_error("cannot publish"):
        done = publish_run(run_dir, to, plots)
    for report in done:
        typer.echo(f"published {report.summary()}")
        warn_anomalies(report.board)


def compare(
    a: Path = typer.Argument(..., help="leaderboard JSON or run directory (A, the reference)"),
    b: Path = typer.Argument(..., help="leaderboard JSON or run directory (B)"),
    metric: list[str] = typer.Option(None, "--metric", help="metrics to compare (default: the primary one)"),
    fail_on: list[str] = typer.Option(None, "--fail-on", help="METRIC:POINTS — exit 1 when an entry of B is "
                                                              "worse than A by more than POINTS"),
) -> None:
    """Per-entry differences between two leaderboards or runs (B − A, in points, + = better)."""
    from mmbench.reporting import compare as comparing

    with exit_on_error():
        board_a, board_b = comparing.load(a), comparing.load(b)
        thresholds = dict(map(_threshold, fail_on or []))
        metrics = list(metric or [board_a.primary_metric]) + [m for m in thresholds if m not in (metric or [])]
        unknown = sorted(set(metrics) - set(board_a.metrics))
        if unknown:
            raise ParameterError(f"unknown metric(s) {unknown}; the boards report {', '.join(board_a.metrics)}")
    found, only = comparing.differences(board_a, board_b, list(dict.fromkeys(metrics)))
    typer.echo(comparing.render(board_a, board_b, found, only))
    worse = comparing.regressions(board_a, found, thresholds)
    if worse:
        typer.echo(f"{len(worse)} regression(s) beyond the allowed drop:", err=True)
        for line in worse:
            typer.echo(f"  - {line}", err=True)
        raise typer.Exit(1)


def _threshold(item: str) -> tuple[str, float]:
    name, _, points = item.partition(":")
    try:
        return name, float(points)
    except ValueError:
        raise ParameterError(f"--fail-on takes METRIC:POINTS (e.g. accuracy:1.0), got {item!r}") from None


def warn_anomalies(board_path: Path) -> None:
    """The rows of a written board that need explaining before it is published, on stderr."""
    from mmbench.reporting import leaderboard as lb
    from mmbench.reporting.anomalies import anomalies

    flagged = anomalies(lb.read(board_path))
    if flagged:
        typer.echo(f"{len(flagged)} row(s) of {board_path} to explain before publishing (a defect until a run "
                   "shows otherwise):", err=True)
        for line in flagged:
            typer.echo(f"  - {line}", err=True)
