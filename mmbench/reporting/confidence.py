"""Confidence in a ranking: each method against the baseline on the same seeds, and how stable the order is.

A method and the baseline trained on the same seed share the data order and initialisation, so their per-seed
differences are paired: Δ is the mean difference and its 95 % interval the paired t interval,
Δ ± t(0.975, n−1)·sd/√n. An interval that contains 0 is a difference within seed noise. With the usual three
seeds the intervals are wide (t = 4.30): that is what three seeds can tell. Rank stability ranks the methods on
each seed alone and compares those rankings (Kendall's τ-b).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable

from tabulate import tabulate

from mmbench.schema.leaderboard import Comparison, Entry, Leaderboard, RankStability

#: two-sided 95 % quantiles t(0.975, df) of Student's t for df = 1..30 (standard table, 4 decimals)
T_975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788,
         2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
         2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
Z_975 = 1.959964


def t_975(df: int) -> float:
    """t(0.975, df): the table up to 30, then the Cornish-Fisher expansion around the normal quantile (error
    below 1e-4 there)."""
    if df <= len(T_975):
        return T_975[df - 1]
    z = Z_975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def paired(method: dict[int, float], baseline: dict[int, float], name: str) -> Comparison | None:
    """`method` − `baseline` on the seeds both have (None when they share none)."""
    seeds = sorted(set(method) & set(baseline))
    if not seeds:
        return None
    diffs = [method[s] - baseline[s] for s in seeds]
    delta = statistics.fmean(diffs)
    if len(diffs) < 2:
        return Comparison(baseline=name, seeds=seeds, delta=delta, low=None, high=None, within_noise=None)
    half = t_975(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return Comparison(baseline=name, seeds=seeds, delta=delta, low=delta - half, high=delta + half,
                      within_noise=delta - half <= 0.0 <= delta + half)


def per_seed(entry: Entry, metric: str) -> dict[int, float]:
    """Seed -> score of an entry whose every seed finished (its per-seed list follows its seeds)."""
    stat = entry.metrics.get(metric)
    if entry.status != "ok" or stat is None or len(stat.per_seed) != len(entry.seeds):
        return {}
    return {seed: v for seed, v in zip(entry.seeds, stat.per_seed) if v is not None}


def setting(entry: Entry) -> tuple:
    """What a method shares with the baseline it is compared with: its encoders and fusion."""
    return tuple(sorted((m, c.name) for m, c in entry.encoders.items())), entry.fusion.name if entry.fusion else None


def ranks(scores: list[float], lower_is_better: bool) -> list[float]:
    """1 = best; tied scores share the mean of the ranks they span."""
    order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=not lower_is_better)
    out = [0.0] * len(scores)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        for i in order[start:end + 1]:
            out[i] = (start + end) / 2 + 1
        start = end + 1
    return out


def kendall_tau_b(a: list[float], b: list[float]) -> float | None:
    """Kendall's τ-b of two equally long lists (None when either is constant)."""
    concordant = discordant = ties_a = ties_b = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        x, y = a[i] - a[j], b[i] - b[j]
        ties_a += x == 0
        ties_b += y == 0
        concordant += x * y > 0
        discordant += x * y < 0
    pairs = len(a) * (len(a) - 1) // 2
    denominator = math.sqrt((pairs - ties_a) * (pairs - ties_b))
    return (concordant - discordant) / denominator if denominator else None


def rank_stability(entries: list[Entry], metric: str, lower_is_better: bool) -> RankStability | None:
    """The entries ranked on each seed they all have (None with fewer than two such seeds or entries)."""
    scores = {e.id: per_seed(e, metric) for e in entries}
    scores = {k: v for k, v in scores.items() if v}
    seeds = sorted(set.intersection(*(set(v) for v in scores.values()))) if scores else []
    if len(seeds) < 2 or len(scores) < 2:
        return None
    ids = sorted(scores)
    by_seed = [ranks([scores[i][s] for i in ids], lower_is_better) for s in seeds]
    taus = [t for a, b in itertools.combinations(by_seed, 2) if (t := kendall_tau_b(a, b)) is not None]
    return RankStability(seeds=seeds, kendall_tau=statistics.fmean(taus) if taus else None,
                         ranks={i: [r[k] for r in by_seed] for k, i in enumerate(ids)})


