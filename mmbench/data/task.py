"""`PreparedTask`: a task that reads a prepared root, with the prepared-data lifecycle written once.

A dataset subclass fills in its raw `layout` and `source`, its `classes`, `items(raw)` (what to prepare, from the
release), a picklable `processor()` (one item's raw files -> its fields), the `fields()` every sample has, the
split `lists()` and the `datasets(...)` that read the prepared rows. `PreparedTask` does the rest:

* `prepare(raw)`: checks the raw folder, lists the items, runs them through `mmbench.data.prepare.prepare_samples`
  (parallel, resumable, every missing and bad sample reported) and writes the manifest last;
* `manifest()` / `fingerprint()`: the root's manifest (a missing or malformed root names the raw layout and
  where the release is obtained) and the fingerprint of the preprocessing sections a cell reads;
* `splits()`: each split's rows, with a stratified validation share held out of train where the lists have no
  validation list (`HoldoutParams`); an empty split is a `DataError` that says why and what to do;
* `check()`: version, preprocessing, split-list hashes, readable arrays and samples, fields and shapes, counts,
  label range, every class present, split sizes against the lists or what prepare kept, empty splits and classes
  missing from a split (`mmbench.data.checks`), then the dataset's own checks (`sample_problems`).

The layout of a prepared root: `mmbench-prepared.json` (the manifest), `arrays/<field>.npy` (one memory-mapped
array per field; a ragged one with `<field>.offsets.npy`), `samples.json` (the kept ids and labels, in row
order), `splits.json` (each split's kept ids, when the release says which split a sample is in),
`prepare-report.json` (every missing and bad sample with its reason), and what a dataset adds (`lists/`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
from pydantic import Field
from torch.utils.data import Dataset

from mmbench.contract.errors import DataError
from mmbench.contract.task import Task
from mmbench.data import checks
from mmbench.data.prepare import (
    ARRAYS,
    SPLITS,
    Item,
    Label,
    Outcome,
    kept_hash,
    prepare_samples,
    read_recorded_splits,
    read_samples,
)
from mmbench.data.prepared import Manifest, read_manifest, write_manifest
from mmbench.data.splits import SUMS, SplitFiles, sha256, stratified_holdout
from mmbench.data.store import PreparedArrays
from mmbench.schema.params import Params

#: each split's (id, label) pairs
Lists = dict[str, list[tuple[str, Label]]]


class HoldoutParams(Params):
    """The parameters of the validation hold-out, for a dataset whose release has no validation list."""

    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="share of each class held out of the training "
                                                                 "list for validation, where the release has none")
    val_seed: int = Field(0, ge=0, description="seed of that hold-out (a data seed, not the run seed)")


class PreparedTask(Task):
    """A task whose data is an official release turned into a prepared root by `prepare` (see the module
    docstring for what a dataset fills in and what this class does)."""

    needs_data = True
    #: the raw folder `prepare` reads, shown when the raw folder or the prepared root is wrong
    layout: ClassVar[str] = ""
    #: class names in id order
    classes: ClassVar[tuple[str, ...]] = ()
    #: prepared fields with a variable number of rows per sample (e.g. a clip's frames)
    ragged: ClassVar[frozenset[str]] = frozenset()
    #: the folder of the shipped split lists and their SHA256SUMS (None: the lists come with the release and
    #: `import_lists` copies them into `<root>/lists`, or the release's own files say each sample's split)
    lists_folder: ClassVar[Path | None] = None
    #: the version of the prepared form `prepare` writes (None: the task's `version`). A new `version` that only
    #: changes how samples are read (the training protocol) keeps the old one here, so prepared roots stay valid
    #: and keep their fingerprint, while results under the new protocol never rank with the old
    prepared_version: ClassVar[str | None] = None

    @property
    def form_version(self) -> str:
        """The prepared form's version this task reads and writes."""
        return self.prepared_version or self.version

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # ------------------------------------------------------------------------ what a dataset fills in

    def items(self, raw: Path) -> list[Item]:
        """Every sample to prepare with the raw files it is made from; `self.raw_error` when `raw` is not the
        release. A line of the release's annotations that cannot be used is an `Item.bad_line`."""
        raise NotImplementedError

    def processor(self) -> Callable[[Item], Mapping[str, np.ndarray]]:
        """A picklable function: an item -> its prepared fields (it runs in worker processes)."""
        raise NotImplementedError

    def fields(self) -> dict[str, tuple[int, ...]]:
        """The prepared fields every sample has, each with the shape of one sample (of one row, if ragged)."""
        raise NotImplementedError

    def datasets(self, arrays: PreparedArrays, parts: dict[str, tuple[list[int], list[Label]]]) -> dict[str, Dataset]:
        """Each split's Dataset from its rows of the prepared arrays and their labels."""
        raise NotImplementedError

    def lists(self) -> Lists:
        """Each split's (id, label) pairs; without `val` where the release has no validation list (a stratified
        share of train is then held out, `HoldoutParams`). Default: the splits prepare recorded (`Item.split`)."""
        ids, labels = read_samples(self._root)
        label_of = dict(zip(ids, labels, strict=True))
        return {split: [(i, label_of[i]) for i in names] for split, names in read_recorded_splits(self._root).items()}

    def preprocessing(self) -> dict[str, Any]:
        """The parameters the prepared arrays depend on; they enter the fingerprint."""
        return {}

    def read_sections(self) -> list[str] | None:
        """The preprocessing sections of what these parameters read, for a root that holds several
        representations (None: every section). Only they enter the fingerprint."""
        return None

    def split_files(self) -> SplitFiles:
        """The split lists: shipped in `lists_folder`, or as `import_lists` copied them into `<root>/lists`."""
        return SplitFiles(self.lists_folder if self.lists_folder is not None else self._root / "lists")

    def split_hashes(self, raw: Path | None) -> dict[str, str] | None:
        """sha256 of what the splits come from; they enter the fingerprint. Default: the lists of `split_files`, or,
        for splits recorded from the release (`Item.split`), `splits.json` and the labels as prepare wrote them.
        With `raw` None (at check time): those the root or the task has now, or None when they exist only in the
        release."""
        if self.lists_folder is not None or (self._root / "lists" / SUMS).is_file():
            return self.split_files().hashes
        _, labels = read_samples(self._root)
        return {SPLITS: sha256((self._root / SPLITS).read_bytes()), "labels": sha256(json.dumps(labels).encode())}

    def import_lists(self, raw: Path) -> None:
        """Copy the split lists that come with the release into `<root>/lists`, with their SHA256SUMS."""

    def annotation_problems(self, raw: Path) -> list[dict[str, str]]:
        """Disagreements of the release's own annotation files with the lists, and samples the protocol leaves
        out on purpose: listed in the report, not fatal. Called after `items`."""
        return []

    def after_prepare(self, raw: Path, outcome: Outcome) -> None:
        """Write what else the root needs once the samples are prepared (before the manifest)."""

    def sample_problems(self, arrays: PreparedArrays, ids: list[str], labels: list[Label]) -> list[str]:
        """The checks of the prepared samples particular to this dataset."""
        return []

    def preprocessing_problem(self, manifest: Manifest) -> str | None:
        """Why a root prepared with `manifest.preprocessing` cannot serve these parameters, or None: each section
        these parameters read (`read_sections`, else every section `preprocessing` declares) must be what they
        would prepare."""
        wanted = json.loads(json.dumps(self.preprocessing()))
        sections = self.read_sections() or list(wanted)
        try:
            manifest.fingerprint_of(sections)
        except DataError as exc:
            return str(exc)
        have = {k: manifest.preprocessing[k] for k in sections}
        want = {k: wanted[k] for k in sections}
        if have == want:
            return None
        return (f"it was prepared with preprocessing {have}; these parameters need {want}: prepare again with them "
                "(into another --root to keep both), or use the parameters it was prepared with")

    # ------------------------------------------------------------------------- the lifecycle, once

    @property
    def _root(self) -> Path:
        if self.root is None:
            raise DataError(f"no prepared root given for {self.name!r}")
        return Path(self.root)

    def raw_error(self, raw: Path, what: str) -> DataError:
        """A raw folder that is not the release: what is wrong, the layout prepare reads, where it is obtained."""
        return DataError(f"{raw} {what}; the {self.name} raw folder must look like this:\n{self.layout}\n"
                         f"Obtain it from {self.source}")

    def read_manifest(self) -> Manifest:
        """The root's manifest as written; a missing or malformed root names the raw layout prepare reads."""
        try:
            return read_manifest(self.root, self.name, self.source)
        except DataError as exc:
            if not self.layout:
                raise
            raise DataError(f"{exc}\nThe raw folder it is prepared from:\n{self.layout}") from None

    def manifest(self) -> Manifest:
        """The root's manifest, once it can serve these parameters (`preprocessing_problem`)."""
        manifest = self.read_manifest()
        problem = self.preprocessing_problem(manifest)
        if problem:
            raise DataError(f"{self.root}: {problem}")
        return manifest

    def fingerprint(self) -> str:
        manifest = self.manifest()
        sections = self.read_sections()
        return manifest.fingerprint if sections is None else manifest.fingerprint_of(sections)

    def prepare(self, raw: Path, partial: bool = False, workers: int = 1) -> None:
        """Read the release in `raw`, prepare every sample into the root, and write the manifest last."""
        raw = Path(raw)
        if not raw.is_dir():
            raise self.raw_error(raw, "is not a folder")
        root = self._root
        self.import_lists(raw)
        items = self.items(raw)
        preprocessing = self.preprocessing()
        settings = {"raw": str(raw.resolve()), "version": self.form_version, "preprocessing": preprocessing}
        outcome = prepare_samples(root, self.name, items, self.processor(), settings, partial=partial, workers=workers,
                                  ragged=self.ragged, annotations=self.annotation_problems(raw))
        self.after_prepare(raw, outcome)
        kept = {i.id for i in outcome.kept}
        counts = {split: sum(i in kept for i, _ in pairs) for split, pairs in self.lists().items()}
        write_manifest(root, Manifest(task=self.name, version=self.form_version,
                                      split_hashes=self.split_hashes(raw) or {}, preprocessing=preprocessing,
                                      partial=partial, counts=counts, kept=self.kept_identity(outcome)))

    def kept_identity(self, outcome: Outcome) -> str | None:
        """What identifies the kept samples in the fingerprint when some listed ones were left out."""
        return None if outcome.complete else kept_hash([i.id for i in outcome.kept])

    def _parts(self, ids: list[str], lists: Lists) -> checks.Parts:
        """Each split's (row, label) pairs of the samples the root holds, validation held out where needed."""
        row_of = {sample: row for row, sample in enumerate(ids)}
        parts = {split: [(row_of[i], y) for i, y in pairs if i in row_of] for split, pairs in lists.items()}
        if "val" not in parts:
            fraction, seed = getattr(self.params, "val_fraction", None), getattr(self.params, "val_seed", 0)
            if fraction is None:
                raise DataError(f"task {self.name!r} has no validation list and no val_fraction parameter to hold "
                                "one out of train (give its Params the fields of HoldoutParams)")
            train = parts["train"]
            kept, held = stratified_holdout([cast(int, y) for _, y in train], fraction, seed)  # one label each
            parts["train"], parts["val"] = [train[p] for p in kept], [train[p] for p in held]
        return parts

    def splits(self) -> dict[str, Dataset]:
        self.manifest()
        arrays = PreparedArrays(self._root / ARRAYS)
        lists = self.lists()
        parts = self._parts(read_samples(self._root)[0], lists)
        for split in parts:
            why = checks.empty_split(split, parts, lists)
            if why:
                raise DataError(f"the prepared {self.name!r} root {self.root} holds no sample of the {split} split: "
                                f"{why}")
        return self.datasets(arrays, {split: ([r for r, _ in pairs], [y for _, y in pairs])
                                      for split, pairs in parts.items()})

    def check(self) -> list[str]:
        manifest = self.read_manifest()
        problems = []
        if manifest.version != self.form_version:
            problems.append(f"prepared by task version {manifest.version}; this one reads version "
                            f"{self.form_version}: prepare again")
        problem = self.preprocessing_problem(manifest)
        if problem:
            problems.append(problem)
        try:
            hashes = self.split_hashes(None)
            if hashes is not None and hashes != manifest.split_hashes:
                problems.append("prepared from other split lists than the ones this task reads (their sha256 "
                                "differ): prepare again")
            if not (self._root / ARRAYS).is_dir():
                raise DataError(f"{self._root / ARRAYS} is missing")
            arrays = PreparedArrays(self._root / ARRAYS)
            ids, labels = read_samples(self._root)
            lists = self.lists()
        except (OSError, ValueError, KeyError, DataError) as exc:
            return problems + [f"cannot read the prepared root: {exc}"]
        absent = sorted(set(self.fields()) - set(arrays.fields))
        if absent:
            return problems + [f"the prepared arrays lack {absent}: prepare again"]
        problems += checks.field_problems(arrays, self.fields(), len(ids))
        problems += checks.label_problems(labels, self.num_classes, manifest.partial)
        problems += self.sample_problems(arrays, ids, labels)
        problems += checks.size_problems(manifest, ids, lists)
        return problems + checks.split_problems(self._parts(ids, lists), lists, self.classes, self.metrics,
                                                not self.multilabel, manifest.partial)
