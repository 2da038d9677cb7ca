"""One way to end on an error: a plugin whose own code raises is one line naming it (the traceback behind
`--traceback` or MMBENCH_TRACEBACK=1); the known errors are one line with exit code 2."""

import pytest
from typer.testing import CliRunner

from mmbench import registry as registry_lib
from mmbench.cli import app
from tests.conftest import TINY_GRID
from tests.fixtures.distributions import broken_plugins_folder


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """A plugin folder holding `broken_plugins`; the plugin-folder variable is restored afterwards."""
    monkeypatch.setenv(registry_lib.PLUGINS_DIR_VARIABLE, "")
    return broken_plugins_folder(tmp_path)


def _lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.strip()]


def test_a_plugin_raising_in_check_is_one_line_naming_the_plugin(plugins, tmp_path):
    result = CliRunner().invoke(app, ["data", "check", "flaky", "--root", str(tmp_path), "--plugins-dir", str(plugins)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    [line] = _lines(result)
    assert line.startswith(f"task 'flaky' (plugin 'broken_plugins', {plugins.resolve()} (not installed)) raised "
                           "ZeroDivisionError in check(): division by zero")
    assert "--traceback" in line


def test_a_plugin_raising_in_prepare_is_one_line_and_the_traceback_is_behind_a_flag(plugins, tmp_path):
    args = ["data", "prepare", "flaky", "--raw", str(tmp_path), "--root", str(tmp_path / "root"),
            "--plugins-dir", str(plugins)]
    quiet = CliRunner().invoke(app, args)
    assert quiet.exit_code == 2 and "Traceback" not in quiet.output
    assert "task 'flaky'" in quiet.output and "raised KeyError in prepare(): 'label_column'" in quiet.output
    for loud in (CliRunner().invoke(app, ["--traceback", *args]),
                 CliRunner().invoke(app, args, env={"MMBENCH_TRACEBACK": "1"})):
        assert loud.exit_code == 2
        assert "Traceback (most recent call last)" in loud.output and 'raise KeyError("label_column")' in loud.output
        assert _lines(loud)[-1].startswith("task 'flaky' (plugin 'broken_plugins'")


def test_a_task_constructor_raising_while_a_grid_is_validated_names_the_task(plugins, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(TINY_GRID.replace("- name: synthetic", "- name: unbuildable").replace(
        "params: {train_size: 128, val_size: 64, test_size: 64}", "params: {}"))
    for args in (["validate", str(grid)], ["run", "--matrix", str(grid), "--out", str(tmp_path / "run")]):
        result = CliRunner().invoke(app, [*args, "--plugins-dir", str(plugins)])
        assert result.exit_code == 2 and "Traceback" not in result.output
        [line] = _lines(result)
        assert line.startswith("task 'unbuildable' (plugin 'broken_plugins'") and \
            "raised RuntimeError in its constructor or modalities: cannot read my settings" in line
    assert not (tmp_path / "run").exists()


def test_an_executor_constructor_raising_names_the_executor(plugins, tiny_grid_file, tmp_path):
    result = CliRunner().invoke(app, ["run", "--matrix", str(tiny_grid_file), "--out", str(tmp_path / "run"),
                                      "--executor", "fragile", "--plugins-dir", str(plugins)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "executor 'fragile' (plugin 'broken_plugins'" in result.output
    assert "raised ValueError in its constructor: no queue named 'default'" in result.output
    assert not (tmp_path / "run").exists()


def test_known_errors_are_one_line_with_exit_code_2(tmp_path):
    board = tmp_path / "board.json"
    board.write_text("{not json")
    for args, message in [
        (["leaderboard", "render", str(board)], f"cannot read leaderboard {board}"),
        (["publish", str(tmp_path / "nothing"), "--to", str(tmp_path / "boards")], "cannot publish: no cell results"),
        (["compare", str(board), str(board)], f"cannot read leaderboard {board}"),
        (["data", "check", "nowhere"], "unknown task 'nowhere'"),
        (["data", "check", "synthetic"], "task 'synthetic' generates its data; there is nothing to prepare"),
    ]:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and "Traceback" not in result.output, (args, result.output)
        assert message in result.output and len(_lines(result)) == 1, (args, result.output)


def test_an_unknown_exception_outside_plugins_keeps_its_traceback(monkeypatch, tmp_path):
    """A bug in mmbench itself is not hidden behind a tidy line."""
    from mmbench.reporting import leaderboard as lb

    def broken(path):
        raise AttributeError("a bug in mmbench")

    monkeypatch.setattr(lb, "read", broken)
    result = CliRunner().invoke(app, ["leaderboard", "render", str(tmp_path / "x.json")])
    assert result.exit_code == 1 and isinstance(result.exception, AttributeError)

