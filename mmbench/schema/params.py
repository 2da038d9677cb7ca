"""Base classes for every component's parameters (pydantic; no torch)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Params(BaseModel):
    """Base for every component's parameter model.

    Unknown keys are errors, never silently ignored; NaN and infinities are refused in every float (a
    parameter that means "unbounded" says so with `None`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class NoParams(Params):
    """For components without parameters."""


class EpochWindowParams(Params):
    """Parameters of a method that acts only inside an inclusive window of epochs (counted from 0).

    Subclasses re-declare `modulation_ends` to give their paper's default.
    """

    modulation_starts: int = Field(0, ge=0, description="first epoch (from 0, inclusive) the method acts in")
    modulation_ends: int | None = Field(None, ge=0, description="last epoch (inclusive); null = to the end")

    @model_validator(mode="after")
    def _non_empty_window(self) -> EpochWindowParams:
        if self.modulation_ends is not None and self.modulation_ends < self.modulation_starts:
            raise ValueError(f"modulation_ends ({self.modulation_ends}) < modulation_starts "
                             f"({self.modulation_starts}): the window would be empty")
        return self

    def active(self, epoch: int) -> bool:
        end = self.modulation_ends
        return self.modulation_starts <= epoch and (end is None or epoch <= end)
