"""Figures next to a leaderboard: they decode, carry drawn content, and the Markdown links them."""

import subprocess
import sys

import pytest
from PIL import Image
from typer.testing import CliRunner

from mmbench.cli import app
from tests.conftest import TINY_GRID

GRID = TINY_GRID.replace("balancers: [joint]", "balancers: [joint, ogm]").replace("fusions: [concat, sum]",
                                                                                  "fusions: [concat]")


def _drawn(path) -> int:
    """How many distinct colours the image uses (a blank figure has one or two)."""
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 150
        return len(image.convert("RGB").getcolors(maxcolors=1 << 20))


@pytest.fixture(scope="module")
def plotted_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plots")
    grid = tmp / "grid.yaml"
    grid.write_text(GRID)
    out = tmp / "run"
    result = CliRunner().invoke(app, ["run", "--matrix", str(grid), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_run_writes_curves_coefficients_and_the_board_charts_and_links_them(plotted_run):
    out = plotted_run
    folder = out / "leaderboard-plots"
    curves = sorted(folder.glob("*-curves.png"))
    coefficients = sorted(folder.glob("*-coefficients.png"))
    assert len(curves) == 2 and len(coefficients) == 1  # joint reports no coefficients, ogm does
    for path in [*curves, *coefficients, folder / "modalities.png"]:
        assert _drawn(path) > 20, path
    for path in [folder / "gain_vs_imbalance.png", folder / "gain_vs_cost.png"]:  # ogm against joint: both known
        assert _drawn(path) > 20, path
    markdown = (out / "leaderboard.md").read_text()
    assert "![each modality alone and together](leaderboard-plots/modalities.png)" in markdown
    assert "![gain against imbalance degree](leaderboard-plots/gain_vs_imbalance.png)" in markdown
    assert "![gain against compute](leaderboard-plots/gain_vs_cost.png)" in markdown
    assert f"[coefficients](leaderboard-plots/{coefficients[0].name})" in markdown
    assert all(f"[curves](leaderboard-plots/{p.name})" in markdown for p in curves)


#: draws a run's figures in two forked processes and in this one; prints the pids that drew curves, then whether
#: the two folders hold the same files, byte for byte, and the same links
SIDE_BY_SIDE = """
import filecmp, os, sys
from pathlib import Path
from mmbench.reporting import leaderboard, plots
from mmbench.rundir import RunStore

run, out = Path(sys.argv[1]), Path(sys.argv[2])
results = RunStore(run).results()
[board] = leaderboard.aggregate(results)
curves = plots._curves

def recorded(*args):
    (out / f"drawn-by-{os.getpid()}").touch()
    return curves(*args)

plots._curves = recorded
links = {n: plots.write_plots(board, results, out / str(n), processes=n) for n in (2, 0)}
print(len({p for p in out.glob("drawn-by-*")} - {out / f"drawn-by-{os.getpid()}"}))
same = [p.name for p in sorted((out / "2").iterdir())] == [p.name for p in sorted((out / "0").iterdir())]
same = same and all(filecmp.cmp(p, out / "0" / p.name, shallow=False) for p in (out / "2").iterdir())
as_names = {n: {k: {kind: p.name for kind, p in v.items()} for k, v in found.items()} for n, found in links.items()}
print(same, as_names[2] == as_names[0], len(list((out / "0").iterdir())))
"""


def test_figures_drawn_in_forked_processes_are_the_same_files(plotted_run, tmp_path):
    # in its own process: forking is only done where no other thread runs, and pytest's workers run threads
    found = subprocess.run([sys.executable, "-c", SIDE_BY_SIDE, str(plotted_run), str(tmp_path)],
                           capture_output=True, text=True, timeout=300)
    assert found.returncode == 0, found.stderr
    drawers, verdict = found.stdout.strip().splitlines()[-2:]
    assert int(drawers) >= 1  # curves were drawn outside the calling process
    assert verdict == "True True 6"  # 2 curves, 1 coefficient figure, the modality chart, the 2 gain figures


def test_figures_are_drawn_in_this_process_when_another_thread_runs():
    import threading

    from mmbench.reporting.plots import drawing_processes

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert drawing_processes(5) == 0
    finally:
        stop.set()
        thread.join()
