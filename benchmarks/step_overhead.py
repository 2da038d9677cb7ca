"""Overhead of the mmbench training step over a bare PyTorch loop on the same model and data.

Both loops train the same MultimodalModel (mlp encoders + concat fusion) on the synthetic task with the same
optimizer and batch size; the mmbench side goes through `Joint.train_step` with the engine's per-step
bookkeeping (timing, loss accumulation, train-logit collection). Reports the median epoch time of each and
their ratio, measured in one process.

    python benchmarks/step_overhead.py [--epochs 5] [--device cpu] [--hidden 256]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mmbench.schema.recipe import OptimizerConfig
from mmbench.testing import tiny_components
from mmbench.training import profiling
from mmbench.training.context import TrainContext
from mmbench.training.engine import _run_epoch, build_model, collate, task_loss_fn
from mmbench.training.optim import build_optimizer


def bare_epoch(model, loader, optimizer, device) -> None:
    for raw in loader:
        batch = raw.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(batch.inputs).logits, batch.label)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    device = torch.device(args.device)
    components = tiny_components("joint", task_params={"train_size": 4096},
                                 encoder_params={"hidden": args.hidden, "layers": 3, "out_dim": 128})
    loader = torch.utils.data.DataLoader(components.task.splits()["train"], batch_size=args.batch_size,
                                         shuffle=True, generator=torch.Generator().manual_seed(0),
                                         collate_fn=collate)
    balancer = components.balancer[0](components.balancer[1])

    def fresh():
        torch.manual_seed(0)
        model = build_model(components, balancer).to(device)
        return model, build_optimizer(OptimizerConfig(lr=0.01), model.parameter_groups())

    model, optimizer = fresh()
    bare_times = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        bare_epoch(model, loader, optimizer, device)
        bare_times.append(time.perf_counter() - start)

    model, optimizer = fresh()
    ctx = TrainContext(model=model, optimizer=optimizer, task=components.task, device=device,
                       epochs=args.epochs, train_loader=loader, val_loader=loader,
                       task_loss=task_loss_fn(False), evaluate=lambda loader: None)
    engine_times = []
    for ctx.epoch in range(args.epochs):
        start = time.perf_counter()
        _run_epoch(ctx, balancer, profiling.StepClock(device))
        engine_times.append(time.perf_counter() - start)

    bare, engine = statistics.median(bare_times[1:]), statistics.median(engine_times[1:])
    steps = len(loader)
    print(f"device={device} steps/epoch={steps} params={model.parameter_counts()['total']}")
    print(f"bare PyTorch loop : {bare * 1000 / steps:.3f} ms/step (median epoch {bare:.3f} s)")
    print(f"mmbench engine    : {engine * 1000 / steps:.3f} ms/step (median epoch {engine:.3f} s)")
    print(f"ratio engine/bare : {engine / bare:.3f}")


if __name__ == "__main__":
    main()
