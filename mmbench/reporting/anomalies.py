"""Rows a leaderboard must not carry unexplained: a method far below the baseline, seeds far apart, a failure.

An anomalous result is a defect until a run shows otherwise (the method's coefficient trajectories, per-epoch
validation, the same cell with one default changed). `mmbench run` and `mmbench publish` list these rows, and
the Markdown shows them, so nobody publishes them unseen.
"""

from __future__ import annotations

from mmbench.schema.leaderboard import Entry, Leaderboard

#: a method this far below the baseline (same encoders and fusion) is flagged, in points of the primary metric
BELOW_BASELINE = 3.0
#: seeds of one entry this far apart (max - min) are flagged, in points
SEED_SPREAD = 5.0


def _label(entry: Entry) -> str:
    encoders = ",".join(sorted({c.name for c in entry.encoders.values()}))
    return f"{entry.balancer.name} ({encoders}, {entry.fusion.name if entry.fusion else 'own fusion'})"


def anomalies(board: Leaderboard) -> list[str]:
    """One line per anomalous entry of the board."""
    primary, lower = board.primary_metric, board.primary_metric in board.lower_is_better
    sign = -1.0 if lower else 1.0

    def key(e: Entry) -> tuple:
        return tuple(sorted((m, c.name) for m, c in e.encoders.items())), e.fusion.name if e.fusion else None

    baseline = {key(e): e.metrics[primary].mean for e in board.entries
                if e.status == "ok" and e.balancer.name == board.baseline and primary in e.metrics}
    found = []
    for e in board.entries:
        if e.status in ("failed", "diverged"):
            found.append(f"{_label(e)}: {e.status} ({e.reason})")
            continue
        if e.status != "ok" or primary not in e.metrics:
            continue
        stat = e.metrics[primary]
        base = baseline.get(key(e))
        if base is not None and stat.mean is not None and sign * (stat.mean - base) * 100 < -BELOW_BASELINE:
            found.append(f"{_label(e)}: {(stat.mean - base) * 100:+.1f} points vs {board.baseline}")
        seeds = [v for v in stat.per_seed if v is not None]
        if len(seeds) > 1 and (max(seeds) - min(seeds)) * 100 > SEED_SPREAD:
            found.append(f"{_label(e)}: seeds {(max(seeds) - min(seeds)) * 100:.1f} points apart "
                         f"({', '.join(f'{v * 100:.1f}' for v in seeds)})")
    return found
