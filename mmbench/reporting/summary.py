"""Views across every published benchmark: `README.md`, each method's standing over all the boards of a folder,
and `methods/<name>.md`, a page per method with its rows from every board, its parameters and where it departs
from its official code. Built from the boards' JSON alone (no plugin, no torch).

A method's rank on a board is the rank of its best row among the best rows of the board's methods (1 = best;
ties share their mean rank); its mean rank is the mean over the boards it is on. Wins, ties and losses count its
rows against the baseline with the same encoders and fusion by the board's 95 % seed interval: a win or a loss
when the interval excludes 0, a tie when it contains 0 (rows with one seed have no interval and are not counted).
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

from tabulate import tabulate

from mmbench.files import atomic_write_text
from mmbench.reporting import leaderboard as lb
from mmbench.reporting.confidence import ranks, verdict
from mmbench.reporting.markdown import NONE, finished, ranked
from mmbench.schema.leaderboard import Entry, Leaderboard

SUMMARY = "README.md"
METHODS = "methods"
#: a row's verdict against the baseline -> the count it adds to
TALLY = {"better": "wins", "within noise": "ties", "worse": "losses"}


def read_boards(folder: Path) -> dict[str, Leaderboard]:
    """Every board of a folder of published benchmarks, by file name without `.json`."""
    return {path.stem: lb.read(path) for path in sorted(Path(folder).glob("*.json"))}


def board_ranks(board: Leaderboard) -> dict[str, float]:
    """Each method's rank on the board: its best row's, among the best rows of every method."""
    best: dict[str, float] = {}
    for entry in ranked(board):  # best first: a method's first row is its best
        best.setdefault(entry.balancer.name, entry.metrics[board.primary_metric].mean or 0.0)
    names = list(best)
    return dict(zip(names, ranks([best[n] for n in names], board.primary_metric in board.lower_is_better)))


def _row_link(board_name: str, board: Leaderboard, entry: Entry) -> str:
    order = ranked(board)
    where = f"#{order.index(entry) + 1}" if entry in order else "reference"
    return f"[{board_name} {where} {entry.fusion.name if entry.fusion else 'own predictions'}]({board_name}.md)"


def _tally(rows: list[tuple[Leaderboard, Entry]]) -> dict[str, int]:
    counts = dict.fromkeys(TALLY.values(), 0)
    for board, entry in rows:
        if entry.vs_baseline is not None:
            outcome = TALLY.get(verdict(entry.vs_baseline, board.primary_metric in board.lower_is_better))
            if outcome:
                counts[outcome] += 1
    return counts


def _rows_by_method(boards: dict[str, Leaderboard]) -> dict[str, list[tuple[str, Leaderboard, Entry]]]:
    """Each balancer's finished rows on every board, board by board, each board's in its order."""
    rows: dict[str, list[tuple[str, Leaderboard, Entry]]] = defaultdict(list)
    for name, board in boards.items():
        for entry in finished(board):
            rows[entry.balancer.name].append((name, board, entry))
    return dict(sorted(rows.items()))


def render_summary(boards: dict[str, Leaderboard]) -> str:
    """Each method's standing over every board, best mean rank first, and the references apart."""
    rows = _rows_by_method(boards)
    standing = {name: board_ranks(board) for name, board in boards.items()}
    table, references = [], []
    for method, mine in rows.items():
        if all(entry.reference for _, _, entry in mine):
            references.append(f"[{method}]({METHODS}/{method}.md)")
            continue
        method_ranks = [standing[b][method] for b in dict.fromkeys(b for b, _, _ in mine) if method in standing[b]]
        counts = _tally([(board, entry) for _, board, entry in mine])
        baseline = any(entry.balancer.name == board.baseline for _, board, entry in mine)
        table.append((statistics.fmean(method_ranks) if method_ranks else float("inf"), method, [
            f"[{method}]({METHODS}/{method}.md)",
            f"{statistics.fmean(method_ranks):.2f}" if method_ranks else NONE,
            str(len(method_ranks)),
            "baseline" if baseline else f"{counts['wins']} / {counts['ties']} / {counts['losses']}",
            " · ".join(_row_link(b, board, entry) for b, board, entry in mine),
        ]))
    baselines = sorted({board.baseline for board in boards.values() if board.baseline})
    lines = [
        "# Published benchmarks: every method over every board",
        "",
        "Boards: " + ", ".join(f"[{name}]({name}.md) ({len(ranked(board))} ranked rows, primary metric "
                                f"{board.primary_metric})" for name, board in boards.items()) + ".",
        "",
        "Rank: on each board, the rank of the method's best row among every method's best row (1 = best); mean "
        "rank: over the boards the method is on. W / T / L: its rows against "
        f"{', '.join(f'`{b}`' for b in baselines) or 'the baseline'} with the same encoders and fusion, by the "
        "board's 95 % seed interval (a tie: the interval contains 0; one-seed rows are not counted). Each method's "
        "page has its rows from every board, its parameters and its departures from the official code.",
        "",
        tabulate([cells for *_, cells in sorted(table, key=lambda t: (t[0], t[1]))],
                 headers=["method", "mean rank", "boards", "W / T / L", "rows"], tablefmt="github",
                 disable_numparse=True) if table else "_No ranked methods._",
    ]
    if references:
        lines += ["", f"References (not ranked): {', '.join(references)}."]
    return "\n".join(lines) + "\n"


