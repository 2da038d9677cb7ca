"""What a search adds to a grid's run besides training: building the plan, and Optuna's ask and tell per trial.

Plans grids/synthetic-tuned.yaml (every configuration of it) with the given budget and sampler, and drives every
round with made-up validation scores instead of training, so the time measured is the search's own bookkeeping:
study set-up, sampling, building each trial's cell, and telling the sampler its score. Compare the seconds per
trial with a trained cell's (seconds, on a CPU, for the synthetic task).

    python benchmarks/search_overhead.py [--trials 8] [--sampler random|tpe]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from mmbench import registry as registry_lib
from mmbench.running.search import Plan
from mmbench.running import grid as grid_lib
from mmbench.schema.results import CellResult

GRID = Path(__file__).resolve().parent.parent / "grids" / "synthetic-tuned.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--sampler", choices=["random", "tpe"], default="random")
    args = parser.parse_args()
    registry = registry_lib.default()
    grid = grid_lib.load(GRID, registry)
    grid.search = grid.search.model_copy(update={"trials": args.trials, "sampler": args.sampler})
    rng = random.Random(0)

    started = time.perf_counter()
    plan = Plan(grid, registry)
    planned = time.perf_counter() - started
    results: dict[str, CellResult] = {}
    started = time.perf_counter()
    for cells in plan.stages(results.get):
        for cell in cells:
            base = cell.model_dump(exclude={"data_root", "skip_reason"})
            results[cell.cell_id] = CellResult(**base, status="ok", val={"metrics": {"accuracy": rng.random()}})
    driven = time.perf_counter() - started
    trials = len(plan.active) * args.trials
    print(f"{len(plan.studies)} configurations, {trials} trials ({args.sampler}), {len(results)} cells")
    print(f"plan: {planned:.2f} s; ask + tell + cells: {driven:.2f} s = {driven / len(results) * 1000:.1f} ms per cell")


if __name__ == "__main__":
    main()
