"""Commands that train nothing import no torch: the schema side and the reporting side stand alone."""

import json
import subprocess
import sys

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
    from tests.test_leaderboard_aggregation import board_of, record

    path = tmp_path / "board.json"
    path.write_text(json.dumps(board_of([record(0), record(0, "other", accuracy=0.9)]).to_json()))
    assert _probe(["leaderboard", "render", str(path)]) == "TORCH-FREE"


def test_the_command_line_module_imports_no_schema_library():
    # `mmbench run` starts the workers' server (whose imports are the run's critical path) as soon as the command
    # line is parsed; importing pydantic first used to delay that start by a third of a second
    probe = "import sys, mmbench.cli; print(sorted(m for m in ('pydantic', 'yaml', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
