"""Expanding a validated grid into cells: one training run each, with its identity and compatibility."""

from __future__ import annotations

import itertools
from pathlib import Path

from mmbench.data.fake import FAKE_BATCH, FAKE_EPOCHS
from mmbench.data.roots import resolve_data_root
from mmbench.protocols import Balancer, Encoder, Fusion, Task
from mmbench.registry import Registry
from mmbench.schema.cell import Cell, ComponentSpec, EncoderSpec, Scoring, TaskSpec, content_hash
from mmbench.schema.grid import ALL_MODALITIES, Grid
from mmbench.schema.recipe import TrainRecipe
from mmbench.training.metrics import LOWER_IS_BETTER

#: how the reported model is chosen and evaluated; part of every benchmark version
EVALUATION_PROTOCOL = "best-validation-epoch-on-primary-metric/test-split/1"


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


def fake_recipe(recipe: TrainRecipe) -> TrainRecipe:
    """The grid's recipe cut to a `--fake-data` smoke run: one epoch of small batches."""
    return recipe.model_copy(update={"epochs": FAKE_EPOCHS, "batch_size": FAKE_BATCH, "eval_batch_size": FAKE_BATCH})


def scoring_of(task: Task) -> Scoring:
    return Scoring(metrics=list(task.metrics), primary_metric=task.primary_metric,
                   lower_is_better=sorted(LOWER_IS_BETTER & set(task.metrics)), modalities=list(task.modalities),
                   multilabel=task.multilabel)


def benchmark_version(grid: Grid, task: TaskSpec, recipe: TrainRecipe) -> str:
    """Task version + a hash of what defines the protocol: the task (with its data), recipe and evaluation."""
    if grid.benchmark_version:
        return grid.benchmark_version
    protocol = {"task": task.model_dump(mode="json", exclude_none=True), "train": recipe.identity(),
                "evaluation": EVALUATION_PROTOCOL}
    return f"{task.version}-{content_hash(protocol, 8)}"


def baseline_of(grid: Grid, registry: Registry) -> str | None:
    """The grid's `baseline`, else the first of its balancers that declares itself the baseline."""
    if grid.baseline is not None:
        return grid.baseline
    return next((b.name for b in grid.balancers if registry.get("balancers", b.name).cls.is_baseline), None)


def expand(grid: Grid, registry: Registry, data_root: str | Path | None = None, fake_data: bool = False) -> list[Cell]:
    """All cells of a validated grid, in a stable order; incompatible ones carry their skip reason.

    `data_root` (e.g. from the command line) overrides where prepared datasets are looked for. `fake_data`
    expands the smoke-test version (`mmbench.data.fake`): no data is read, one short epoch, the first seed.
    """
    cells = []
    baseline = baseline_of(grid, registry)
    recipe, seeds = (fake_recipe(grid.train), grid.seeds[:1]) if fake_data else (grid.train, grid.seeds)
    for task_ref in grid.tasks:
        resolved_task = registry.resolve("tasks", task_ref.name, task_ref.params)
        task_cls = resolved_task.cls
        root = resolve_data_root(task_ref.name, data_root, task_ref.root, grid.data_root) \
            if task_cls.needs_data and not fake_data else None
        task = task_cls(resolved_task.params, root=root)
        task_spec = TaskSpec(**resolved_task.spec(), version=task_cls.version,
                             fingerprint=None if fake_data else task.fingerprint(), fake=fake_data or None)
        version = benchmark_version(grid, task_spec, recipe)
        scoring = scoring_of(task)
        paired_once: set[tuple[int, int]] = set()
        for (e, enc_set), fusion_ref, (b, bal_ref) in itertools.product(
                enumerate(grid.encoders), grid.fusions, enumerate(grid.balancers)):
            bal_cls = registry.get("balancers", bal_ref.name).cls
            if bal_cls.requires.ignores_fusion:
                if (e, b) in paired_once:
                    continue
                paired_once.add((e, b))
            encoders = {m: registry.resolve("encoders", ref.name, ref.params) for m, ref in
                        ((m, enc_set.get(m, enc_set.get(ALL_MODALITIES))) for m in task.modalities)}
            fusion = registry.resolve("fusions", fusion_ref.name, fusion_ref.params)
            balancer = registry.resolve("balancers", bal_ref.name,
                                        {**bal_cls.task_defaults.get(task.name, {}), **bal_ref.params})
            reason = incompatibility(bal_cls, task, {m: r.cls for m, r in encoders.items()}, fusion.cls)
            for seed in seeds:
                cells.append(Cell(
                    task=task_spec,
                    encoders={m: EncoderSpec(**r.spec(), weights=r.cls.weights_identity(r.params))
                              for m, r in encoders.items()},
                    fusion=ComponentSpec(**fusion.spec()), balancer=ComponentSpec(**balancer.spec()),
                    train=recipe, seed=seed, benchmark=task.name, benchmark_version=version, scoring=scoring,
                    baseline=baseline, data_root=str(root) if root else None, skip_reason=reason))
    return cells
