"""The command line, in-process through typer's runner."""

import json

from typer.testing import CliRunner

from mmbench.cli import app

runner = CliRunner()


def test_validate_accepts_a_good_grid(tiny_grid_file):
    result = runner.invoke(app, ["validate", str(tiny_grid_file)])
    assert result.exit_code == 0, result.output
    assert "valid; 4 cells (4 to train)" in result.output


def test_invalid_grid_exits_2_with_paths_and_no_traceback(tiny_grid_file):
    tiny_grid_file.write_text(tiny_grid_file.read_text().replace("balancers: [joint]", "balancers: [jiont]"))
    for args in (["validate", str(tiny_grid_file)], ["run", "--matrix", str(tiny_grid_file)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2
        assert "balancers[0].name" in result.output and "did you mean 'joint'?" in result.output
        assert "Traceback" not in result.output


def test_run_prints_the_leaderboard_and_publish_writes_files(tiny_grid_file, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", "--matrix", str(tiny_grid_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "# synthetic leaderboard" in result.output and "cells: 4 ok" in result.output
    published = tmp_path / "boards"
    result = runner.invoke(app, ["publish", str(out), "--to", str(published)])
    assert result.exit_code == 0 and (published / "synthetic.md").exists()
    result = runner.invoke(app, ["leaderboard", "render", str(published / "synthetic.json")])
    assert result.exit_code == 0 and "| joint " in result.output


def test_schema_plugins_and_list():
    grid_schema = json.loads(runner.invoke(app, ["schema", "grid"]).output)
    assert {"tasks", "encoders", "fusions", "balancers", "seeds"} <= set(grid_schema["properties"])
    board_schema = json.loads(runner.invoke(app, ["schema", "leaderboard"]).output)
    assert "schema" in board_schema["properties"]
    plugins = runner.invoke(app, ["plugins"])
    assert plugins.exit_code == 0 and "synthetic" in plugins.output
    listed = runner.invoke(app, ["list", "balancers"]).output.splitlines()
    assert listed[0].startswith("joint") or any(line.startswith("joint ") for line in listed)
