"""Commands that train nothing import no torch: the schema side and the reporting side stand alone."""

import json
import subprocess
import sys

from tests import ROOT

PROBE = """
import sys
from typer.testing import CliRunner
from mmbench.cli import app
result = CliRunner().invoke(app, {args!r})
assert result.exit_code == 0, result.output
print("TORCH-IMPORTED" if "torch" in sys.modules else "TORCH-FREE")
"""


def _probe(args):
    out = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_schema_commands_import_no_torch():
    assert _probe(["schema", "grid"]) == "TORCH-FREE"
    assert _probe(["schema", "leaderboard"]) == "TORCH-FREE"


def test_rendering_a_leaderboard_imports_no_torch(tmp_path):
    from tests.fixtures.results import board_of, record

    path = tmp_path / "board.json"
    path.write_text(json.dumps(board_of([record(0), record(0, "other", accuracy=0.9)]).to_json()))
    assert _probe(["leaderboard", "render", str(path)]) == "TORCH-FREE"


SERVER_START_PROBE = """
import sys
from typer.testing import CliRunner
from mmbench.cli import app
from mmbench.running import worker_server

def warm_up():
    heavy = ("torch", "yaml", "mmbench.running.grid", "mmbench.data.prepared", "mmbench.running.executors")
    print(sorted(m for m in heavy if m in sys.modules), file=sys.__stderr__)
    raise SystemExit(3)

worker_server.warm_up = warm_up
CliRunner().invoke(app, ["run", "--matrix", "grids/quickstart.yaml"])
"""


def test_run_starts_the_workers_server_before_importing_anything_heavy():
    # the server's imports (torch, its compiler front end, the plugins) are the quickstart's critical path, so
    # `mmbench run` starts it as soon as its command line is parsed (typer has imported pydantic by then); our
    # schemas and YAML first delayed that start by a third of a second
    out = subprocess.run([sys.executable, "-c", SERVER_START_PROBE], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.stderr.strip().splitlines()[-1] == "[]", out.stderr
