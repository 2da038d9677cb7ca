"""`mmimdb_features`: MM-IMDb's processed release `multimodal_imdb.hdf5` (Arevalo et al., ICLR Workshop 2017;
johnarevalo/gmu-mmimdb @ 638a765, `make_dataset.py`), multi-label genres from precomputed features, as PM+MO
(Armitage et al., CEUR 2020) uses it.

Raw layout: `<raw>/multimodal_imdb.hdf5`, a Fuel `H5PYDataset` file read with h5py. Fields used (PM+MO's: the
ids, genres, VGG and word2vec features): `features` float32 (N, 300), the mean GoogleNews word2vec vector of the
plot's words; `vgg_features` float32 (N, 4096), VGG-16 fc7 of the poster; `genres` int (N, 23) multi-hot with
the attribute `target_names` (a JSON list of the 23 genres); `imdb_ids` (N,) 7-character ids. The file attribute
`split` is Fuel's split array (fields split, source, start, stop, indices, available, comment): each split's
rows are `start:stop` of its `features` source (rows are ordered train | dev | test).

Modalities: `text` (300,) and `image_features` (4096,), both `vector`. Multi-label, 23 classes (their names, in
id order, are the file's `target_names`, copied into the prepared root as `target_names.json`); metrics micro,
macro, weighted and samples F1 (PM+MO's) and micro/macro AP, threshold 0.5. Every row with a non-finite feature
or no genre is listed in prepare's report (`<file>#<row>` is its place) and left out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mmbench.api import DataError, ModalitySpec, TensorDictDataset, hookimpl
from mmbench.api.data import Item, Label, MediaError, Outcome, PreparedArrays, PreparedTask, kept_hash, sha256

FILE = "multimodal_imdb.hdf5"
#: the genre names of the release, in class-id order, in the prepared root
NAMES = "target_names.json"
#: hdf5 source -> (modality, width)
SOURCES = {"features": ("text", 300), "vgg_features": ("image_features", 4096)}
SPLITS = {"train": "train", "val": "dev", "test": "test"}
NUM_GENRES = 23


def fuel_ranges(attribute: Any, path: Path) -> dict[str, tuple[int, int]]:
    """Each split's (start, stop) rows of the `features` source, from Fuel's split array."""
    ranges = {}
    try:
        for row in attribute:
            split, source = (row["split"], row["source"])
            split, source = (v.decode() if isinstance(v, bytes) else str(v) for v in (split, source))
            if source == "features":
                ranges[split] = (int(row["start"]), int(row["stop"]))
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise DataError(f"{path}: the `split` attribute is not Fuel's split array ({exc})") from None
    absent = [name for name in SPLITS.values() if name not in ranges]
    if absent:
        raise DataError(f"{path}: the `split` attribute names no {absent} rows of the `features` source")
    return ranges


def process_row(item: Item) -> dict[str, np.ndarray]:
    """One row's features and genres, read at listing time; a row with a non-finite value or no genre is bad."""
    row, text, image, genres = item.extra
    place = f"{item.sources[0]}#{row}"
    for key, values in (("features", text), ("vgg_features", image)):
        if not np.isfinite(values).all():
            raise MediaError(f"row {row}: non-finite values in `{key}`", place)
    if not genres.any():
        raise MediaError(f"row {row}: no genre", place)
    return {"text": text, "image_features": image, "target": genres.astype(np.uint8)}


