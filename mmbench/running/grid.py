"""Grid files: the YAML schema (pydantic), and complete validation before anything trains.

Validation has two layers. The structural layer is the pydantic model `Grid` (its JSON Schema is what
`mmbench schema grid` prints). The semantic layer resolves every component name against the plugin
registry and validates each component's parameters against that component's own parameter model. Every
problem is reported with its YAML path (and line), unknown names and keys with close-match suggestions.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mmbench.registry import Registry, UnknownComponent, plugin_code
from mmbench.schema.recipe import TrainRecipe
from mmbench.schema.search import SearchConfig, search_problems
from mmbench.schema.yaml_text import YamlProblem, decode, load_yaml

ALL_MODALITIES = "*"


class ComponentRef(BaseModel):
    """A component by registered name, with its parameters (`name` alone may be written as a string)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class TaskRef(ComponentRef):
    root: str | None = Field(None, description="this task's prepared data folder (default: under data_root)")


class Published(BaseModel):
    """A paper's reported numbers for the protocol this grid reproduces, shown next to the entries."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    source: str = Field(min_length=1, description="where the numbers are from, e.g. 'Peng et al., CVPR 2022, Tab. 1'")
    results: dict[str, dict[str, float]] = Field(
        description="balancer name -> metric -> the paper's value (as a fraction, e.g. 0.612 for 61.2 %)")


class Grid(BaseModel):
    """A matrix of cells: tasks × encoder sets × fusions × balancers × seeds, under one training recipe."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="names the run directory")
    description: str = ""
    benchmark_version: str | None = Field(
        None, description="override the derived protocol version (task version + recipe hash)")
    tasks: list[TaskRef] = Field(min_length=1)
    encoders: list[dict[str, ComponentRef]] = Field(
        min_length=1, description="encoder sets: modality (or '*' for every modality) -> encoder")
    fusions: list[ComponentRef] = Field(min_length=1)
    balancers: list[ComponentRef] = Field(min_length=1)
    train: TrainRecipe = TrainRecipe()
    seeds: list[Annotated[int, Field(ge=0, lt=2**32)]] = Field(min_length=1, description="each in [0, 2**32)")
    baseline: str | None = Field(
        None, description="the balancer gains are measured against (default: the one that declares itself the "
                          "baseline, e.g. joint)")
    published: Published | None = Field(None, description="the reproduced paper's numbers, shown beside ours")
    data_root: str | None = Field(
        None, description="folder holding every prepared dataset as <data_root>/<task>/ (default: "
                          "$MMBENCH_DATA, else the per-user cache)")
    search: SearchConfig | None = Field(
        None, description="tune every method with the same budget on validation, then run the chosen "
                          "configuration on every seed (default: each method's own defaults)")

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be unique, got {seeds}")
        return seeds


@dataclass(frozen=True)
class GridProblem:
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path or '<root>'}" + (f" (line {self.line})" if self.line else "")
        return f"{where}: {self.message}"


class GridError(Exception):
    """An invalid grid: every problem found, each with its YAML path."""

    def __init__(self, source: str, problems: list[GridProblem]) -> None:
        self.source, self.problems = source, problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid grid {source}: {len(problems)} problem(s)\n{lines}")


# --------------------------------------------------------------------------------------------- paths


