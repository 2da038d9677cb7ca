"""Video frames and images from their stored uint8 form to what the encoders read, split between the loader and the
cell's device.

The loader does what must happen per sample on the host: gather the stored uint8 arrays and draw the sample's
random choices (which frames, the crop box, the flip) from a generator of its own, seeded by the cell's seed, the
epoch and the sample's index (`Reseeded`: the `reseed(seed, epoch)` convention of `Task.splits`), so the choices do
not depend on how many processes load the data. `Task.on_device` then crops, resizes, flips, converts and
normalises whole batches there (`resized_crops`, `normalise`), on the CPU too when the cell runs there.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmbench.api import Batch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator of one sample's random choices in one epoch: a fresh stream per (seed, epoch, index), mixed by
    numpy's `SeedSequence` (stable across Python and NumPy versions, unlike `hash`)."""
    state = np.random.SeedSequence((seed, epoch, index)).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


class Reseeded:
    """A split that draws random choices per sample: `reseed(seed, epoch)` (the engine calls it before each epoch)
    sets the first two parts of each sample's seed; `generator(index)` gives the sample's generator."""

    seed: int = 0
    epoch: int = 0

    def reseed(self, seed: int, epoch: int) -> None:
        self.seed, self.epoch = seed, epoch

    def generator(self, index: int) -> torch.Generator:
        return sample_generator(self.seed, self.epoch, index)


def crop_box(width: int, height: int, generator: torch.Generator, scale: tuple[float, float] = (0.08, 1.0),
             ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """A random-resized-crop box (top, left, height, width) in a width x height image, drawn as torchvision's
    `RandomResizedCrop.get_params` draws it from the global generator, draw for draw, from `generator`: ten tries
    of a random area share and log-uniform aspect ratio, else the largest centred box within the ratio range."""
    area = height * width
    low, high = torch.log(torch.tensor(ratio)).tolist()  # in float32, as torchvision takes them
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = torch.exp(torch.empty(1).uniform_(low, high, generator=generator)).item()
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        w, h = round(height * max(ratio)), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crops(frames: Tensor, boxes: Tensor, flip: Tensor, size: int) -> Tensor:
    """Frames `(N, C, S, S)` (any dtype) -> each one's box `(top, left, height, width)` resized to `size` x `size`
    and mirrored where `flip`, as float pixel values, in one batched bilinear `grid_sample`.

    The sampling points are those of `resize` with half-pixel centres (`align_corners=False`), which is what
    torchvision's antialiased `resized_crop` computes when a box is no larger than `size` (the antialiasing
    filter then is the bilinear one); a larger box is sampled without antialiasing. Along a box's edge the
    outermost half pixel blends in the pixels just outside the box where torchvision repeats the box's edge.
    """
    n, _, height, width = frames.shape
    top, left, h, w = boxes.to(torch.float32).unbind(-1)
    steps = (torch.arange(size, device=frames.device, dtype=torch.float32) * 2 + 1) / size - 1  # output centres
    sign = 1.0 - 2.0 * flip.to(torch.float32)
    # grid coordinates in [-1, 1] of the input (align_corners=False): a box's centre plus its half extent
    x = (sign * w / width)[:, None] * steps + ((2 * left + w) / width - 1)[:, None]
    y = (h / height)[:, None] * steps + ((2 * top + h) / height - 1)[:, None]
    grid = torch.stack([x[:, None, :].expand(n, size, size), y[:, :, None].expand(n, size, size)], dim=-1)
    return F.grid_sample(frames.to(torch.float32), grid, mode="bilinear", padding_mode="border", align_corners=False)


def normalise(pixels: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 pixels (or float32 ones in 0–255, normalised in place) -> `(pixels / 255 - mean) / std`, the
    operations (and so the bits) of torchvision's `ToTensor` + `Normalize`."""
    out = pixels if pixels.dtype == torch.float32 else pixels.float()
    return out.div_(255.0).sub_(mean).div_(std)


@functools.lru_cache(maxsize=64)
def channel_stats(values: tuple[float, float, float], device: torch.device, dims: int) -> Tensor:
    """Per-channel statistics shaped to broadcast over a batch whose channel axis is 1 and that has `dims` axes;
    made once per device (a copy from the host at every batch would wait for the device's stream)."""
    return torch.tensor(values, device=device).view(1, 3, *([1] * (dims - 2)))


def finished(batch: Batch, finish: Mapping[str, Callable[[Any], Tensor]]) -> Batch:
    """The batch with each modality in `finish` turned from its loaded form into the model's input, in `inputs` and
    in `views` alike; other modalities as they are."""

    def each(inputs: dict[str, Any]) -> dict[str, Any]:
        return {m: finish[m](x) if m in finish else x for m, x in inputs.items()}

    return Batch(each(batch.inputs), batch.label, each(batch.views), batch.meta)
