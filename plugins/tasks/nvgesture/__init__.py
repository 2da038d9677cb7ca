"""`nvgesture`: the NVIDIA Dynamic Hand Gesture dataset (Molchanov et al., CVPR 2016), 25 gestures, three
modalities — `rgb` (3, T, 224, 224), `depth` (1, T, 224, 224) and optical `flow` (2, T, 224, 224) — as MIE
(Jiang, Chi & Yang, arXiv 2407.04587, 2024) and MLA (Zhang et al., CVPR 2024) use it, following the reader of
MIE's group (njustkmg/IJCAI25-BSS @ 86e59d6, `NVGesture/dataset/nvGesture.py`).

Raw release (`nvGesture_v1`, research.nvidia.com): `Video_data/class_XX/subjectS_rR/{sk_color,sk_depth}.avi`
and the lists `nvgesture_{train,test}_correct_cvpr2016_v2.lst` (1,050 / 482 lines; the NJUST renames
`nvgesture_{train,test}_correct_v2.lst` are accepted). A line is space-separated `key:value` tokens ending in a
space: `path:./Video_data/class_01/subject3_r0 depth:sk_depth:146:226 color:sk_color:146:226
duo_left:duo_left:170:263 label:1 `. The label is the `label:` token minus 1, never the folder's number (e.g.
`class_01/subject4_r2` is `label:2`); each sensor has its own window (colour and depth can be one frame apart).
The lists come with the release: prepare copies them into the prepared root, where their sha256 enter the
fingerprint; a line that cannot be read is reported as a bad sample (`<list>:<line>`) with the bad and missing
videos, all in one pass. There is no validation list: a stratified share of train is held out (`val_fraction`,
`val_seed`).

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
The loader only cuts the stored uint8 (flow: float16) window and crop, drawn from the sample's own generator
(seeded by the cell's seed, the epoch and the sample's index; version 1 drew them from each loader process's
generator); the conversion and normalisation run a batch at a time on the cell's device (`on_device`), with the
same operations as before, so evaluation inputs are unchanged, bit for bit on the CPU. Smoke runs
(`--fake-data`) read 8-frame 16 x 16 clips (`fake_params`).

Where this differs from the reader, and why: frames are RGB (OpenCV hands the reader BGR, which it normalises
with the RGB statistics), resized with Pillow's bilinear filter (PyAV decoding, no OpenCV video I/O); the flow
is cut to the same window and crop as the other modalities (the reader's training flow keeps all 80 frames and
crops at transposed offsets). Metrics: accuracy and macro-F1 (MIE's NVGesture table).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import Dataset

from mmbench.api import Batch, ModalitySpec, hookimpl
from mmbench.api import Params as AnyParams  # `Params` is each class's own attribute
from mmbench.api.data import (
    FLOW_METHODS,
    HoldoutParams,
    Item,
    Label,
    MediaError,
    PreparedArrays,
    PreparedTask,
    SplitFiles,
    optical_flow,
    read_clip,
)
from mmbench_plugins.tasks.common.frames import IMAGENET_MEAN, IMAGENET_STD, Reseeded, channel_stats, finished

CLASSES = 25
#: frames of a sensor window the reader keeps (its buffer holds 80)
WINDOW = 80
#: list file per split, as released, and the NJUST-KMG renames accepted in their place
LISTS = {"train": "nvgesture_train_correct_cvpr2016_v2.lst", "test": "nvgesture_test_correct_cvpr2016_v2.lst"}
RENAMED = {"train": "nvgesture_train_correct_v2.lst", "test": "nvgesture_test_correct_v2.lst"}
SENSORS = {"color": "rgb", "depth": "depth"}
FIELDS = {"rgb": 3, "depth": 1, "flow": 2}
LAYOUT = ("  <raw>/nvgesture_train_correct_cvpr2016_v2.lst, nvgesture_test_correct_cvpr2016_v2.lst\n"
          "  <raw>/Video_data/class_XX/subjectS_rR/sk_color.avi, sk_depth.avi   e.g. class_01/subject3_r0\n"
          "  <raw>/Video_data/flow_data/{train,test}/<k>.npy   (only with flow: precomputed)")


class NVGestureParams(HoldoutParams):
    size: int = Field(256, ge=8, le=1024, description="side of the stored square frames (the reader: 256)")
    crop: int = Field(224, ge=8, le=1024, description="side of the crop given to the model (224)")
    clip_frames: int = Field(64, ge=1, le=WINDOW, description="frames of a training clip (64); evaluation "
                                                              "takes all 80")
    flow: Literal["farneback", "dis", "precomputed"] = Field(
        "farneback", description="optical flow: computed by prepare with OpenCV (farneback, dis) or read from "
                                 "the reader's flow_data/<split>/<k>.npy arrays")
    flow_bound: float | None = Field(20.0, gt=0.0, description="flow / bound clipped to [-1, 1]; null: pixels")


# --------------------------------------------------------------------------------------------- lists


@dataclass(frozen=True)
class Entry:
    """One line of a `.lst` file: the recording folder under `Video_data/`, each sensor's (stem, start, end),
    the 0-based label, and the line's 0-based index (the precomputed flow's file name)."""

    folder: str
    windows: Mapping[str, tuple[str, int, int]]
    label: int
    index: int


def parse_line(line: str) -> tuple[str, dict[str, tuple[str, int, int]], int]:
    """(folder under `Video_data/`, each sensor's (stem, start, end), 0-based label) of one `.lst` line;
    ValueError saying what is wrong with it."""
    fields: dict[str, list[str]] = {}
    for token in line.split():
        key, _, value = token.partition(":")
        fields[key] = value.split(":")
    if "path" not in fields or "label" not in fields or any(s not in fields for s in SENSORS):
        raise ValueError(f"expected 'path:… depth:sk_depth:S:E color:sk_color:S:E … label:N', got {line!r}")
    folder = ":".join(fields["path"]).removeprefix("./").removeprefix("Video_data/")
    try:
        windows = {s: (fields[s][0], int(fields[s][1]), int(fields[s][2])) for s in SENSORS}
        label = int(fields["label"][0]) - 1
    except (IndexError, ValueError):
        raise ValueError(f"a sensor token is not <sensor>:<stem>:<start>:<end> or the label is not a number: "
                         f"{line!r}") from None
    if not 0 <= label < CLASSES:
        raise ValueError(f"label {label + 1} is outside 1..{CLASSES}")
    return folder, windows, label


def parse_list(text: str) -> tuple[list[Entry], list[tuple[int, str]]]:
    """The entries of one `.lst` file, and (line number, what is wrong) of each line that is not one."""
    entries, bad = [], []
    for number, line in enumerate((ln for ln in text.splitlines() if ln.strip()), 1):
        try:
            entries.append(Entry(*parse_line(line), index=number - 1))
        except ValueError as exc:
            bad.append((number, str(exc)))
    return entries, bad


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
            raise MediaError(f"{item.sources[2]}: flow array of shape {stored.shape}, expected "
                             f"{(size, size, 2, WINDOW)}", item.sources[2])
        flows = stored.transpose(3, 2, 0, 1)
    return {"rgb": rgb[:WINDOW], "depth": depth_frames, "flow": flows.astype(np.float16)}


# ----------------------------------------------------------------------------------------------- read


class GestureClips(Reseeded, Dataset):
    """Samples `{"rgb": (T, 3, c, c) uint8, "depth": (T, 1, c, c) uint8, "flow": (T, 2, c, c) float16, "label": ()}`:
    each modality's stored window and crop as loaded (a training clip's window and crop drawn from the sample's
    generator, `Reseeded`); `finish_gestures` makes them the model's inputs on the device."""

    def __init__(self, arrays: PreparedArrays, rows: list[int], labels: list[Label], params: NVGestureParams,
                 train: bool) -> None:
        self.arrays, self.rows, self.labels, self.params, self.train = arrays, rows, labels, params, train

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        p, row = self.params, self.rows[index]
        if self.train:
            generator = self.generator(index)
            start = int(torch.randint(0, WINDOW - p.clip_frames + 1, (), generator=generator))
            top, left = (int(v) for v in torch.randint(0, p.size - p.crop + 1, (2,), generator=generator))
            frames = slice(start, start + p.clip_frames)
        else:
            top = left = (p.size - p.crop) // 2
            frames = slice(0, WINDOW)

        def cut(field: str) -> torch.Tensor:
            window = self.arrays.get(field, row)[frames, :, top:top + p.crop, left:left + p.crop]
            return torch.from_numpy(np.ascontiguousarray(window))

        sample = {m: cut(m) for m in FIELDS}
        return sample | {"label": torch.tensor(self.labels[index], dtype=torch.long)}


