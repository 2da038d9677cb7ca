"""The CREMA-D-shaped cell, `joint` against `ogm_ge`: ms per training step, achieved TFLOP/s, peak memory.

The shapes of the OGM-GE paper's CREMA-D model: a ResNet18 audio encoder on a 1 × 257 × 188 spectrogram, a
ResNet18 visual encoder on one 3 × 224 × 224 frame, concat fusion, 6 classes, batch 64, SGD. The encoders are
torchvision's resnet18 (random initialisation; the audio one takes one input channel), wrapped here until the
audio-visual tasks bring their own `resnet18` encoder. Each step is the engine's own (`engine.step`: the batch to
the device, the balancer's step, the bookkeeping) with the engine's execution settings for the device (bf16
autocast, channels-last and cuDNN autotuning on CUDA, one deterministic thread on the CPU).

The two balancers alternate step by step, so drift falls on both alike; a step is timed in this thread's CPU
time on the CPU and by CUDA events on a GPU. FLOPs of one step (forward and backward) come from torch's
FlopCounterMode. Peak memory is measured on CUDA only, each balancer on its own after a reset.

    python benchmarks/cremad_cell.py [--steps 20] [--warmup 3] [--device cuda] [--batch-size 64] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mmbench import registry as registry_lib
from mmbench.contract.batch import Batch
from mmbench.contract.context import TrainContext
from mmbench.contract.encoder import Encoder
from mmbench.contract.task import ModalitySpec, Task
from mmbench.schema.params import NoParams
from mmbench.schema.recipe import OptimizerConfig, TrainRecipe
from mmbench.training import acceleration, profiling
from mmbench.training.engine import CellComponents, EpochTotals, build_model, step, task_loss_fn
from mmbench.training.optim import build_optimizer

BALANCERS = {"joint": {}, "ogm_ge": {"alpha": 0.8}}  # α of the OGM-GE README for CREMA-D


class ResNet18(Encoder):
    """torchvision's resnet18 without its classifier: pooled 512-d features; `conv1` takes the input's channels."""

    name = "resnet18_tv"

    def __init__(self, modality: ModalitySpec, params: NoParams) -> None:
        super().__init__(modality, params)
        self.net = torchvision.models.resnet18()
        self.net.conv1 = nn.Conv2d(modality.shape[0], 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.net.fc = nn.Identity()
        self.out_dim = 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CremadShaped(Task):
    """Shapes only: the benchmark feeds random batches, so there are no splits."""

    name = "cremad_shaped"
    version = "bench"

    @property
    def modalities(self) -> dict[str, ModalitySpec]:
        return {"audio": ModalitySpec("audio", "spectrogram", (1, 257, 188)),
                "visual": ModalitySpec("visual", "image", (3, 224, 224))}

    @property
    def num_classes(self) -> int:
        return 6


def context(balancer_name: str, device: torch.device, recipe: TrainRecipe):
    registry = registry_lib.default()
    balancer_cls = registry.get("balancers", balancer_name).cls
    fusion = registry.resolve("fusions", "concat")
    task = CremadShaped(NoParams())
    components = CellComponents(task=task, encoders={m: (ResNet18, NoParams()) for m in task.modalities},
                                fusion=(fusion.cls, fusion.params),
                                balancer=(balancer_cls, balancer_cls.Params(**BALANCERS[balancer_name])))
    torch.manual_seed(0)
    balancer = balancer_cls(components.balancer[1])
    model = build_model(components, balancer)
    model = model.to(device, memory_format=acceleration.memory_format(model, device, recipe))
    acceleration.compile_model(model, recipe)
    optimizer = build_optimizer(recipe.optimizer, model.parameter_groups())
    ctx = TrainContext(model=model, optimizer=optimizer, task=task, device=device, epochs=1, train_loader=[None],
                       val_loader=[], task_loss=task_loss_fn(False), evaluate=None,
                       autocast_dtype=torch.bfloat16 if device.type == "cuda" and recipe.bf16 else None)
    balancer.setup(ctx)
    return balancer, ctx


def random_batch(batch_size: int, device: torch.device) -> Batch:
    batch = Batch({"audio": torch.randn(batch_size, 1, 257, 188), "visual": torch.randn(batch_size, 3, 224, 224)},
                  torch.randint(0, 6, (batch_size,)))
    return batch.pin_memory() if device.type == "cuda" else batch


def timed_step(balancer, ctx, batch: Batch, device: torch.device) -> float:
    """Seconds of one engine step: CUDA events on a GPU, this thread's CPU time on the CPU."""
    clock = profiling.StepClock(device)
    totals = EpochTotals(torch.zeros((), device=device))
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step(ctx, balancer, batch, clock, totals)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    started = time.thread_time()
    step(ctx, balancer, batch, clock, totals)
    return time.thread_time() - started


def peak_memory(name: str, device: torch.device, recipe: TrainRecipe, batch: Batch) -> int:
    """Peak CUDA memory of a few steps of one balancer's cell, alone on the device."""
    torch.cuda.empty_cache()
    profiling.reset_peak_memory(device)
    balancer, ctx = context(name, device, recipe)
    for _ in range(3):
        timed_step(balancer, ctx, batch, device)
    peak = profiling.peak_accelerator_memory(device)
    return peak


def step_flops(balancer, ctx, batch: Batch) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        step(ctx, balancer, batch, profiling.StepClock(ctx.device), EpochTotals(torch.zeros((), device=ctx.device)))
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per balancer")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (autotuning, compilation)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="the recipe's compile: true")
    args = parser.parse_args()
    device = torch.device(args.device)
    recipe = TrainRecipe(device=args.device, batch_size=args.batch_size, compile=args.compile,
                         optimizer=OptimizerConfig(name="sgd", lr=1e-3, momentum=0.9, weight_decay=1e-4))
    acceleration.configure_backends(device, recipe)
    batch = random_batch(args.batch_size, device)
    peaks = {name: peak_memory(name, device, recipe, batch) for name in BALANCERS} if device.type == "cuda" else {}
    cells = {name: context(name, device, recipe) for name in BALANCERS}
    for balancer, ctx in cells.values():
        for _ in range(args.warmup):
            timed_step(balancer, ctx, batch, device)
    seconds: dict[str, list[float]] = {name: [] for name in cells}
    for _ in range(args.steps):
        for name, (balancer, ctx) in cells.items():
            seconds[name].append(timed_step(balancer, ctx, batch, device))
    flops = {name: step_flops(balancer, ctx, batch) for name, (balancer, ctx) in cells.items()}
    name_of = profiling.device_description(device)["name"]
    clock = "CUDA events" if device.type == "cuda" else "thread CPU time"
    print(f"device={device} ({name_of}), batch {args.batch_size}, {args.steps} interleaved steps, {clock}, "
          f"compile={args.compile}")
    print("| balancer | ms/step (median) | × joint | GFLOP/step | achieved TFLOP/s | peak memory (MiB) |")
    print("|---|---|---|---|---|---|")
    joint = statistics.median(seconds["joint"])
    for name in cells:
        ms = statistics.median(seconds[name])
        memory = f"{peaks[name] / 2**20:.0f}" if device.type == "cuda" else "(CUDA only)"
        print(f"| {name} | {ms * 1000:.1f} | {ms / joint:.3f} | {flops[name] / 1e9:.1f} | "
              f"{flops[name] / ms / 1e12:.3f} | {memory} |")


if __name__ == "__main__":
    main()
