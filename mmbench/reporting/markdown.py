"""A leaderboard rendered to Markdown: the ranked methods, the references, and the entries that did not finish."""

from __future__ import annotations

from tabulate import tabulate

from mmbench.reporting import confidence, tuning
from mmbench.reporting.anomalies import BELOW_BASELINE, SEED_SPREAD, anomalies
from mmbench.reporting.columns import BalanceAndCost
from mmbench.schema.leaderboard import Entry, Leaderboard, Stat

NONE = "–"


def _fmt(stat: Stat | None, scale: float = 100.0) -> str:
    if stat is None or stat.mean is None:
        return NONE
    return f"{stat.mean * scale:.2f} ± {(stat.std or 0.0) * scale:.2f}"


def _text(value: str) -> str:
    """Free text safe inside a table cell: no column separator, no line break."""
    return " ".join(value.replace("|", "\\|").split())


def _encoders_label(entry: Entry) -> str:
    names = {c.name for c in entry.encoders.values()}
    if len(names) == 1:
        return names.pop()
    return ", ".join(f"{m}:{c.name}" for m, c in sorted(entry.encoders.items()))


def _device_label(entry: Entry) -> str:
    """Timings are only comparable on one device: each row names its own."""
    if entry.profile is None:
        return NONE
    device = entry.profile.device
    threads = f" ×{device['threads']} threads" if device.get("threads") else ""
    return _text(f"{device.get('name') or device.get('type', '?')}{threads}")


def _packages(entry: Entry, places: list[str]) -> list[str]:
    """`distribution version` of each package other than mmbench that provided the entry's components at
    `places` (`task`, `fusion`, `balancer`, `encoders.<modality>`, as each cell records them in `env.providers`)."""
    providers = entry.env.get("providers", {})
    found = sorted({providers[place] for place in places if place in providers} - {"mmbench"})
    return [f"{d} {entry.plugin_versions.get(d, '')}".strip() for d in found]


def _credit(entry: Entry, places: list[str]) -> str:
    packages = _packages(entry, places)
    return f" [{', '.join(packages)}]" if packages else ""


def _balancer_label(entry: Entry) -> str:
    """The balancer with the parameters set away from their defaults, so two entries of one balancer differ,
    and the package that provided it when that is not mmbench. A tuned entry's parameters are those its search
    chose: the Tuning section lists them."""
    overrides = {} if entry.search else entry.balancer.overrides
    changed = ", ".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    label = f"{entry.balancer.name} ({changed})" if changed else entry.balancer.name
    if "providers" in entry.env:
        return _text(label + _credit(entry, ["balancer"]))
    # a result from before each component's package was recorded: every third-party package of the cell
    plugins = ", ".join(f"{d} {v}".strip() for d, v in sorted(entry.plugin_versions.items()) if d != "mmbench")
    return _text(f"{label} [{plugins}]" if plugins else label)


def _fusion_label(entry: Entry) -> str:
    return entry.fusion.name if entry.fusion else NONE


def _label(entry: Entry) -> list[str]:
    """The entry's balancer, encoders and fusion as its row shows them, each with the package that provided it."""
    encoders = _encoders_label(entry) + _credit(entry, [f"encoders.{m}" for m in entry.encoders])
    return [_balancer_label(entry), _text(encoders), _text(_fusion_label(entry) + _credit(entry, ["fusion"]))]


def _task_credit(board: Leaderboard) -> str:
    """` · task NAME from PACKAGE VERSION` when a package other than mmbench provided the board's task."""
    credits = sorted({f"`{e.task.name}` from {', '.join(_packages(e, ['task']))}"
                      for e in board.entries if _packages(e, ["task"])})
    return f" · task {', '.join(credits)}" if credits else ""


def _bytes(count: int) -> str:
    n = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def finished(board: Leaderboard) -> list[Entry]:
    """Entries with results, best first on the primary metric."""
    ok = [e for e in board.entries if e.status == "ok" and board.primary_metric in e.metrics]
    lower = board.primary_metric in board.lower_is_better
    return sorted(ok, key=lambda e: (e.metrics[board.primary_metric].mean or 0.0) * (1 if lower else -1))


def ranked(board: Leaderboard) -> list[Entry]:
    """The methods in rank order (references such as `unimodal` are shown apart, never ranked)."""
    return [e for e in finished(board) if not e.reference]


def _row(board: Leaderboard, e: Entry, baseline: dict, columns: BalanceAndCost) -> list[str]:
    primary = board.primary_metric
    base = baseline.get((_encoders_label(e), _fusion_label(e)))
    gain = NONE if base is None else f"{(e.metrics[primary].mean - base) * 100:+.2f}{confidence.noise_mark(e)}"
    prof = e.profile
    memory = NONE
    if prof:
        memory = _bytes(prof.peak_accelerator_memory_bytes) if prof.peak_accelerator_memory_bytes \
            else _bytes(prof.peak_host_rss_bytes) + " (host)"
    paper, mean = e.published.get(primary), e.metrics[primary].mean
    published = [f"{paper * 100:.2f}", f"{(mean - paper) * 100:+.2f}" if mean is not None else NONE] \
        if paper is not None else [NONE, NONE]
    return [*_label(e), _fmt(e.metrics[primary]),
            *(published if any(x.published for x in board.entries) else []),
            *[_fmt(e.metrics.get(m)) for m in board.metrics if m != primary],
            *[_fmt(e.unimodal.get(m, {}).get(primary)) for m in board.modalities],
            gain, *columns.balance_cells(e), f"{prof.seconds_per_epoch:.2f}" if prof else NONE,
            *columns.cost_cells(e), memory, _device_label(e)]


