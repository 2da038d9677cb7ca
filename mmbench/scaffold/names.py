"""What every generated distribution is named by: its distribution, package and class names, and the mmbench
release line it depends on."""

from __future__ import annotations

import re
from pathlib import Path

from mmbench import __version__


def requirement() -> str:
    """`mmbench>=X.Y,<X.Y+1`: the minor release line the scaffold was made with."""
    major, minor = (int(part) for part in re.findall(r"\d+", __version__)[:2])
    return f"mmbench>={major}.{minor},<{major}.{minor + 1}"


def distribution(name: str, kind: str, folder: Path, suffix: str = "") -> tuple[Path, dict[str, str]]:
    """The folder `mmbench-<name>` a new `kind` plugin goes into (refused when it exists) and the names its files
    use: `name`, `dist`, `package` (`mmbench_<name>`), `cls` (CamelCase, ending in `suffix`), `requirement`."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"a {kind} name is lower-case letters, digits and underscores, got {name!r}")
    dist, package = f"mmbench-{name.replace('_', '-')}", f"mmbench_{name}"
    cls = "".join(part.capitalize() for part in name.split("_"))
    cls += suffix if not cls.endswith(suffix) else ""
    root = Path(folder) / dist
    if root.exists():
        raise FileExistsError(f"{root} already exists")
    return root, {"name": name, "dist": dist, "package": package, "cls": cls, "requirement": requirement()}
