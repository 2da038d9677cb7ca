"""The prepared form: one memory-mapped `.npy` array per field, read without copying or decoding.

A field is either fixed-shape, `<field>.npy` of shape (N, *shape), or ragged (a variable number of rows per
sample, e.g. the frames of a clip): `<field>.npy` of shape (total rows, *shape) plus `<field>.offsets.npy`
(N + 1 int64 row offsets). Memory-mapped arrays were measured against Hugging Face `datasets` (Arrow) for what
a training step consumes; the figures are in `benchmarks/README.md`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

OFFSETS = ".offsets.npy"


def write_arrays(directory: Path, count: int, shapes: Sequence[Mapping[str, tuple[int, ...]]],
                 dtypes: Mapping[str, str], load: Callable[[int], Mapping[str, np.ndarray]],
                 ragged: frozenset[str] = frozenset()) -> None:
    """Write `count` samples (`load(i)` gives sample i's fields; `shapes[i]` their shapes) into `directory`.

    Written into a sibling folder first and renamed into place, so a killed write leaves no half array.
    """
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    arrays: dict[str, np.ndarray] = {}
    offsets: dict[str, np.ndarray] = {}
    for field, dtype in dtypes.items():
        first = shapes[0][field]
        if field in ragged:
            rows = np.array([s[field][0] for s in shapes], dtype=np.int64)
            offsets[field] = np.concatenate([[0], np.cumsum(rows)])
            total = (int(offsets[field][-1]), *first[1:])
        else:
            total = (count, *first)
        arrays[field] = np.lib.format.open_memmap(tmp / f"{field}.npy", mode="w+", dtype=dtype, shape=total)
    for i in range(count):
        sample = load(i)
        for field, array in arrays.items():
            if field in ragged:
                array[offsets[field][i]:offsets[field][i + 1]] = sample[field]
            else:
                array[i] = sample[field]
    for field, array in arrays.items():
        array.flush()  # type: ignore[attr-defined]  # numpy's stubs type open_memmap as a plain ndarray
        if field in offsets:
            np.save(tmp / f"{field}{OFFSETS}", offsets[field])
    del arrays
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


class PreparedArrays:
    """Read access to a folder written by `write_arrays`; opening maps the files, nothing is read yet."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.fields: dict[str, np.ndarray] = {}
        self.offsets: dict[str, np.ndarray] = {}
        for path in sorted(self.directory.glob("*.npy")):
            if path.name.endswith(OFFSETS):
                self.offsets[path.name[: -len(OFFSETS)]] = np.load(path)
            else:
                self.fields[path.stem] = np.load(path, mmap_mode="r")

    def __len__(self) -> int:
        field = next(iter(self.fields))
        return len(self.offsets[field]) - 1 if field in self.offsets else len(self.fields[field])

    def get(self, field: str, index: int) -> np.ndarray:
        """Sample `index`'s value of `field` (a view into the mapped file; ragged fields give their rows)."""
        array = self.fields[field]
        if field in self.offsets:
            lo, hi = self.offsets[field][index], self.offsets[field][index + 1]
            return array[lo:hi]
        return array[index]

    def rows(self, field: str, index: int) -> int:
        """How many rows sample `index` has in a ragged field."""
        return int(self.offsets[field][index + 1] - self.offsets[field][index])
