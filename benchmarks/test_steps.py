"""Per-step micro-benchmarks (pytest-benchmark): the engine's step against a bare PyTorch step on the same model,
and each balancer's step against `joint`'s, on the tiny synthetic cell (CPU, one thread).

    .venv/bin/python -m pytest benchmarks --benchmark-only -n 0 --benchmark-save=NAME
    .venv/bin/python -m pytest benchmarks --benchmark-only -n 0 --benchmark-compare=NAME   # against a saved run

Whole-process figures (the quickstart's wall time, the data pipeline) stay scripts beside this file.
"""

from __future__ import annotations

import pytest
import torch

from mmbench import registry as registry_lib
from mmbench.running.cells import incompatibility
from mmbench.testing import tiny_components, tiny_context, train_tiny
from mmbench.training import profiling
from mmbench.training.engine import EpochTotals, step

REGISTRY = registry_lib.default()
#: the quickstart grid's encoders (`grids/quickstart.yaml`)
QUICKSTART_ENCODER = {"hidden": 64, "layers": 2, "out_dim": 32}


def runnable_fusion(name: str) -> str:
    """A fusion the balancer accepts on the tiny task."""
    balancer = REGISTRY.get("balancers", name).cls
    task = tiny_components("joint").task
    mlp = {m: REGISTRY.get("encoders", "mlp").cls for m in task.modalities}
    return next(f for f in REGISTRY.names("fusions")
                if incompatibility(balancer, task, mlp, REGISTRY.get("fusions", f).cls) is None)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.benchmark(group="engine-step")
def test_bare_pytorch_step(benchmark):
    balancer, ctx, batch = tiny_context(tiny_components("joint", encoder_params=QUICKSTART_ENCODER), batch_size=64)
    model, optimizer = ctx.model, ctx.optimizer

    def bare() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(batch.inputs).fused_logits(), batch.label)
        loss.backward()
        optimizer.step()

    benchmark(bare)


@pytest.mark.benchmark(group="engine-step")
def test_engine_step(benchmark):
    balancer, ctx, batch = tiny_context(tiny_components("joint", encoder_params=QUICKSTART_ENCODER), batch_size=64)
    clock = profiling.StepClock(ctx.device)

    def engine() -> None:
        step(ctx, balancer, batch, clock, EpochTotals(torch.zeros(())))

    benchmark(engine)


class Captured(Exception):
    """Raised by a balancer's first step to hand its context and batch to the benchmark."""

    def __init__(self, balancer, ctx, batch) -> None:
        super().__init__()
        self.balancer, self.ctx, self.batch = balancer, ctx, batch


def first_step(name: str) -> Captured:
    """The balancer, context and batch of a cell's first step, as the engine set them up (setup, stage, the
    epoch's start, augmented views where the balancer needs them)."""
    cls = REGISTRY.get("balancers", name).cls

    def capture(self, ctx, batch):
        raise Captured(self, ctx, batch)

    capturing = type(cls.__name__, (cls,), {"train_step": capture})
    with pytest.raises(Captured) as caught:
        train_tiny(capturing, fusion=runnable_fusion(name))
    return caught.value


@pytest.mark.benchmark(group="balancer-step")
@pytest.mark.parametrize("name", REGISTRY.names("balancers"))
def test_balancer_step(benchmark, name):
    captured = first_step(name)
    step_of = REGISTRY.get("balancers", name).cls.train_step
    benchmark(lambda: step_of(captured.balancer, captured.ctx, captured.batch))
