"""`PreparedTask`: a task that reads a prepared root, with the prepared-data lifecycle written once."""

from __future__ import annotations

from typing import ClassVar

from mmbench.contract.errors import DataError
from mmbench.contract.task import Task
from mmbench.data.prepared import Manifest, read_manifest


class PreparedTask(Task):
    """A task whose data is an official release turned into a prepared root by `prepare`.

    Its manifest carries the fingerprint that enters every cell's identity; a missing or malformed root is a
    `DataError` that names the raw layout `prepare` reads (`layout`) and where the release is obtained
    (`source`).
    """

    needs_data = True
    #: the raw folder `prepare` reads, shown when the raw folder or the prepared root is wrong
    layout: ClassVar[str] = ""

    def manifest(self) -> Manifest:
        """The root's manifest; a missing or malformed root names the raw layout prepare reads."""
        try:
            return read_manifest(self.root, self.name, self.source)
        except DataError as exc:
            if not self.layout:
                raise
            raise DataError(f"{exc}\nThe raw folder it is prepared from:\n{self.layout}") from None

    def fingerprint(self) -> str:
        return self.manifest().fingerprint
