"""Training-data throughput of the video tasks, end to end, against reading their stored arrays alone.

For each shape (CREMA-D: 1 frame per clip; Kinetics-Sounds: 3 frames; NVGesture: 64-frame 224 x 224 RGB, depth
and flow clips) it writes a prepared root of generated samples in the real prepared format (no media decoding:
this measures loading, not `prepare`), then times, in interleaved rounds:

- the training pipeline as the engine runs it (`mmbench.training.batches.CellData`: the split through the
  engine's sampler, DataLoader and collate with 0, 1 and 2 loader processes, each batch finished by the task's
  `on_device` on the device: crops, resizing, flips, float conversion, normalisation), in clips/s, and the
  loader's part alone (what the loader processes hand over, before `on_device`);
- reading the same stored bytes alone in one process (each training sample's spectrogram and the frames it is
  given, or NVGesture's windows and crops, copied out of the memory-mapped arrays; no transform, no collate),

and prints each round's ratio of the two, so the ratios compare numbers measured minutes apart on a shared host.

A CREMA-D ResNet-18 cell at batch 64 needs 64 / step time clips/s: 1,490/s at the 43 ms/step the official OGM-GE
code measures on an H100, 4,000/s at the 16 ms/step target.

    python benchmarks/data_loading.py [--shapes cremad kinetics_sounds nvgesture] [--rounds 3] [--batches 6]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mmbench.data.prepare import ARRAYS, SAMPLES
from mmbench.data.prepared import Manifest, write_manifest
from mmbench.data.splits import SplitFiles
from mmbench.data.store import PreparedArrays, write_arrays
from mmbench.training.batches import CellData
from mmbench_plugins.tasks.common.audiovisual import AudioVisualTask
from mmbench_plugins.tasks.cremad import CremadTask
from mmbench_plugins.tasks.kinetics_sounds import KineticsSoundsTask
from mmbench_plugins.tasks.nvgesture import FIELDS, LISTS, WINDOW, NVGestureTask

NEEDS = {"official OGM-GE, 43 ms/step": 64 / 0.043, "target, 16 ms/step": 64 / 0.016}


def finish_root(task, root: Path, ids: list[str], labels: list, counts: dict[str, int]) -> None:
    (root / SAMPLES).write_text(json.dumps({"ids": ids, "labels": labels}))
    write_manifest(root, Manifest(task=task.name, version=task.version, split_hashes=task.split_files().hashes,
                                  preprocessing=task.preprocessing(), partial=True, counts=counts))


def build_av_root(task_cls: type[AudioVisualTask], root: Path, samples: int, frames: int,
                  stored_frames: int) -> AudioVisualTask:
    """A prepared root of `samples` generated training clips of `stored_frames` frames (and 8 test clips)."""
    task = task_cls(task_cls.Params(frames=frames), root=root)
    lists = task.lists()
    pairs = lists["train"][:samples] + lists["test"][:8]  # a test split must exist; only train is timed
    rng = np.random.default_rng(0)
    size = task.frame_size
    shape = {"audio": task.audio_shape, "frames": (stored_frames, 3, size, size), "source_size": (2,)}

    def load(i: int) -> dict[str, np.ndarray]:
        return {"audio": rng.standard_normal(task.audio_shape, dtype=np.float32),
                "frames": rng.integers(0, 255, (stored_frames, 3, size, size), dtype=np.uint8),
                "source_size": np.array([480, 360], np.int32)}

    write_arrays(root / ARRAYS, len(pairs), [shape] * len(pairs),
                 {"audio": "<f4", "frames": "|u1", "source_size": "<i4"}, load, frozenset({"frames"}))
    finish_root(task, root, [i for i, _ in pairs], [y for _, y in pairs], {"train": samples, "test": 8})
    return task


def build_root(root: Path, samples: int, frames: int, frames_per_clip: int = 3) -> CremadTask:
    """A CREMA-D-shaped prepared root (`gpu_suite.py` trains on one)."""
    return build_av_root(CremadTask, root, samples, frames, frames_per_clip)  # type: ignore[return-value]


def build_nvgesture_root(root: Path, samples: int) -> NVGestureTask:
    """A prepared NVGesture root of generated recordings at the grid's sizes (its lists written alongside)."""
    raw = root.with_name("nvgesture-lists")
    raw.mkdir(parents=True, exist_ok=True)
    counts = {"train": samples, "test": 4}
    entries = {split: [(f"class_{k % 4 + 1:02d}/subject{k}_{split}", k % 4) for k in range(n)]
               for split, n in counts.items()}
    for split, rows in entries.items():
        (raw / LISTS[split]).write_text("".join(
            f"path:./Video_data/{folder} depth:sk_depth:0:80 color:sk_color:0:80 duo_left:duo_left:0:80 "
            f"label:{label + 1} \n" for folder, label in rows))
    SplitFiles.copy({name: raw / name for name in LISTS.values()}, root / "lists")
    task = NVGestureTask(NVGestureTask.Params(), root=root)
    size, rng = task.params.size, np.random.default_rng(0)
    dtypes = {"rgb": "|u1", "depth": "|u1", "flow": "<f2"}

    def load(i: int) -> dict[str, np.ndarray]:
        return {m: rng.integers(0, 255, (WINDOW, c, size, size), dtype=np.uint8) if m != "flow"
                else rng.standard_normal((WINDOW, c, size, size), dtype=np.float32).astype(np.float16)
                for m, c in FIELDS.items()}

    pairs = entries["train"] + entries["test"]
    write_arrays(root / ARRAYS, len(pairs), [task.fields()] * len(pairs), dtypes, load)
    finish_root(task, root, [f for f, _ in pairs], [y for _, y in pairs], counts)
    return task


