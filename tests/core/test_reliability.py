"""One broken plugin never takes the tool down; environment errors get one clear line; runs never collide."""

import errno
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from mmbench import registry as registry_lib
from mmbench.cli import app
from mmbench.contract.balancer import Balancer
from mmbench.contract.hooks import hookimpl
from mmbench.rundir import RunStore, RunStoreError
from mmbench.running import grid as grid_lib
from mmbench.running.runner import run_grid
from tests.conftest import TINY_GRID
from tests.fixtures.distributions import fake_distribution

ONE_CELL = TINY_GRID.replace("seeds: [0, 1]", "seeds: [0]").replace("fusions: [concat, sum]", "fusions: [sum]")


class Nameless(Balancer):  # no `name`
    pass


class RaisingObserver:
    def __init__(self, hook):
        self.hook = hook

    @hookimpl
    def mmbench_cell_started(self, cell):
        if self.hook == "started":
            raise RuntimeError("observer broke at start")

    @hookimpl
    def mmbench_epoch_end(self, cell, stats):
        if self.hook == "epoch":
            raise RuntimeError("observer broke at an epoch")

    @hookimpl
    def mmbench_cell_finished(self, cell, result):
        if self.hook == "finished":
            raise RuntimeError("observer broke at the end")


def test_a_class_without_a_name_is_reported_with_its_distribution_and_the_rest_works(tmp_path, monkeypatch):
    fake_distribution(tmp_path, "broken_dist", {"nameless": "nameless_plugin"}, {"nameless_plugin": """
        from mmbench.api import hookimpl
        from mmbench.api import Balancer
        class Nameless(Balancer):
            pass
        @hookimpl
        def mmbench_balancers():
            return [Nameless]
    """})
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = registry_lib.load()
    [problem] = registry.problems
    assert problem.plugin == "nameless" and problem.distribution == "broken_dist"
    assert "Nameless without a valid `name`" in str(problem)
    assert "joint" in registry.names("balancers")
    monkeypatch.setattr(registry_lib, "default", lambda: registry)
    listed = CliRunner().invoke(app, ["plugins"])
    assert listed.exit_code == 1 and "broken_dist" in listed.output and "Traceback" not in listed.output
    grid = tmp_path / "grid.yaml"
    grid.write_text(ONE_CELL)
    validated = CliRunner().invoke(app, ["validate", str(grid)])
    assert validated.exit_code == 0 and "1 plugin(s) with problems, left out: nameless" in validated.output
    sys.modules.pop("nameless_plugin", None)


@pytest.mark.parametrize("hook", ["started", "epoch", "finished"])
def test_an_observer_that_raises_is_reported_once_and_the_run_goes_on(tmp_path, hook):
    registry = registry_lib.load(extra_plugins=[RaisingObserver(hook)])
    text = ONE_CELL.replace("seeds: [0]", "seeds: [0, 1]")
    summary = run_grid(grid_lib.parse(text, registry), registry, tmp_path)
    assert summary.counts == {"ok": 2}
    [problem] = registry.problems  # two cells, reported once
    assert problem.message.startswith("observer mmbench_") and "observer broke at" in problem.message


def test_a_second_run_on_the_same_directory_is_refused(tmp_path, registry):
    store = RunStore(tmp_path)
    with store.lock():
        with pytest.raises(RunStoreError, match=rf"in use by another mmbench run \(pid {os.getpid()}"):
            run_grid(grid_lib.parse(ONE_CELL, registry), registry, tmp_path)
        grid = tmp_path / "grid_file.yaml"
        grid.write_text(ONE_CELL)
        result = CliRunner().invoke(app, ["run", "--matrix", str(grid), "--out", str(tmp_path)])
        assert result.exit_code == 2 and "in use by another mmbench run" in result.output
    assert not list((tmp_path / "cells").glob("*.json"))
    assert run_grid(grid_lib.parse(ONE_CELL, registry), registry, tmp_path).counts == {"ok": 1}


def _run(tmp_path, out):
    grid = tmp_path / "grid.yaml"
    grid.write_text(ONE_CELL)
    return CliRunner().invoke(app, ["run", "--matrix", str(grid), "--out", str(out)])


def test_out_being_a_file_is_one_clear_line(tmp_path):
    out = tmp_path / "taken"
    out.write_text("not a directory")
    result = _run(tmp_path, out)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"cannot write the run directory {out}" in result.output


@pytest.mark.parametrize("code, words", [(errno.EACCES, "Permission denied"), (errno.ENOSPC, "No space left")])
def test_an_unwritable_or_full_disk_is_one_clear_line_and_keeps_finished_cells(tmp_path, monkeypatch, code, words):
    import mmbench.rundir as store_module

    real = store_module.atomic_write_json
    calls = []

    def failing(path, data):
        calls.append(path)
        if len(calls) == 2:  # the first cell is saved; the disk fills up on the second
            raise OSError(code, os.strerror(code), str(path))
        real(path, data)

    monkeypatch.setattr(store_module, "atomic_write_json", failing)
    grid = tmp_path / "grid.yaml"
    grid.write_text(ONE_CELL.replace("seeds: [0]", "seeds: [0, 1]"))
    result = CliRunner().invoke(app, ["run", "--matrix", str(grid), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert words in result.output and "run the same command to resume" in result.output
    assert len(list((tmp_path / "run" / "cells").glob("*.json"))) == 1


def test_failed_cells_make_run_exit_non_zero_and_say_how_many(tmp_path, monkeypatch):
    class Explodes(Balancer):
        name = "explodes"

        def loss(self, ctx, batch, out):
            raise RuntimeError("boom")

    class Plugin:
        @hookimpl
        def mmbench_balancers(self):
            return [Explodes]

    registry = registry_lib.load(extra_plugins=[Plugin()])
    monkeypatch.setattr(registry_lib, "default", lambda: registry)
    grid = tmp_path / "grid.yaml"
    grid.write_text(ONE_CELL.replace("balancers: [joint]", "balancers: [joint, explodes]"))
    result = CliRunner().invoke(app, ["run", "--matrix", str(grid), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and "1 cell(s) failed" in result.output


def test_results_are_readable_by_the_group(tmp_path, registry):
    previous = os.umask(0o022)
    try:
        run_grid(grid_lib.parse(ONE_CELL, registry), registry, tmp_path)
    finally:
        os.umask(previous)
    for path in [*(tmp_path / "cells").glob("*.json"), tmp_path / "leaderboard.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_sigterm_ends_like_ctrl_c_with_the_resume_hint(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(TINY_GRID.replace("epochs: 2", "epochs: 30"))
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "mmbench.cli", "run", "--matrix", str(grid), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "cells").glob("*.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "run the same command to resume" in stderr and "Traceback" not in stderr


def test_the_cpu_thread_count_is_the_recipes(monkeypatch):
    import torch

    from mmbench.testing import train_tiny

    seen = []

    class Looks(Balancer):
        name = "looks"

        def setup(self, ctx):
            seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train_tiny(Looks, epochs=1)
    finally:
        torch.set_num_threads(before)
    assert seen == [1]
