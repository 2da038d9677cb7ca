"""Figures written next to a leaderboard: each entry's learning curves and coefficient trajectories; the board's
chart of every entry's per-modality score (the imbalance at a glance) and its gain against imbalance degree and
against compute. Linked from the Markdown.

matplotlib is imported here only, with its file-only backend, so nothing else pays for it. The figures are
drawn side by side in processes forked from this one (one per CPU), which inherit its matplotlib: drawing, not
the board, is most of what a run does after its last cell.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from mmbench.cpus import usable_cpus
from mmbench.lifetime import end_with_parent
from mmbench.reporting.markdown import finished, ranked
from mmbench.schema.leaderboard import Entry, Leaderboard
from mmbench.schema.results import CellResult

DPI = 80
#: the per-entry figures' margins in inches: room for tick labels (left, bottom), the suptitle and an axes
#: title (top), and between panels for the next panel's title and this one's axis label
MARGINS = {"left": 0.55, "right": 0.15, "bottom": 0.45, "top": 0.65, "between_columns": 0.55, "between_rows": 0.75}


def pyplot():
    """matplotlib's pyplot on the file-only backend (imported on the first call, about half a second)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panels(rows: int, columns: int, panel_size: tuple[float, float]):
    """A figure of `rows` x `columns` panels with fixed margins. Not `tight_layout`: it draws every figure an extra
    time to measure it, most of a figure's cost (measured in `benchmarks/README.md`). Few ticks, whole epochs."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    m = MARGINS
    width = m["left"] + m["right"] + columns * panel_size[0] + (columns - 1) * m["between_columns"]
    height = m["top"] + m["bottom"] + rows * panel_size[1] + (rows - 1) * m["between_rows"]
    fig, axes = plt.subplots(rows, columns, figsize=(width, height), dpi=DPI, squeeze=False)
    fig.subplots_adjust(left=m["left"] / width, right=1 - m["right"] / width, bottom=m["bottom"] / height,
                        top=1 - m["top"] / height, wspace=m["between_columns"] / panel_size[0],
                        hspace=m["between_rows"] / panel_size[1])
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.tick_params(labelsize="small")
    return plt, fig, axes


def _curves(results: list[CellResult], primary: str, path: Path) -> None:
    """Training loss and validation primary metric per epoch, one line per seed."""
    plt, fig, axes = _panels(1, 2, (3.4, 2.2))
    loss_ax, metric_ax = axes[0]
    for r in results:
        epochs = [h.epoch for h in r.history]
        loss_ax.plot(epochs, [h.train_loss for h in r.history], marker=".", label=f"seed {r.seed}")
        metric_ax.plot(epochs, [h.val.metrics.get(primary) if h.val else None for h in r.history], marker=".",
                       label=f"seed {r.seed}")
    loss_ax.set(title="training loss", xlabel="epoch")
    metric_ax.set(title=f"validation {primary}", xlabel="epoch")
    metric_ax.legend(fontsize="small")
    fig.suptitle(results[0].label().rsplit(" seed=", 1)[0], fontsize="medium")
    fig.savefig(path)
    plt.close(fig)


SEED_STYLES = ("-", "--", ":", "-.")


def _coefficients(results: list[CellResult], path: Path) -> bool:
    """The balancer's coefficients per epoch, grouped by name before the dot (k.audio and k.visual share axes):
    one colour per coefficient, one line style per seed. False when the balancer reports none."""
    groups: dict[str, set[str]] = defaultdict(set)
    for r in results:
        for h in r.history:
            for name in h.coefficients:
                groups[name.split(".", 1)[0]].add(name)
    if not groups:
        return False
    columns = min(4, len(groups))
    rows = -(-len(groups) // columns)
    plt, fig, axes = _panels(rows, columns, (2.6, 1.8))
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    for ax, (group, names) in zip(axes.flat, sorted(groups.items())):
        for i, name in enumerate(sorted(names)):
            for s, r in enumerate(results):
                series = [(h.epoch, h.coefficients.get(name)) for h in r.history]
                ax.plot(*zip(*series), color=f"C{i}", linestyle=SEED_STYLES[s % len(SEED_STYLES)], marker=".",
                        label=name if s == 0 else None)
        ax.set(title=group, xlabel="epoch")
        if len(names) > 1:
            ax.legend(fontsize="x-small")
    fig.suptitle(f"{results[0].balancer.label()}: coefficients per epoch (line style = seed "
                 f"{', '.join(str(r.seed) for r in results)})", fontsize="medium")
    fig.savefig(path)
    plt.close(fig)
    return True


def _fusion_name(entry: Entry) -> str:
    return entry.fusion.name if entry.fusion else "own predictions"


def _entry_label(entry: Entry) -> str:
    return entry.balancer.label() + (" (reference)" if entry.reference else "")


def _modalities(board: Leaderboard, path: Path) -> None:
    """Per entry: the multimodal score and each modality's own score (mean over seeds), one panel per fusion,
    methods in rank order with the references last. Horizontal bars, so that an entry's label (a tuned
    balancer's parameters included) reads on one line beside them."""
    plt = pyplot()
    primary = board.primary_metric
    panels: dict[str, list[Entry]] = defaultdict(list)
    for entry in [*ranked(board), *(e for e in finished(board) if e.reference)]:
        panels[_fusion_name(entry)].append(entry)
    bars = ["multimodal", *board.modalities]
    columns = min(2, len(panels))
    rows = -(-len(panels) // columns)
    tallest = max(len(entries) for entries in panels.values())
    # inches: each panel's size; room for the entries' labels left of a panel, for the title and legend above
    # the panels, the axis label below, and between rows of panels
    panel = (4.5, (0.12 * len(bars) + 0.15) * tallest)
    label, top, bottom, gap = 2.0, 1.0, 0.6, 0.8
    width, height = columns * (label + panel[0]) + 0.3, top + bottom + rows * panel[1] + (rows - 1) * gap
    fig, axes = plt.subplots(rows, columns, figsize=(width, height), dpi=DPI, squeeze=False)
    fig.subplots_adjust(left=label / width, right=1 - 0.3 / width, top=1 - top / height, bottom=bottom / height,
                        wspace=label / panel[0], hspace=gap / panel[1])
    bar = 0.8 / len(bars)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (fusion, entries) in zip(axes.flat, panels.items()):
        for i, name in enumerate(bars):
            values = [(e.metrics if name == "multimodal" else e.unimodal.get(name, {})).get(primary) for e in entries]
            ax.barh([y + i * bar for y in range(len(entries))],
                    [v.mean * 100 if v and v.mean else 0 for v in values], bar, label=name)
        ax.set_yticks([y + 0.4 - bar / 2 for y in range(len(entries))])
        ax.set_yticklabels([_entry_label(e) for e in entries])
        ax.set_ylim(tallest - 0.5, -0.5)  # the board's order, top to bottom; every panel on one scale
        ax.set_xlim(0, 100)
        ax.set(xlabel=f"{primary} (%)", title=f"fusion: {fusion}")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{board.benchmark}: each modality alone and together, methods in rank order", fontsize="large",
                 y=1 - 0.1 / height, va="top")
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 1 - 0.4 / height),
               ncols=len(bars), frameon=False)
    fig.savefig(path, bbox_inches="tight")  # the canvas grows to the labels and the legend
    plt.close(fig)