def annotate(board: Leaderboard) -> None:
    """Set every entry's comparison with the baseline (same encoders and fusion) and the board's rank stability."""
    primary = board.primary_metric
    baselines = {setting(e): per_seed(e, primary) for e in board.entries if e.balancer.name == board.baseline}
    for e in board.entries:
        base = baselines.get(setting(e))
        if e.balancer.name != board.baseline and base and board.baseline is not None:
            e.vs_baseline = paired(per_seed(e, primary), base, board.baseline)
    methods = [e for e in board.entries if not e.reference]
    board.rank_stability = rank_stability(methods, primary, primary in board.lower_is_better)


def noise_mark(entry: Entry) -> str:
    """' ≈' after a gain that lies within seed noise."""
    return " ≈" if entry.vs_baseline is not None and entry.vs_baseline.within_noise else ""


def verdict(c: Comparison, lower_is_better: bool) -> str:
    if c.within_noise is None:
        return "one seed: no interval"
    if c.within_noise:
        return "within noise"
    return "better" if (c.delta < 0) == lower_is_better else "worse"


def markdown_section(board: Leaderboard, label: Callable[[Entry], list[str]]) -> list[str]:
    """The comparisons with the baseline and the rank stability, as Markdown lines (nothing to say: none).

    `label(entry)` gives the (balancer, encoders, fusion) cells the board's tables use."""
    stability = board.rank_stability
    if stability is None and not any(e.vs_baseline is not None for e in board.entries):
        return []
    lower = board.primary_metric in board.lower_is_better
    lines = ["", "## Confidence", "",
             f"Each method against `{board.baseline}` with the same encoders and fusion, on the same seeds: Δ is the "
             f"mean per-seed difference in {board.primary_metric} (points), with its 95 % paired-t interval; "
             "≈ in the ranking marks a difference within seed noise (the interval contains 0)."]
    if stability is not None:
        tau = "n/a" if stability.kendall_tau is None else f"{stability.kendall_tau:.2f}"
        lines += ["", f"Rank stability: the methods ranked on each of the seeds "
                      f"{', '.join(map(str, stability.seeds))} alone agree with a mean Kendall τ-b of {tau} "
                      "(1 = the same order on every seed); each method's ranks are listed below."]
    ranked = stability.ranks if stability else {}
    shown = [e for e in board.entries if not e.reference and (e.vs_baseline is not None or e.id in ranked)]
    sign = 1.0 if lower else -1.0
    rows = []
    for e in sorted(shown, key=lambda e: (sign * e.vs_baseline.delta if e.vs_baseline else 0.0, label(e))):
        c = e.vs_baseline
        seed_ranks = ", ".join(f"{r:g}" for r in ranked[e.id]) if e.id in ranked else "–"
        if c is None:
            rows.append([*label(e), "baseline" if e.balancer.name == board.baseline else "–", "–", "–", "–",
                         seed_ranks])
            continue
        interval = "–" if c.low is None or c.high is None else f"[{c.low * 100:+.2f}, {c.high * 100:+.2f}]"
        rows.append([*label(e), f"{c.delta * 100:+.2f}", interval, str(len(c.seeds)), verdict(c, lower),
                     seed_ranks])
    lines += ["", tabulate(rows, headers=["balancer", "encoders", "fusion", f"Δ vs {board.baseline}", "95 % interval",
                                          "seeds", "verdict", "rank on each seed"],
                           tablefmt="github", disable_numparse=True)]
    return lines