def stored_reader(task, train) -> Callable[[int], None]:
    """Copies, out of the memory-mapped arrays, the bytes one training sample is made of (no transform)."""
    arrays: PreparedArrays = train.arrays
    if isinstance(task, NVGestureTask):
        p, top = task.params, (task.params.size - task.params.crop) // 2
        window = (slice(0, p.clip_frames), slice(None), slice(top, top + p.crop), slice(top, top + p.crop))
        return lambda row: [np.array(arrays.get(m, row)[window]) for m in FIELDS]
    frames = task.params.frames
    return lambda row: (np.array(arrays.get("audio", row)), np.array(arrays.get("frames", row)[:frames]))


def read_rate(task, train) -> float:
    """Training samples/s of reading their stored bytes alone, in one process."""
    read = stored_reader(task, train)
    started = time.perf_counter()
    for row in train.rows:
        read(row)
    return len(train.rows) / (time.perf_counter() - started)


def pipeline_rate(task, splits, workers: int, batches: int, batch_size: int, device: torch.device,
                  finish: bool = True) -> float:
    """Training samples/s through the engine's loader and the task's `on_device` (without it: the loader's part
    alone, what the loader processes hand over), after one warm-up batch (worker start-up, first pages); an epoch
    that ends early is followed by the next, as in training."""
    options = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    data = CellData(task, splits, batch_size, batch_size, torch.Generator().manual_seed(0), seed=0, device=device,
                    views=False, options=options)

    def epoch_batches(epoch: int):
        prefetcher = data.epoch(epoch, None)
        return iter(prefetcher if finish else prefetcher.loader)

    epoch = 0
    batches_of = epoch_batches(epoch)
    next(batches_of)
    seen, started = 0, time.perf_counter()
    for _ in range(batches):
        batch = next(batches_of, None)
        if batch is None:
            epoch += 1
            batches_of = epoch_batches(epoch)
            batch = next(batches_of)
        seen += len(batch.label)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seen / (time.perf_counter() - started)


SHAPES: dict[str, tuple[str, Callable[[Path, int], object], int]] = {
    "cremad": ("CREMA-D, 1 of 3 stored frames, batch 64",
               lambda root, n: build_av_root(CremadTask, root, n, frames=1, stored_frames=3), 64),
    "kinetics_sounds": ("Kinetics-Sounds, 3 of 10 stored frames, batch 64",
                        lambda root, n: build_av_root(KineticsSoundsTask, root, n, frames=3, stored_frames=10), 64),
    "nvgesture": ("NVGesture, 64 of 80 frames at 256 cropped to 224, RGB + depth + flow, batch 6",
                  build_nvgesture_root, 6),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    parser.add_argument("--samples", type=int, default=256, help="training clips per audio-visual root")
    parser.add_argument("--recordings", type=int, default=24, help="training recordings in the NVGesture root")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=6, help="timed batches per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}, 1 intra-op "
          f"thread; device {device}; {args.rounds} rounds, {args.batches} timed batches per measurement")
    for need, rate in NEEDS.items():
        print(f"  one CREMA-D ResNet-18 cell needs {rate:,.0f} clips/s ({need})")
    with tempfile.TemporaryDirectory() as tmp:
        cases = {}
        for name in args.shapes:
            what, build, batch_size = SHAPES[name]
            size = args.recordings if name == "nvgesture" else args.samples
            task = build(Path(tmp) / name, size)
            cases[name] = (what, task, task.splits(), batch_size)  # type: ignore[attr-defined]
        rates: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for name, (_, task, splits, batch_size) in cases.items():
                rates.setdefault((name, "read"), []).append(read_rate(task, splits["train"]))
                for workers in args.workers:
                    for finish in (False, True):
                        rate = pipeline_rate(task, splits, workers, args.batches, batch_size, device, finish)
                        rates.setdefault((name, f"{workers} {finish}"), []).append(rate)
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        for name, (what, *_) in cases.items():
            read = rates[(name, "read")]
            print(f"{what}: reading the stored bytes alone {statistics.median(read):,.0f} clips/s "
                  f"(rounds: {', '.join(f'{r:,.0f}' for r in read)})")
            for workers in args.workers:
                for finish, what_part in ((False, "loader alone"), (True, "loader + on_device")):
                    piped = rates[(name, f"{workers} {finish}")]
                    ratios = [r / p for r, p in zip(read, piped, strict=True)]
                    print(f"  {what_part}, {workers} loader processes: {statistics.median(piped):,.0f} clips/s "
                          f"(rounds: {', '.join(f'{p:,.0f}' for p in piped)}); reading alone / this: median "
                          f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