def finish_gestures(batch: Batch, flow_bound: float | None) -> Batch:
    """Loaded clips `(B, T, C, c, c)` -> `(B, C, T, c, c)` floats: RGB scaled to [0, 1] and ImageNet-normalised,
    depth scaled to [0, 1], flow divided by `flow_bound` and clipped to [-1, 1] (pixels without a bound): the
    per-sample transform's operations, so its values bit for bit on the CPU."""
    mean, std = (channel_stats(v, batch.label.device, 5)[0] for v in (IMAGENET_MEAN, IMAGENET_STD))  # (3, 1, 1, 1)

    # one float copy per modality, then in place: a batch of 64-frame clips is hundreds of MB a copy
    def rgb(x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).float().div_(255.0).sub_(mean).div_(std)

    def depth(x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).float().div_(255.0)

    def flow(x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2).float()
        return x if flow_bound is None else x.div_(flow_bound).clamp_(-1.0, 1.0)

    return finished(batch, {"rgb": rgb, "depth": depth, "flow": flow})


# ----------------------------------------------------------------------------------------------- task


class NVGestureTask(PreparedTask):
    """NVGesture, RGB + depth + optical flow, 25 classes (MIE's three-modality protocol)."""

    name = "nvgesture"
    version = "2"  # 2: training windows and crops drawn per sample (`Reseeded`), not from the worker's generator
    prepared_version = "1"  # the prepared arrays are those of version 1
    Params = NVGestureParams
    params: NVGestureParams
    metrics = ("accuracy", "macro_f1")
    primary_metric = "accuracy"
    classes = tuple(str(label) for label in range(1, CLASSES + 1))
    layout = LAYOUT
    source = ("research.nvidia.com/publication/2016-06_online-detection-and-classification-dynamic-hand-gestures-"
              "recurrent-3d (nvGesture_v1)")

    @property
    def modalities(self) -> dict[str, ModalitySpec]:
        shape = (self.params.clip_frames, self.params.crop, self.params.crop)
        return {m: ModalitySpec(m, "frames" if m == "rgb" else m, (c, *shape)) for m, c in FIELDS.items()}

    def on_device(self, batch: Batch, training: bool) -> Batch:
        """The loaded clips converted and normalised, a batch at a time (`finish_gestures`)."""
        return finish_gestures(batch, self.params.flow_bound)

    def fake_sample(self, generator: torch.Generator) -> dict[str, Any]:
        """A generated training clip as the loader hands it over: random uint8 RGB and depth, float16 flow."""
        t, c = self.params.clip_frames, self.params.crop
        sample: dict[str, Any] = {m: torch.randint(0, 256, (t, channels, c, c), dtype=torch.uint8, generator=generator)
                                  for m, channels in FIELDS.items() if m != "flow"}
        sample["flow"] = (4.0 * torch.randn((t, FIELDS["flow"], c, c), generator=generator)).half()
        return sample | {"label": torch.randint(0, CLASSES, (), generator=generator)}

    @classmethod
    def fake_params(cls, params: AnyParams) -> AnyParams:
        """Smoke runs read 8-frame 16 x 16 clips: at the grid's 64 x 224 x 224, three I3D branches take minutes and
        about 12 GB a cell on a CPU. The modalities, their loading and normalisation stay the same."""
        assert isinstance(params, NVGestureParams)
        return params.model_copy(update={"clip_frames": min(params.clip_frames, 8), "crop": min(params.crop, 16)})

    def preprocessing(self) -> dict[str, Any]:
        """What the prepared arrays depend on; enters the fingerprint."""
        flow = self.params.flow
        return {"size": self.params.size, "window": WINDOW, "resize": "pillow-bilinear", "depth_channel": 0,
                "flow": {"method": flow, **FLOW_METHODS.get(flow, {}), "dtype": "float16"}}

    def fields(self) -> dict[str, tuple[int, ...]]:
        return {field: (WINDOW, channels, self.params.size, self.params.size) for field, channels in FIELDS.items()}

    def release_lists(self, raw: Path) -> dict[str, Path]:
        """Each split's list in the release (or its NJUST-KMG rename)."""
        found = {}
        for split, name in LISTS.items():
            path = next((raw / n for n in (name, RENAMED[split]) if (raw / n).is_file()), None)
            if path is None:
                raise self.raw_error(raw, f"lacks the {split} list {name}")
            found[split] = path
        return found

    def import_lists(self, raw: Path) -> None:
        """Copy the release's lists into `<root>/lists` with their sha256 (`split_files` reads them there)."""
        SplitFiles.copy({LISTS[split]: path for split, path in self.release_lists(raw).items()},
                        self._root / "lists")

    def entries(self) -> dict[str, list[Entry]]:
        """Each split's readable lines (prepare reported the others)."""
        files = self.split_files()
        return {split: parse_list(files.text(name))[0] for split, name in LISTS.items()}

    def lists(self) -> dict[str, list[tuple[str, Label]]]:
        return {split: [(e.folder, e.label) for e in entries] for split, entries in self.entries().items()}

    def items(self, raw: Path) -> list[Item]:
        if not (raw / "Video_data").is_dir():
            raise self.raw_error(raw, "has no Video_data/ folder")
        items = []
        for split, path in self.release_lists(raw).items():
            entries, bad = parse_list(self.split_files().text(LISTS[split]))
            items += [Item.bad_line(path, number, reason) for number, reason in bad]
            for e in entries:
                folder = raw / "Video_data" / e.folder
                sources = tuple(folder / f"{e.windows[s][0]}.avi" for s in SENSORS)
                if self.params.flow == "precomputed":
                    sources += (raw / "Video_data" / "flow_data" / split / f"{e.index}.npy",)
                items.append(Item(e.folder, e.label, sources, extra=tuple(e.windows[s][1] for s in SENSORS)))
        return items

    def processor(self):
        return functools.partial(process_recording, size=self.params.size, flow=self.params.flow)

    def datasets(self, arrays: PreparedArrays, parts: dict[str, tuple[list[int], list[Label]]]) -> dict[str, Dataset]:
        return {split: GestureClips(arrays, rows, labels, self.params, train=split == "train")
                for split, (rows, labels) in parts.items()}


@hookimpl
def mmbench_tasks():
    return [NVGestureTask]
