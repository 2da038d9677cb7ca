"""A board credits each component to the package that provided it: a third-party dataset package is named with
its task, not appended to the balancer as if it had provided that."""

import json
import sys

from typer.testing import CliRunner

from mmbench import registry as registry_lib
from mmbench.cli import app
from mmbench.reporting.markdown import render_markdown
from tests.conftest import TINY_GRID
from tests.fixtures.distributions import fake_distribution
from tests.fixtures.results import board_of, record

MMBENCH = {"task": "mmbench", "fusion": "mmbench", "balancer": "mmbench", "encoders.fast": "mmbench",
           "encoders.slow": "mmbench"}


def _with(result, providers, plugins):
    env = {**result.env, "providers": providers, "plugins": plugins}
    return result.model_copy(update={"env": env})


def _row(markdown: str, balancer: str) -> list[str]:
    """The balancer, encoders and fusion cells of the balancer's ranked row."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in markdown.splitlines()
            if line.startswith("|")]
    return next(cells[1:4] for cells in rows if cells[0].isdigit() and cells[1].split()[0] == balancer)


def test_a_dataset_package_is_credited_with_the_task_only():
    plugins = {"mmbench": "0.1.0", "the-dataset-package": "0.1.0"}
    providers = {**MMBENCH, "task": "the-dataset-package"}
    markdown = render_markdown(board_of([_with(record(s), providers, plugins) for s in (0, 1)]))
    assert _row(markdown, "joint") == ["joint", "mlp", "concat"]
    assert "version `1-abc` · task `synthetic` from the-dataset-package 0.1.0 · schema" in markdown


def test_a_balancer_and_an_encoder_package_are_credited_on_their_own_columns():
    plugins = {"mmbench": "0.1.0", "mmbench-my-method": "0.2", "fancy-encoders": "1.0"}
    theirs = {**MMBENCH, "balancer": "mmbench-my-method", "encoders.slow": "fancy-encoders"}
    board = board_of([_with(record(0, "my_method", accuracy=0.9), theirs, plugins),
                      _with(record(0), {**MMBENCH, "encoders.slow": "fancy-encoders"}, plugins)])
    markdown = render_markdown(board)
    assert _row(markdown, "my_method") == ["my_method [mmbench-my-method 0.2]", "mlp [fancy-encoders 1.0]", "concat"]
    assert _row(markdown, "joint") == ["joint", "mlp [fancy-encoders 1.0]", "concat"]
    assert "· task" not in markdown and "gain vs joint" in markdown
    assert "| +10.00" in markdown  # the baseline is still found for the same encoders and fusion


def test_a_result_without_providers_lists_its_packages_on_the_balancer_as_before():
    legacy = record(0).model_copy(update={"env": {"plugins": {"mmbench": "0.1.0", "the-dataset-package": "0.1.0"}}})
    assert _row(render_markdown(board_of([legacy])), "joint")[0] == "joint [the-dataset-package 0.1.0]"


def test_providers_leave_cell_and_entry_ids_alone():
    plain, credited = record(0), _with(record(0), MMBENCH, {"mmbench": "0.1.0"})
    assert (plain.cell_id, plain.entry_id) == (credited.cell_id, credited.entry_id)


DATASET = """
from mmbench.api import hookimpl
from mmbench_plugins.tasks.synthetic import SyntheticTask


class TheirSynthetic(SyntheticTask):
    \"\"\"The synthetic task, as a dataset package would ship one.\"\"\"

    name = "their_synthetic"


@hookimpl
def mmbench_tasks():
    return [TheirSynthetic]
"""


def test_a_run_credits_a_third_party_dataset_package_with_its_task_alone(tmp_path, monkeypatch):
    fake_distribution(tmp_path, "the-dataset-package", {"their_dataset": "their_dataset"},
                      {"their_dataset": DATASET})
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = registry_lib.load()
    assert registry.get("tasks", "their_synthetic").distribution == "the-dataset-package"
    monkeypatch.setattr(registry_lib, "default", lambda: registry)
    grid = tmp_path / "grid.yaml"
    grid.write_text(TINY_GRID.replace("- name: synthetic", "- name: their_synthetic").replace("seeds: [0, 1]",
                                                                                               "seeds: [0]"))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--matrix", str(grid), "--out", str(out), "--no-plots",
                                      "-x", "workers=1"])  # in this process, which has the package on its path
    assert result.exit_code == 0, result.output
    [cell, *_] = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]
    assert cell["env"]["providers"] == {"task": "the-dataset-package", "fusion": "mmbench", "balancer": "mmbench",
                                        "encoders.fast": "mmbench", "encoders.slow": "mmbench"}
    assert cell["env"]["plugins"] == {"the-dataset-package": "0.1", "mmbench": "0.1.0"}
    markdown = (out / "leaderboard.md").read_text()
    assert "· task `their_synthetic` from the-dataset-package 0.1 ·" in markdown
    assert _row(markdown, "joint")[:2] == ["joint", "mlp"] and "[the-dataset-package" not in markdown
    sys.modules.pop("their_dataset", None)
