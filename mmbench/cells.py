"""Expanding a validated grid into cells: one training run each, with content hashes and compatibility."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Any

from mmbench.grid import ALL_MODALITIES, ComponentRef, Grid
from mmbench.protocols import Balancer, Encoder, Fusion, Task
from mmbench.recipe import TrainRecipe
from mmbench.registry import Registry

#: how the reported model is chosen and evaluated; part of every benchmark version
EVALUATION_PROTOCOL = "best-validation-epoch-on-primary-metric/test-split/1"
#: recipe fields that change where a cell runs, not its result
EXECUTION_ONLY = frozenset({"device", "num_workers"})


def content_hash(obj: Any, length: int = 16) -> str:
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def canonical_params(cls: type, params: dict[str, Any]) -> dict[str, Any]:
    """Parameters with defaults filled in, so `{}` and explicit defaults hash the same."""
    return cls.Params.model_validate(params).model_dump(mode="json")


@dataclass(frozen=True)
class Cell:
    """One training run: a task, an encoder per modality, a fusion, a balancer, the recipe and a seed."""

    task: dict[str, Any]
    encoders: dict[str, dict[str, Any]]
    fusion: dict[str, Any]
    balancer: dict[str, Any]
    train: TrainRecipe
    seed: int
    task_root: str | None
    benchmark: str
    benchmark_version: str
    skip_reason: str | None = None

    def spec(self) -> dict[str, Any]:
        """Everything that determines the result except the seed (the leaderboard entry's identity)."""
        return {
            "task": self.task, "encoders": self.encoders, "fusion": self.fusion, "balancer": self.balancer,
            "train": self.train.model_dump(mode="json", exclude=set(EXECUTION_ONLY)),
        }

    @property
    def entry_id(self) -> str:
        return content_hash(self.spec())

    @property
    def cell_id(self) -> str:
        return content_hash({**self.spec(), "seed": self.seed})

    def describe(self) -> dict[str, Any]:
        return {"cell_id": self.cell_id, "entry_id": self.entry_id, "seed": self.seed,
                "benchmark": self.benchmark, "benchmark_version": self.benchmark_version, **self.spec()}

    def label(self) -> str:
        encoders = ",".join(sorted({e["name"] for e in self.encoders.values()}))
        return f"{self.task['name']} {encoders} {self.fusion['name']} {self.balancer['name']} seed={self.seed}"


def incompatibility(balancer: type[Balancer], task: Task, encoders: dict[str, type[Encoder]],
                    fusion: type[Fusion]) -> str | None:
    """Why this combination cannot run, or None. Checks only what is known without building models."""
    req = balancer.requires
    n = len(task.modalities)
    if req.fusions is not None and fusion.name not in req.fusions:
        return f"{balancer.name} supports fusions {sorted(req.fusions)}, not {fusion.name!r}"
    if req.fusion_contributions and not fusion.offers_contributions:
        return f"{balancer.name} needs per-modality logit contributions, which fusion {fusion.name!r} does not offer"
    if req.augmented_views and not task.has_augmentation():
        return f"{balancer.name} needs augmented views, which task {task.name!r} does not define"
    if req.single_label and task.multilabel:
        return f"{balancer.name} is for single-label tasks; {task.name!r} is multi-label"
    if n < req.min_modalities or (req.max_modalities is not None and n > req.max_modalities):
        allowed = f"{req.min_modalities}..{req.max_modalities or 'any'}"
        return f"{balancer.name} handles {allowed} modalities; {task.name!r} has {n}"
    for modality, enc in encoders.items():
        kind = task.modalities[modality].kind
        if enc.accepts is not None and kind not in enc.accepts:
            return f"encoder {enc.name!r} accepts {sorted(enc.accepts)} inputs; modality {modality!r} is {kind!r}"
    return None


def _benchmark_version(grid: Grid, task: dict[str, Any], recipe: TrainRecipe) -> str:
    if grid.benchmark_version:
        return grid.benchmark_version
    protocol = {"task": task, "train": recipe.model_dump(mode="json", exclude=set(EXECUTION_ONLY)),
                "evaluation": EVALUATION_PROTOCOL}
    return f"{task['version']}-{content_hash(protocol, 8)}"


def _resolve(registry: Registry, kind: str, ref: ComponentRef, extra_defaults: dict | None = None):
    cls = registry.get(kind, ref.name).cls
    return cls, {"name": ref.name, "params": canonical_params(cls, {**(extra_defaults or {}), **ref.params})}


def expand(grid: Grid, registry: Registry) -> list[Cell]:
    """All cells of a validated grid, in a stable order; incompatible ones carry their skip reason."""
    cells = []
    for task_ref in grid.tasks:
        paired_once: set[tuple[int, int]] = set()
        task_cls, task_desc = _resolve(registry, "tasks", task_ref)
        task_desc["version"] = task_cls.version
        task = task_cls(task_cls.Params.model_validate(task_desc["params"]), root=None)
        version = _benchmark_version(grid, task_desc, grid.train)
        for (e, enc_set), fusion_ref, (b, bal_ref) in itertools.product(
                enumerate(grid.encoders), grid.fusions, enumerate(grid.balancers)):
            bal_cls = registry.get("balancers", bal_ref.name).cls
            if bal_cls.requires.ignores_fusion:
                if (e, b) in paired_once:
                    continue
                paired_once.add((e, b))
            enc_classes, enc_desc = {}, {}
            for modality in task.modalities:
                ref = enc_set.get(modality, enc_set.get(ALL_MODALITIES))
                enc_classes[modality], enc_desc[modality] = _resolve(registry, "encoders", ref)
            fusion_cls, fusion_desc = _resolve(registry, "fusions", fusion_ref)
            _, bal_desc = _resolve(registry, "balancers", bal_ref, bal_cls.task_defaults.get(task.name))
            reason = incompatibility(bal_cls, task, enc_classes, fusion_cls)
            for seed in grid.seeds:
                cells.append(Cell(task=task_desc, encoders=enc_desc, fusion=fusion_desc, balancer=bal_desc,
                                  train=grid.train, seed=seed, task_root=task_ref.root,
                                  benchmark=task.name, benchmark_version=version, skip_reason=reason))
    return cells
