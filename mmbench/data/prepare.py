"""The prepare harness every dataset uses: raw media -> the prepared root, in parallel, resumable, reported.

A task lists its samples as `Item`s (an id and the raw files it is made from) and gives a picklable
`process(item) -> {field: array}`. The harness

* sorts the items into missing (a raw file absent) and present, and runs `process` on the present ones over
  `workers` processes with a progress bar; each result is written at once to `<root>/.staging/`, so a killed
  prepare resumes where it stopped (staged samples are not processed again; failed ones are retried);
* lists every missing and every bad (undecodable, or not what the release ships) sample with its reason in
  `<root>/prepare-report.json`, written whatever happens, and never drops one silently;
* fails when more than `MAX_BAD_FRACTION` of the samples are bad, and, without `partial`, when more than
  that fraction are missing — the message names the counts and the `--partial` flag;
* otherwise writes the kept samples as memory-mapped arrays (`mmbench.data.store`) and their ids and labels
  to `samples.json`; the task then writes its manifest (`mmbench.data.prepared`), last.
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
ARRAYS = "arrays"
STAGING = ".staging"


@dataclass(frozen=True)
class Item:
    """One sample to prepare: its id (as the split lists name it), its label and the raw files it needs."""

    id: str
    #: the class id; a multi-label sample lists its class ids
    label: int | tuple[int, ...]
    sources: tuple[Path, ...]
    #: anything else `process` needs (e.g. an event's start and end second)
    extra: tuple[Any, ...] = ()


@dataclass
class Outcome:
    kept: list[Item] = field(default_factory=list)
    missing: list[dict[str, str]] = field(default_factory=list)
    bad: list[dict[str, str]] = field(default_factory=list)
    #: disagreements of the raw release's own annotation files with the shipped lists (reported, not fatal)
    annotations: list[dict[str, str]] = field(default_factory=list)

    @property
    def listed(self) -> int:
        return len(self.kept) + len(self.missing) + len(self.bad)


def _staged(staging: Path, item_id: str) -> Path:
    return staging / (hashlib.sha1(item_id.encode()).hexdigest() + ".npz")


def _run_one(process: Callable[[Item], Mapping[str, np.ndarray]], item: Item, staging: Path) -> tuple[str, str | None]:
    """Process one item into its staging file; returns (id, None) or (id, the reason it is bad)."""
    import torch

    torch.set_num_threads(1)
    try:
        arrays = process(item)
    except Exception as exc:  # noqa: BLE001 - any failure of one sample is that sample's reason, reported
        documented = type(exc).__name__ in ("MediaError", "DataError")  # a sample's own, explained problem
        reason = str(exc) if documented else f"{type(exc).__name__}: {exc}"
        return item.id, reason or traceback.format_exc(limit=1)
    target = _staged(staging, item.id)
    tmp = target.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
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
                 console: Console) -> dict[str, str]:
    """Run `process` over the items not yet staged; returns {id: reason} of the bad ones."""
    todo = [item for item in items if not _staged(staging, item.id).exists()]
    bad: dict[str, str] = {}
    if len(todo) < len(items):
        console.print(f"resuming: {len(items) - len(todo)} of {len(items)} samples already prepared")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("preparing", total=len(items), completed=len(items) - len(todo))
        if workers <= 1:
            results = (_run_one(process, item, staging) for item in todo)
            for item_id, reason in results:
                if reason is not None:
                    bad[item_id] = reason
                progress.advance(bar)
        else:
            with ProcessPoolExecutor(workers) as pool:
                futures = [pool.submit(_run_one, process, item, staging) for item in todo]
                for future in as_completed(futures):
                    item_id, reason = future.result()
                    if reason is not None:
                        bad[item_id] = reason
                    progress.advance(bar)
    return bad


def _write_report(root: Path, outcome: Outcome, partial: bool, failed: str | None) -> None:
    atomic_write_json(root / REPORT, {
        "listed": outcome.listed, "kept": len(outcome.kept), "missing_count": len(outcome.missing),
        "bad_count": len(outcome.bad), "partial": partial, "max_bad_fraction": MAX_BAD_FRACTION,
        "failed": failed, "missing": outcome.missing, "bad": outcome.bad, "annotations": outcome.annotations,
    })


def _missing_verdict(outcome: Outcome, partial: bool, task: str) -> str | None:
    """Why the samples found in the raw folder cannot make a prepared root, or None (before decoding any)."""
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
    present = []
    for item in items:
        absent = [str(p) for p in item.sources if not p.is_file()]
        if absent:
            outcome.missing.append({"id": item.id, "path": absent[0]})
        else:
            present.append(item)
    outcome.kept = present
    failed = _missing_verdict(outcome, partial, task)
    if not failed:
        bad = _process_all(present, process, staging, max(1, workers), console)
        outcome.bad = [{"id": i.id, "path": str(i.sources[0]), "reason": bad[i.id]} for i in present if i.id in bad]
        outcome.kept = [i for i in present if i.id not in bad]
        failed = _bad_verdict(outcome)
    _write_report(root, outcome, partial, failed)
    if failed:
        raise DataError(f"prepare {task} failed: {failed}. The report lists every sample: {root / REPORT}")
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
    shutil.rmtree(staging)
    return outcome


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


def raw_error(task: Any, raw: Path, what: str) -> DataError:
    """A raw folder that is not the release: what is wrong, the layout `task.layout` prepare reads, and where the
    release is obtained (`task.source`)."""
    return DataError(f"{raw} {what}; the {task.name} raw folder must look like this:\n{task.layout}\n"
                     f"Obtain it from {task.source}")


def checked_raw(task: Any, raw: Path) -> Path:
    """`raw` as a path, once it is a folder and `task` has a prepared root to write into."""
    raw = Path(raw)
    if not raw.is_dir():
        raise raw_error(task, raw, "is not a folder")
    if task.root is None:
        raise DataError(f"no prepared root given for {task.name!r}")
    return raw


def kept_hash(ids: Sequence[str]) -> str:
    """Identifies which samples a prepared root holds (enters the fingerprint when some were left out)."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def read_samples(root: Path) -> tuple[list[str], list[int]]:
    data = json.loads((Path(root) / SAMPLES).read_text())
    return data["ids"], data["labels"]


