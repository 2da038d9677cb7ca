"""Split lists shipped inside a package, checked against their sha256, and the stratified carving of a
validation set out of a training list.

A task keeps its lists in a folder of its package with a `SHA256SUMS` file (`<hex>  <name>` per line, as
`sha256sum` writes it). Reading a list verifies its hash, so a list edited by accident is never used silently;
the hashes enter the data fingerprint.
"""

from __future__ import annotations

import hashlib
import shutil
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmbench.contract.errors import DataError

SUMS = "SHA256SUMS"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class SplitFiles:
    """The shipped split lists of one task: `folder` holds them and their `SHA256SUMS`."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        try:
            lines = (self.folder / SUMS).read_text().splitlines()
        except OSError as exc:
            raise DataError(f"the shipped split lists are missing ({self.folder / SUMS}: {exc.strerror}); "
                            "reinstall mmbench") from None
        self.hashes = {name.strip(): digest for digest, name in (line.split(None, 1) for line in lines if line)}

    def read(self, name: str) -> bytes:
        """The bytes of a shipped list, after checking them against their recorded sha256."""
        path = self.folder / name
        if name not in self.hashes:
            raise DataError(f"{name} is not one of the shipped split lists in {self.folder}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"the shipped split list {path} is missing ({exc.strerror}); reinstall mmbench") from None
        if sha256(data) != self.hashes[name]:
            raise DataError(f"the shipped split list {path} does not match its sha256 in {SUMS}; it was changed "
                            "after release: restore it (reinstall mmbench)")
        return data

    def text(self, name: str) -> str:
        """A list as text: a UTF-8 byte-order mark is dropped, line endings are kept for `splitlines()`."""
        return self.read(name).decode("utf-8-sig")

    def lines(self, name: str) -> list[str]:
        """The non-empty lines of a list, whatever their line endings (the releases mix LF and CRLF)."""
        return [line for line in self.text(name).splitlines() if line.strip()]

    @classmethod
    def copy(cls, sources: dict[str, Path], folder: Path) -> SplitFiles:
        """Copy lists that come with a release (name -> its file) into `folder` and record their sha256 there: the
        prepared root then keeps the lists it was made from, and their hashes enter the fingerprint."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, source in sources.items():
            shutil.copyfile(source, folder / name)
        (folder / SUMS).write_text("".join(f"{sha256((folder / n).read_bytes())}  {n}\n" for n in sources))
        return cls(folder)


def stratified_holdout(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split positions `0..len(labels)-1` into (kept, held out), holding out `fraction` of every class.

    Per class, `round(fraction * n)` samples are held out, but at least one when the class has two or more
    and never its last one, so a tiny copy with a handful of samples per class still has every class in both
    parts where it can. Deterministic: a function of the labels, the fraction and the seed only.
    """
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = defaultdict(list)
    for position, label in enumerate(labels):
        by_class[int(label)].append(position)
    held: list[int] = []
    for label in sorted(by_class):
        members = by_class[label]
        n = len(members)
        take = min(max(round(fraction * n), 1 if n >= 2 else 0), n - 1)
        held += [members[i] for i in rng.permutation(n)[:take]]
    held_set = set(held)
    return [p for p in range(len(labels)) if p not in held_set], sorted(held)
