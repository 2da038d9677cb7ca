"""`nvgesture`: the NVIDIA Dynamic Hand Gesture dataset (Molchanov et al., CVPR 2016), 25 gestures, three
modalities — `rgb` (3, T, 224, 224), `depth` (1, T, 224, 224) and optical `flow` (2, T, 224, 224) — as MIE
(seed 002) and MLA use it, following the NJUST-KMG reader (njustkmg/IJCAI25-BSS `NVGesture/dataset/nvGesture.py`).

Raw release (`nvGesture_v1`, research.nvidia.com): `Video_data/class_XX/subjectS_rR/{sk_color,sk_depth}.avi`
and the lists `nvgesture_{train,test}_correct_cvpr2016_v2.lst` (1,050 / 482 lines; the NJUST renames
`nvgesture_{train,test}_correct_v2.lst` are accepted). A line is space-separated `key:value` tokens ending in a
space: `path:./Video_data/class_01/subject3_r0 depth:sk_depth:146:226 color:sk_color:146:226
duo_left:duo_left:170:263 label:1 `. The label is the `label:` token minus 1, never the folder's number (e.g.
`class_01/subject4_r2` is `label:2`); each sensor has its own window (colour and depth can be one frame apart).
The lists come with the release: prepare copies them into the prepared root, where their sha256 enter the
fingerprint. There is no validation list: a stratified share of train is held out (`val_fraction`, `val_seed`).

Prepared per recording (fields of the memory-mapped arrays): `rgb` (80, 3, S, S) uint8 — the colour window's
80 frames from its start, resized to S × S (S = `size`, 256 as the reader's `cv2.resize`); `depth` (80, 1, S, S)
uint8 — the depth window's frames, first channel; `flow` (80, 2, S, S) float16 — see below. A video that ends
inside its window is reported as bad (the reader silently leaves zero frames there).

Optical flow. No published script makes the reader's `flow_data/<split>/<k>.npy` arrays ((S, S, 2, 80) float,
k the line's 0-based index in its list; the algorithm is not documented), so `flow` chooses:
* `farneback` (default) or `dis`: computed by prepare with OpenCV (opencv-python-headless; parameters in
  `mmbench.data.media.FLOW_METHODS`, part of the fingerprint) on the grey-scaled colour frames, frame t to
  t + 1 of the window (the window's last flow uses the frame after it, or repeats the previous flow when the
  video ends there). Farneback is the classic dense method the MMTM/Greedy lineage could run on CPU;
  TV-L1 (Kinetics-I3D's) is not in a maintained pip build, RAFT needs downloaded weights.
* `precomputed`: the reader's arrays under `<raw>/Video_data/flow_data/{train,test}/<k>.npy`, which must be
  (S, S, 2, 80).

Clips given to the model (the reader's protocol): training takes a random `clip_frames`-frame window (start
uniform in 0..80 − clip_frames, 64 frames: start in 0..16) and one random `crop` × `crop` crop (offsets uniform
in 0..S − crop) shared by the three modalities; evaluation takes all 80 frames and the centre crop. RGB is
scaled to [0, 1] and normalised with the ImageNet statistics, depth only scaled to [0, 1], flow divided by
`flow_bound` and clipped to [−1, 1] (the Kinetics-I3D convention; null keeps pixels). No flip (the reader's
flag is 0). The declared shapes carry the training length; evaluation clips have 80 frames.

Where this differs from the reader, and why: frames are RGB (OpenCV hands the reader BGR, which it normalises
with the RGB statistics), resized with Pillow's bilinear filter (PyAV decoding, no OpenCV video I/O); the flow
is cut to the same window and crop as the other modalities (the reader's training flow keeps all 80 frames and
crops at transposed offsets). Metrics: accuracy and macro-F1 (MIE's NVGesture table).
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import Dataset

from mmbench.api import DataError, ModalitySpec, Params, Task, hookimpl
from mmbench.api.data import (
    ARRAYS,
    FLOW_METHODS,
    SUMS,
    Item,
    Manifest,
    MediaError,
    PreparedArrays,
    SplitFiles,
    optical_flow,
    prepare_samples,
    read_clip,
    read_manifest,
    read_samples,
    sha256,
    split_rows,
    split_size_problems,
    write_prepared_manifest,
)

CLASSES = 25
#: frames of a sensor window the reader keeps (its buffer holds 80)
WINDOW = 80
#: list file per split, as released, and the NJUST-KMG renames accepted in their place
LISTS = {"train": "nvgesture_train_correct_cvpr2016_v2.lst", "test": "nvgesture_test_correct_cvpr2016_v2.lst"}
RENAMED = {"train": "nvgesture_train_correct_v2.lst", "test": "nvgesture_test_correct_v2.lst"}
SENSORS = {"color": "rgb", "depth": "depth"}
FIELDS = {"rgb": 3, "depth": 1, "flow": 2}
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1, 1)
LAYOUT = ("  <raw>/nvgesture_train_correct_cvpr2016_v2.lst, nvgesture_test_correct_cvpr2016_v2.lst\n"
          "  <raw>/Video_data/class_XX/subjectS_rR/sk_color.avi, sk_depth.avi   e.g. class_01/subject3_r0\n"
          "  <raw>/Video_data/flow_data/{train,test}/<k>.npy   (only with flow: precomputed)")


class NVGestureParams(Params):
    size: int = Field(256, ge=8, le=1024, description="side of the stored square frames (the reader: 256)")
    crop: int = Field(224, ge=8, le=1024, description="side of the crop given to the model (224)")
    clip_frames: int = Field(64, ge=1, le=WINDOW, description="frames of a training clip (64); evaluation "
                                                              "takes all 80")
    flow: Literal["farneback", "dis", "precomputed"] = Field(
        "farneback", description="optical flow: computed by prepare with OpenCV (farneback, dis) or read from "
                                 "the reader's flow_data/<split>/<k>.npy arrays")
    flow_bound: float | None = Field(20.0, gt=0.0, description="flow / bound clipped to [-1, 1]; null: pixels")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="share of each class held out of train")
    val_seed: int = Field(0, ge=0, description="seed of that holdout (a data seed, not the run seed)")


# --------------------------------------------------------------------------------------------- lists


@dataclass(frozen=True)
class Entry:
    """One line of a `.lst` file: the recording folder under `Video_data/`, each sensor's (stem, start, end),
    the 0-based label, and the line's 0-based index (the precomputed flow's file name)."""

    folder: str
    windows: Mapping[str, tuple[str, int, int]]
    label: int
    index: int


def parse_list(text: str, name: str) -> list[Entry]:
    """The entries of one `.lst` file; a malformed line is a `DataError` naming the file, line and token."""
    entries = []
    for number, line in enumerate((ln for ln in text.splitlines() if ln.strip()), 1):
        fields: dict[str, list[str]] = {}
        for token in line.split():
            key, _, value = token.partition(":")
            fields[key] = value.split(":")
        where = f"{name} line {number}"
        if "path" not in fields or "label" not in fields or any(s not in fields for s in SENSORS):
            raise DataError(f"{where}: expected 'path:… depth:sk_depth:S:E color:sk_color:S:E … label:N', "
                            f"got {line!r}")
        folder = ":".join(fields["path"]).removeprefix("./").removeprefix("Video_data/")
        try:
            windows = {s: (fields[s][0], int(fields[s][1]), int(fields[s][2])) for s in SENSORS}
            label = int(fields["label"][0]) - 1
        except (IndexError, ValueError):
            raise DataError(f"{where}: a sensor token is not <sensor>:<stem>:<start>:<end> or the label is not "
                            f"a number: {line!r}") from None
        if not 0 <= label < CLASSES:
            raise DataError(f"{where}: label {label + 1} is outside 1..{CLASSES}")
        entries.append(Entry(folder, windows, label, number - 1))
    return entries


# ------------------------------------------------------------------------------------------- prepare


def process_recording(item: Item, size: int, flow: str) -> dict[str, np.ndarray]:
    """The prepared fields of one recording (see the module docstring); runs in worker processes."""
    color, depth = item.sources[:2]
    color_start, depth_start = item.extra
    computed = flow != "precomputed"
    rgb = read_clip(color, color_start, WINDOW + 1 if computed else WINDOW, (size, size), at_least=WINDOW)
    depth_frames = read_clip(depth, depth_start, WINDOW, (size, size))[:, :1]
    if computed:
        flows = optical_flow(rgb, flow)
        flows = np.concatenate([flows, flows[-1:]]) if len(flows) < WINDOW else flows
    else:
        stored = np.load(item.sources[2])
        if stored.shape != (size, size, 2, WINDOW):
            raise MediaError(f"{item.sources[2]}: flow array of shape {stored.shape}, expected {(size, size, 2, WINDOW)}")
        flows = stored.transpose(3, 2, 0, 1)
    return {"rgb": rgb[:WINDOW], "depth": depth_frames, "flow": flows.astype(np.float16)}


# ----------------------------------------------------------------------------------------------- read


class GestureClips(Dataset):
    """Samples `{"rgb": (3, T, c, c), "depth": (1, T, c, c), "flow": (2, T, c, c), "label": ()}`."""

    def __init__(self, arrays: PreparedArrays, rows: list[int], labels: list[int], params: NVGestureParams,
                 train: bool) -> None:
        self.arrays, self.rows, self.labels, self.params, self.train = arrays, rows, labels, params, train

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        p, row = self.params, self.rows[index]
        if self.train:
            start = int(torch.randint(0, WINDOW - p.clip_frames + 1, ()))
            top, left = (int(v) for v in torch.randint(0, p.size - p.crop + 1, (2,)))
            frames = slice(start, start + p.clip_frames)
        else:
            top = left = (p.size - p.crop) // 2
            frames = slice(0, WINDOW)

        def cut(field: str) -> torch.Tensor:
            window = self.arrays.get(field, row)[frames, :, top:top + p.crop, left:left + p.crop]
            return torch.from_numpy(np.ascontiguousarray(window)).permute(1, 0, 2, 3).float()

        flow = cut("flow")
        if p.flow_bound is not None:
            flow = (flow / p.flow_bound).clamp(-1.0, 1.0)
        return {"rgb": (cut("rgb") / 255.0 - IMAGENET_MEAN) / IMAGENET_STD, "depth": cut("depth") / 255.0,
                "flow": flow, "label": torch.tensor(self.labels[index], dtype=torch.long)}


# ----------------------------------------------------------------------------------------------- task


class NVGestureTask(Task):
    """NVGesture, RGB + depth + optical flow, 25 classes (MIE's three-modality protocol)."""

    name = "nvgesture"
    version = "1"
    Params = NVGestureParams
    metrics = ("accuracy", "macro_f1")
    primary_metric = "accuracy"
    needs_data = True
    source = "research.nvidia.com/publication/2016-06_online-detection-and-classification-dynamic-hand-gestures-recurrent-3d (nvGesture_v1)"

    @property
    def modalities(self) -> dict[str, ModalitySpec]:
        shape = (self.params.clip_frames, self.params.crop, self.params.crop)
        return {m: ModalitySpec(m, "frames" if m == "rgb" else m, (c, *shape)) for m, c in FIELDS.items()}

    @property
    def num_classes(self) -> int:
        return CLASSES

    def preprocessing(self) -> dict[str, Any]:
        """What the prepared arrays depend on; enters the fingerprint."""
        flow = self.params.flow
        return {"size": self.params.size, "window": WINDOW, "resize": "pillow-bilinear", "depth_channel": 0,
                "flow": {"method": flow, **FLOW_METHODS.get(flow, {}), "dtype": "float16"}}

    def _error(self, where: Path, what: str) -> DataError:
        return DataError(f"{where} {what}; the nvgesture raw folder must look like this:\n{LAYOUT}\n"
                         f"Obtain it from {self.source}")

    def split_files(self) -> SplitFiles:
        return SplitFiles(Path(self.root) / "lists")

    def entries(self) -> dict[str, list[Entry]]:
        files = self.split_files()
        return {split: parse_list(files.text(name), name) for split, name in LISTS.items()}

    def _import_lists(self, raw: Path) -> None:
        """Copy the release's lists (or their NJUST renames) into `<root>/lists` with their sha256."""
        target = Path(self.root) / "lists"
        target.mkdir(parents=True, exist_ok=True)
        for split, name in LISTS.items():
            found = next((raw / n for n in (name, RENAMED[split]) if (raw / n).is_file()), None)
            if found is None:
                raise self._error(raw, f"lacks the {split} list {name}")
            shutil.copyfile(found, target / name)
        (target / SUMS).write_text("".join(f"{sha256((target / n).read_bytes())}  {n}\n" for n in LISTS.values()))

    def _items(self, raw: Path) -> list[Item]:
        if not (raw / "Video_data").is_dir():
            raise self._error(raw, "has no Video_data/ folder")
        items = []
        for split, entries in self.entries().items():
            for e in entries:
                folder = raw / "Video_data" / e.folder
                sources = tuple(folder / f"{e.windows[s][0]}.avi" for s in SENSORS)
                if self.params.flow == "precomputed":
                    sources += (raw / "Video_data" / "flow_data" / split / f"{e.index}.npy",)
                items.append(Item(e.folder, e.label, sources, extra=tuple(e.windows[s][1] for s in SENSORS)))
        return items

    def prepare(self, raw: Path, partial: bool = False, workers: int = 1) -> None:
        raw = Path(raw)
        if not raw.is_dir():
            raise self._error(raw, "is not a folder")
        if self.root is None:
            raise DataError(f"no prepared root given for {self.name!r}")
        self._import_lists(raw)
        settings = {"raw": str(raw.resolve()), "version": self.version, "preprocessing": self.preprocessing()}
        process = functools.partial(process_recording, size=self.params.size, flow=self.params.flow)
        outcome = prepare_samples(Path(self.root), self.name, self._items(raw), process, settings, partial=partial,
                                  workers=workers)
        write_prepared_manifest(Path(self.root), self.name, self.version, self.split_files().hashes,
                                self.preprocessing(), partial, outcome, self._listed())

    def _listed(self) -> dict[str, list[str]]:
        return {split: [e.folder for e in entries] for split, entries in self.entries().items()}

    def _manifest(self) -> Manifest:
        try:
            manifest = read_manifest(self.root, self.name, self.source)
        except DataError as exc:
            raise DataError(f"{exc}\nThe raw folder it is prepared from:\n{LAYOUT}") from None
        if manifest.preprocessing != json.loads(json.dumps(self.preprocessing())):
            raise DataError(f"{self.root} was prepared with {manifest.preprocessing}; these task parameters need "
                            f"{self.preprocessing()}: prepare again with them, or use the parameters it was "
                            f"prepared with")
        return manifest

    def fingerprint(self) -> str:
        return self._manifest().fingerprint

    def splits(self) -> dict[str, Dataset]:
        self._manifest()
        arrays = PreparedArrays(Path(self.root) / ARRAYS)
        lists = {split: [(e.folder, e.label) for e in entries] for split, entries in self.entries().items()}
        parts = split_rows(Path(self.root), self.name, lists, self.params.val_fraction, self.params.val_seed)
        return {split: GestureClips(arrays, [r for r, _ in pairs], [y for _, y in pairs], self.params,
                                    train=split == "train") for split, pairs in parts.items()}

    def check(self) -> list[str]:
        manifest = read_manifest(self.root, self.name, self.source)
        problems = []
        if manifest.version != self.version:
            problems.append(f"prepared by task version {manifest.version}; this is version {self.version}: "
                            "prepare again")
        if manifest.preprocessing != json.loads(json.dumps(self.preprocessing())):
            problems.append(f"prepared with preprocessing {manifest.preprocessing}; these parameters use "
                            f"{self.preprocessing()}: prepare again")
        try:
            if manifest.split_hashes != self.split_files().hashes:
                problems.append("the lists in the root are not the ones it was prepared from: prepare again")
            self.entries()
            arrays = PreparedArrays(Path(self.root) / ARRAYS)
            ids, labels = read_samples(Path(self.root))
        except (OSError, ValueError, KeyError, DataError) as exc:
            return problems + [f"cannot read the prepared lists, arrays or samples.json: {exc}"]
        for field, channels in FIELDS.items():
            expected = (WINDOW, channels, self.params.size, self.params.size)
            if field not in arrays.fields:
                problems.append(f"the prepared arrays lack {field!r}: prepare again")
            elif arrays.fields[field].shape[1:] != expected:
                problems.append(f"{field} clips are {arrays.fields[field].shape[1:]}, expected {expected}")
            elif len(arrays.fields[field]) != len(ids):
                problems.append(f"{len(arrays.fields[field])} prepared {field} clips but {len(ids)} sample ids")
        present = set(labels)
        if not manifest.partial and len(present) != CLASSES:
            problems.append(f"{len(present)} classes present, expected {CLASSES}")
        return problems + split_size_problems(manifest.partial, manifest.kept is not None, manifest.counts, set(ids),
                                              self._listed())


@hookimpl
def mmbench_tasks():
    return [NVGestureTask]
