"""Helpers for testing plugins (ours and third parties'): a tiny synthetic cell trained in a second or two."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch

from mmbench import registry as registry_lib
from mmbench.protocols import Balancer, Batch
from mmbench.schema.recipe import OptimizerConfig, TrainRecipe
from mmbench.training.context import TrainContext
from mmbench.training.engine import CellComponents, TrainOutcome, build_model, collate, task_loss_fn, train

#: a small synthetic task: two modalities, 4 classes, a few hundred samples
TINY_TASK = {"train_size": 256, "val_size": 64, "test_size": 64}
TINY_ENCODER = {"hidden": 16, "layers": 2, "out_dim": 8}


def tiny_components(
    balancer: str | type,
    balancer_params: dict[str, Any] | None = None,
    fusion: str = "concat",
    fusion_params: dict[str, Any] | None = None,
    task_params: dict[str, Any] | None = None,
    encoder: str = "mlp",
    encoder_params: dict[str, Any] | None = None,
    registry: registry_lib.Registry | None = None,
) -> CellComponents:
    """Resolve a tiny synthetic cell; `balancer` may be a registered name or a Balancer class."""
    reg = registry or registry_lib.default()
    balancer_cls = reg.get("balancers", balancer).cls if isinstance(balancer, str) else balancer
    task = reg.resolve("tasks", "synthetic", {**TINY_TASK, **(task_params or {})})
    encoder_params = TINY_ENCODER if encoder_params is None and encoder == "mlp" else encoder_params
    enc = reg.resolve("encoders", encoder, encoder_params)
    fus = reg.resolve("fusions", fusion, fusion_params)
    instance = task.cls(task.params)
    return CellComponents(
        task=instance,
        encoders={m: (enc.cls, enc.params) for m in instance.modalities},
        fusion=(fus.cls, fus.params),
        balancer=(balancer_cls, balancer_cls.Params.model_validate(balancer_params or {})),
    )


def train_tiny(balancer: str | type, epochs: int = 1, seed: int = 0, lr: float = 0.05,
               optimizer: str = "sgd", **kwargs: Any) -> TrainOutcome:
    """Train a tiny synthetic cell on CPU (see `tiny_components` for the keyword arguments)."""
    recipe = TrainRecipe(epochs=epochs, batch_size=32, device="cpu",
                         optimizer=OptimizerConfig(name=optimizer, lr=lr))
    return train(tiny_components(balancer, **kwargs), recipe, seed)


def tiny_context(components: CellComponents, epochs: int = 1, batch_size: int = 32, lr: float = 0.1,
                 seed: int = 0) -> tuple[Balancer, TrainContext, Batch]:
    """A built model, SGD optimizer, set-up balancer and one training batch, to unit-test hooks directly.

    Loaders are empty: call the hooks yourself (`loss`, `after_backward`, `train_step`, ...).
    """
    torch.manual_seed(seed)
    balancer_cls, params = components.balancer
    balancer = balancer_cls(params)
    model = build_model(components, balancer)
    ctx = TrainContext(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr), task=components.task,
                       device=torch.device("cpu"), epochs=epochs, train_loader=[], val_loader=[],
                       task_loss=task_loss_fn(components.task.multilabel), evaluate=None)
    balancer.setup(ctx)
    train = components.task.splits()["train"]
    return balancer, ctx, collate([train[i] for i in range(batch_size)])


def assert_trained(outcome: TrainOutcome, epochs: int, coefficients: set[str] | None = None) -> None:
    """The end-to-end contract: status ok, every epoch recorded with a finite loss and finite coefficients
    (exactly `coefficients` when given)."""
    assert outcome.status == "ok", outcome.status
    assert len(outcome.history) == epochs
    for epoch in outcome.history:
        assert math.isfinite(epoch.train_loss)
        if coefficients is not None:
            assert set(epoch.coefficients) == coefficients, sorted(epoch.coefficients)
        assert all(math.isfinite(v) for v in epoch.coefficients.values()), epoch.coefficients


#: tensor methods that copy a value to the host (a device sync on accelerators)
HOST_SYNC_METHODS = ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy")


@contextlib.contextmanager
def forbid_host_sync() -> Iterator[None]:
    """Make every tensor-to-host read raise, to prove a training step never synchronises with the device.

    Works on CPU too, so CI (which has no GPU) checks what matters on one.
    """
    saved = {name: getattr(torch.Tensor, name) for name in HOST_SYNC_METHODS}

    def refuse(name: str):
        def method(self, *args, **kwargs):
            raise AssertionError(f"host-device sync in a training step: Tensor.{name}()")
        return method

    for name in HOST_SYNC_METHODS:
        setattr(torch.Tensor, name, refuse(name))
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)