def _parameters(mine: list[tuple[str, Leaderboard, Entry]]) -> list[str]:
    """Each distinct parameter set of the method's rows, with the boards that used it."""
    used: dict[str, list[str]] = defaultdict(list)
    for board_name, _, entry in mine:
        key = json.dumps(entry.balancer.params, sort_keys=True)
        if board_name not in used[key]:
            used[key].append(board_name)
    lines = []
    for key, where in used.items():
        params = json.loads(key)
        listed = ", ".join(f"`{k}={v}`" for k, v in sorted(params.items())) or "none"
        lines.append(f"- {listed} ({', '.join(where)})")
    return lines


def render_method(method: str, mine: list[tuple[str, Leaderboard, Entry]]) -> str:
    """A method's page: its rows from every board, its parameters, its departures from the official code."""
    table = []
    for board_name, board, entry in mine:
        primary, c = board.primary_metric, entry.vs_baseline
        stat = entry.metrics[primary]
        contribution = entry.contribution
        table.append([
            _row_link(board_name, board, entry),
            ", ".join(sorted({e.name for e in entry.encoders.values()})),
            primary,
            f"{(stat.mean or 0.0) * 100:.2f} ± {(stat.std or 0.0) * 100:.2f}",
            f"{c.delta * 100:+.2f}" if c else NONE,
            verdict(c, primary in board.lower_is_better) if c else NONE,
            f"{contribution.imbalance_degree.mean:.2f}"
            if contribution and contribution.imbalance_degree.mean is not None else NONE,
            f"{entry.cost.flops_vs_baseline:.2f}" if entry.cost and entry.cost.flops_vs_baseline else NONE,
            f"{entry.profile.seconds_per_epoch:.2f}" if entry.profile else NONE,
        ])
    notes = next((entry.balancer_notes for _, _, entry in mine if entry.balancer_notes), None)
    return "\n".join([
        f"# {method}",
        "",
        f"[All methods](../{SUMMARY}). Its rows on every published board (score: mean ± std over seeds, in %; gain "
        "and verdict: against the board's baseline with the same encoders and fusion, by the 95 % seed interval; "
        "imbalance: spread of the modalities' Shapley shares; FLOPs: of a training step, over the baseline's).",
        "",
        tabulate(table, headers=["row", "encoders", "metric", "score (%)", "gain", "verdict", "imbalance",
                                 "FLOPs × baseline", "s/epoch"], tablefmt="github", disable_numparse=True),
        "",
        "## Parameters",
        "",
        *_parameters(mine),
        "",
        "## Departures from the official code",
        "",
        notes or "Its docstring names none (or the results were recorded before mmbench kept them).",
    ]) + "\n"


def render_all(boards: dict[str, Leaderboard]) -> dict[str, str]:
    """Relative path -> text of the summary and of every method's page."""
    pages = {SUMMARY: render_summary(boards)}
    for method, mine in _rows_by_method(boards).items():
        pages[f"{METHODS}/{method}.md"] = render_method(method, mine)
    return pages


def write_summary(folder: Path) -> list[Path]:
    """Rewrite a published folder's summary and method pages from its boards; pages of methods no board holds any
    more are removed."""
    folder = Path(folder)
    pages = render_all(read_boards(folder))
    for stale in sorted((folder / METHODS).glob("*.md")):
        if f"{METHODS}/{stale.name}" not in pages:
            stale.unlink()
    written = []
    for relative, text in pages.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
        written.append(path)
    return written
