"""A run killed at any phase (SIGKILL, as the out-of-memory killer does) leaves no process behind and no lock:
the same command resumes at once and ends with the results of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import TINY_GRID, results_without_timings

#: a plugin folder module that stops the run at one phase: it writes `<phase>.reached` and sleeps. It is loaded by
#: the runner, the workers' server and (forked from those) the workers and figure drawers, so each phase is
#: reached in the process that runs it.
GATE = textwrap.dedent("""\
    import functools, os, pathlib, time

    PHASE, FOLDER = os.environ.get("GATE_PHASE"), os.environ.get("GATE_FOLDER")

    def gate(name, function):
        @functools.wraps(function)  # the same qualified name: a forked drawer is handed it by reference
        def stopped(*args, **kwargs):
            if PHASE == name:
                pathlib.Path(FOLDER, name + ".reached").write_text(str(os.getpid()))
                time.sleep(600)
            return function(*args, **kwargs)
        return stopped

    from mmbench.reporting import leaderboard, markdown, plots
    from mmbench.running import runner, worker

    runner.expand = gate("preparing", runner.expand)
    worker.train = gate("training", worker.train)
    leaderboard.write_run_leaderboards = gate("after_last_cell", leaderboard.write_run_leaderboards)
    plots._draw = gate("drawing", plots._draw)
    markdown.render_markdown = gate("writing_board", markdown.render_markdown)
""")
PHASES = ["preparing", "training", "after_last_cell", "drawing", "writing_board"]


def processes_marked(mark: str) -> list[int]:
    """Pids of the live processes whose environment carries `mark` (every process a run starts inherits it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if mark.encode() in (entry / "environ").read_bytes() and (entry / "stat").read_text().split()[2] != "Z":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture
def gated_run(tmp_path):
    (tmp_path / "gate").mkdir()
    (tmp_path / "gate" / "phase_gate.py").write_text(GATE)
    grid = tmp_path / "grid.yaml"
    grid.write_text(TINY_GRID)

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "mmbench.cli", "run", "--matrix", str(grid), "--out", str(out),
                "--plugins-dir", str(tmp_path / "gate")]
    return command


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads the processes' environments in /proc")
def test_a_run_killed_at_any_phase_leaves_nothing_behind_and_resumes(gated_run, tmp_path):
    reference = subprocess.run(gated_run(tmp_path / "reference"), capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr
    expected = results_without_timings(tmp_path / "reference")
    for phase in PHASES:
        out, mark = tmp_path / phase, f"MMBENCH_TEST_RUN={uuid.uuid4().hex}"
        env = {**os.environ, "GATE_PHASE": phase, "GATE_FOLDER": str(tmp_path), mark.split("=")[0]: mark.split("=")[1]}
        runner = subprocess.Popen(gated_run(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 180
        while not (tmp_path / f"{phase}.reached").exists():
            assert runner.poll() is None and time.time() < deadline, f"{phase}: the run ended before the phase"
            time.sleep(0.05)
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        time.sleep(1.0)
        assert processes_marked(mark) == [], f"killed while {phase}: processes left behind"
        resumed = subprocess.run(gated_run(out), capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, f"{phase}: {resumed.stderr}"
        assert results_without_timings(out) == expected, phase
        assert (out / "leaderboard.md").exists()