class MMIMDbFeaturesTask(PreparedTask):
    """MM-IMDb word2vec text + VGG-16 poster features, 23 genres (see the module docstring)."""

    name = "mmimdb_features"
    version = "1"
    multilabel = True
    metrics = ("f1_micro", "f1_macro", "f1_weighted", "f1_samples", "map_micro", "map_macro")
    primary_metric = "f1_micro"
    source = "github.com/johnarevalo/gmu-mmimdb (multimodal_imdb.hdf5 from lisi1.unal.edu.co/mmimdb or archive.org)"
    layout = f"  <raw>/{FILE}   Fuel/h5py: features, vgg_features, genres (+target_names), imdb_ids, split attribute"
    classes = tuple(f"genre {c}" for c in range(NUM_GENRES))  # the release's names are in its target_names

    @property
    def modalities(self) -> dict[str, ModalitySpec]:
        return {m: ModalitySpec(m, "vector", (d,)) for m, d in SOURCES.values()}

    def preprocessing(self) -> dict[str, Any]:
        return {"sources": list(SOURCES)}

    def read_release(self, raw: Path) -> tuple[dict[str, tuple[int, int]], list[str], list[str], dict[str, Any]]:
        """The file's split ranges, genre names, ids and arrays; a `DataError` saying how it is not the release."""
        import h5py

        path = Path(raw) / FILE
        if not path.is_file():
            raise self.raw_error(raw, f"has no {FILE}")
        try:
            with h5py.File(path, "r") as h5:
                absent = [k for k in (*SOURCES, "genres", "imdb_ids") if k not in h5]
                if absent or "split" not in h5.attrs:
                    raise DataError(f"{path} lacks {absent or ['the split attribute']}; it is not the processed "
                                    f"MM-IMDb release:\n{self.layout}")
                ranges = fuel_ranges(h5.attrs["split"], path)
                names = json.loads(h5["genres"].attrs["target_names"])
                data = {k: np.asarray(h5[k]) for k in (*SOURCES, "genres")}
                ids = [i.decode() if isinstance(i, bytes) else str(i) for i in h5["imdb_ids"]]
        except OSError as exc:
            raise DataError(f"{path}: cannot read it as HDF5 ({exc}); fetch the file again") from None
        if len(names) != NUM_GENRES or data["genres"].shape[1:] != (NUM_GENRES,):
            raise DataError(f"{path}: {len(names)} genre names and genres of shape {data['genres'].shape}; the "
                            f"release has {NUM_GENRES}")
        return ranges, names, ids, data

    def items(self, raw: Path) -> list[Item]:
        """One item per row of each split's range, carrying its arrays (the file is read once)."""
        ranges, _, ids, data = self.read_release(raw)
        path = Path(raw) / FILE
        return [Item(ids[r], tuple(int(c) for c in np.flatnonzero(data["genres"][r])), (path,),
                     (r, data["features"][r], data["vgg_features"][r], data["genres"][r]), split=split)
                for split, name in SPLITS.items() for r in range(*ranges[name])]

    def processor(self):
        return process_row

    def after_prepare(self, raw: Path, outcome: Outcome) -> None:
        (self._root / NAMES).write_text(json.dumps(self.read_release(raw)[1]))

    def kept_identity(self, outcome: Outcome) -> str | None:
        """The rows left out identify the kept ones (the ids are in `split_hashes`); this task's fingerprints were
        made so before `PreparedTask` counted the kept ids."""
        return kept_hash([b["id"] for b in outcome.bad]) if outcome.bad else None

    def split_hashes(self, raw: Path | None) -> dict[str, str] | None:
        """sha256 of the file's split ranges, ids and genre names: they stay in the release."""
        if raw is None:
            return None
        ranges, names, ids, _ = self.read_release(raw)
        return {"split": sha256(json.dumps({k: list(v) for k, v in ranges.items()}).encode()),
                "imdb_ids": sha256("\n".join(ids).encode()), "target_names": sha256(json.dumps(names).encode())}

    def fields(self) -> dict[str, tuple[int, ...]]:
        return {"text": (300,), "image_features": (4096,), "target": (NUM_GENRES,)}

    def datasets(self, arrays: PreparedArrays, parts: dict[str, tuple[list[int], list[Label]]]) -> dict[str, Dataset]:
        def part(rows: list[int]) -> TensorDictDataset:
            tensors = {m: torch.from_numpy(np.array(arrays.fields[m][rows])) for m, _ in SOURCES.values()}
            return TensorDictDataset(tensors, torch.from_numpy(np.array(arrays.fields["target"][rows])).float())

        return {split: part(rows) for split, (rows, _) in parts.items()}


@hookimpl
def mmbench_tasks():
    return [MMIMDbFeaturesTask]
