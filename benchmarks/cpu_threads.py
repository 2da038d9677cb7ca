"""Wall and CPU time of one quickstart cell with 1, 2, ... intra-op threads (the recipe's `cpu_threads`),
interleaved round by round so that machine load falls on every setting alike.

    python benchmarks/cpu_threads.py [--threads 1 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from mmbench.schema.recipe import OptimizerConfig, TrainRecipe
from mmbench.testing import tiny_components
from mmbench.training.engine import train


def one_cell(threads: int) -> tuple[float, float, float]:
    recipe = TrainRecipe(epochs=10, batch_size=64, device="cpu", cpu_threads=threads,
                         optimizer=OptimizerConfig(name="sgd", lr=0.05, momentum=0.9))
    components = tiny_components("joint", task_params={"train_size": 2000, "val_size": 500, "test_size": 1000},
                                 encoder_params={"hidden": 64, "layers": 2, "out_dim": 32})
    wall, cpu = time.perf_counter(), time.process_time()
    outcome = train(components, recipe, seed=0)
    return time.perf_counter() - wall, time.process_time() - cpu, outcome.test.metrics["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    one_cell(1)  # warm-up: imports, allocator
    results: dict[int, list[tuple[float, float, float]]] = {n: [] for n in args.threads}
    for _ in range(args.rounds):
        for n in args.threads:
            results[n].append(one_cell(n))
    base = statistics.median(w for w, _, _ in results[args.threads[0]])
    for n, runs in results.items():
        wall = statistics.median(w for w, _, _ in runs)
        cpu = statistics.median(c for _, c, _ in runs)
        accuracies = sorted({round(a, 4) for _, _, a in runs})
        print(f"{n} thread(s): wall {wall:.2f} s (x{wall / base:.2f}), CPU {cpu:.2f} s, test accuracy {accuracies}")


if __name__ == "__main__":
    main()
