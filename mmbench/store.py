"""The run directory: one JSON file per finished cell, written atomically, read back to resume."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

#: statuses that mean a cell is done and is not re-run (failed cells are re-run only on request)
FINISHED = frozenset({"ok", "failed", "diverged", "skipped"})


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over `path`.

    A crash leaves either the old file or the new one, never a truncated mix.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


class RunStore:
    """`<run dir>/cells/<cell_id>.json` per cell, plus the grid that produced them."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.cells_dir = self.root / "cells"

    def path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.json"

    def load(self, cell_id: str) -> dict[str, Any] | None:
        """The stored result of a cell, or None when absent or unreadable (then it is simply re-run)."""
        try:
            result = json.loads(self.path(cell_id).read_text())
        except (OSError, ValueError):
            return None
        return result if isinstance(result, dict) and result.get("status") in FINISHED else None

    def save(self, result: dict[str, Any]) -> None:
        atomic_write_json(self.path(result["cell_id"]), result)
