"""Wall time of the quickstart's run (`mmbench run --matrix grids/quickstart.yaml` into a fresh directory), from
starting the process to its exit, median over rounds.

With `--against PYTHON`, that interpreter (another installation of mmbench, e.g. an older commit's) runs the
same command on its own installation's grid too, in alternating order within each round, so load drifting on a
shared machine falls on both alike; the ratio of the medians and the median of the rounds' own ratios are the
figures to quote.

    python benchmarks/quickstart_wall.py [--rounds 5] [--against /path/to/other/python] [-x workers=1]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = Path(__file__).resolve().parent.parent / "grids" / "quickstart.yaml"
#: the console script's body, so that any installation runs it the same way
COMMAND = "import sys; from mmbench.cli import app; sys.argv[0] = 'mmbench'; app()"


def own_grid(python: str) -> Path:
    """The quickstart grid of the installation that `python` imports (each side runs its own README's grid)."""
    where = subprocess.run([python, "-c", "import mmbench; print(mmbench.__file__)"], check=True, capture_output=True,
                           text=True, cwd=tempfile.gettempdir()).stdout.strip()
    return Path(where).resolve().parent.parent / "grids" / "quickstart.yaml"


def run_once(python: str, grid: Path, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        # run from the empty run directory: `python -c` imports from the working directory first, so a run from a
        # source tree would import that tree's mmbench whatever the interpreter
        subprocess.run([python, "-c", COMMAND, "run", "--matrix", str(grid), "--out", out, *extra], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=out)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--against", help="another interpreter with mmbench installed, run alternately")
    parser.add_argument("-x", action="append", default=[], help="an executor parameter for this installation")
    args = parser.parse_args()
    sides = {"this": (sys.executable, GRID, [arg for x in args.x for arg in ("-x", x)])}
    if args.against:
        sides["against"] = (args.against, own_grid(args.against), [])
    times: dict[str, list[float]] = {name: [] for name in sides}
    for round_ in range(args.rounds):
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        for name in order:
            times[name].append(run_once(*sides[name]))
        print(f"round {round_ + 1}: " + ", ".join(f"{n} {times[n][-1]:.1f} s" for n in sides), flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"{name}: median {medians[name]:.1f} s (min {min(values):.1f}, max {max(values):.1f})")
    if args.against:
        paired = sorted(t / a for t, a in zip(times["this"], times["against"]))
        print(f"this / against: {medians['this'] / medians['against']:.2f} (ratio of medians); within each round: "
              f"median {statistics.median(paired):.2f} (min {paired[0]:.2f}, max {paired[-1]:.2f})")


if __name__ == "__main__":
    main()
