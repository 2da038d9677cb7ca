"""Leaderboards: per-seed cell results aggregated into versioned JSON, rendered to Markdown, published.

The JSON contract is `mmbench.schema.leaderboard.Leaderboard`. Everything here reads `CellResult`s alone:
no plugin, no torch. Entries of different benchmark versions never share a file, so they never rank together.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import ValidationError

from mmbench.files import atomic_write_json, atomic_write_text
from mmbench.reporting import balance, confidence, cost, tuning
from mmbench.schema.leaderboard import (
    CoefficientSummary,
    Entry,
    EntryError,
    Imbalance,
    Leaderboard,
    Profile,
    Stat,
)
from mmbench.schema.results import STATUS_ORDER, CellResult


class LeaderboardError(Exception):
    pass


# --------------------------------------------------------------------------------------- aggregation


def _metric_stats(per_seed: Sequence[Mapping[str, float | None]]) -> dict[str, Stat]:
    names = sorted({k for d in per_seed for k in d})
    return {n: Stat.of([d.get(n) for d in per_seed]) for n in names}


def _nested_stats(per_seed: Sequence[Mapping[str, Mapping[str, float | None]]]) -> dict[str, dict[str, Stat]]:
    keys = sorted({k for d in per_seed for k in d})
    return {k: _metric_stats([d.get(k, {}) for d in per_seed]) for k in keys}


def _coefficients(histories: list[list]) -> dict[str, CoefficientSummary]:
    names = sorted({k for h in histories for epoch in h for k in epoch.coefficients})
    out = {}
    for name in names:
        epochs = max(len(h) for h in histories)
        series = [Stat.of([h[e].coefficients.get(name) if e < len(h) else None for h in histories]).mean
                  for e in range(epochs)]
        real = [v for v in series if v is not None]
        out[name] = CoefficientSummary(first=series[0], last=series[-1], min=min(real, default=None),
                                       max=max(real, default=None), per_epoch=series)
    return out


def _profile(results: list[CellResult]) -> Profile | None:
    profiles = [r.profile for r in results if r.profile is not None]
    if not profiles:
        return None

    def mean(key: str) -> float | None:
        values = [getattr(p, key) for p in profiles if getattr(p, key) is not None]
        return statistics.fmean(values) if values else None

    return Profile(
        device=profiles[0].device,
        train_seconds=Stat.of([p.train_seconds for p in profiles]),
        epochs=max(p.epochs for p in profiles),
        seconds_per_epoch=mean("seconds_per_epoch"),
        step_ms={k: statistics.fmean(p.step_ms[k] for p in profiles) for k in ("median", "p90")},
        step_samples_per_second=mean("step_samples_per_second"),
        samples_per_second=mean("samples_per_second"),
        data_wait_fraction=mean("data_wait_fraction"),
        validation_fraction=mean("validation_fraction"),
        balancer_hook_fraction=mean("balancer_hook_fraction"),
        host_rss_scope=profiles[0].host_rss_scope,
        peak_accelerator_memory_bytes=max(p.peak_accelerator_memory_bytes for p in profiles),
        peak_host_rss_bytes=max(p.peak_host_rss_bytes for p in profiles),
        params=profiles[0].params,
        accelerator_hours=sum(p.accelerator_hours for p in profiles),
        step_flops=mean("step_flops"),
    )


def _imbalance(unimodal: dict[str, dict[str, Stat]], primary: str, lower_is_better: bool) -> Imbalance | None:
    scores: dict[str, float] = {m: mean for m, s in unimodal.items()
                                if primary in s and (mean := s[primary].mean) is not None}
    if len(scores) < 2:
        return None
    ordered = sorted(scores, key=lambda m: scores[m], reverse=lower_is_better)
    weakest, strongest = ordered[0], ordered[-1]
    ratio = scores[weakest] / scores[strongest] if scores[strongest] else None
    return Imbalance(weakest=weakest, strongest=strongest, ratio=ratio)


def aggregate_entry(results: list[CellResult], trials: dict[str, list[CellResult]] | None = None) -> Entry:
    """One entry from the per-seed results of one grid cell (and, for a tuned one, its search's trials)."""
    results = sorted(results, key=lambda r: r.seed)
    first = results[0]
    primary = first.scoring.primary_metric
    status = min((r.status for r in results), key=STATUS_ORDER.index)
    worst = [r for r in results if r.status == status and r.reason]
    failed = next((r for r in results if r.status == status and r.error is not None), None)
    distinct = {r.reason for r in worst if r.reason}
    reasons = sorted(distinct) if len(distinct) <= 1 else [f"seed {r.seed}: {r.reason}" for r in worst]
    finished = [r for r in results if r.status == "ok" and r.test is not None]
    tests = [r.test for r in results if r.status == "ok" and r.test is not None]
    unimodal = _nested_stats([t.unimodal for t in tests])
    env = first.env
    return Entry(
        id=first.entry_id,
        task=first.task,
        encoders=dict(first.encoders),
        fusion=first.fusion,
        balancer=first.balancer,
        reference=first.reference,
        published=first.published,
        published_source=first.published_source,
        train=first.train.identity(),
        status=status,
        reason="; ".join(reasons) or None,
        error=EntryError(seed=failed.seed, type=failed.error.type, epoch=failed.error.epoch)
        if failed and failed.error else None,
        seed_status={str(r.seed): r.status for r in results},
        selection=first.selection,
        metrics=_metric_stats([t.metrics for t in tests]),
        unimodal=unimodal,
        imbalance=_imbalance(unimodal, primary, primary in first.scoring.lower_is_better),
        contribution=balance.contribution(finished, primary, primary in first.scoring.lower_is_better),
        missing_modality=_nested_stats([t.missing_modality for t in tests]),
        diagnostics=_coefficients([r.history for r in results if r.status == "ok"]),
        profile=_profile([r for r in results if r.status == "ok"]),
        balancer_notes=first.balancer_notes,
        env=env,
        mmbench_version=env.get("mmbench"),
        plugin_versions=env.get("plugins") or {},
        commit=env.get("commit"),
        created_at=max(r.created_at for r in results),
        seeds=[r.seed for r in results],
        **tuning.entry_fields(first, trials or {}),
    )


def _entry_order(entry: Entry) -> tuple:
    """A stable order, whatever order the results came in: by balancer, fusion, then identity."""
    return entry.balancer.name, entry.fusion.name if entry.fusion else "", entry.id


def aggregate(results: list[CellResult]) -> list[Leaderboard]:
    """Group per-seed results into entries, and entries into one leaderboard per benchmark version."""
    results, trials = tuning.split_trials(results)
    by_board: dict[tuple[str, str], dict[str, list[CellResult]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        by_board[(r.benchmark, r.benchmark_version)][r.entry_id].append(r)
    boards = []
    for (benchmark, version), entries in sorted(by_board.items()):
        sample = next(iter(entries.values()))[0]
        scoring = sample.scoring
        boards.append(Leaderboard(
            benchmark=benchmark, benchmark_version=version, primary_metric=scoring.primary_metric,
            metrics=scoring.metrics, lower_is_better=scoring.lower_is_better, modalities=sorted(scoring.modalities),
            baseline=sample.baseline,
            entries=sorted((aggregate_entry(rs, trials) for rs in entries.values()), key=_entry_order),
        ))
        confidence.annotate(boards[-1])
        balance.annotate(boards[-1])
        cost.annotate(boards[-1])
    return boards


# ------------------------------------------------------------------------------------------ files


def read(path: Path) -> Leaderboard:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise LeaderboardError(f"cannot read leaderboard {path}: {exc}") from None
    try:
        return Leaderboard.model_validate(data)
    except ValidationError as exc:
        raise LeaderboardError(f"{path} is not a valid leaderboard:\n{exc}") from None


def write(board: Leaderboard, json_path: Path, results: list[CellResult] | None = None) -> Path:
    """Write the JSON and the Markdown rendered from it (same name, `.md`). Given the cell results behind the
    board, also its figures (`<name>-plots/`), linked from the Markdown."""
    from mmbench.reporting.markdown import render_markdown
    from mmbench.reporting.plots import write_plots

    atomic_write_json(json_path, board.to_json())
    links = {}
    if results:
        folder = json_path.with_name(f"{json_path.stem}-plots")
        links = {key: {kind: path.relative_to(json_path.parent).as_posix() for kind, path in files.items()}
                 for key, files in write_plots(board, results, folder).items()}
    md_path = json_path.with_suffix(".md")
    atomic_write_text(md_path, render_markdown(board, links))
    return md_path


def run_leaderboard_path(out_dir: Path, board: Leaderboard, several: bool) -> Path:
    return out_dir / (f"leaderboard.{board.benchmark}.json" if several else "leaderboard.json")


def write_run_leaderboards(results: list[CellResult], out_dir: Path, plots: bool = False) -> list[Path]:
    """`leaderboard.json`/`.md` in the run directory (one file per benchmark when a grid has several), with
    their figures when `plots`."""
    boards = aggregate(results)
    paths = []
    for board in boards:
        path = run_leaderboard_path(out_dir, board, several=len(boards) > 1)
        own = [r for r in results if (r.benchmark, r.benchmark_version) == (board.benchmark, board.benchmark_version)]
        write(board, path, own if plots else None)
        paths.append(path)
    return paths
