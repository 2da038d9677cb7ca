"""A tiny copy of the `nvGesture_v1` release in its real layout: both `.lst` files in the official line format
(the train lines are real ones, from the dataset spec; the test lines, one per class, follow the same format
with another subject, as no real test line was available), trailing spaces included, and tiny `sk_color.avi` /
`sk_depth.avi` encoded on the fly with PyAV, long enough for every window plus the frame after it."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

#: real lines of nvgesture_train_correct_cvpr2016_v2.lst (datasets spec 7.3); note class_01/subject4_r2 is label 2
TRAIN_LINES = (
    "path:./Video_data/class_01/subject3_r0 depth:sk_depth:146:226 color:sk_color:146:226 duo_left:duo_left:170:263 label:1",
    "path:./Video_data/class_01/subject4_r2 depth:sk_depth:144:224 color:sk_color:144:224 duo_left:duo_left:169:262 label:2",
    "path:./Video_data/class_01/subject1_r1 depth:sk_depth:218:298 color:sk_color:218:298 duo_left:duo_left:255:348 label:1",
    "path:./Video_data/class_02/subject3_r0 depth:sk_depth:125:205 color:sk_color:125:205 duo_left:duo_left:146:239 label:2",
    "path:./Video_data/class_03/subject3_r1 depth:sk_depth:138:218 color:sk_color:138:218 duo_left:duo_left:161:254 label:3",
    "path:./Video_data/class_04/subject3_r0 depth:sk_depth:135:215 color:sk_color:135:215 duo_left:duo_left:157:250 label:4",
)


def _test_line(label: int) -> str:
    """A test line in the official format, one per class; class 2's depth window is one frame after its colour
    one (the errata: use each sensor's own window)."""
    start = 10 + label
    depth = start + (label == 2)
    return (f"path:./Video_data/class_{label:02d}/subject13_r{label % 3} depth:sk_depth:{depth}:{depth + 80} "
            f"color:sk_color:{start}:{start + 80} duo_left:duo_left:{start + 8}:{start + 101} label:{label}")


#: test lines covering all 25 classes, so the tiny copy is a complete data set
TEST_LINES = tuple(_test_line(label) for label in range(1, 26))
LIST_NAMES = {"train": "nvgesture_train_correct_cvpr2016_v2.lst", "test": "nvgesture_test_correct_cvpr2016_v2.lst"}
SIZE = (40, 30)  # width, height of the tiny videos (the release's are 320 x 240)


def folder_of(line: str) -> str:
    return line.split()[0].split(":", 1)[1].removeprefix("./Video_data/")


def end_of(line: str) -> int:
    return max(int(token.split(":")[3]) for token in line.split() if token.startswith(("color:", "depth:")))


def write_avi(path: Path, frames: int, shade: int, grey: bool) -> None:
    """An MPEG-4 AVI whose frames carry a box moving right 1 pixel a frame (so the flow is not zero)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        for i in range(frames):
            image = np.full((SIZE[1], SIZE[0], 3), shade, np.uint8)
            x = i % (SIZE[0] - 12)
            image[8:20, x:x + 12] = 230 if grey else (230, 90, 20)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def write_nvgesture(raw: Path) -> Path:
    """The tiny release under `raw`."""
    raw.mkdir(parents=True, exist_ok=True)
    for split, lines in (("train", TRAIN_LINES), ("test", TEST_LINES)):
        (raw / LIST_NAMES[split]).write_text("".join(line + " \n" for line in lines))
        for k, line in enumerate(lines):
            folder = raw / "Video_data" / folder_of(line)
            frames = end_of(line) + 2
            write_avi(folder / "sk_color.avi", frames, 7 * k, False)
            write_avi(folder / "sk_depth.avi", frames, 30 + 7 * k, True)
    return raw


def write_flow_arrays(raw: Path, size: int) -> dict[tuple[str, int], np.ndarray]:
    """The reader's precomputed `flow_data/<split>/<k>.npy` arrays, (size, size, 2, 80) float32; returns them."""
    arrays = {}
    for split, lines in (("train", TRAIN_LINES), ("test", TEST_LINES)):
        for k in range(len(lines)):
            array = np.random.default_rng(k).normal(size=(size, size, 2, 80)).astype(np.float32)
            path = raw / "Video_data" / "flow_data" / split / f"{k}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, array)
            arrays[(split, k)] = array
    return arrays
