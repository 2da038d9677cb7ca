"""Publishing a run: its cell results join the published ones, and the leaderboard is rebuilt from all of them.

A published benchmark is two files: `<benchmark>.cells.jsonl`, every published cell result (one per line,
sorted), and `<benchmark>.json`/`.md`, the leaderboard aggregated from them. Publishing never removes evidence:
a run's cells are added; a cell published before is kept as it is when the run reproduces it, and replaced (and
said so) only when the run's outcome differs. A run with fewer seeds therefore adds to an entry instead of
replacing it, and re-publishing the same results changes nothing, timings included. Entries of another
benchmark version are never mixed in: publishing into such a file is refused. The folder's summary over every
board (`README.md`) and its method pages (`methods/<name>.md`) are rebuilt each time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from mmbench.files import atomic_write_text
from mmbench.reporting.leaderboard import LeaderboardError, aggregate, read, write
from mmbench.reporting.markdown import is_fake
from mmbench.reporting.summary import write_summary
from mmbench.rundir import RunStore
from mmbench.schema.results import CellResult

CELLS_SUFFIX = ".cells.jsonl"


@dataclass
class Published:
    """What publishing one benchmark did."""

    board: Path
    added: int = 0
    replaced: list[str] = field(default_factory=list)
    unchanged: int = 0

    def summary(self) -> str:
        parts = [f"{self.added} cell(s) added", f"{len(self.replaced)} replaced", f"{self.unchanged} unchanged"]
        line = f"{self.board}: " + ", ".join(parts)
        if self.replaced:
            line += " (outcome differs from the published one: " + ", ".join(self.replaced) + ")"
        return line


def _read_cells(path: Path) -> dict[str, CellResult]:
    if not path.exists():
        return {}
    cells = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            result = CellResult.model_validate_json(line)
        except ValidationError as exc:
            raise LeaderboardError(f"{path} line {number} is not a cell result: {exc.errors()[0]['msg']}") from None
        cells[result.cell_id] = result
    return cells


def _same_outcome(a: CellResult, b: CellResult) -> bool:
    return a.status == b.status and a.test == b.test and a.reason == b.reason and a.val == b.val  # trials: val only


def publish(run_dir: Path, target_dir: Path, plots: bool = False) -> list[Published]:
    """Add a run's cell results to the published ones in `target_dir` and rebuild each affected leaderboard
    (with its figures when `plots`)."""
    results = RunStore(run_dir).results()
    if not results:
        raise LeaderboardError(f"no cell results in {Path(run_dir) / 'cells'}; run the grid first")
    done = []
    for board in aggregate(results):
        if is_fake(board):
            raise LeaderboardError(f"{run_dir} was trained on fake data (--fake-data): a smoke test is never "
                                   "published; run the grid on the prepared data")
        target = Path(target_dir) / f"{board.benchmark}.json"
        cells_path = Path(target_dir) / f"{board.benchmark}{CELLS_SUFFIX}"
        if target.exists():
            current = read(target)
            if current.benchmark_version != board.benchmark_version:
                raise LeaderboardError(
                    f"{target} holds benchmark version {current.benchmark_version!r}; the run is "
                    f"{board.benchmark_version!r}. Entries of different versions are never ranked together: "
                    "publish to another directory or move the old files aside.")
            if not cells_path.exists():
                raise LeaderboardError(f"{target} was published without its cell results ({cells_path.name}), so "
                                       "the run cannot be merged into it; move it aside and publish again")
        published = _read_cells(cells_path)
        report = Published(target)
        for result in results:
            if (result.benchmark, result.benchmark_version) != (board.benchmark, board.benchmark_version):
                continue
            old = published.get(result.cell_id)
            if old is None:
                report.added += 1
            elif _same_outcome(old, result):
                report.unchanged += 1
                continue
            else:
                report.replaced.append(result.label())
            published[result.cell_id] = result
        lines = [json.dumps(published[k].to_json(), sort_keys=True, allow_nan=False) for k in sorted(published)]
        atomic_write_text(cells_path, "\n".join(lines) + "\n")
        [merged] = aggregate(list(published.values()))
        write(merged, target, list(published.values()) if plots else None)
        done.append(report)
    write_summary(Path(target_dir))
    return done