def format_path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _LineIndex:
    """Maps YAML paths to line numbers using the composed node tree."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root

    def line(self, loc: tuple[str | int, ...]) -> int | None:
        node, best = self.root, None
        for part in loc:
            if node is None:
                break
            best = node.start_mark.line + 1
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if k.value == part), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
            else:
                node = None
        return node.start_mark.line + 1 if node is not None else best


def _pydantic_problems(exc: ValidationError, prefix: tuple, model: type[BaseModel] | None) -> list[tuple]:
    """(loc, message) pairs, with close-match suggestions for unknown keys."""
    problems = []
    for err in exc.errors():
        loc = prefix + tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            known = _fields_at(model, err["loc"][:-1])
            match = difflib.get_close_matches(str(err["loc"][-1]), known, n=1, cutoff=0.5)
            message = f"unknown key {err['loc'][-1]!r}" + (f"; did you mean {match[0]!r}?" if match else "") + (
                f" (allowed: {', '.join(known)})" if known else "")
        elif err["type"] == "value_error":  # our own validators' messages already say what was given
            message = message.removeprefix("Value error, ")
        elif err["type"] not in ("missing",) and "input" in err and not isinstance(err["input"], (dict, list)):
            message += f" (got {err['input']!r})"
        problems.append((loc, message))
    return problems


def describe(exc: ValidationError, model: type[BaseModel] | None = None) -> list[str]:
    """pydantic's problems with a model's input as grids report them: `path: message`, unknown keys with
    close-match suggestions among `model`'s fields (for parameters given elsewhere, e.g. on the command line)."""
    return [f"{format_path(loc) or '<root>'}: {message}" for loc, message in _pydantic_problems(exc, (), model)]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as `list[dict[str, ComponentRef]] | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, map(_model_in, typing.get_args(annotation))), None)


def _fields_at(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """Field names of the pydantic model found by walking `loc` from `model` (best effort, for hints).

    List indices and dictionary keys (anything that is not a field of the current model) are stepped over.
    """
    for part in loc:
        if model is None:
            break
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        if field is not None:
            model = _model_in(field.annotation)
    return sorted(model.model_fields) if model is not None else []


# ---------------------------------------------------------------------------------------- validation


def _component_problems(registry: Registry, kind: str, ref: ComponentRef, loc: tuple) -> tuple[list[tuple], Any]:
    """Problems with one component reference, and its resolution (None if it has problems)."""
    try:
        return [], registry.resolve(kind, ref.name, ref.params)
    except UnknownComponent as exc:
        return [(loc + ("name",), str(exc))], None
    except ValidationError as exc:
        return _pydantic_problems(exc, loc + ("params",), registry.get(kind, ref.name).cls.Params), None


def _component_problems_each(registry: Registry, kind: str, refs: list[ComponentRef]) -> list[tuple]:
    return [p for i, ref in enumerate(refs) for p in _component_problems(registry, kind, ref, (kind, i))[0]]


def _semantic_problems(grid: Grid, registry: Registry) -> list[tuple]:
    problems: list[tuple] = []
    tasks, task_modalities = [], []
    for i, ref in enumerate(grid.tasks):
        found, resolved = _component_problems(registry, "tasks", ref, ("tasks", i))
        problems += found
        if resolved is not None:
            with plugin_code(resolved.component, "in its constructor or modalities"):
                tasks.append(resolved.cls(resolved.params))
                task_modalities.append(set(tasks[-1].modalities))
    for i, encoder_set in enumerate(grid.encoders):
        for modality, encoder_ref in encoder_set.items():
            problems += _component_problems(registry, "encoders", encoder_ref, ("encoders", i, modality))[0]
        named = set(encoder_set) - {ALL_MODALITIES}
        for modalities in task_modalities:
            unknown = named - modalities
            for modality in sorted(unknown):
                match = difflib.get_close_matches(modality, sorted(modalities), n=1, cutoff=0.5)
                hint = f"; did you mean {match[0]!r}?" if match else ""
                problems.append((("encoders", i, modality), f"the task has no modality {modality!r}{hint} "
                                                             f"(modalities: {', '.join(sorted(modalities))})"))
            uncovered = modalities - named
            if uncovered and ALL_MODALITIES not in encoder_set:
                problems.append((("encoders", i),
                                 f"no encoder for modality {', '.join(sorted(uncovered))} (add it or a '*' entry)"))
    problems += _component_problems_each(registry, "fusions", grid.fusions)
    for i, balancer_ref in enumerate(grid.balancers):
        found, resolved = _component_problems(registry, "balancers", balancer_ref, ("balancers", i))
        problems += found
        for task in tasks if resolved is not None else ():
            defaults = resolved.cls.task_defaults.get(task.name, {})
            params = registry.resolve("balancers", balancer_ref.name, {**defaults, **balancer_ref.params}).params
            with plugin_code(resolved.component, "in check()"):
                problems += [(("balancers", i, "params"), f"with task {task.name!r}: {problem}")
                             for problem in resolved.cls.check(params, task)]
    names = [b.name for b in grid.balancers]
    for name, values in (grid.published.results if grid.published else {}).items():
        if name not in names:
            problems.append((("published", "results", name), f"names no balancer of the grid ({', '.join(names)})"))
        for task in tasks:
            for metric in sorted(set(values) - set(task.metrics)):
                problems.append((("published", "results", name, metric),
                                 f"task {task.name!r} reports no metric {metric!r} ({', '.join(task.metrics)})"))
    if grid.baseline is not None and grid.baseline not in names:
        match = difflib.get_close_matches(grid.baseline, names, n=1, cutoff=0.5)
        hint = f"; did you mean {match[0]!r}?" if match else ""
        problems.append((("baseline",), f"the baseline must be one of the grid's balancers{hint} "
                                         f"(balancers: {', '.join(names)})"))
    problems += search_problems(grid, registry, tasks)
    return problems


def parse(text: str, registry: Registry, source: str = "<grid>") -> Grid:
    """Parse and fully validate a grid; raises GridError listing every problem with its YAML path."""
    try:
        data, root = load_yaml(text)
    except YamlProblem as exc:
        raise GridError(source, [GridProblem("", exc.message, exc.line)]) from None
    lines = _LineIndex(root)

    def fail(found: list[tuple]) -> GridError:
        return GridError(source, [GridProblem(format_path(loc), msg, lines.line(loc)) for loc, msg in found])

    if data is None:
        raise fail([((), "the grid file is empty")])
    if not isinstance(data, dict):
        raise fail([((), f"a grid is a YAML mapping of sections (name, tasks, ...), got a {type(data).__name__}")])
    try:
        grid = Grid.model_validate(data)
    except ValidationError as exc:
        raise fail(_pydantic_problems(exc, (), Grid)) from None
    semantic = _semantic_problems(grid, registry)
    if semantic:
        raise fail(semantic)
    return grid


def load(path: str | Path, registry: Registry) -> Grid:
    path = Path(path)
    try:
        text = decode(path.read_bytes())
    except OSError as exc:
        raise GridError(str(path), [GridProblem("", f"cannot read the grid file: {exc.strerror}")]) from None
    except YamlProblem as exc:
        raise GridError(str(path), [GridProblem("", exc.message, exc.line)]) from None
    return parse(text, registry, source=str(path))
