"""The board's balance and cost columns: which of them a board has data for, their headers, and an entry's cells.

Each cell holds one plain number (a mean over the seeds; the JSON keeps every seed), so a Markdown viewer that
sorts tables sorts them. A board whose entries lack a measurement (results from before it was recorded) shows
no column for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmbench.reporting.cost import step_flops
from mmbench.schema.leaderboard import Entry, Leaderboard

NONE = "–"
#: FLOP units, the largest first
UNITS = (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3), ("FLOP", 1.0))


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else fraction * 100


def _number(value: float | None, spec: str) -> str:
    return NONE if value is None else format(value, spec)


def flop_unit(values: list[float]) -> tuple[str, float]:
    """The largest unit in which the smallest value is still at least 1."""
    smallest = min(values)
    return next(((name, scale) for name, scale in UNITS if smallest >= scale), UNITS[-1])


@dataclass(frozen=True)
class BalanceAndCost:
    modalities: list[str]
    baseline: str
    shares: bool
    utilisation: bool
    flops: tuple[str, float] | None
    hours: bool

    @classmethod
    def of(cls, board: Leaderboard) -> BalanceAndCost:
        flops = [f for e in board.entries if (f := step_flops(e))]
        return cls(modalities=board.modalities, baseline=board.baseline or "baseline",
                   shares=any(e.contribution for e in board.entries),
                   utilisation=any(e.utilisation for e in board.entries),
                   flops=flop_unit(flops) if flops else None,
                   hours=any(e.cost and e.cost.device_hours is not None for e in board.entries))

    def balance_headers(self) -> list[str]:
        shares = [*(f"{m} share (%)" for m in self.modalities), "imbalance"] if self.shares else []
        return shares + ([f"{m} util." for m in self.modalities] if self.utilisation else [])

    def balance_cells(self, entry: Entry) -> list[str]:
        cells = []
        if self.shares:
            c = entry.contribution
            means = {m: c.share[m].mean for m in self.modalities if c and m in c.share}
            cells += [_number(_percent(means.get(m)), ".1f") for m in self.modalities]
            cells.append(_number(c.imbalance_degree.mean if c else None, ".2f"))
        if self.utilisation:
            cells += [_number(entry.utilisation.get(m), ".2f") for m in self.modalities]
        return cells

    def cost_headers(self) -> list[str]:
        flops = [f"{self.flops[0]}/step", f"FLOPs × {self.baseline}"] if self.flops else []
        return flops + (["device-h/run"] if self.hours else [])

    def cost_cells(self, entry: Entry) -> list[str]:
        cells = []
        if self.flops:
            flops = step_flops(entry)
            cells += [_number(flops / self.flops[1] if flops else None, ",.1f"),
                      _number(entry.cost.flops_vs_baseline if entry.cost else None, ".2f")]
        if self.hours:
            cells.append(_number(entry.cost.device_hours if entry.cost else None, ".3g"))
        return cells

    def legend(self) -> str:
        """What the columns mean, for the board's preamble (empty when it has none of them)."""
        parts = []
        if self.shares:
            parts.append("'share': each modality's exact Shapley contribution to the test score (every coalition of "
                         "modalities kept, the others dropped) over their sum; 'imbalance': largest share minus "
                         "smallest (0 = balanced, 1 = one modality does everything)")
        if self.utilisation:
            parts.append("'util.': the modality's own score inside the model over its score trained alone (the "
                         "`unimodal` reference with the same encoders; 1 = its full potential)")
        if self.flops:
            parts.append(f"FLOPs of one training step (forward, backward and the method's extra passes) and their "
                         f"ratio to `{self.baseline}`'s with the same encoders and fusion")
        if self.hours:
            parts.append("'device-h/run': hours of the device one training run held (a CPU counts as one)")
        if not parts:
            return ""
        return "; ".join(parts) + ". Means over seeds; formulas and sources in `docs/leaderboards.md`."
