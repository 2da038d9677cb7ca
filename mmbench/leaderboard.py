"""Leaderboards: per-seed cell results aggregated into versioned JSON, rendered to Markdown, published.

The JSON contract is `Leaderboard` below (its JSON Schema: `mmbench schema leaderboard`). Entries of
different benchmark versions never share a file, so they never rank together.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from tabulate import tabulate

from mmbench import metrics as metric_lib
from mmbench.registry import Registry
from mmbench.store import atomic_write_json, atomic_write_text

SCHEMA_FAMILY = "mmbench.leaderboard"
SCHEMA_MAJOR = 1
SCHEMA = f"{SCHEMA_FAMILY}/{SCHEMA_MAJOR}"
BASELINE = "joint"
#: worst first: an entry takes the status of its worst seed
STATUS_ORDER = ("failed", "diverged", "skipped", "ok")


class LeaderboardError(Exception):
    pass


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Stat(_Model):
    mean: float | None
    std: float | None
    per_seed: list[float | None]


class Component(_Model):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class TaskInfo(Component):
    version: str


class Imbalance(_Model):
    weakest: str
    strongest: str
    ratio: float | None = Field(description="weakest / strongest modality's mean primary metric")


class CoefficientSummary(_Model):
    first: float | None
    last: float | None
    min: float | None
    max: float | None
    per_epoch: list[float | None] = Field(description="seed-mean value at each epoch")


class Profile(_Model):
    device: dict[str, Any]
    train_seconds: Stat
    epochs: int
    seconds_per_epoch: float
    step_ms: dict[str, float]
    samples_per_second: float
    data_wait_fraction: float
    peak_accelerator_memory_bytes: int
    peak_host_rss_bytes: int
    params: dict[str, int]
    accelerator_hours: float


class Entry(_Model):
    id: str
    task: TaskInfo
    encoders: dict[str, Component]
    fusion: Component
    balancer: Component
    train: dict[str, Any]
    status: Literal["ok", "failed", "diverged", "skipped"]
    reason: str | None = None
    seed_status: dict[str, str]
    selection: str | None = None
    metrics: dict[str, Stat] = Field(default_factory=dict)
    unimodal: dict[str, dict[str, Stat]] = Field(default_factory=dict)
    imbalance: Imbalance | None = None
    missing_modality: dict[str, dict[str, Stat]] = Field(default_factory=dict)
    diagnostics: dict[str, CoefficientSummary] = Field(default_factory=dict)
    profile: Profile | None = None
    env: dict[str, Any] = Field(default_factory=dict)
    mmbench_version: str | None = None
    plugin_versions: dict[str, str] = Field(default_factory=dict)
    commit: str | None = None
    created_at: str
    seeds: list[int]


class Leaderboard(_Model):
    schema_: str = Field(SCHEMA, alias="schema")
    benchmark: str
    benchmark_version: str
    primary_metric: str
    metrics: list[str]
    lower_is_better: list[str]
    modalities: list[str]
    entries: list[Entry]

    @field_validator("schema_")
    @classmethod
    def _known_major(cls, value: str) -> str:
        family, _, version = value.partition("/")
        major = version.split(".")[0]
        if family != SCHEMA_FAMILY or major != str(SCHEMA_MAJOR):
            raise ValueError(f"unsupported leaderboard schema {value!r}; this mmbench reads {SCHEMA}.x")
        return value

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


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


def _coefficients(histories: list[list[dict]]) -> dict[str, CoefficientSummary]:
    names = sorted({k for h in histories for epoch in h for k in (epoch.get("coefficients") or {})})
    out = {}
    for name in names:
        epochs = max(len(h) for h in histories)
        series = [_stat([(h[e].get("coefficients") or {}).get(name) if e < len(h) else None
                         for h in histories]).mean for e in range(epochs)]
        real = [v for v in series if v is not None]
        out[name] = CoefficientSummary(first=series[0], last=series[-1], min=min(real, default=None),
                                       max=max(real, default=None), per_epoch=series)
    return out


def _profile(results: list[dict]) -> Profile | None:
    profiles = [r["profile"] for r in results if r.get("profile")]
    if not profiles:
        return None

    def mean(key: str) -> float:
        return statistics.fmean(p[key] for p in profiles)

    return Profile(
        device=profiles[0]["device"],
        train_seconds=_stat([p["train_seconds"] for p in profiles]),
        epochs=max(p["epochs"] for p in profiles),
        seconds_per_epoch=mean("seconds_per_epoch"),
        step_ms={k: statistics.fmean(p["step_ms"][k] for p in profiles) for k in ("median", "p90")},
        samples_per_second=mean("samples_per_second"),
        data_wait_fraction=mean("data_wait_fraction"),
        peak_accelerator_memory_bytes=max(p["peak_accelerator_memory_bytes"] for p in profiles),
        peak_host_rss_bytes=max(p["peak_host_rss_bytes"] for p in profiles),
        params=profiles[0]["params"],
        accelerator_hours=sum(p["accelerator_hours"] for p in profiles),
    )


def _imbalance(unimodal: dict[str, dict[str, Stat]], primary: str) -> Imbalance | None:
    scores = {m: s[primary].mean for m, s in unimodal.items() if primary in s and s[primary].mean is not None}
    if len(scores) < 2:
        return None
    lower = primary in metric_lib.LOWER_IS_BETTER
    ordered = sorted(scores, key=scores.get, reverse=lower)
    weakest, strongest = ordered[0], ordered[-1]
    ratio = scores[weakest] / scores[strongest] if scores[strongest] else None
    return Imbalance(weakest=weakest, strongest=strongest, ratio=ratio)


def aggregate_entry(results: list[dict], primary: str) -> Entry:
    """One entry from the per-seed results of one grid cell."""
    results = sorted(results, key=lambda r: r["seed"])
    first = results[0]
    status = min((r["status"] for r in results), key=STATUS_ORDER.index)
    worst = [r for r in results if r["status"] == status and r.get("reason")]
    distinct = {r["reason"] for r in worst}
    reasons = sorted(distinct) if len(distinct) <= 1 else [f"seed {r['seed']}: {r['reason']}" for r in worst]
    ok = [r for r in results if r["status"] == "ok"]
    unimodal = _nested_stats([r["unimodal"] for r in ok]) if ok else {}
    env = first.get("env") or {}
    return Entry(
        id=first["entry_id"],
        task=TaskInfo(**first["task"]),
        encoders={m: Component(**c) for m, c in first["encoders"].items()},
        fusion=Component(**first["fusion"]),
        balancer=Component(**first["balancer"]),
        train=first["train"],
        status=status,
        reason="; ".join(reasons) or None,
        seed_status={str(r["seed"]): r["status"] for r in results},
        selection=first.get("selection"),
        metrics=_metric_stats([r["metrics"] for r in ok]) if ok else {},
        unimodal=unimodal,
        imbalance=_imbalance(unimodal, primary),
        missing_modality=_nested_stats([r["missing_modality"] for r in ok]) if ok else {},
        diagnostics=_coefficients([r.get("history") or [] for r in ok]),
        profile=_profile(ok),
        env=env,
        mmbench_version=env.get("mmbench"),
        plugin_versions=env.get("plugins") or {},
        commit=env.get("commit"),
        created_at=max(r["created_at"] for r in results),
        seeds=[r["seed"] for r in results],
    )


def aggregate(results: list[dict], registry: Registry) -> list[Leaderboard]:
    """Group per-seed results into entries, and entries into one leaderboard per benchmark version."""
    by_board: dict[tuple[str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        by_board[(r["benchmark"], r["benchmark_version"])][r["entry_id"]].append(r)
    boards = []
    for (benchmark, version), entries in sorted(by_board.items()):
        task_cls = registry.get("tasks", next(iter(entries.values()))[0]["task"]["name"]).cls
        sample = next(iter(entries.values()))[0]
        boards.append(Leaderboard(
            benchmark=benchmark, benchmark_version=version, primary_metric=task_cls.primary_metric,
            metrics=list(task_cls.metrics), lower_is_better=sorted(metric_lib.LOWER_IS_BETTER & set(task_cls.metrics)),
            modalities=sorted(sample["encoders"]),
            entries=[aggregate_entry(rs, task_cls.primary_metric) for rs in entries.values()],
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


def render_markdown(board: Leaderboard) -> str:
    """Ranked table of ok entries, then a short table of failed/diverged/skipped entries."""
    primary = board.primary_metric
    others = [m for m in board.metrics if m != primary]
    entries = ranked(board)
    baseline = {(_encoders_label(e), e.fusion.name): e.metrics[primary].mean
                for e in entries if e.balancer.name == BASELINE}
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
               *[f"{m} alone (%)" for m in board.modalities], f"gain vs {BASELINE}", "s/epoch", "peak memory"]
    devices = sorted({e.profile.device.get("name") or e.profile.device.get("type", "?")
                      for e in board.entries if e.profile})
    dates = sorted(e.created_at[:10] for e in board.entries)
    lines = [
        f"# {board.benchmark} leaderboard",
        "",
        f"Benchmark `{board.benchmark}` version `{board.benchmark_version}` · schema `{board.schema_}` · "
        f"hardware: {', '.join(devices) or 'n/a'} · dates: {dates[0] if dates else 'n/a'}"
        f"{' – ' + dates[-1] if dates and dates[-1] != dates[0] else ''}",
        "",
        f"Test-split scores of the model selected on validation {primary} (mean ± std over seeds, in %). "
        f"'alone' columns: each modality's own prediction from that model; gain: points over `{BASELINE}` with "
        "the same encoders and fusion.",
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


def write_run_leaderboards(results: list[dict], out_dir: Path, registry: Registry) -> list[Path]:
    """`leaderboard.json`/`.md` in the run directory (one file per benchmark when a grid has several)."""
    boards = aggregate(results, registry)
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
