"""How balanced a trained model is: each modality's Shapley contribution, its share, the imbalance degree, and how
much of its own potential each modality reaches inside the model (its utilisation).

The game. `v(S)`, for a set `S` of kept modalities out of the task's `M`, is the primary test metric of the model
with the others dropped, by the rule missing-modality evaluation uses (`CellResult.test.coalitions`, measured in
the cell's own final evaluation; a lower-is-better metric enters negated, so a helpful modality counts positive).
`v(∅)` is the model with every modality dropped: what it predicts from no input at all.

- **Shapley contribution** (Shapley, "A Value for n-Person Games", Contributions to the Theory of Games II, 1953),
  exact over every coalition (`M ≤ 4` gives at most 16):
  `φ_m = Σ_{S ⊆ N∖{m}} |S|!·(M−|S|−1)!/M! · (v(S ∪ {m}) − v(S))`. The contributions add up to
  `v(N) − v(∅)`, the model's whole gain over predicting from nothing. Modality Shapley values over kept-modality
  subsets are what BalanceBenchmark reports as modality contribution (Xu, Cui, Huang, Wang, Hu, "BalanceBenchmark:
  A Survey for Multimodal Imbalance Learning", arXiv 2502.10816; GeWu-Lab/BalanceBenchmark @ 0835fa2255ee,
  `balancemm/evaluation/modalitys.py::Calculate_Shapley`, whose code sums the marginal gains without the
  Shapley weights and, by default, without the empty coalition; here the weights and `v(∅)` are kept, so the
  values are Shapley's).
- **Share**: `s_m = φ_m / Σ_k φ_k`, undefined when the sum is not positive (the model does no better with all
  its modalities than with none).
- **Imbalance degree**: `D = max_m s_m − min_m s_m`, the spread of the shares. 0: every modality gives as much;
  1: one modality gives everything and another nothing; above 1: some modality hurts (a negative share). With
  two modalities `D = |φ_a − φ_b| / (φ_a + φ_b)`.
- **Utilisation**: `u_m = a_m / a*_m`, modality `m`'s own primary metric inside the model (`unimodal` scores:
  its head, or the model with the others dropped) over the same modality trained alone (the `unimodal`
  reference's score with the same encoders, averaged over its entries). 1: the model reaches the modality's
  potential; 0.8: it stays 20 % below. For a lower-is-better metric, `a*_m / a_m`.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence

from mmbench.schema.leaderboard import Contribution, Entry, Leaderboard, Stat
from mmbench.schema.results import CellResult

#: the reference entry whose per-modality scores are each modality's potential
UNIMODAL_REFERENCE = "unimodal"


def coalition(key: str) -> frozenset[str]:
    """The kept modalities a `coalitions` key names ('audio+video'; '' for none)."""
    return frozenset(key.split("+")) if key else frozenset()


def shapley(value: Mapping[frozenset[str], float], players: Sequence[str]) -> dict[str, float]:
    """Each player's exact Shapley value in the game `value` (every subset of `players` must have a value)."""
    n = len(players)
    out = {}
    for m in players:
        others = [p for p in players if p != m]
        out[m] = sum(math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
                     * (value[frozenset(s) | {m}] - value[frozenset(s)])
                     for k in range(n) for s in itertools.combinations(others, k))
    return out


def shares(contributions: Mapping[str, float]) -> dict[str, float] | None:
    """Each contribution over their sum; None when the sum is not positive."""
    total = sum(contributions.values())
    return {m: c / total for m, c in contributions.items()} if total > 0 else None


def imbalance_degree(share: Mapping[str, float]) -> float:
    """The spread of the shares: largest minus smallest."""
    return max(share.values()) - min(share.values())


def seed_contribution(coalitions: Mapping[str, Mapping[str, float | None]], metric: str,
                      lower_is_better: bool) -> tuple[dict[str, float], dict[str, float] | None] | None:
    """One cell's Shapley values and shares of `metric`; None without a finite score for every coalition."""
    value = {}
    for key, scores in coalitions.items():
        score = scores.get(metric)
        if score is None:
            return None
        value[coalition(key)] = -score if lower_is_better else score
    players = sorted(frozenset[str]().union(*value))
    if len(players) < 2 or len(value) != 2 ** len(players):
        return None
    gains = shapley(value, players)
    # reported in the metric's own units: with a lower-is-better metric a helpful modality lowers it
    return ({m: -g for m, g in gains.items()} if lower_is_better else gains), shares(gains)


def contribution(results: list[CellResult], metric: str, lower_is_better: bool) -> Contribution | None:
    """The Shapley values, shares and imbalance degree of `metric` over the seeds of one entry (the finished
    results, in seed order); None when no seed recorded its coalitions."""
    per_seed = [seed_contribution(r.test.coalitions, metric, lower_is_better) if r.test else None for r in results]
    found = [p for p in per_seed if p is not None]
    if not found:
        return None
    modalities = sorted(found[0][0])
    share = [p[1] if p else None for p in per_seed]
    return Contribution(
        shapley={m: Stat.of([p[0][m] if p else None for p in per_seed]) for m in modalities},
        share={m: Stat.of([s[m] if s else None for s in share]) for m in modalities},
        imbalance_degree=Stat.of([imbalance_degree(s) if s else None for s in share]),
    )


def _potential(references: list[Entry], metric: str) -> dict[str, float]:
    """Each modality's primary metric alone: the mean over the references that report it."""
    found: dict[str, list[float]] = {}
    for ref in references:
        for m, scores in ref.unimodal.items():
            if (stat := scores.get(metric)) is not None and stat.mean is not None:
                found.setdefault(m, []).append(stat.mean)
    return {m: statistics.fmean(v) for m, v in found.items()}


def utilisation(entry: Entry, potential: Mapping[str, float], metric: str,
                lower_is_better: bool) -> dict[str, float | None]:
    """Each modality's score inside the entry's model over its potential (None where either is missing or 0)."""
    out: dict[str, float | None] = {}
    for m, alone in sorted(potential.items()):
        stat = entry.unimodal.get(m, {}).get(metric)
        inside = stat.mean if stat is not None else None
        numerator, denominator = (alone, inside) if lower_is_better else (inside, alone)
        out[m] = numerator / denominator if numerator is not None and denominator else None
    return out


def annotate(board: Leaderboard) -> None:
    """Set each method's utilisation from the `unimodal` reference entries with the same encoders."""
    metric = board.primary_metric
    lower = metric in board.lower_is_better
    references = [e for e in board.entries if e.balancer.name == UNIMODAL_REFERENCE and e.status == "ok"]
    for entry in board.entries:
        if entry.reference or entry.status != "ok":
            continue
        potential = _potential([r for r in references if r.encoders == entry.encoders], metric)
        if potential:
            entry.utilisation = utilisation(entry, potential, metric, lower)
