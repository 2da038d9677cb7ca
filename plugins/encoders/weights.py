"""Pretrained weights for encoders: where they come from, and what identifies them in a cell id.

A weights source is None (random initialisation, works offline), a local file or directory, or a hub name
(needs network). A local source is identified by the sha256 of its bytes, so two cells that load different
files never share an id even when the files share a name; a hub name is identified by itself (and its
revision, when one is pinned).
"""

from __future__ import annotations

import hashlib
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: how a source that is meant as a path starts; such a source must exist
_PATH_PREFIXES = ("/", "./", "../", "~")


def local_path(source: str) -> Path | None:
    """The local file or directory `source` names, or None when it is a hub name."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    if source.startswith(_PATH_PREFIXES):
        raise FileNotFoundError(f"pretrained weights {source!r}: no such file or directory (give an existing "
                                f"local path, a hub name, or null for random initialisation)")
    return None


def existing_path(source: str) -> Path:
    """The local file or directory `source` names, for a source that must be local."""
    path = local_path(source)
    if path is None:
        raise FileNotFoundError(f"pretrained weights {source!r}: no such file or directory")
    return path


def weights_identity(source: str | None, revision: str | None = None) -> str | None:
    """`sha256:<hex>` of a local source, `hub:<name>[@revision]` of a hub name, None without weights."""
    if source is None:
        return None
    path = local_path(source)
    if path is None:
        return f"hub:{source}" + (f"@{revision}" if revision else "")
    return f"sha256:{_digest(path.resolve())}"


def _digest(path: Path) -> str:
    """sha256 of a file's bytes, or of a directory's files (relative names and contents, in sorted order)."""
    if path.is_file():
        return _file_digest(path, *_stamp(path))
    total = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        total.update(str(file.relative_to(path)).encode())
        total.update(_file_digest(file, *_stamp(file)).encode())
    return total.hexdigest()


def _stamp(file: Path) -> tuple[int, int]:
    stat = file.stat()
    return stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=64)
def _file_digest(file: Path, mtime_ns: int, size: int) -> str:
    """Cached per (path, mtime, size): a grid asks once per cell, and checkpoints are large."""
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_state_dict(module: nn.Module, path: Path) -> None:
    """Load a state dict saved at `path` (`.safetensors`, or a `torch.save`d dict, optionally under a
    "state_dict" key) into `module`. Every weight of `module` must be present; extra keys (a classifier the
    module does not have) are reported with a warning."""
    if not path.is_file():
        raise ValueError(f"{path} is a directory; give the state-dict file itself")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state: dict[str, Any] = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure gets the same remedy
            raise ValueError(
                f"{path} is not a plain state dict ({type(exc).__name__}); a checkpoint that pickles a whole model "
                f"must be converted once, from code you trust: torch.save(torch.load(path, weights_only=False)"
                f".state_dict(), 'weights.pt')") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} of the model's weights, e.g. {missing[:3]}; it was saved "
                         f"from a different architecture")
    if unexpected:
        warnings.warn(f"{path}: ignored {len(unexpected)} weights the model does not have, e.g. {unexpected[:3]}",
                      stacklevel=2)
