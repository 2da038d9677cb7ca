"""Overhead of an mmbench cell over a bare PyTorch loop on the same model, data and optimizer, as a ratio.

Both train the same `MultimodalModel` (mlp encoders + concat fusion) on the synthetic task for whole epochs.
The bare loop is what a careful script does: train, compute validation accuracy every epoch, keep the best
weights, test them at the end. The mmbench side is a whole cell, `mmbench.training.engine.train` with `joint`:
the same, plus train metrics, per-modality and missing-modality metrics, balancer hooks and the profile.

Rounds interleave the two, in alternating order (bare-mmbench, mmbench-bare, ...), so load drift on a shared
machine falls on both alike; on the CPU each run is timed in this thread's CPU time (torch runs on one
thread), which other processes inflate far less than wall time, and on CUDA in synchronised wall time. One run
reports, for the quickstart model (`grids/quickstart.yaml`) and a larger one, the ratio of each side's fastest
run (the least disturbed by neighbours) and the median and spread of the per-round ratios.

    python benchmarks/step_overhead.py [--rounds 7] [--epochs 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch.utils.data import DataLoader

from mmbench.schema.recipe import OptimizerConfig, TrainRecipe
from mmbench.testing import tiny_components
from mmbench.training.engine import build_model, collate, seed_everything, train
from mmbench.training.optim import build_optimizer

#: (label, task parameters, mlp encoder parameters): the quickstart grid's cell, and a larger model
SIZES = [
    ("quickstart", {}, {"hidden": 64, "layers": 2, "out_dim": 32}),
    ("larger", {"train_size": 4096}, {"hidden": 256, "layers": 3, "out_dim": 128}),
]


@torch.no_grad()
def accuracy(model, loader, device) -> torch.Tensor:
    model.eval()
    right = torch.zeros((), device=device)
    for raw in loader:
        batch = raw.to(device)
        right += (model(batch.inputs).logits.argmax(-1) == batch.label).sum()
    model.train()
    return right / len(loader.dataset)


def bare_cell(components, recipe: TrainRecipe, seed: int, device: torch.device) -> float:
    """A plain PyTorch training script for the same cell; returns the test accuracy of the best epoch."""
    generator = seed_everything(seed)
    splits = components.task.splits()
    train_loader = DataLoader(splits["train"], batch_size=recipe.batch_size, shuffle=True, generator=generator,
                              collate_fn=collate)
    val, test = (DataLoader(splits[s], batch_size=recipe.batch_size, collate_fn=collate) for s in ("val", "test"))
    model = build_model(components, components.balancer[0](components.balancer[1])).to(device)
    optimizer = build_optimizer(recipe.optimizer, model.parameter_groups())
    best, best_state = -1.0, None
    for _ in range(recipe.epochs):
        loss_sum = torch.zeros((), device=device)
        for raw in train_loader:
            batch = raw.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(batch.inputs).logits, batch.label)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
        score = float(accuracy(model, val, device))
        if score > best:
            best, best_state = score, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return float(accuracy(model, test, device))


def timed(fn, device: torch.device) -> float:
    """Seconds of `fn()`: this thread's CPU time on the CPU, synchronised wall time on CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize(device)
        return time.perf_counter() - start
    start = time.thread_time()
    fn()
    return time.thread_time() - start


def measure(label: str, task_params: dict, encoder_params: dict, args) -> dict:
    components = tiny_components("joint", task_params={"train_size": 2000, "val_size": 500, "test_size": 1000,
                                                       **task_params}, encoder_params=encoder_params)
    recipe = TrainRecipe(epochs=args.epochs, batch_size=64, device=args.device,
                         optimizer=OptimizerConfig(name="sgd", lr=0.05, momentum=0.9))
    device = torch.device(args.device)
    runs = {"bare": lambda: bare_cell(components, recipe, 0, device),
            "mmbench": lambda: train(components, recipe, 0)}
    seconds: dict[str, list[float]] = {"bare": [], "mmbench": []}
    for r in range(args.rounds + 1):  # round 0 warms up (allocator, caches) and is not counted
        for name in (("bare", "mmbench") if r % 2 else ("mmbench", "bare")):
            took = timed(runs[name], device)
            if r:
                seconds[name].append(took)
    params = build_model(components, components.balancer[0](components.balancer[1])).parameter_counts()["total"]
    ratios = [m / b for m, b in zip(seconds["mmbench"], seconds["bare"])]
    return {"model": label, "params": params, "bare": min(seconds["bare"]), "mmbench": min(seconds["mmbench"]),
            "fastest": min(seconds["mmbench"]) / min(seconds["bare"]), "ratio": statistics.median(ratios),
            "low": min(ratios), "high": max(ratios)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    clock = "thread CPU time" if args.device == "cpu" else "synchronised wall time"
    print(f"device={args.device}, {args.epochs} epochs per cell, {args.rounds} interleaved rounds, {clock}")
    print("| model | params | bare loop, fastest (s/cell) | mmbench cell, fastest (s/cell) | ratio of fastest | "
          "per-round ratio: median (min-max) |")
    print("|---|---|---|---|---|---|")
    for size in SIZES:
        row = measure(*size, args)
        print(f"| {row['model']} | {row['params']:,} | {row['bare']:.3f} | {row['mmbench']:.3f} | "
              f"{row['fastest']:.3f} | {row['ratio']:.3f} ({row['low']:.3f}-{row['high']:.3f}) |", flush=True)


if __name__ == "__main__":
    main()
