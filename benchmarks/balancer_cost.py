"""Every balancer's cost relative to `joint` on the same cell: step time, whole-cell time and peak memory.

Each registered balancer trains the same synthetic cell (mlp encoders) with the first fusion it supports
(concat when it can), and `joint` trains the same cell with that fusion. Each run is a child process forked
from this one after the imports (it starts at once), so peak memory is its own: on the CPU the peak resident
set above what the child held when it began (`VmHWM`, reset through `/proc/self/clear_refs`), on CUDA the peak
allocated by torch. Step time is the median of the engine's whole training step (`engine.step`), in thread CPU
time on the CPU and from the cell's profile (CUDA events) on a GPU; cell time is the child's CPU time on the
CPU, wall time on CUDA. Rounds visit the balancers in turn, so load drift falls on all alike;
the table shows medians over rounds, as ratios to `joint`.

    python benchmarks/balancer_cost.py [--rounds 3] [--epochs 2] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from pathlib import Path

from mmbench import registry as registry_lib
from mmbench.running.cells import incompatibility
from mmbench.schema.recipe import OptimizerConfig, TrainRecipe
from mmbench.testing import tiny_components
from mmbench.training import engine
from mmbench.training.engine import train

TASK = {"train_size": 1024, "val_size": 256, "test_size": 256}
ENCODER = {"hidden": 128, "layers": 2, "out_dim": 64}


def first_fusion(registry, balancer_cls) -> str | None:
    task_cls = registry.get("tasks", "synthetic").cls
    task = task_cls(task_cls.Params())
    encoders = {m: registry.get("encoders", "mlp").cls for m in task.modalities}
    names = sorted(registry.names("fusions"), key=lambda f: f != "concat")
    return next((f for f in names if incompatibility(balancer_cls, task, encoders,
                                                     registry.get("fusions", f).cls) is None), None)


def _host_peak_reset() -> int:
    """Resets this process's peak resident set (Linux) and returns the current one, in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS") * 1024


def _status_kib(field: str) -> int:
    line = next(li for li in Path("/proc/self/status").read_text().splitlines() if li.startswith(field + ":"))
    return int(line.split()[1])


def _one(balancer: str, fusion: str, epochs: int, device: str, out) -> None:
    """In the child: train the cell, send (median step ms, cell seconds, peak bytes)."""
    recipe = TrainRecipe(epochs=epochs, batch_size=64, device=device, optimizer=OptimizerConfig(lr=0.05))
    components = tiny_components(balancer, fusion=fusion, task_params=TASK, encoder_params=ENCODER)
    step_seconds = []
    if device == "cpu":  # the engine's whole step in thread CPU time (the profile's step times are wall time)
        untimed = engine.step

        def timed_step(*args):
            started = time.thread_time()
            untimed(*args)
            step_seconds.append(time.thread_time() - started)

        engine.step = timed_step
    base = _host_peak_reset() if device == "cpu" else 0
    clock = time.perf_counter if device != "cpu" else time.process_time
    start = clock()
    outcome = train(components, recipe, seed=0)
    seconds = clock() - start
    if device == "cpu":
        step_ms, peak = statistics.median(step_seconds) * 1000, _status_kib("VmHWM") * 1024 - base
    else:
        step_ms, peak = outcome.profile["step_ms"]["median"], outcome.profile["peak_accelerator_memory_bytes"]
    out.send((step_ms, seconds, peak))


def run_one(balancer: str, fusion: str, epochs: int, device: str) -> tuple[float, float, int]:
    context = multiprocessing.get_context("fork")  # the parent never touches CUDA
    parent, child = context.Pipe()
    process = context.Process(target=_one, args=(balancer, fusion, epochs, device, child))
    process.start()
    result = parent.recv()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    registry = registry_lib.default()
    cells = []
    for name in registry.names("balancers"):
        fusion = first_fusion(registry, registry.get("balancers", name).cls)
        if fusion is not None:
            cells.append((name, fusion))
    cells += sorted({("joint", f) for _, f in cells} - set(cells))
    samples: dict[tuple[str, str], list[tuple[float, float, int]]] = {cell: [] for cell in cells}
    for _ in range(args.rounds):
        for cell in cells:
            samples[cell].append(run_one(*cell, args.epochs, args.device))
    median = {cell: [statistics.median(v[i] for v in runs) for i in range(3)] for cell, runs in samples.items()}
    memory = "peak host memory above start" if args.device == "cpu" else "peak CUDA memory"
    print(f"device={args.device}, synthetic task {TASK}, mlp {ENCODER}, batch 64, {args.epochs} epochs, "
          f"median of {args.rounds} rounds")
    print(f"| balancer | fusion | step ms | step × joint | cell × joint | {memory} (MiB) | memory × joint |")
    print("|---|---|---|---|---|---|---|")
    for name, fusion in sorted(cells, key=lambda c: (c[0] != "joint", c)):
        step, cell_s, peak = median[(name, fusion)]
        j_step, j_cell, j_peak = median[("joint", fusion)]
        print(f"| {name} | {fusion} | {step:.2f} | {step / j_step:.2f} | {cell_s / j_cell:.2f} | "
              f"{peak / 2**20:.1f} | {peak / j_peak if j_peak else float('nan'):.2f} |", flush=True)


if __name__ == "__main__":
    main()