def write_prepared_manifest(root: Path, task: str, version: str, split_hashes: Mapping[str, str],
                            preprocessing: Mapping[str, Any], partial: bool, outcome: Outcome,
                            splits: Mapping[str, Sequence[str]]) -> None:
    """The manifest of a root `prepare_samples` filled: the kept samples counted per split (`splits`: each
    split's listed ids), and the hash of the kept ids when some listed samples were left out."""
    from mmbench.data.prepared import Manifest, write_manifest

    kept = {i.id for i in outcome.kept}
    counts = {split: sum(i in kept for i in ids) for split, ids in splits.items()}
    complete = not outcome.missing and not outcome.bad
    write_manifest(Path(root), Manifest(task=task, version=version, split_hashes=dict(split_hashes),
                                        preprocessing=dict(preprocessing), partial=partial, counts=counts,
                                        kept=None if complete else kept_hash(sorted(kept))))


def split_size_problems(partial: bool, left_out: bool, counts: Mapping[str, int], kept: set[str],
                        splits: Mapping[str, Sequence[str]]) -> list[str]:
    """Split sizes of a prepared root against its lists (`splits`: each split's listed ids): a partial root,
    or one with samples left out, must hold what prepare kept (`counts`); a full one every listed sample."""
    problems = []
    for split, ids in splits.items():
        have = sum(i in kept for i in ids)
        if partial or left_out:
            if have != counts.get(split):
                problems.append(f"{split}: {have} samples, but prepare kept {counts.get(split)}")
        elif have != len(ids):
            problems.append(f"{split}: {have} samples, the shipped list names {len(ids)} "
                            f"({len(ids) - have} missing; see prepare-report.json)")
    return problems


def split_rows(root: Path, task: str, lists: Mapping[str, Sequence[tuple[str, int]]], val_fraction: float,
               val_seed: int) -> dict[str, list[tuple[int, int]]]:
    """Each split's (row of the prepared arrays, label) for the listed (id, label) pairs the root holds. Without
    a `val` list a stratified `val_fraction` of train is held out (`val_seed`); an empty split is a `DataError`."""
    from mmbench.data.splits import stratified_holdout

    ids, _ = read_samples(Path(root))
    row_of = {sample: row for row, sample in enumerate(ids)}
    parts = {split: [(row_of[i], y) for i, y in pairs if i in row_of] for split, pairs in lists.items()}
    if "val" not in parts:
        train = parts["train"]
        kept, held = stratified_holdout([y for _, y in train], val_fraction, val_seed)
        parts["train"], parts["val"] = [train[p] for p in kept], [train[p] for p in held]
    for split, pairs in parts.items():
        if not pairs:
            raise DataError(f"the prepared {task!r} root {root} holds no sample of the {split} split; prepare it "
                            f"again from a copy that has some")
    return parts
