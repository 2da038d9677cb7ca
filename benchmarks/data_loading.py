"""Prepared-data loading throughput for a CREMA-D-shaped root, against what one ResNet-18 cell consumes.

Builds a prepared `cremad` root of generated clips in the real prepared format (no media decoding: this
measures loading, not `prepare`), then times the training split through the engine's DataLoader and collate
(train transforms: random frame pick, RandomResizedCrop, flip, normalisation) with 0, 1 and N workers, and the
same samples read back from a Hugging Face `datasets` Arrow table (when `datasets` is installed), which is the
alternative the prepared format was chosen against.

A CREMA-D ResNet-18 cell at batch 64 needs 64 / step time samples per second: 1,490/s at the 43 ms/step the
official OGM-GE code measures on an H100, 4,000/s at the 16 ms/step target.

    python benchmarks/data_loading.py [--samples 512] [--frames 1] [--workers 4] [--batches 20]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mmbench.data.prepare import ARRAYS, SAMPLES
from mmbench.data.prepared import Manifest, write_manifest
from mmbench.data.store import PreparedArrays, write_arrays
from mmbench.training.engine import collate
from mmbench_plugins.tasks.common import audiovisual
from mmbench_plugins.tasks.cremad import CremadTask

NEEDS = {"official OGM-GE, 43 ms/step": 64 / 0.043, "target, 16 ms/step": 64 / 0.016}


def build_root(root: Path, samples: int, frames: int, frames_per_clip: int = 3) -> CremadTask:
    task = CremadTask(CremadTask.Params(frames=frames), root=root)
    lists = task.lists()
    pairs = lists["train"][:samples] + lists["test"][:8]  # a test split must exist; only train is timed
    rng = np.random.default_rng(0)
    shapes = [{"audio": (257, 188), "frames": (frames_per_clip, 3, 224, 224), "source_size": (2,)}] * len(pairs)

    def load(i: int) -> dict[str, np.ndarray]:
        return {"audio": rng.standard_normal((257, 188), dtype=np.float32),
                "frames": rng.integers(0, 255, (frames_per_clip, 3, 224, 224), dtype=np.uint8),
                "source_size": np.array([480, 360], np.int32)}

    write_arrays(root / ARRAYS, len(pairs), shapes, {"audio": "<f4", "frames": "|u1", "source_size": "<i4"}, load,
                 frozenset({"frames"}))
    (root / SAMPLES).write_text(json.dumps({"ids": [i for i, _ in pairs], "labels": [y for _, y in pairs]}))
    write_manifest(root, Manifest(task="cremad", version=task.version, split_hashes=task.split_files().hashes,
                                  preprocessing=task.preprocessing(), partial=True,
                                  counts={"train": samples, "test": 8}))
    return task


class ArrowClips(Dataset):
    """The same clips stored in an Arrow table (Hugging Face `datasets`), read with the same transforms."""

    def __init__(self, arrays: PreparedArrays, rows: list[int], labels: list[int], frames: int, folder: Path) -> None:
        import datasets

        def rows_of():
            for r, y in zip(rows, labels, strict=True):
                yield {"audio": np.asarray(arrays.get("audio", r)), "frames": np.asarray(arrays.get("frames", r)),
                       "source_size": np.asarray(arrays.get("source_size", r)), "label": y}

        features = datasets.Features({
            "audio": datasets.Array2D((257, 188), "float32"),
            "frames": datasets.Array4D((None, 3, 224, 224), "uint8"),
            "source_size": datasets.Sequence(datasets.Value("int32"), length=2),
            "label": datasets.Value("int64"),
        })
        table = datasets.Dataset.from_generator(rows_of, features=features, cache_dir=str(folder))
        self.table = table.with_format("numpy")
        self.frames = frames

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = self.table[index]
        chosen = audiovisual.pick_frames(len(row["frames"]), self.frames, True)
        clip = torch.from_numpy(np.ascontiguousarray(row["frames"][chosen]))
        source = tuple(int(v) for v in row["source_size"])
        clip = torch.stack([audiovisual.train_transform(frame, source) for frame in clip])
        visual = (clip.permute(1, 0, 2, 3).float() / 255.0 - audiovisual.IMAGENET_MEAN) / audiovisual.IMAGENET_STD
        return {"audio": torch.from_numpy(np.array(row["audio"]))[None], "visual": visual,
                "label": torch.tensor(int(row["label"]))}


def read_rate(read, count: int) -> float:
    """Samples/s of reading each sample's stored arrays into memory, without any transform."""
    started = time.perf_counter()
    for index in range(count):
        read(index)
    return count / (time.perf_counter() - started)


def throughput(dataset: Dataset, workers: int, batches: int, batch_size: int = 64) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collate,
                        generator=torch.Generator().manual_seed(0), persistent_workers=False)
    iterator = iter(loader)
    next(iterator)  # start-up (worker processes, first pages) is not the steady state
    started, seen = time.perf_counter(), 0
    for _ in range(batches):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        seen += len(batch.label)
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--frames", type=int, default=1, help="frames per clip given to the model (OGM-GE: 1)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        train = build_root(Path(tmp) / "cremad", args.samples, args.frames).splits()["train"]
        print(f"CPU: {os.cpu_count()} cores; torch threads 1; {len(train)} training clips; batch 64; "
              f"frames per clip {args.frames}")
        for need, rate in NEEDS.items():
            print(f"  one CREMA-D ResNet-18 cell needs {rate:,.0f} samples/s ({need})")
        counts = sorted({0, 1, args.workers})
        for workers in counts:
            print(f"memory-mapped arrays, {workers} workers: {throughput(train, workers, args.batches):,.0f} samples/s")
        try:
            arrow = ArrowClips(train.arrays, train.rows, train.labels, args.frames, Path(tmp) / "arrow")
        except ImportError:
            print("Arrow (Hugging Face datasets): not installed; `pip install datasets` to compare")
            return
        arrays, rows = train.arrays, train.rows
        mapped = read_rate(lambda i: (np.array(arrays.get("audio", rows[i])), np.array(arrays.get("frames", rows[i]))),
                           len(rows))
        table = arrow.table
        stored = read_rate(lambda i: (table[i]["audio"], table[i]["frames"]), len(rows))
        print(f"reading the stored arrays alone (1 process): memory-mapped {mapped:,.0f} samples/s, "
              f"Arrow {stored:,.0f} samples/s")
        for workers in counts:
            print(f"Arrow (datasets), {workers} workers: {throughput(arrow, workers, args.batches):,.0f} samples/s")


if __name__ == "__main__":
    main()
