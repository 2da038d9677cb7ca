"""Two leaderboards (or runs) side by side: per-entry differences, and a threshold for regression tests.

Entries are matched by id (the same task, encoders, fusion, balancer, parameters and recipe). Differences are
in points (hundredths of the metric) and signed so that a positive value is an improvement of B over A, also
for lower-is-better metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from mmbench.reporting.leaderboard import LeaderboardError, read
from mmbench.schema.leaderboard import Entry, Leaderboard


@dataclass(frozen=True)
class Difference:
    label: str
    metric: str
    a: float | None
    b: float | None

    def points(self, lower_is_better: bool) -> float | None:
        """B − A in points, positive when B is better."""
        if self.a is None or self.b is None:
            return None
        return (self.a - self.b if lower_is_better else self.b - self.a) * 100


def load(path: Path) -> Leaderboard:
    """A leaderboard file, or the leaderboard of a run directory."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("leaderboard*.json"))
        if len(found) != 1:
            raise LeaderboardError(f"{path} holds {len(found)} leaderboard files; name one of them")
        path = found[0]
    return read(path)


def _label(entry: Entry) -> str:
    encoders = ",".join(sorted({c.name for c in entry.encoders.values()}))
    fusion = entry.fusion.label() if entry.fusion else "-"
    return f"{entry.balancer.label()} {encoders} {fusion}"


def differences(a: Leaderboard, b: Leaderboard, metrics: list[str]) -> tuple[list[Difference], list[str]]:
    """The matched entries' differences for each metric, and the labels of entries only one side has."""
    mean = lambda entry, m: entry.metrics[m].mean if m in entry.metrics else None  # noqa: E731
    in_a, in_b = {e.id: e for e in a.entries}, {e.id: e for e in b.entries}
    found = [Difference(_label(in_a[i]), m, mean(in_a[i], m), mean(in_b[i], m))
             for i in sorted(in_a.keys() & in_b.keys(), key=lambda i: _label(in_a[i])) for m in metrics]
    only = [f"only in A: {_label(in_a[i])}" for i in sorted(in_a.keys() - in_b.keys())]
    only += [f"only in B: {_label(in_b[i])}" for i in sorted(in_b.keys() - in_a.keys())]
    return found, only


def render(a: Leaderboard, b: Leaderboard, found: list[Difference], only: list[str]) -> str:
    lower = set(a.lower_is_better)

    def fmt(value: float | None) -> str:
        return "–" if value is None else f"{value * 100:.2f}"

    rows = []
    for d in found:
        points = d.points(d.metric in lower)
        rows.append([d.label, d.metric, fmt(d.a), fmt(d.b), "–" if points is None else f"{points:+.2f}"])
    lines = []
    if a.benchmark_version != b.benchmark_version:
        lines.append(f"note: benchmark versions differ (A {a.benchmark_version}, B {b.benchmark_version}): the "
                     "protocols differ, so differences are not only the methods'")
    lines.append(tabulate(rows, headers=["entry", "metric", "A (%)", "B (%)", "B − A (points, + = better)"],
                          tablefmt="github", disable_numparse=True) if rows else "no entry in common")
    return "\n".join([*lines, *only])


def regressions(a: Leaderboard, found: list[Difference], thresholds: dict[str, float]) -> list[str]:
    """The differences worse than the allowed drop (`thresholds`: metric -> points)."""
    lower = set(a.lower_is_better)
    out = []
    for d in found:
        points = d.points(d.metric in lower)
        if d.metric in thresholds and points is not None and points < -thresholds[d.metric]:
            out.append(f"{d.label}: {d.metric} {points:+.2f} points (allowed −{thresholds[d.metric]:g})")
    return out
