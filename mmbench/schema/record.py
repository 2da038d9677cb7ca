"""Base of the records mmbench writes to files (cell results, leaderboards) and their schema versions."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

#: a benchmark or component name: also a file name, so no path separators and no leading dot
IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Record(BaseModel):
    """A file record. Unknown fields are ignored, so a file of a newer minor version stays readable."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def check_schema(value: str, family: str, major: int) -> str:
    """Accept `family/major` and `family/major.minor`; refuse another family or major version."""
    name, _, version = value.partition("/")
    if name != family or version.split(".")[0] != str(major):
        raise ValueError(f"unsupported schema {value!r}; this mmbench reads {family}/{major}.x")
    return value
