"""Seconds per figure that `mmbench run` draws next to a board: the synthetic grid's smoke run (62 cells: every
balancer and fusion, so every kind of coefficient figure) is run once without figures, then its figures are drawn
`--rounds` times, side by side in forked processes as `mmbench run` draws them (`--processes 0`: in this process).

    python benchmarks/figure_cost.py [--rounds 3] [--processes N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = Path(__file__).resolve().parent.parent / "grids" / "synthetic.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=None, help="drawing processes (default: one per CPU)")
    args = parser.parse_args()
    from mmbench.reporting import leaderboard
    from mmbench.reporting.plots import pyplot, write_plots
    from mmbench.rundir import RunStore

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        subprocess.run([sys.executable, "-m", "mmbench.cli", "run", "--matrix", str(GRID), "--fake-data",
                        "--no-plots", "--out", str(run)], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        results = RunStore(run).results()
        [board] = leaderboard.aggregate(results)
        pyplot()  # matplotlib's import is a cost of its own (printed apart)
        per_figure = []
        for round_ in range(args.rounds):
            folder = Path(tmp) / f"plots-{round_}"
            started = time.perf_counter()
            write_plots(board, results, folder, processes=args.processes)
            figures = len(list(folder.glob("*.png")))
            per_figure.append((time.perf_counter() - started) / figures)
            print(f"round {round_ + 1}: {figures} figures, {per_figure[-1]:.3f} s each", flush=True)
    print(f"median {statistics.median(per_figure):.3f} s per figure")


if __name__ == "__main__":
    main()
