"""The errors a component raises to say what is wrong with its inputs, and the close-match helper."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class Incompatible(Exception):
    """Raised while building a cell whose parts cannot work together; the runner records it as skipped."""


class DataError(Exception):
    """A task's data is missing or malformed; the message names the expected layout and where to get it."""


def unknown_names(parameter: str, names: Iterable[str], known: Iterable[str], what: str = "modalities") -> list[str]:
    """A problem for each name in `parameter` that is not among `known` (with a close match when one exists)."""
    known = list(known)
    problems = []
    for name in sorted(set(names) - set(known)):
        match = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f"; did you mean {match[0]!r}?" if match else ""
        problems.append(f"{parameter} names {name!r}, which is not one of the task's {what} "
                        f"({', '.join(known)}){hint}")
    return problems
