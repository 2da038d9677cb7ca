"""The prepare harness every dataset uses: raw media -> the prepared root, in parallel, resumable, reported.

A task lists its samples as `Item`s (an id, a label and the raw files it is made from) and gives a picklable
`process(item) -> {field: array}`. The harness

* sorts the items into bad before any file is read (`Item.error`: an annotation line that cannot be used),
  missing (a raw file absent) and present, and runs `process` on the present ones over `workers` processes with
  a progress bar; each result is written at once to `<root>/.staging/`, so a killed prepare resumes where it
  stopped (staged samples are not processed again; failed ones are retried);
* decodes every present sample even when too many are missing, so one pass finds every defect of a raw copy,
  and lists each missing and bad sample (under the file that is at fault) with its reason in
  `<root>/prepare-report.json`, written whatever happens; the console names the first few and the counts;
* fails when more than `MAX_BAD_FRACTION` of the samples are bad, and, without `partial`, when more than
  that fraction are missing — the message names the counts and the `--partial` flag;
* otherwise writes the kept samples as memory-mapped arrays (`mmbench.data.store`), their ids and labels to
  `samples.json`, and, when the items say which split the release puts them in, each split's kept ids to
  `splits.json`; the task then writes its manifest (`mmbench.data.prepared`), last.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mmbench.contract.errors import DataError
from mmbench.data.prepared import MANIFEST
from mmbench.files import atomic_write_json

#: the documented tolerance: prepare fails when more than 1 % of the listed samples are bad (or, without
#: --partial, missing); below it they are left out and listed in the report
MAX_BAD_FRACTION = 0.01
REPORT = "prepare-report.json"
SAMPLES = "samples.json"
#: each split's kept ids, for items that name their split (`Item.split`)
SPLITS = "splits.json"
ARRAYS = "arrays"
STAGING = ".staging"


#: how many missing and bad samples the console names (the report lists all)
SHOWN = 5

Label = int | tuple[int, ...]


@dataclass(frozen=True)
class Item:
    """One sample to prepare: its id (as the split lists name it), its label and the raw files it needs."""

    id: str
    #: the class id; a multi-label sample lists its class ids
    label: Label
    sources: tuple[Path, ...]
    #: anything else `process` needs (e.g. an event's start and end second)
    extra: tuple[Any, ...] = ()
    #: the split the release's own files put the sample in, where they say (then prepare records the splits)
    split: str | None = None
    #: why the sample cannot be made, known before any file is read (an annotation line that cannot be used);
    #: prepare reports it as bad and never calls `process` on it
    error: str | None = None

    @classmethod
    def bad_line(cls, path: Path, number: int, reason: str, split: str | None = None) -> Item:
        """A line of an annotation file that cannot be used, named `<file>:<line>`, with the reason."""
        return cls(f"{path.name}:{number}", -1, (path,), split=split, error=f"{path} line {number}: {reason}")


@dataclass
class Outcome:
    kept: list[Item] = field(default_factory=list)
    missing: list[dict[str, str]] = field(default_factory=list)
    bad: list[dict[str, str]] = field(default_factory=list)
    #: disagreements of the raw release's own annotation files with the shipped lists, and samples the protocol
    #: leaves out on purpose (reported, not fatal)
    annotations: list[dict[str, str]] = field(default_factory=list)

    @property
    def listed(self) -> int:
        return len(self.kept) + len(self.missing) + len(self.bad)

    @property
    def complete(self) -> bool:
        """Every listed sample was kept."""
        return not self.missing and not self.bad


def _staged(staging: Path, item_id: str) -> Path:
    return staging / (hashlib.sha1(item_id.encode()).hexdigest() + ".npz")


def _run_one(process: Callable[[Item], Mapping[str, np.ndarray]], item: Item,
             staging: Path) -> tuple[str, dict[str, str] | None]:
    """Process one item into its staging file; returns (id, None) or (id, its report entry: the file at fault
    and the reason it is bad)."""
    import torch

    torch.set_num_threads(1)
    try:
        arrays = process(item)
    except Exception as exc:  # noqa: BLE001 - any failure of one sample is that sample's reason, reported
        documented = type(exc).__name__ in ("MediaError", "DataError")  # a sample's own, explained problem
        reason = (str(exc) if documented else f"{type(exc).__name__}: {exc}") or traceback.format_exc(limit=1)
        path = getattr(exc, "path", None) or item.sources[0]
        return item.id, {"id": item.id, "path": str(path), "reason": reason}
    target = _staged(staging, item.id)
    tmp = target.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stub lets a mapping's keys meet allow_pickle
    os.replace(tmp, target)
    return item.id, None


def _check_staging(staging: Path, settings: Mapping[str, Any]) -> None:
    """Keep staged samples only when they were made with the same settings (raw folder, preprocessing)."""
    marker = staging / "settings.json"
    wanted = json.loads(json.dumps(settings, sort_keys=True, default=str))
    if staging.exists():
        try:
            same = json.loads(marker.read_text()) == wanted
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(staging)
    staging.mkdir(parents=True, exist_ok=True)
    if not marker.exists():
        atomic_write_json(marker, wanted)


def _process_all(items: Sequence[Item], process: Callable, staging: Path, workers: int,
                 console: Console) -> dict[str, dict[str, str]]:
    """Run `process` over the items not yet staged; returns {id: report entry} of the bad ones."""
    todo = [item for item in items if not _staged(staging, item.id).exists()]
    bad: dict[str, dict[str, str]] = {}
    if len(todo) < len(items):
        console.print(f"resuming: {len(items) - len(todo)} of {len(items)} samples already prepared")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("preparing", total=len(items), completed=len(items) - len(todo))
        if workers <= 1:
            results = (_run_one(process, item, staging) for item in todo)
            for item_id, entry in results:
                if entry is not None:
                    bad[item_id] = entry
                progress.advance(bar)
        else:
            with ProcessPoolExecutor(workers) as pool:
                futures = [pool.submit(_run_one, process, item, staging) for item in todo]
                for future in as_completed(futures):
                    item_id, entry = future.result()
                    if entry is not None:
                        bad[item_id] = entry
                    progress.advance(bar)
    return bad


def _write_report(root: Path, outcome: Outcome, partial: bool, failed: str | None) -> None:
    atomic_write_json(root / REPORT, {
        "listed": outcome.listed, "kept": len(outcome.kept), "missing_count": len(outcome.missing),
        "bad_count": len(outcome.bad), "partial": partial, "max_bad_fraction": MAX_BAD_FRACTION,
        "failed": failed, "missing": outcome.missing, "bad": outcome.bad, "annotations": outcome.annotations,
    })


def _missing_verdict(outcome: Outcome, partial: bool, task: str) -> str | None:
    """Why the samples found in the raw folder cannot make a prepared root, or None."""
    listed, missing = outcome.listed, len(outcome.missing)
    if missing == listed:
        return f"none of the {listed} listed samples was found in the raw folder"
    if not partial and missing > MAX_BAD_FRACTION * listed:
        return (f"{missing} of the {listed} listed samples are missing from the raw folder (more than "
                f"{MAX_BAD_FRACTION:.0%}): complete the copy, or prepare this subset with "
                f"`mmbench data prepare {task} --partial` (its results never rank with full-data ones)")
    return None


def _bad_verdict(outcome: Outcome) -> str | None:
    present, bad = len(outcome.kept) + len(outcome.bad), len(outcome.bad)
    if bad > MAX_BAD_FRACTION * present:
        return (f"{bad} of the {present} samples present are corrupt or not as released (more than "
                f"{MAX_BAD_FRACTION:.0%})")
    return None


def defects_summary(outcome: Outcome) -> str:
    """The missing and bad samples in a few lines: their counts and the first `SHOWN` of each (the report lists
    them all); empty when every listed sample was kept."""
    lines = []
    for kind, entries, describe in (
            ("missing", outcome.missing, lambda e: f"{e['id']} (no {e['path']})"),
            ("bad", outcome.bad, lambda e: f"{e['id']}: {e['reason']}")):
        if entries:
            lines.append(f"{len(entries)} of the {outcome.listed} listed samples are {kind}:")
            lines += [f"  {describe(e)}" for e in entries[:SHOWN]]
            if len(entries) > SHOWN:
                lines.append(f"  ... and {len(entries) - SHOWN} more")
    return "\n".join(lines)


def _sort(items: Sequence[Item], outcome: Outcome) -> list[Item]:
    """Put the items known bad and those with a raw file absent into `outcome`; returns the present ones."""
    present = []
    for item in items:
        absent = [str(p) for p in item.sources if not p.is_file()]
        if item.error:
            outcome.bad.append({"id": item.id, "path": str(item.sources[0]) if item.sources else "",
                                "reason": item.error})
        elif absent:
            outcome.missing.append({"id": item.id, "path": absent[0]})
        else:
            present.append(item)
    return present


def prepare_samples(root: Path, task: str, items: Sequence[Item], process: Callable[[Item], Mapping[str, np.ndarray]],
                    settings: Mapping[str, Any], partial: bool = False, workers: int = 1,
                    ragged: frozenset[str] = frozenset(), annotations: Sequence[Mapping[str, str]] = (),
                    console: Console | None = None) -> Outcome:
    """Prepare `items` into `root` (see the module docstring); raises `DataError` when prepare must fail."""
    root = Path(root)
    console = console or Console(stderr=True)
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)  # the root is unusable until the new manifest is written
    staging = root / STAGING
    _check_staging(staging, settings)
    outcome = Outcome(annotations=[dict(a) for a in annotations])
    present = _sort(items, outcome)
    if present:
        bad = _process_all(present, process, staging, max(1, workers), console)
        outcome.bad += [bad[i.id] for i in present if i.id in bad]
    failed_ids = {b["id"] for b in outcome.bad}
    outcome.kept = [i for i in present if i.id not in failed_ids]
    verdicts = [v for v in (_missing_verdict(outcome, partial, task), _bad_verdict(outcome)) if v]
    failed = "; ".join(verdicts) or None
    _write_report(root, outcome, partial, failed)
    summary = defects_summary(outcome)
    if failed:
        raise DataError(f"prepare {task} failed: {failed}. The report lists every sample with its reason: "
                        f"{root / REPORT}\n{summary}")
    if summary:
        console.print(f"{summary}\nthe report lists every one with its reason: {root / REPORT}", highlight=False,
                      markup=False, soft_wrap=True)
    _write_prepared(root, outcome, staging, ragged, list(dict.fromkeys(i.split for i in items if i.split)))
    return outcome


def _write_prepared(root: Path, outcome: Outcome, staging: Path, ragged: frozenset[str], splits: list[str]) -> None:
    """The kept samples' arrays, ids and labels from the staging folder, and each split's kept ids where the
    items name their `splits` (a split none of whose samples was kept stays, empty)."""
    staged = [_staged(staging, i.id) for i in outcome.kept]
    shapes = []
    dtypes: dict[str, str] = {}
    for path in staged:
        with np.load(path) as data:
            shapes.append({k: data[k].shape for k in data.files})
            dtypes = dtypes or {k: data[k].dtype.str for k in data.files}

    def load(i: int) -> dict[str, np.ndarray]:
        with np.load(staged[i]) as data:
            return {k: data[k] for k in data.files}

    write_arrays_checked(root / ARRAYS, shapes, dtypes, load, ragged)
    atomic_write_json(root / SAMPLES, {"ids": [i.id for i in outcome.kept], "labels": [i.label for i in outcome.kept]})
    if splits:
        atomic_write_json(root / SPLITS, {split: [i.id for i in outcome.kept if i.split == split] for split in splits})
    shutil.rmtree(staging)


def write_arrays_checked(directory: Path, shapes: list[dict[str, tuple]], dtypes: dict[str, str], load: Callable,
                         ragged: frozenset[str]) -> None:
    """`write_arrays`, after checking every sample has the same fields and (beyond ragged rows) shapes."""
    from mmbench.data.store import write_arrays

    first = shapes[0]
    for i, shape in enumerate(shapes):
        if set(shape) != set(first) or any(shape[k][int(k in ragged):] != first[k][int(k in ragged):] for k in first):
            raise DataError(f"prepared sample {i} has fields {shape}, unlike the first sample's {first}; "
                            "this is a bug of the task's processing")
    write_arrays(directory, len(shapes), shapes, dtypes, load, ragged)


def kept_hash(ids: Sequence[str]) -> str:
    """Identifies which samples a prepared root holds (enters the fingerprint when some were left out)."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def read_samples(root: Path) -> tuple[list[str], list[Label]]:
    """The kept ids and labels `samples.json` holds; a `DataError` when it is unreadable."""
    path = Path(root) / SAMPLES
    try:
        data = json.loads(path.read_text())
        return data["ids"], data["labels"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"cannot read {path} ({type(exc).__name__}: {exc}); prepare again") from None


def read_recorded_splits(root: Path) -> dict[str, list[str]]:
    """Each split's kept ids as prepare recorded them (`splits.json`, for items that named their split)."""
    path = Path(root) / SPLITS
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} ({type(exc).__name__}: {exc}); prepare again") from None