def gain(board: Leaderboard, entry: Entry) -> tuple[float, float, float] | None:
    """The entry's gain over the baseline with the same encoders and fusion, in points, with its 95 % interval
    (the interval is the gain itself with one seed); 0 for the baseline; None without a comparison."""
    if entry.balancer.name == board.baseline:
        return 0.0, 0.0, 0.0
    c = entry.vs_baseline
    if c is None:
        return None
    low, high = (c.low, c.high) if c.low is not None and c.high is not None else (c.delta, c.delta)
    return c.delta * 100, low * 100, high * 100


def _place_labels(ax, points: list[tuple[str, float, float, str]], step: float = 11.0) -> None:
    """Name each point beside it, moving a name down (in steps of a text line, in pixels, with a line back to its
    point) while it would overlap one already placed, so clustered points stay readable."""
    placed: list[tuple[float, float]] = []
    for text, x, y, colour in sorted(points, key=lambda p: (-p[2], p[1])):
        px, py = ax.transData.transform((x, y))
        offset = 3.0
        while any(abs(px - qx) < 7 * len(text) and abs(py + offset - qy) < step for qx, qy in placed):
            offset -= step
        placed.append((px, py + offset))
        moved = {"arrowprops": {"arrowstyle": "-", "color": colour, "linewidth": 0.5}} if offset < 0 else {}
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(4 + 12 * (offset < 0), offset),
                    fontsize="small", color=colour, **moved)


