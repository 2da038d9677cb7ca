"""The `mmbench` command line (the console script is `mmbench.cli:app`).

One module per command group: `run` (run, validate), `inspect` (schema, plugins, list), `boards` (compare,
publish, leaderboard render), `new` (new balancer: plugin distributions), `data` (data prepare|check|list).
Shared by all: `options` (the plugin and data options, the one reading of KEY=VALUE) and `errors` (the one way a
command ends on an error: one line and its exit code). Nothing heavy is imported here, so that `run` starts the
workers' server before the schemas, YAML or torch are imported.
"""

from __future__ import annotations

import atexit
import gc

import typer

from mmbench.cli import boards, data, inspect, new, run
from mmbench.cli.errors import TRACEBACK_VARIABLE, show_tracebacks

app = typer.Typer(help="Benchmark multimodal balancing methods: grids of encoders x fusions x balancers x tasks.",
                  no_args_is_help=True, pretty_exceptions_enable=False)


@app.callback()
def _options(traceback: bool = typer.Option(
        False, "--traceback", envvar=TRACEBACK_VARIABLE,
        help="on an error, print the traceback above its one-line message (e.g. to see where a plugin failed)")
) -> None:
    """Options for every command, given before it (`mmbench --traceback run ...`)."""
    show_tracebacks(traceback)


app.command()(run.run)
app.command()(run.validate)
app.command()(inspect.schema)
app.command()(inspect.plugins)
app.command("list")(inspect.list_components)
app.command()(boards.compare)
app.command()(boards.publish)
app.add_typer(boards.leaderboard_app, name="leaderboard")
app.add_typer(new.new_app, name="new")
app.add_typer(data.data_app, name="data")

# at exit (after the handlers registered later, such as multiprocessing's), freeze the heap: the interpreter's
# final collections then skip what a run built (with torch loaded they take about half a second:
# benchmarks/README.md)
atexit.register(gc.freeze)
