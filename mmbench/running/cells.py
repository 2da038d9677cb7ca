"""Expanding a validated grid into cells: one training run each, with its identity and compatibility."""

from __future__ import annotations

import inspect
import itertools
from pathlib import Path

from mmbench.contract.balancer import Balancer
from mmbench.contract.encoder import Encoder
from mmbench.contract.fusion import Fusion
from mmbench.contract.task import Task
from mmbench.data.fake import FAKE_BATCH, FAKE_EPOCHS
from mmbench.data.roots import resolve_data_root
from mmbench.registry import Registry, Resolved, plugin_code
from mmbench.running.grid import ALL_MODALITIES, ComponentRef, Grid
from mmbench.schema.cell import Cell, ComponentSpec, EncoderSpec, Scoring, TaskSpec, content_hash
from mmbench.schema.recipe import TrainRecipe
from mmbench.training import metrics
from mmbench.training.engine import evaluate
from mmbench.training.metrics import LOWER_IS_BETTER

#: how the reported model is chosen; with the evaluation code's own text (below) it defines the protocol
SELECTION = "best-validation-epoch-on-primary-metric/test-split"


def evaluation_protocol(sources: tuple = (evaluate, metrics)) -> str:
    """The protocol's name plus a hash of the code that turns a model into reported numbers (the evaluation
    passes and the metrics), so any change to it gives a new benchmark version: results from before and after
    never rank together."""
    text = "\n".join(inspect.getsource(source) for source in sources)
    return f"{SELECTION}/{content_hash(text, 12)}"


def incompatibility(balancer: type[Balancer], task: Task, encoders: dict[str, type[Encoder]],
                    fusion: type[Fusion] | None) -> str | None:
    """Why this combination cannot run, or None. Checks only what is known without building models.
    `fusion` is None for a balancer that forms its own predictions."""
    req = balancer.requires
    n = len(task.modalities)
    if fusion is not None and req.fusions is not None and fusion.name not in req.fusions:
        return f"{balancer.name} supports fusions {sorted(req.fusions)}, not {fusion.name!r}"
    if fusion is not None and fusion.max_modalities is not None and n > fusion.max_modalities:
        return f"fusion {fusion.name!r} fuses at most {fusion.max_modalities} modalities; {task.name!r} has {n}"
    if fusion is not None and req.fusion_contributions and not fusion.offers_contributions:
        return f"{balancer.name} needs per-modality logit contributions, which fusion {fusion.name!r} does not offer"
    if fusion is not None and req.late_fusion and (fusion.drives_encoders or fusion.uses_tokens):
        return f"{balancer.name} applies the fusion to features it recombines; fusion {fusion.name!r} is not a late " \
               "fusion of pooled features"
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
        if fusion is not None and fusion.uses_tokens and enc.tokens is Encoder.tokens:
            return f"fusion {fusion.name!r} reads token sequences; encoder {enc.name!r} of modality {modality!r} " \
                   f"does not expose tokens()"
    return None


def encoder_ref(encoder_set: dict[str, ComponentRef], modality: str) -> ComponentRef:
    """The encoder a grid's encoder set names for `modality` (its own entry, else the `*` one)."""
    ref = encoder_set.get(modality, encoder_set.get(ALL_MODALITIES))
    if ref is None:  # a validated grid covers every modality
        raise ValueError(f"the encoder set {sorted(encoder_set)} names no encoder for modality {modality!r}")
    return ref


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
                "evaluation": evaluation_protocol()}
    if grid.search is not None:  # a tuning budget is part of the protocol: different budgets never rank together
        protocol["search"] = grid.search.identity()
    return f"{task.version}-{content_hash(protocol, 8)}"


def benchmark_name(grid: Grid, task: Task) -> str:
    """The task's name; a tuned grid's results form their own benchmark, so they never rank with defaults."""
    return f"{task.name}-tuned" if grid.search is not None else task.name


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
    seeds = grid.seeds[:1] if fake_data else grid.seeds
    return [cell.model_copy(update={"seed": seed}) for cell, _ in configurations(grid, registry, data_root, fake_data)
            for seed in seeds]


def configurations(grid: Grid, registry: Registry, data_root: str | Path | None = None,
                   fake_data: bool = False) -> list[tuple[Cell, ComponentRef]]:
    """One cell per (task, encoder set, fusion, balancer) with the grid's parameters, on the grid's first seed,
    each with its balancer's grid entry (a search leaves the parameters written there fixed)."""
    cells = []
    baseline = baseline_of(grid, registry)
    recipe = fake_recipe(grid.train) if fake_data else grid.train
    for task_ref in grid.tasks:
        resolved_task = registry.resolve("tasks", task_ref.name, task_ref.params)
        task_cls = resolved_task.cls
        if fake_data:
            resolved_task = Resolved(resolved_task.component, task_cls.fake_params(resolved_task.params))
        root = resolve_data_root(task_ref.name, data_root, task_ref.root, grid.data_root) \
            if task_cls.needs_data and not fake_data else None
        with plugin_code(resolved_task.component, "in its constructor, fingerprint() or modalities"):
            task = task_cls(resolved_task.params, root=root)
            task_spec = TaskSpec(**resolved_task.spec(), version=task_cls.version,
                                 fingerprint=None if fake_data else task.fingerprint(), fake=fake_data or None)
            scoring = scoring_of(task)
        version = benchmark_version(grid, task_spec, recipe)
        for enc_set, fusion_ref, bal_ref in itertools.product(grid.encoders, grid.fusions, grid.balancers):
            bal_cls = registry.get("balancers", bal_ref.name).cls
            fusion = None
            if bal_cls.requires.ignores_fusion:  # its own predictions: one cell per encoder set, with no fusion
                if fusion_ref is not grid.fusions[0]:
                    continue
            else:
                fusion = registry.resolve("fusions", fusion_ref.name, fusion_ref.params)
            encoders = {m: registry.resolve("encoders", ref.name, ref.params) for m, ref in
                        ((m, encoder_ref(enc_set, m)) for m in task.modalities)}
            if fake_data:
                encoders = {m: Resolved(r.component, r.cls.fake_params(r.params)) for m, r in encoders.items()}
            balancer = registry.resolve("balancers", bal_ref.name,
                                        {**bal_cls.task_defaults.get(task.name, {}), **bal_ref.params})
            reason = incompatibility(bal_cls, task, {m: r.cls for m, r in encoders.items()},
                                     fusion.cls if fusion else None)
            cells.append((Cell(
                task=task_spec,
                encoders={m: EncoderSpec(**r.spec(), weights=r.cls.weights_identity(r.params))
                          for m, r in encoders.items()},
                fusion=ComponentSpec(**fusion.spec()) if fusion else None,
                balancer=ComponentSpec(**balancer.spec()), reference=bal_cls.is_reference,
                published=grid.published.results.get(bal_ref.name, {}) if grid.published else {},
                published_source=grid.published.source if grid.published else None,
                train=recipe, seed=grid.seeds[0], benchmark=benchmark_name(grid, task), benchmark_version=version,
                scoring=scoring, baseline=baseline, data_root=str(root) if root else None, skip_reason=reason),
                bal_ref))
    return cells