def _gain_scatter(board: Leaderboard, path: Path, x_of: Callable[[Entry], float | None], xlabel: str,
                  title: str, log: bool = False) -> bool:
    """Each method's gain over the baseline (with its seed interval, clipped to the axes: with few seeds it can
    be far wider than the gains) against `x_of(entry)`, one colour per fusion, each point named. False (nothing
    drawn) when no method has both numbers."""
    from matplotlib.ticker import FuncFormatter

    points = [(e, x, g) for e in ranked(board) if (x := x_of(e)) is not None and (g := gain(board, e)) is not None]
    if not points:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 6.5), dpi=DPI)
    fusions = sorted({_fusion_name(e) for e, _, _ in points})
    names = []
    for i, fusion in enumerate(fusions):
        mine = [(e, x, g) for e, x, g in points if _fusion_name(e) == fusion]
        xs, ys = [x for _, x, _ in mine], [g[0] for _, _, g in mine]
        errors = [[g[0] - g[1] for _, _, g in mine], [g[2] - g[0] for _, _, g in mine]]
        ax.errorbar(xs, ys, yerr=errors, fmt="o", color=f"C{i}", ecolor=f"C{i}", alpha=0.8, capsize=2, label=fusion)
        names += [(e.balancer.label(), x, g[0], f"C{i}") for e, x, g in mine]
    gains = [g[0] for _, _, g in points]
    pad = 0.15 * (max(gains) - min(gains)) + 1.0
    ax.set_ylim(min(gains) - pad, max(gains) + pad)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    if log:
        ax.set_xscale("log")
        ratio = FuncFormatter(lambda value, _: f"{value:g}×")
        ax.xaxis.set_major_formatter(ratio)
        ax.xaxis.set_minor_formatter(ratio)
    ax.set(xlabel=xlabel, ylabel=f"gain vs {board.baseline} ({board.primary_metric}, points; 95 % seed interval)",
           title=title)
    ax.legend(title="fusion", fontsize="small")
    ax.grid(alpha=0.3)
    _place_labels(ax, names)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return True


def _imbalance_degree(entry: Entry) -> float | None:
    return entry.contribution.imbalance_degree.mean if entry.contribution else None


def _flops_ratio(entry: Entry) -> float | None:
    return entry.cost.flops_vs_baseline if entry.cost else None


def _entry_figures(entry_id: str, runs: list[CellResult], primary: str, folder: Path) -> tuple[str, dict[str, Path]]:
    """One entry's curves and, when its balancer reports coefficients, their trajectories."""
    files = {"curves": folder / f"{entry_id}-curves.png"}
    _curves(runs, primary, files["curves"])
    if _coefficients(runs, folder / f"{entry_id}-coefficients.png"):
        files["coefficients"] = folder / f"{entry_id}-coefficients.png"
    return entry_id, files


def _board_figures(board: Leaderboard, folder: Path) -> tuple[str, dict[str, Path]]:
    """The chart of each modality alone and together, and, where the board has their numbers, gain against
    imbalance degree and gain against compute."""
    files = {"modalities": folder / "modalities.png"}
    _modalities(board, files["modalities"])
    if _gain_scatter(board, folder / "gain_vs_imbalance.png", _imbalance_degree,
                     "imbalance degree (largest minus smallest modality share of the Shapley contributions)",
                     f"{board.benchmark}: does the gain come with balance?"):
        files["gain_vs_imbalance"] = folder / "gain_vs_imbalance.png"
    if _gain_scatter(board, folder / "gain_vs_cost.png", _flops_ratio,
                     f"FLOPs of a training step / {board.baseline}'s (log scale)",
                     f"{board.benchmark}: what the gain costs", log=True):
        files["gain_vs_cost"] = folder / "gain_vs_cost.png"
    return "", files


def _draw(job: tuple[Callable, tuple]) -> tuple[str, dict[str, Path]]:
    function, args = job
    return function(*args)


def drawing_processes(jobs: int) -> int:
    """Processes to fork for `jobs` figures: one per CPU this process may use, none (draw here) with one CPU or
    one job, or where forking is unavailable or unsafe (another thread, such as Ray's client, may hold a lock)."""
    if "fork" not in multiprocessing.get_all_start_methods() or threading.active_count() > 1:
        return 0
    cpus = usable_cpus()
    return min(cpus, jobs) if cpus > 1 and jobs > 1 else 0


def write_plots(board: Leaderboard, results: list[CellResult], folder: Path,
                processes: int | None = None) -> dict[str, dict[str, Path]]:
    """Write the figures into `folder`; returns entry id -> {"curves": path, "coefficients": path} and the
    board's charts under the key "" ({"modalities": path, and "gain_vs_imbalance", "gain_vs_cost" when drawn}).
    `processes`: how many forked processes draw them (default `drawing_processes`; 0 draws them here)."""
    folder.mkdir(parents=True, exist_ok=True)
    by_entry: dict[str, list[CellResult]] = defaultdict(list)
    for r in results:
        if r.status == "ok" and r.history:
            by_entry[r.entry_id].append(r)
    jobs: list[tuple[Callable, tuple]] = []
    if any(e.status == "ok" for e in board.entries):
        jobs.append((_board_figures, (board, folder)))  # first: the slowest (drawn twice, to fit its labels)
    for entry_id, runs in by_entry.items():
        jobs.append((_entry_figures, (entry_id, sorted(runs, key=lambda r: r.seed), board.primary_metric, folder)))
    processes = drawing_processes(len(jobs)) if processes is None else processes
    if not processes:
        return dict(map(_draw, jobs))
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork"), initializer=end_with_parent,
                             initargs=(os.getpid(),)) as pool:
        return dict(pool.map(_draw, jobs))
