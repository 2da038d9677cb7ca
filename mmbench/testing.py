"""Helpers for testing plugins, ours and third parties': a tiny synthetic cell trained in a second or two.

- `check_balancer(MyBalancer)`: the whole contract a balancer keeps, in one call (start here).
- `check_task(MyTask, raw=RAW, root=ROOT)`: the whole contract a task keeps, in one call: for a dataset, from a
  tiny copy of its release in `RAW` to a prepared root, its samples and one training step.
- `train_tiny(MyBalancer, epochs=2, ...)`: train a tiny synthetic cell on CPU; returns a `TrainOutcome`
  (`status`, `history` of `EpochRecord`s, `val`/`test` `SplitScores`, `profile`).
- `assert_trained(outcome, epochs, coefficients={...})`: the end-to-end checks on such an outcome.
- `tiny_components(...)`: the resolved parts of that cell, to build your own variants.
- `tiny_context(components)`: a built model, optimizer, set-up balancer and one `Batch`, to call single hooks
  (`loss`, `after_backward`, `train_step`) and pin their arithmetic to numbers computed by hand.
- `forbid_host_sync()`: a context in which every tensor-to-host read raises (no device sync per step).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from mmbench import registry as registry_lib
from mmbench.contract.balancer import Balancer
from mmbench.contract.batch import Batch
from mmbench.contract.context import TrainContext
from mmbench.contract.task import MODALITY_KINDS, Task
from mmbench.schema.recipe import OptimizerConfig, TrainRecipe
from mmbench.training.engine import CellComponents, TrainOutcome, build_model, collate, task_loss_fn, train

#: a small synthetic task: two modalities, 4 classes, a few hundred samples
TINY_TASK = {"train_size": 256, "val_size": 64, "test_size": 64}
TINY_ENCODER = {"hidden": 16, "layers": 2, "out_dim": 8}


def tiny_components(
    balancer: str | type[Balancer],
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
                       task_loss=task_loss_fn(components.task.multilabel), evaluate=_no_evaluation)
    balancer.setup(ctx)
    train = components.task.splits()["train"]
    return balancer, ctx, collate([train[i] for i in range(batch_size)])


def _no_evaluation(batches: Any) -> Any:
    raise AssertionError("tiny_context has no loaders to evaluate: call the hooks yourself")


def _runnable_fusion(balancer: type[Balancer], registry: registry_lib.Registry) -> str:
    """A registered fusion the balancer accepts on the tiny task (any, for one that ignores the cell's fusion)."""
    from mmbench.running.cells import incompatibility

    task = tiny_components("joint", registry=registry).task
    mlp = {m: registry.get("encoders", "mlp").cls for m in task.modalities}
    for name in registry.names("fusions"):
        if incompatibility(balancer, task, mlp, registry.get("fusions", name).cls) is None:
            return name
    raise AssertionError(f"{balancer.name} accepts none of the installed fusions ({registry.names('fusions')}) "
                         "on the synthetic task")


def check_balancer(balancer: type[Balancer], registry: registry_lib.Registry | None = None,
                   expect_coefficients: bool | None = None) -> TrainOutcome:
    """The contract every balancer keeps, for a plugin's own test suite: `check_balancer(MyBalancer)`.

    - `name` is an identifier and `Params` a pydantic model built on `mmbench.api.Params`;
    - every per-task default is valid for `Params` and passes the balancer's `check` where that task exists;
    - one epoch on the tiny synthetic task with a fusion it accepts ends `ok` with a finite loss, the task's
      metrics on validation and test, and per-modality and missing-modality metrics for every modality;
    - every training step runs under `forbid_host_sync()`: no `.item()`, no Python `if` on a tensor (on a GPU
      each would stall the device at every step);
    - coefficients are finite floats each epoch, and present unless `expect_coefficients` is False (default:
      expected unless the balancer is a baseline or a reference).

    Raises AssertionError naming the broken rule; returns the outcome for further checks.
    """
    from pydantic import BaseModel

    from mmbench.schema.params import Params

    registry = registry or registry_lib.default()
    assert isinstance(getattr(balancer, "name", None), str) and balancer.name.isidentifier(), \
        f"{balancer.__qualname__}.name must be an identifier, got {getattr(balancer, 'name', None)!r}"
    assert isinstance(balancer.Params, type) and issubclass(balancer.Params, BaseModel), "Params is no model"
    assert issubclass(balancer.Params, Params), f"{balancer.name}.Params must subclass mmbench.api.Params"
    for task_name, defaults in balancer.task_defaults.items():
        params = balancer.Params.model_validate(defaults)
        if task_name in registry.names("tasks"):
            task = registry.resolve("tasks", task_name)
            assert not balancer.check(params, task.cls(task.params)), f"task_defaults[{task_name!r}] fails check"
    unguarded = balancer.train_step

    def guarded_step(self, ctx, batch):
        with forbid_host_sync():
            return unguarded(self, ctx, batch)

    guarded = type(balancer.__name__, (balancer,), {"train_step": guarded_step})
    fusion = _runnable_fusion(balancer, registry)
    outcome = train_tiny(guarded, epochs=1, fusion=fusion, registry=registry)
    tiny = tiny_components(balancer, fusion=fusion, registry=registry).task
    assert outcome.status == "ok", f"{balancer.name}: {outcome.status}"
    assert _finite(outcome.history[0].train_loss), "the training loss is not finite"
    for split in (outcome.history[0].val, outcome.test):
        assert split is not None, "no scores"
        assert set(split.metrics) == set(tiny.metrics) and all(map(_finite, split.metrics.values()))
        assert set(split.unimodal) == set(split.missing_modality) == set(tiny.modalities)
    expect = expect_coefficients if expect_coefficients is not None else not (
        balancer.is_baseline or balancer.is_reference)
    assert_trained(outcome, 1)
    if expect:
        assert outcome.history[0].coefficients, f"{balancer.name} reports no coefficients"
    return outcome


def assert_trained(outcome: TrainOutcome, epochs: int, coefficients: set[str] | None = None) -> None:
    """The end-to-end contract: status ok, every epoch recorded with a finite loss and finite coefficients
    (exactly `coefficients` when given)."""
    assert outcome.status == "ok", outcome.status
    assert len(outcome.history) == epochs
    for epoch in outcome.history:
        assert _finite(epoch.train_loss)
        if coefficients is not None:
            assert set(epoch.coefficients) == coefficients, sorted(epoch.coefficients)
        assert all(map(_finite, epoch.coefficients.values())), epoch.coefficients


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def check_task(task: type[Task], params: Mapping[str, Any] | None = None, raw: Path | None = None,
               root: Path | None = None, partial: bool = False, encoders: Mapping[str, Any] | None = None,
               registry: registry_lib.Registry | None = None, prepare_twice: bool = True) -> Task:
    """The contract every task keeps, for a plugin's own test suite: `check_task(MyTask, raw=RAW, root=ROOT)`.

    - `name` is an identifier, `version` set, `Params` built on `mmbench.api.Params`, the metrics known and the
      primary one among them; constructing the task with `params` reads no data, and every modality's kind is
      one of `MODALITY_KINDS` or one an installed encoder accepts;
    - a task that reads data (`needs_data`) prepares the tiny copy of its release in `raw` into `root`
      (`partial` as `mmbench data prepare --partial`), `check()` finds nothing wrong, and the fingerprint is the
      same from a fresh instance and from a second prepare over two worker processes (`prepare_twice`: it also
      proves the processor picklable);
    - `train`, `val` and `test` hold samples; a training sample and `fake_sample`, each collated alone and finished
      by `on_device` as the engine does, give each modality the declared shape (a mapping input: each of its
      tensors) and a label of the task's form;
    - one training step (an epoch of one batch of 2 samples) runs through the engine with `joint` and `concat`, each
      modality read by `encoders[m]` (or `encoders["*"]`): an encoder name, taken in its small `fake_params`
      configuration, or `(name, params)` as given; by default the first installed encoder (by name) that accepts
      its kind. It ends `ok` with the task's metrics, finite, on validation and test.

    Raises AssertionError naming the broken rule; returns the task (bound to `root` for a dataset).
    """
    from pydantic import BaseModel

    from mmbench.schema.params import Params
    from mmbench.training import metrics as metric_lib

    registry = registry or registry_lib.default()
    assert isinstance(getattr(task, "name", None), str) and task.name.isidentifier(), \
        f"{task.__qualname__}.name must be an identifier, got {getattr(task, 'name', None)!r}"
    assert isinstance(task.version, str) and task.version, f"{task.name}.version must be a non-empty string"
    assert isinstance(task.Params, type) and issubclass(task.Params, BaseModel), "Params is no model"
    assert issubclass(task.Params, Params), f"{task.name}.Params must subclass mmbench.api.Params"
    unknown = set(task.metrics) - set(metric_lib.available(task.multilabel))
    assert not unknown, f"{task.name}: unknown metrics {sorted(unknown)}"
    assert task.primary_metric in task.metrics, f"{task.name}.primary_metric is not one of its metrics"
    validated = task.Params.model_validate(dict(params or {}))
    declared = task(validated)
    kinds = {k for c in (registry.get("encoders", n).cls for n in registry.names("encoders")) for k in c.accepts or ()}
    for name, spec in declared.modalities.items():
        assert spec.name == name, f"modality {name!r} is declared with the name {spec.name!r}"
        assert spec.kind in MODALITY_KINDS or spec.kind in kinds, \
            f"{task.name}.{name}: kind {spec.kind!r} is neither one of MODALITY_KINDS nor accepted by an encoder"
    assert declared.num_classes >= 2, f"{task.name} has {declared.num_classes} classes"
    instance = _prepared(task, validated, raw, root, partial, prepare_twice) if task.needs_data else declared
    splits = instance.splits()
    assert set(splits) == {"train", "val", "test"}, f"{task.name}.splits() gives {sorted(splits)}"
    sizes = {s: len(d) for s, d in splits.items()}  # type: ignore[arg-type]  # a map-style Dataset has a length
    assert all(sizes.values()), sizes
    _assert_sample(instance, _finished(instance, splits["train"][0]), "a training sample")
    _assert_sample(instance, _finished(instance, instance.fake_sample(torch.Generator().manual_seed(0))), "fake_sample")
    for split in ("val", "test"):
        sample = splits[split][0]
        assert set(sample) == set(instance.modalities) | {"label"}, f"a {split} sample has {sorted(sample)}"
    components = CellComponents(task=_one_batch(instance), encoders={m: _encoder(spec, encoders or {}, registry)
                                                                     for m, spec in instance.modalities.items()},
                                fusion=_component("fusions", "concat", registry),
                                balancer=_component("balancers", "joint", registry))
    recipe = TrainRecipe(epochs=1, batch_size=2, device="cpu", optimizer=OptimizerConfig(name="sgd", lr=0.01))
    outcome = train(components, recipe, seed=0)
    assert_trained(outcome, 1)
    for scores in (outcome.val, outcome.test):
        assert scores is not None and set(scores.metrics) == set(task.metrics), "no scores"
        assert all(map(_finite, scores.metrics.values())), scores.metrics
    return instance


def _prepared(task: type[Task], params: Any, raw: Path | None, root: Path | None, partial: bool,
              prepare_twice: bool) -> Task:
    """The task bound to `root`, prepared from `raw`, checked clean, with a stable fingerprint."""
    assert raw is not None and root is not None, f"{task.name} reads data: give check_task a raw copy and a root"
    instance = task(params, root=Path(root))
    instance.prepare(Path(raw), partial=partial, workers=1)
    problems = instance.check()
    assert problems == [], f"{task.name}.check() on the prepared root: {problems}"
    fingerprint = instance.fingerprint()
    assert isinstance(fingerprint, str) and fingerprint == task(params, root=Path(root)).fingerprint()
    if prepare_twice:
        again = Path(root).with_name(Path(root).name + "-again")
        task(params, root=again).prepare(Path(raw), partial=partial, workers=2)
        assert task(params, root=again).fingerprint() == fingerprint, "the fingerprint differs between two prepares"
    return instance


def _one_batch(task: Task) -> Task:
    """The task with each split cut to its first two samples: one batch each."""
    from torch.utils.data import Subset

    def splits(self: Task) -> dict[str, Subset]:
        return {s: Subset(d, range(min(2, len(d)))) for s, d in type(task).splits(self).items()}  # type: ignore[arg-type]

    cut = {"splits": splits}
    return type(f"OneBatch{type(task).__name__}", (type(task),), cut)(task.params, root=task.root)


def _finished(task: Task, sample: Mapping[str, Any]) -> dict[str, Any]:
    """A training sample as the model reads it: collated alone and finished by the task on the CPU
    (`Task.on_device`), as the engine finishes every batch."""
    batch = task.on_device(collate([sample]), True)

    def first(value: Any) -> Any:
        return {k: first(v) for k, v in value.items()} if isinstance(value, Mapping) else value[0]

    return {**first(batch.inputs), "label": batch.label[0]}


def _assert_sample(task: Task, sample: Mapping[str, Any], what: str) -> None:
    """Each modality's input of the declared shape (every tensor of a mapping input), the label of the task's form."""
    assert set(sample) == set(task.modalities) | {"label"}, f"{what} has {sorted(sample)}"
    for name, spec in task.modalities.items():
        value = sample[name]
        tensors = value.values() if isinstance(value, Mapping) else [value]
        for tensor in tensors:
            assert isinstance(tensor, torch.Tensor) and tuple(tensor.shape) == spec.shape, \
                f"{what}: {name} is {getattr(tensor, 'shape', type(tensor))}, declared {spec.shape}"
    label = sample["label"]
    if task.multilabel:
        assert label.shape == (task.num_classes,) and label.is_floating_point(), f"{what}: label {label}"
        assert bool(((label == 0) | (label == 1)).all()), f"{what}: a multi-label target is 0/1, got {label}"
    else:
        assert label.shape == () and label.dtype == torch.long, f"{what}: label {label!r} is no class id"
        assert 0 <= int(label) < task.num_classes, f"{what}: label {int(label)} outside 0..{task.num_classes - 1}"


def _component(kind: str, name: str, registry: registry_lib.Registry) -> tuple[type, Any]:
    resolved = registry.resolve(kind, name)
    return resolved.cls, resolved.params


def _encoder(spec: Any, chosen: Mapping[str, Any], registry: registry_lib.Registry) -> tuple[type, Any]:
    """The encoder of one modality: `(name, params)` as `chosen` gives it; else the one `chosen` names, or the first
    installed one that accepts the modality's kind, in its `fake_params` configuration (small, no download)."""
    choice = chosen.get(spec.name, chosen.get("*"))
    if isinstance(choice, tuple):
        resolved = registry.resolve("encoders", *choice)
        return resolved.cls, resolved.params
    names = [choice] if choice is not None else registry.names("encoders")
    accepting = [n for n in names if spec.kind in (registry.get("encoders", n).cls.accepts or ())] or \
        [n for n in names if registry.get("encoders", n).cls.accepts is None]
    assert accepting, f"no installed encoder accepts the kind {spec.kind!r} of {spec.name!r}: pass encoders={{...}}"
    cls = registry.get("encoders", accepting[0]).cls
    return cls, cls.fake_params(cls.Params())


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
