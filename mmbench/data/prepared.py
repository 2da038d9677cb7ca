"""The manifest a task's `prepare` writes into its prepared root, and the data fingerprint it carries.

The fingerprint hashes what makes two prepared copies interchangeable: the task and its version, the hashes of
the split lists, and the preprocessing parameters. It enters every cell's identity and the benchmark version,
so results on differently prepared data never rank together; a partial copy is marked in it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from mmbench.contract.errors import DataError
from mmbench.files import atomic_write_json
from mmbench.schema.cell import content_hash
from mmbench.schema.record import Record

MANIFEST = "mmbench-prepared.json"


class Manifest(Record):
    task: str
    version: str
    split_hashes: dict[str, str] = Field(description="sha256 of each shipped split list")
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    partial: bool = False
    counts: dict[str, int] = Field(default_factory=dict, description="samples kept per split")
    kept: str | None = Field(None, description="hash of the kept sample ids, set when some listed samples were "
                                               "left out (missing or bad): such a root is another data set")

    @property
    def fingerprint(self) -> str:
        return self.fingerprint_of(self.preprocessing)

    def fingerprint_of(self, sections: Iterable[str]) -> str:
        """The fingerprint of the data a reader takes from a root that holds several representations of the
        same samples (e.g. a spectrogram and a waveform): only the named preprocessing sections enter it, so
        readers of different representations get different fingerprints and a reader's fingerprint does not
        change when a representation it does not read is added."""
        unknown = sorted(set(sections) - set(self.preprocessing))
        if unknown:
            raise DataError(f"the prepared {self.task!r} root holds no {', '.join(unknown)} (it has "
                            f"{', '.join(sorted(self.preprocessing))}); prepare it again with this mmbench")
        core = {"task": self.task, "version": self.version, "split_hashes": self.split_hashes,
                "preprocessing": {k: self.preprocessing[k] for k in sorted(sections)}, "partial": self.partial}
        if self.kept is not None:
            core["kept"] = self.kept
        return ("partial-" if self.partial else "") + content_hash(core)


def write_manifest(root: Path, manifest: Manifest) -> None:
    atomic_write_json(Path(root) / MANIFEST, {**manifest.model_dump(mode="json"), "fingerprint": manifest.fingerprint})


def read_manifest(root: Path | None, task: str, how_to_get: str) -> Manifest:
    """The manifest of a prepared root, or a `DataError` that says how to prepare it."""
    hint = f"prepare it with `mmbench data prepare {task} --raw DIR`" + (f" ({how_to_get})" if how_to_get else "")
    if root is None:
        raise DataError(f"task {task!r} reads prepared data but no data root was given; {hint}")
    path = Path(root) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{root} is not a prepared {task!r} root (no {MANIFEST}); {hint}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}; {hint} again") from None
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise DataError(f"{path} is malformed ({exc.error_count()} problem(s)); {hint} again") from None
    if manifest.task != task:
        raise DataError(f"{root} holds prepared {manifest.task!r} data, not {task!r}")
    return manifest
