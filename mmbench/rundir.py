"""The run directory: one `CellResult` JSON file per finished cell, written atomically, read back to resume."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from mmbench.files import atomic_write_json
from mmbench.schema.record import check_schema
from mmbench.schema.results import SCHEMA_FAMILY, SCHEMA_MAJOR, CellResult

LOCK = ".lock"
#: descriptors of the run locks this process holds; a child forked while one is held must not keep it
_HELD_LOCKS: set[int] = set()


def _drop_inherited_locks() -> None:
    """In a forked child: point each inherited lock descriptor at /dev/null, so the lock is the parent's alone
    (an flock lives as long as any process holds its open file) and ends with the parent."""
    if not _HELD_LOCKS:
        return
    null = os.open(os.devnull, os.O_RDONLY)
    for fd in _HELD_LOCKS:
        os.dup2(null, fd, inheritable=False)
    os.close(null)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


class RunStoreError(Exception):
    """The run directory holds results this mmbench cannot use, or is in use; the message says what to do."""


class RunStore:
    """`<run dir>/cells/<cell_id>.json` per cell, plus the grid that produced them."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.cells_dir = self.root / "cells"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run directory for one run: a second run on it is refused instead of re-training the cells
        the first has not saved yet. The operating system releases the lock when the process ends, however; the
        processes it forks (figure drawers, data-loader workers) do not inherit it."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise RunStoreError(f"{self.root} is in use by another mmbench run ({holder}); wait for it to "
                                    "finish or use another --out directory") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
            _HELD_LOCKS.add(handle.fileno())
            try:
                yield
            finally:
                _HELD_LOCKS.discard(handle.fileno())
                fcntl.flock(handle, fcntl.LOCK_UN)

    def path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.json"

    def load(self, cell_id: str) -> CellResult | None:
        """The stored result of a cell, or None when absent or torn (a torn file is simply re-run).

        A result written by an older mmbench (before cell results had a schema), under another major schema
        version, or otherwise unreadable as a `CellResult` raises `RunStoreError`: re-running would silently
        replace it.
        """
        path = self.path(cell_id)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        schema = data.get("schema")
        if not isinstance(schema, str) or not schema.startswith(f"{SCHEMA_FAMILY}/"):
            raise RunStoreError(
                f"{path} was written by an older mmbench (its cell results have no {SCHEMA_FAMILY!r} schema); "
                f"run the grid into a new directory (--out) or move {self.root} aside")
        try:
            check_schema(schema, SCHEMA_FAMILY, SCHEMA_MAJOR)
        except ValueError as exc:
            raise RunStoreError(f"{path}: {exc}") from None
        try:
            return CellResult.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise RunStoreError(f"{path} is not a cell result this mmbench can read ({'.'.join(map(str, first['loc']))}"
                                f": {first['msg']}); run the grid into a new directory (--out) or move "
                                f"{self.root} aside") from None

    def results(self) -> list[CellResult]:
        """Every readable result in the run directory, in cell-id order."""
        return [r for r in map(self.load, sorted(p.stem for p in self.cells_dir.glob("*.json"))) if r is not None]

    def save(self, result: CellResult) -> None:
        atomic_write_json(self.path(result.cell_id), result.to_json())
