"""The checks `PreparedTask.check` runs on every prepared root, each returning the problems it finds as sentences
that say what is wrong and what to do: fields and shapes, labels, split sizes against the lists, and splits a
training run cannot use (empty, or without a class the metrics average over)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

from mmbench.data.prepare import Label
from mmbench.data.prepared import Manifest
from mmbench.data.store import PreparedArrays

#: each split's (row of the prepared arrays, label) pairs
Parts = dict[str, list[tuple[int, Label]]]


def field_problems(arrays: PreparedArrays, fields: Mapping[str, tuple[int, ...]], count: int) -> list[str]:
    """Every expected field (all present) of its per-sample shape (a ragged field: of its row shape), with one
    entry per sample id."""
    problems = []
    for field, shape in fields.items():
        have = tuple(arrays.fields[field].shape[1:])
        if have != tuple(shape):
            problems.append(f"{field} is {have} per sample, expected {tuple(shape)}: prepare again")
        samples = len(arrays.offsets[field]) - 1 if field in arrays.offsets else len(arrays.fields[field])
        if samples != count:
            problems.append(f"{samples} prepared samples but {count} sample ids ({field}; samples.json)")
            break
    return problems


def classes_of(label: Label) -> list[int]:
    """The class ids of a label: one for a single-label sample, its list for a multi-label one."""
    return [int(c) for c in label] if isinstance(label, (list, tuple)) else [int(label)]


def label_problems(labels: Sequence[Label], num_classes: int, partial: bool) -> list[str]:
    """Labels within 0..C-1; every class present in a full copy."""
    seen = {c for label in labels for c in classes_of(label)}
    outside = sorted(c for c in seen if not 0 <= c < num_classes)
    problems = [f"labels {outside} outside 0..{num_classes - 1}"] if outside else []
    present = len(seen) - len(outside)
    if not partial and present != num_classes:
        problems.append(f"{present} classes present, expected {num_classes}")
    return problems


def size_problems(manifest: Manifest, ids: Sequence[str],
                  lists: Mapping[str, Sequence[tuple[str, Label]]]) -> list[str]:
    """Split sizes of a prepared root against its lists: a partial root, or one with samples left out, must hold
    what prepare kept (`manifest.counts`, where it counted these lists); a full one every listed sample."""
    kept = set(ids)
    problems = []
    for split, pairs in lists.items():
        have = sum(i in kept for i, _ in pairs)
        if manifest.partial or manifest.kept is not None:
            if set(manifest.counts) == set(lists) and have != manifest.counts.get(split):
                problems.append(f"{split}: {have} samples, but prepare kept {manifest.counts.get(split)}")
        elif have != len(pairs):
            problems.append(f"{split}: {have} samples, the list names {len(pairs)} ({len(pairs) - have} missing; "
                            "see prepare-report.json)")
    return problems


def empty_split(split: str, parts: Parts, lists: Mapping[str, Sequence[tuple[str, Label]]]) -> str | None:
    """Why a split holds no sample and what to do, or None when it holds some."""
    if parts[split]:
        return None
    if split == "val" and "val" not in lists:
        train = parts["train"]
        if not train:
            return ("it is held out of train (the lists have no validation list), and train is empty too; prepare "
                    "a copy that holds training samples")
        return (f"it is held out of train (the lists have no validation list), and each class among the {len(train)} "
                "training samples has a single one, which stays in train; prepare a copy with at least two training "
                "samples of some class")
    listed = len(lists.get(split, ()))
    if not listed:  # splits recorded from the release hold only the kept samples
        return ("no sample of it is in the root (its samples were missing or bad when it was prepared: "
                "prepare-report.json); prepare again from a copy that holds some of them")
    return (f"none of the {listed} samples its list names is in the root (they were missing or bad when it was "
            "prepared: prepare-report.json); prepare again from a copy that holds some of them")


def split_problems(parts: Parts, lists: Mapping[str, Sequence[tuple[str, Label]]], classes: Sequence[str],
                   metrics: Sequence[str], single_label: bool, partial: bool) -> list[str]:
    """Splits a training run cannot use: an empty one, and, in a full single-label root scored by a macro-averaged
    metric, a class absent from a split the metrics are computed on (validation, test)."""
    problems = []
    for split in parts:
        why = empty_split(split, parts, lists)
        if why:
            problems.append(f"the {split} split is empty: {why}")
    macro = [m for m in metrics if "macro" in m]
    if partial or not single_label or not macro:
        return problems
    for split in ("val", "test"):
        absent = sorted(set(range(len(classes))) - {cast(int, y) for _, y in parts.get(split, ())})  # single-label
        if parts.get(split) and absent:
            names = ", ".join(f"{classes[c]} ({c})" for c in absent[:5]) + (" ..." if len(absent) > 5 else "")
            problems.append(f"the {split} split has no sample of {len(absent)} class(es): {names}; the macro-averaged "
                            f"metrics ({', '.join(macro)}) count such a class as 0 (its AP, or its F1 whenever it is "
                            "predicted): prepare from a copy where every class is in every split")
    return problems
