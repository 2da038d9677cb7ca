"""Leaderboards: per-seed cell results aggregated into versioned JSON, rendered to Markdown, published.

The JSON contract is `mmbench.schema.leaderboard.Leaderboard`. Everything here reads `CellResult`s alone:
no plugin, no torch. Entries of different benchmark versions never share a file, so they never rank together.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

from pydantic import ValidationError
from tabulate import tabulate

from mmbench.files import atomic_write_json, atomic_write_text
from mmbench.schema.leaderboard import (
    SCHEMA,
    CoefficientSummary,
    Component,
    Entry,
    Imbalance,
    Leaderboard,
    Profile,
    Stat,
    TaskInfo,
)
from mmbench.schema.results import STATUS_ORDER, CellResult


class LeaderboardError(Exception):
    pass


# --------------------------------------------------------------------------------------- aggregation


def _stat(values: list[float | None]) -> Stat:
    real = [v for v in values if v is not None]
    if not real:
        return Stat(mean=None, std=None, per_seed=values)
    return Stat(mean=statistics.fmean(real), std=statistics.stdev(real) if len(real) > 1 else 0.0, per_seed=values)


def _metric_stats(per_seed: list[dict[str, float]]) -> dict[str, Stat]:
    names = sorted({k for d in per_seed for k in d})
    return {n: _stat([d.get(n) for d in per_seed]) for n in names}


def _nested_stats(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, Stat]]:
    keys = sorted({k for d in per_seed for k in d})
    return {k: _metric_stats([d.get(k, {}) for d in per_seed]) for k in keys}


def _coefficients(histories: list[list]) -> dict[str, CoefficientSummary]:
    names = sorted({k for h in histories for epoch in h for k in epoch.coefficients})
    out = {}
    for name in names:
        epochs = max(len(h) for h in histories)
        series = [_stat([h[e].coefficients.get(name) if e < len(h) else None for h in histories]).mean
                  for e in range(epochs)]
        real = [v for v in series if v is not None]
        out[name] = CoefficientSummary(first=series[0], last=series[-1], min=min(real, default=None),
                                       max=max(real, default=None), per_epoch=series)
    return out


def _profile(results: list[CellResult]) -> Profile | None:
    profiles = [r.profile for r in results if r.profile is not None]
    if not profiles:
        return None

    def mean(key: str) -> float:
        return statistics.fmean(getattr(p, key) for p in profiles)

    return Profile(
        device=profiles[0].device,
        train_seconds=_stat([p.train_seconds for p in profiles]),
        epochs=max(p.epochs for p in profiles),
        seconds_per_epoch=mean("seconds_per_epoch"),
        step_ms={k: statistics.fmean(p.step_ms[k] for p in profiles) for k in ("median", "p90")},
        samples_per_second=mean("samples_per_second"),
        data_wait_fraction=mean("data_wait_fraction"),
        peak_accelerator_memory_bytes=max(p.peak_accelerator_memory_bytes for p in profiles),
        peak_host_rss_bytes=max(p.peak_host_rss_bytes for p in profiles),
        params=profiles[0].params,
        accelerator_hours=sum(p.accelerator_hours for p in profiles),
    )


def _imbalance(unimodal: dict[str, dict[str, Stat]], primary: str, lower_is_better: bool) -> Imbalance | None:
    scores = {m: s[primary].mean for m, s in unimodal.items() if primary in s and s[primary].mean is not None}
    if len(scores) < 2:
        return None
    ordered = sorted(scores, key=scores.get, reverse=lower_is_better)
    weakest, strongest = ordered[0], ordered[-1]
    ratio = scores[weakest] / scores[strongest] if scores[strongest] else None
    return Imbalance(weakest=weakest, strongest=strongest, ratio=ratio)


def aggregate_entry(results: list[CellResult]) -> Entry:
    """One entry from the per-seed results of one grid cell."""
    results = sorted(results, key=lambda r: r.seed)
    first = results[0]
    primary = first.scoring.primary_metric
    status = min((r.status for r in results), key=STATUS_ORDER.index)
    worst = [r for r in results if r.status == status and r.reason]
    distinct = {r.reason for r in worst}
    reasons = sorted(distinct) if len(distinct) <= 1 else [f"seed {r.seed}: {r.reason}" for r in worst]
    tests = [r.test for r in results if r.status == "ok" and r.test is not None]
    unimodal = _nested_stats([t.unimodal for t in tests])
    env = first.env
    return Entry(
        id=first.entry_id,
        task=TaskInfo(**first.task.model_dump()),
        encoders={m: Component(**c.model_dump()) for m, c in first.encoders.items()},
        fusion=Component(**first.fusion.model_dump()),
        balancer=Component(**first.balancer.model_dump()),
        train=first.train.identity(),
        status=status,
        reason="; ".join(reasons) or None,
        seed_status={str(r.seed): r.status for r in results},
        selection=first.selection,
        metrics=_metric_stats([t.metrics for t in tests]),
        unimodal=unimodal,
        imbalance=_imbalance(unimodal, primary, primary in first.scoring.lower_is_better),
        missing_modality=_nested_stats([t.missing_modality for t in tests]),
        diagnostics=_coefficients([r.history for r in results if r.status == "ok"]),
        profile=_profile([r for r in results if r.status == "ok"]),
        env=env,
        mmbench_version=env.get("mmbench"),
        plugin_versions=env.get("plugins") or {},
        commit=env.get("commit"),
        created_at=max(r.created_at for r in results),
        seeds=[r.seed for r in results],
    )


def aggregate(results: list[CellResult]) -> list[Leaderboard]:
    """Group per-seed results into entries, and entries into one leaderboard per benchmark version."""
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
            baseline=sample.baseline, entries=[aggregate_entry(rs) for rs in entries.values()],
        ))
    return boards


# ------------------------------------------------------------------------------------------ markdown


def _fmt(stat: Stat | None, scale: float = 100.0) -> str:
    if stat is None or stat.mean is None:
        return "–"
    return f"{stat.mean * scale:.2f} ± {stat.std * scale:.2f}"


def _encoders_label(entry: Entry) -> str:
    names = {c.name for c in entry.encoders.values()}
    if len(names) == 1:
        return names.pop()
    return ", ".join(f"{m}:{c.name}" for m, c in sorted(entry.encoders.items()))


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def ranked(board: Leaderboard) -> list[Entry]:
    ok = [e for e in board.entries if e.status == "ok" and board.primary_metric in e.metrics]
    lower = board.primary_metric in board.lower_is_better
    return sorted(ok, key=lambda e: (e.metrics[board.primary_metric].mean or 0.0) * (1 if lower else -1))


FAKE_BANNER = ("**FAKE DATA** — trained on generated stand-in tensors (`--fake-data`) for one short epoch: a smoke "
               "test of the pipeline, not a result. `mmbench publish` refuses it.")


def is_fake(board: Leaderboard) -> bool:
    return any(e.task.fake for e in board.entries)


def render_markdown(board: Leaderboard) -> str:
    """Ranked table of ok entries, then a short table of failed/diverged/skipped entries."""
    primary = board.primary_metric
    others = [m for m in board.metrics if m != primary]
    entries = ranked(board)
    baseline = {(_encoders_label(e), e.fusion.name): e.metrics[primary].mean
                for e in entries if e.balancer.name == board.baseline}
    rows = []
    for rank, e in enumerate(entries, 1):
        base = baseline.get((_encoders_label(e), e.fusion.name))
        gain = "–" if base is None else f"{(e.metrics[primary].mean - base) * 100:+.2f}"
        prof = e.profile
        rows.append([
            rank, e.balancer.name, _encoders_label(e), e.fusion.name, _fmt(e.metrics[primary]),
            *[_fmt(e.metrics.get(m)) for m in others],
            *[_fmt(e.unimodal.get(m, {}).get(primary)) for m in board.modalities],
            gain,
            f"{prof.seconds_per_epoch:.2f}" if prof else "–",
            _bytes(max(prof.peak_accelerator_memory_bytes, 0)) if prof and prof.peak_accelerator_memory_bytes
            else (_bytes(prof.peak_host_rss_bytes) + " (host)" if prof else "–"),
        ])
    headers = ["#", "balancer", "encoders", "fusion", f"{primary} (%)", *[f"{m} (%)" for m in others],
               *[f"{m} alone (%)" for m in board.modalities], f"gain vs {board.baseline or 'baseline'}", "s/epoch",
               "peak memory"]
    devices = sorted({e.profile.device.get("name") or e.profile.device.get("type", "?")
                      for e in board.entries if e.profile})
    dates = sorted(e.created_at[:10] for e in board.entries)
    lines = [
        f"# {board.benchmark} leaderboard",
        "",
        *([FAKE_BANNER, ""] if is_fake(board) else []),
        f"Benchmark `{board.benchmark}` version `{board.benchmark_version}` · schema `{board.schema_}` · "
        f"hardware: {', '.join(devices) or 'n/a'} · dates: {dates[0] if dates else 'n/a'}"
        f"{' – ' + dates[-1] if dates and dates[-1] != dates[0] else ''}",
        "",
        f"Test-split scores of the model selected on validation {primary} (mean ± std over seeds, in %). "
        f"'alone' columns: each modality's own prediction from that model; gain: points over "
        f"`{board.baseline or 'no baseline'}` with the same encoders and fusion.",
        "",
        tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True) if rows else "_No successful entries._",
    ]
    problems = [e for e in board.entries if e.status != "ok"]
    if problems:
        problem_rows = [[e.balancer.name, _encoders_label(e), e.fusion.name, e.status, e.reason or ""]
                        for e in sorted(problems, key=lambda e: (e.status, e.balancer.name, e.fusion.name))]
        lines += ["", "## Not ranked", "",
                  tabulate(problem_rows, headers=["balancer", "encoders", "fusion", "status", "reason"],
                           tablefmt="github", disable_numparse=True)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ files & publish


def read(path: Path) -> Leaderboard:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise LeaderboardError(f"cannot read leaderboard {path}: {exc}") from None
    try:
        return Leaderboard.model_validate(data)
    except ValidationError as exc:
        raise LeaderboardError(f"{path} is not a valid leaderboard:\n{exc}") from None


def write(board: Leaderboard, json_path: Path) -> Path:
    """Write the JSON and the Markdown rendered from it (same name, `.md`)."""
    atomic_write_json(json_path, board.to_json())
    md_path = json_path.with_suffix(".md")
    atomic_write_text(md_path, render_markdown(board))
    return md_path


def run_leaderboard_path(out_dir: Path, board: Leaderboard, several: bool) -> Path:
    return out_dir / (f"leaderboard.{board.benchmark}.json" if several else "leaderboard.json")


def write_run_leaderboards(results: list[CellResult], out_dir: Path) -> list[Path]:
    """`leaderboard.json`/`.md` in the run directory (one file per benchmark when a grid has several)."""
    boards = aggregate(results)
    paths = []
    for board in boards:
        path = run_leaderboard_path(out_dir, board, several=len(boards) > 1)
        write(board, path)
        paths.append(path)
    return paths


def publish(run_dir: Path, target_dir: Path) -> list[Path]:
    """Merge a run's leaderboards into `target_dir/<benchmark>.json` and re-render the Markdown.

    Entries replace those with the same id. A published file of another benchmark version is never mixed
    with: publishing into it is refused.
    """
    sources = sorted(Path(run_dir).glob("leaderboard*.json"))
    if not sources:
        raise LeaderboardError(f"no leaderboard*.json in {run_dir}; run the grid first")
    written = []
    for source in sources:
        board = read(source)
        if is_fake(board):
            raise LeaderboardError(f"{source} was trained on fake data (--fake-data): a smoke test is never "
                                   "published; run the grid on the prepared data")
        target = Path(target_dir) / f"{board.benchmark}.json"
        if target.exists():
            current = read(target)
            if current.benchmark_version != board.benchmark_version:
                raise LeaderboardError(
                    f"{target} holds benchmark version {current.benchmark_version!r}; the run is "
                    f"{board.benchmark_version!r}. Entries of different versions are never ranked together: "
                    "publish to another directory or move the old file aside.")
            merged = {e.id: e for e in current.entries}
            merged.update({e.id: e for e in board.entries})
            board = board.model_copy(update={"entries": list(merged.values())})
        write(board, target)
        written.append(target)
    return written
