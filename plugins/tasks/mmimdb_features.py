"""`mmimdb_features`: MM-IMDb's processed release `multimodal_imdb.hdf5` (Arevalo et al. 2017, gmu-mmimdb's
`make_dataset.py`), multi-label genres from precomputed features, as PM+MO (seed 003) uses it.

Raw layout: `<raw>/multimodal_imdb.hdf5`, a Fuel `H5PYDataset` file read with h5py. Fields used (seed 003:
FileID, genres, vgg_features, features): `features` float32 (N, 300), the mean GoogleNews word2vec vector of
the plot's words; `vgg_features` float32 (N, 4096), VGG-16 fc7 of the poster; `genres` int (N, 23) multi-hot with
the attribute `target_names` (a JSON list of the 23 genres); `imdb_ids` (N,) 7-character ids. The file attribute
`split` is Fuel's split array (fields split, source, start, stop, indices, available, comment): each split's
rows are `start:stop` of its `features` source (rows are ordered train | dev | test).

Modalities: `text` (300,) and `image_features` (4096,), both `vector`. Multi-label, 23 classes; metrics micro,
macro, weighted and samples F1 (seed 003) and micro/macro AP, threshold 0.5. A row with a non-finite feature or
no genre is listed in prepare's report and left out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mmbench.api import DataError, ModalitySpec, Task, TensorDictDataset, hookimpl
from mmbench.api.data import (
    ARRAYS,
    MAX_BAD_FRACTION,
    REPORT,
    SAMPLES,
    Manifest,
    PreparedArrays,
    atomic_write_json,
    kept_hash,
    read_manifest,
    sha256,
    write_arrays,
    write_manifest,
)

FILE = "multimodal_imdb.hdf5"
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


class MMIMDbFeaturesTask(Task):
    """MM-IMDb word2vec text + VGG-16 poster features, 23 genres (see the module docstring)."""

    name = "mmimdb_features"
    version = "1"
    multilabel = True
    needs_data = True
    metrics = ("f1_micro", "f1_macro", "f1_weighted", "f1_samples", "map_micro", "map_macro")
    primary_metric = "f1_micro"
    source = "github.com/johnarevalo/gmu-mmimdb (multimodal_imdb.hdf5 from lisi1.unal.edu.co/mmimdb or archive.org)"
    layout = f"  <raw>/{FILE}   Fuel/h5py: features, vgg_features, genres (+target_names), imdb_ids, split attribute"

    @property
    def modalities(self) -> dict[str, ModalitySpec]:
        return {m: ModalitySpec(m, "vector", (d,)) for m, d in SOURCES.values()}

    @property
    def num_classes(self) -> int:
        return NUM_GENRES

    def prepare(self, raw: Path, partial: bool = False, workers: int = 1) -> None:
        import h5py

        path = Path(raw) / FILE
        if not path.is_file():
            raise DataError(f"{raw} has no {FILE}; the raw folder must look like this:\n{self.layout}\n"
                            f"Obtain it from {self.source}")
        root = Path(self.root)
        root.mkdir(parents=True, exist_ok=True)
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
        bad, rows = [], {}
        for split, name in SPLITS.items():
            start, stop = ranges[name]
            rows[split] = []
            for r in range(start, stop):
                reason = self._row_problem(data, r)
                if reason:
                    bad.append({"id": ids[r], "path": f"{path}#{r}", "reason": reason})
                else:
                    rows[split].append(r)
        listed = sum(stop - start for start, stop in ranges.values())
        failed = (f"{len(bad)} of the {listed} rows are bad (more than {MAX_BAD_FRACTION:.0%})"
                  if len(bad) > MAX_BAD_FRACTION * listed else None)
        atomic_write_json(root / REPORT, {"listed": listed, "kept": listed - len(bad), "missing_count": 0,
                                          "bad_count": len(bad), "partial": partial, "failed": failed,
                                          "max_bad_fraction": MAX_BAD_FRACTION, "missing": [], "bad": bad,
                                          "annotations": []})
        if failed:
            raise DataError(f"prepare {self.name} failed: {failed}. The report lists every row: {root / REPORT}")
        order = [r for split in SPLITS for r in rows[split]]
        fields = {"text": data["features"], "image_features": data["vgg_features"], "target": data["genres"]}
        dtypes = {"text": "<f4", "image_features": "<f4", "target": "|u1"}
        shapes = [{k: v.shape[1:] for k, v in fields.items()}] * len(order)
        write_arrays(root / ARRAYS, len(order), shapes, dtypes, lambda i: {k: v[order[i]] for k, v in fields.items()})
        atomic_write_json(root / SAMPLES, {"ids": [ids[r] for r in order], "genres": names,
                                           "splits": {s: [ids[r] for r in rows[s]] for s in SPLITS}})
        write_manifest(root, Manifest(
            task=self.name, version=self.version, partial=partial, counts={s: len(v) for s, v in rows.items()},
            split_hashes={"split": sha256(json.dumps({k: list(v) for k, v in ranges.items()}).encode()),
                          "imdb_ids": sha256("\n".join(ids).encode()),
                          "target_names": sha256(json.dumps(names).encode())},
            preprocessing={"sources": list(SOURCES)}, kept=kept_hash([b["id"] for b in bad]) if bad else None))

    @staticmethod
    def _row_problem(data: dict[str, np.ndarray], r: int) -> str | None:
        for key in SOURCES:
            if not np.isfinite(data[key][r]).all():
                return f"row {r}: non-finite values in `{key}`"
        if not data["genres"][r].any():
            return f"row {r}: no genre"
        return None

    def _manifest(self) -> Manifest:
        return read_manifest(self.root, self.name, self.source)

    def fingerprint(self) -> str:
        return self._manifest().fingerprint

    def splits(self) -> dict[str, Dataset]:
        self._manifest()
        arrays = PreparedArrays(Path(self.root) / ARRAYS)
        samples = json.loads((Path(self.root) / SAMPLES).read_text())
        out, start = {}, 0
        for split in SPLITS:
            n = len(samples["splits"][split])
            if n == 0:
                raise DataError(f"the prepared {self.name!r} root {self.root} holds no {split} row; prepare again")
            part = slice(start, start + n)
            tensors = {m: torch.from_numpy(np.array(arrays.fields[m][part])) for m, _ in SOURCES.values()}
            out[split] = TensorDictDataset(tensors, torch.from_numpy(np.array(arrays.fields["target"][part])).float())
            start += n
        return out

    def check(self) -> list[str]:
        manifest = self._manifest()
        try:
            arrays = PreparedArrays(Path(self.root) / ARRAYS)
            samples = json.loads((Path(self.root) / SAMPLES).read_text())
        except (OSError, ValueError) as exc:
            return [f"cannot read the prepared arrays or samples.json: {exc}"]
        problems = []
        for m, d in SOURCES.values():
            if m not in arrays.fields or arrays.fields[m].shape[1:] != (d,):
                problems.append(f"`{m}` is not a ({d},) feature per row: prepare again")
        if "target" not in arrays.fields or arrays.fields["target"].shape[1:] != (NUM_GENRES,):
            return problems + [f"the genre targets are not {NUM_GENRES} per row: prepare again"]
        counts = {s: len(v) for s, v in samples["splits"].items()}
        if counts != manifest.counts or sum(counts.values()) != len(arrays):
            problems.append(f"split sizes {counts} and {len(arrays)} rows, but prepare kept {manifest.counts}")
        present = int((np.asarray(arrays.fields["target"]).sum(0) > 0).sum())
        if not manifest.partial and present != NUM_GENRES:
            problems.append(f"{present} genres present, expected {NUM_GENRES}")
        return problems


@hookimpl
def mmbench_tasks():
    return [MMIMDbFeaturesTask]