def _plot_links(links: dict[str, str]) -> str:
    return " · ".join(f"[{kind}]({path})" for kind, path in sorted(links.items())) or NONE


#: the board's own figures, as its Markdown shows them: kind -> alternative text
BOARD_FIGURES = (("modalities", "each modality alone and together"),
                 ("gain_vs_imbalance", "gain against imbalance degree"), ("gain_vs_cost", "gain against compute"))

FAKE_BANNER = ("**FAKE DATA** — trained on generated stand-in tensors (`--fake-data`) for one short epoch: a smoke "
               "test of the pipeline, not a result. `mmbench publish` refuses it.")


def is_fake(board: Leaderboard) -> bool:
    return any(e.task.fake for e in board.entries)


def render_markdown(board: Leaderboard, plots: dict[str, dict[str, str]] | None = None) -> str:
    """Ranked table of the methods, the references apart, then the failed/diverged/skipped entries. `plots`
    (entry id -> figure kind -> relative path; the key "" for the board's figures) adds links to figures."""
    plots = plots or {}
    primary = board.primary_metric
    done = finished(board)
    baseline = {(_encoders_label(e), _fusion_label(e)): e.metrics[primary].mean
                for e in done if e.balancer.name == board.baseline}
    sources = sorted({e.published_source for e in board.entries if e.published and e.published_source})
    columns = BalanceAndCost.of(board)
    headers = ["balancer", "encoders", "fusion", f"{primary} (%)",
               *(["paper (%)", "vs paper"] if sources else []),
               *[f"{m} (%)" for m in board.metrics if m != primary],
               *[f"{m} alone (%)" for m in board.modalities], f"gain vs {board.baseline or 'baseline'}",
               *columns.balance_headers(), "s/epoch", *columns.cost_headers(), "peak memory", "device",
               *(["plots"] if plots else [])]

    def table(entries: list[Entry], numbered: bool) -> str:
        rows = [([str(i)] if numbered else []) + _row(board, e, baseline, columns)
                + ([_plot_links(plots.get(e.id, {}))] if plots else []) for i, e in enumerate(entries, 1)]
        return tabulate(rows, headers=(["#"] if numbered else []) + headers, tablefmt="github",
                        disable_numparse=True)

    devices = sorted({e.profile.device.get("name") or e.profile.device.get("type", "?")
                      for e in board.entries if e.profile})
    dates = sorted(e.created_at[:10] for e in board.entries)
    methods = ranked(board)
    lines = [
        f"# {board.benchmark} leaderboard",
        "",
        *([FAKE_BANNER, ""] if is_fake(board) else []),
        f"Benchmark `{board.benchmark}` version `{board.benchmark_version}`{_task_credit(board)} · schema "
        f"`{board.schema_}` · "
        f"hardware: {', '.join(devices) or 'n/a'} · dates: {dates[0] if dates else 'n/a'}"
        f"{' – ' + dates[-1] if dates and dates[-1] != dates[0] else ''}",
        "",
        f"Test-split scores of the model selected on validation {primary} (mean ± std over seeds, in %). "
        f"'alone' columns: each modality's own prediction from that model; gain: points over "
        f"`{board.baseline or 'no baseline'}` with the same encoders and fusion ({NONE}: a method that forms its "
        "own predictions, without the cell's fusion).",
        *([f"'paper': the {primary} the reproduced paper reports for that method ({'; '.join(sources)}); "
           "'vs paper': ours minus the paper's, in points."] if sources else []),
        *([columns.legend()] if columns.legend() else []),
        "",
        tuning.protocol_line(board),
        "",
        table(methods, numbered=True) if methods else "_No successful entries._",
    ]
    board_figures = plots.get("", {})
    lines += [line for kind, alt in BOARD_FIGURES if kind in board_figures
              for line in ("", f"![{alt}]({board_figures[kind]})")]
    references = [e for e in done if e.reference]
    if references:
        lines += ["", "## References (not ranked)", "",
                  "Points of comparison rather than methods, e.g. `unimodal`: each modality's encoder trained alone.",
                  "", table(references, numbered=False)]
    lines += confidence.markdown_section(board, _label) + tuning.markdown_section(board, _label)
    flagged = anomalies(board)
    if flagged:
        lines += ["", "## To explain", "",
                  f"Rows far below `{board.baseline}` (more than {BELOW_BASELINE:g} points), with seeds more than "
                  f"{SEED_SPREAD:g} points apart, or that failed: each is a defect until a run shows otherwise.",
                  "", *[f"- {_text(line)}" for line in flagged]]
    problems = [e for e in board.entries if e.status != "ok"]
    if problems:
        problem_rows = [[e.balancer.name, _encoders_label(e), _fusion_label(e), e.status, _text(e.reason or "")]
                        for e in sorted(problems, key=lambda e: (e.status, e.balancer.name, _fusion_label(e)))]
        lines += ["", "## Not ranked", "",
                  tabulate(problem_rows, headers=["balancer", "encoders", "fusion", "status", "reason"],
                           tablefmt="github", disable_numparse=True)]
    return "\n".join(lines) + "\n"
