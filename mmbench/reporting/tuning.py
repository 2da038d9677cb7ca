"""Tuned entries: which configuration the search chose, and how much the trials' validation scores spread.

A search's trials are cell results like any other (published with the rest), but they are evidence for an entry,
not entries: they have no test scores. `split_trials` sets them apart; each entry re-run from a search's
selected configuration gets that search's summary, and the Markdown a section that shows it.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from tabulate import tabulate

from mmbench.schema.leaderboard import Entry, Leaderboard, SearchSummary
from mmbench.schema.results import CellResult
from mmbench.schema.search import validation_score

DEFAULTS = "defaults"


def split_trials(results: list[CellResult]) -> tuple[list[CellResult], dict[str, list[CellResult]]]:
    """The results that form entries, and the trials by search id."""
    trials: dict[str, list[CellResult]] = defaultdict(list)
    rest = []
    for r in results:
        if r.tuning is not None and r.is_trial:
            trials[r.tuning.search].append(r)
        else:
            rest.append(r)
    return rest, trials


def _trial_number(result: CellResult) -> int:
    return result.tuning.trial if result.tuning is not None and result.tuning.trial is not None else -1


def entry_fields(first: CellResult, trials: dict[str, list[CellResult]]) -> dict[str, Any]:
    """The `hyperparameters` label and `search` summary of the entry `first` (one of its seeds) belongs to."""
    tuning = first.tuning
    if tuning is None:
        return {"hyperparameters": DEFAULTS, "search": None}
    ordered = sorted(trials.get(tuning.search, []), key=_trial_number)
    scores = [validation_score(r, tuning.metric) for r in ordered]
    return {"hyperparameters": f"tuned ({tuning.trials} trials)", "search": SearchSummary(
        trials=tuning.trials, finished=sum(s is not None for s in scores), sampler=tuning.sampler,
        metric=tuning.metric, space=tuning.space, chosen=tuning.params, selected_trial=tuning.trial,
        trial_scores=scores)}


def _value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _spread(scores: list[float | None], lower_is_better: bool) -> str:
    real = sorted((s for s in scores if s is not None), reverse=not lower_is_better)
    if not real:
        return "–"
    std = statistics.stdev(real) if len(real) > 1 else 0.0
    return (f"{real[0] * 100:.2f} · {statistics.median(real) * 100:.2f} · {real[-1] * 100:.2f} "
            f"(std {std * 100:.2f})")


def protocol_line(board: Leaderboard) -> str:
    """One line under the title: how the entries' hyper-parameters were set."""
    search = next((e.search for e in board.entries if e.search is not None), None)
    if search is None:
        return "Hyper-parameters: **defaults** (each method's own, on the shared recipe; nothing tuned)."
    labels = sorted({e.hyperparameters for e in board.entries})
    return (f"Hyper-parameters: **{', '.join(labels)}** per method: an equal budget of {search.sampler} search "
            f"over the searched parameters (see Tuning), selected on validation {search.metric} (a trial never reads "
            "the test split); the chosen configuration re-run on every seed.")


def markdown_section(board: Leaderboard, label: Callable[[Entry], list[str]]) -> list[str]:
    """The tuned entries' chosen parameters and trial spread (nothing for a board of defaults).

    `label(entry)` gives the (balancer, encoders, fusion) cells the board's tables use."""
    tuned = [e for e in board.entries if e.search is not None and e.search.trial_scores]  # skipped ones had none
    if not tuned:
        return []
    searches = {e.id: e.search for e in tuned if e.search is not None}
    metric = searches[tuned[0].id].metric
    lower = metric in board.lower_is_better
    rows = []
    for e in sorted(tuned, key=lambda e: label(e)):
        s = searches[e.id]
        chosen = ", ".join(f"{k.split('.', 1)[1]}={_value(v)}" for k, v in sorted(s.chosen.items())) or "–"
        trial = f" (trial {s.selected_trial})" if s.selected_trial is not None else ""
        rows.append([*label(e), chosen + trial, f"{s.finished}/{s.trials}", _spread(s.trial_scores, lower)])
    headers = ["balancer", "encoders", "fusion", "chosen parameters", "trials scored",
               f"validation {metric} over trials: best · median · worst (%)"]
    return ["", "## Tuning", "",
            "Each row's configuration is its search's best trial on validation; the spread of the trials' "
            "validation scores shows how much the setting mattered.",
            "", tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)]
