"""Search distributions, declared by a component next to each tunable parameter's documented range (no torch).

A parameter model declares how a parameter is searched in its pydantic field, as plain data:

    alpha: float = Field(0.1, gt=0.0, le=100.0, description="...",
                         json_schema_extra={"search": {"log_uniform": [0.05, 3.0]}})

`mmbench.api.search.log_uniform(0.05, 3.0)` writes the same dictionary. The spelling is the one a grid's
`search.space` uses, and `mmbench schema`/JSON Schema readers see it. The declared interval is the parameter's
documented search range: a grid may narrow it, never leave it, and it must itself lie inside the field's
constraints. Kinds: `log_uniform` and `uniform` (floats), `int` and `log_int` (whole numbers, both ends
included), `choice` (a list of values).
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

KEY = "search"
RANGES = ("log_uniform", "uniform", "int", "log_int")
KINDS = (*RANGES, "choice")


class SpaceError(ValueError):
    """A malformed distribution, or one outside what the parameter accepts."""


@dataclass(frozen=True)
class Distribution:
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple = ()

    @classmethod
    def parse(cls, raw: Any) -> Distribution:
        """From the written form `{kind: [low, high]}` or `{choice: [values]}`; raises `SpaceError`."""
        if not (isinstance(raw, dict) and len(raw) == 1 and next(iter(raw)) in KINDS):
            raise SpaceError(f"a search distribution is one of {', '.join(f'{{{k}: [...]}}' for k in KINDS)}, "
                             f"got {raw!r}")
        [(kind, values)] = raw.items()
        if not isinstance(values, (list, tuple)) or not values:
            raise SpaceError(f"{kind} takes a non-empty list, got {values!r}")
        if kind == "choice":
            if len(set(map(repr, values))) != len(values):
                raise SpaceError(f"choice lists a value twice: {list(values)}")
            return cls(kind, choices=tuple(values))
        values = [_from_text(v) for v in values]
        if len(values) != 2 or not all(_is_number(v) for v in values):
            raise SpaceError(f"{kind} takes [low, high], two numbers, got {list(values)}")
        low, high = values
        if kind in ("int", "log_int") and not all(isinstance(v, int) for v in values):
            raise SpaceError(f"{kind} takes whole numbers, got {list(values)}")
        if not low < high:
            raise SpaceError(f"{kind} needs low < high, got [{low}, {high}]")
        if kind.startswith("log") and low <= 0:
            raise SpaceError(f"{kind} needs low > 0 (a logarithmic scale), got [{low}, {high}]")
        return cls(kind, low, high)

    @property
    def integer(self) -> bool:
        return self.kind in ("int", "log_int")

    def to_json(self) -> dict[str, list]:
        return {self.kind: list(self.choices) if self.kind == "choice" else [self.low, self.high]}

    def boundary(self) -> tuple:
        """The values whose validity implies every value's: the two ends of a range, or every choice."""
        return self.choices if self.kind == "choice" else (self.low, self.high)

    def within(self, outer: Distribution) -> bool:
        """Whether every value this distribution can draw is one `outer` can draw."""
        if self.kind == "choice" or outer.kind == "choice":
            return outer.kind == "choice" and set(map(repr, self.boundary())) <= set(map(repr, outer.choices))
        return outer.integer <= self.integer and outer.low <= self.low and self.high <= outer.high

    def __str__(self) -> str:
        values = self.boundary()
        return f"{self.kind} [{', '.join(map(str, values))}]"


def _from_text(value: Any) -> Any:
    """YAML reads `1e-5` (no decimal point) as text; take it as the number it spells, as pydantic does elsewhere."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _declare(kind: str, values: list) -> dict[str, dict]:
    return {KEY: Distribution.parse({kind: values}).to_json()}


def log_uniform(low: float, high: float) -> dict[str, dict]:
    """`json_schema_extra` declaring a float searched uniformly on a log scale over [low, high]."""
    return _declare("log_uniform", [low, high])


def uniform(low: float, high: float) -> dict[str, dict]:
    """`json_schema_extra` declaring a float searched uniformly over [low, high]."""
    return _declare("uniform", [low, high])


def int_range(low: int, high: int, log: bool = False) -> dict[str, dict]:
    """`json_schema_extra` declaring a whole number searched over low..high (both included)."""
    return _declare("log_int" if log else "int", [low, high])


def choice(*values: Any) -> dict[str, dict]:
    """`json_schema_extra` declaring a parameter searched over these values."""
    return _declare("choice", list(values))


def field_problem(params: type[BaseModel], name: str, dist: Distribution) -> str | None:
    """Why `dist` draws values the field `name` of `params` refuses (its type and constraints), or None."""
    field = params.model_fields[name]
    accepted = set(typing.get_args(field.annotation)) or {field.annotation}
    if not dist.integer and dist.kind != "choice" and float not in accepted:
        return f"{dist} draws fractions, but {name!r} is a whole number: use int or log_int"
    adapter: TypeAdapter[Any] = TypeAdapter(Annotated[field.annotation, field])  # type: ignore[arg-type]  # a runtime type
    for value in dist.boundary():
        try:
            adapter.validate_python(value)
        except ValidationError as exc:
            return f"{dist} includes {value!r}, which {name!r} refuses: {exc.errors()[0]['msg'].lower()}"
    return None


def declared(params: type[BaseModel]) -> dict[str, Distribution]:
    """Every distribution `params` declares, by field name; raises `SpaceError` naming a defective one."""
    found = {}
    for name, field in params.model_fields.items():
        extra = field.json_schema_extra
        if not isinstance(extra, dict) or KEY not in extra:
            continue
        try:
            dist = Distribution.parse(extra[KEY])
        except SpaceError as exc:
            raise SpaceError(f"{params.__name__}.{name} declares a malformed search distribution: {exc}") from None
        problem = field_problem(params, name, dist)
        if problem:
            raise SpaceError(f"{params.__name__}.{name} declares a search distribution outside its own "
                             f"constraints: {problem}")
        found[name] = dist
    return found
