"""Frames split between the loader and the device (`common/frames.py`, the audio-visual clips): the draws are
torchvision's, a fixed box gives torchvision's pixels, evaluation inputs are the per-sample transform's bit for bit,
and a sample's choices follow the cell's seed and the epoch, never the loader's worker count."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from mmbench.training.batches import TrainSamples, collate
from mmbench_plugins.tasks.common import audiovisual
from mmbench_plugins.tasks.common.frames import crop_box, resized_crops
from mmbench_plugins.tasks.cremad import CremadTask

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1, 1)


class Stored:
    """Prepared arrays in memory: each clip's uint8 frames and its video's size."""

    def __init__(self, clips: int, frames: int, size: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.fields = {"frames": [rng.integers(0, 256, (frames, 3, size, size), dtype=np.uint8) for _ in range(clips)],
                       "source_size": [np.array([480, 360], np.int32)] * clips}

    def get(self, field: str, row: int) -> np.ndarray:
        return self.fields[field][row]


def clips(stored: Stored, train: bool, frames: int = 2) -> audiovisual.ClipDataset:
    rows = list(range(len(stored.fields["frames"])))
    return audiovisual.ClipDataset(stored, rows, [0] * len(rows), frames, train=train, random_pick=True,
                                   audio_input=lambda row: torch.zeros(1, 4, 4))


def old_evaluation_visual(stored: np.ndarray, frames: int) -> torch.Tensor:
    """The previous `ClipDataset.__getitem__` for an evaluation clip (the first frames, resized when stored at
    another size than 224, normalised), kept as the reference."""
    clip = torch.from_numpy(np.ascontiguousarray(stored[audiovisual.pick_frames(len(stored), frames, None)]))
    if clip.shape[-1] != 224:
        clip = TF.resize(clip, [224, 224], antialias=True)
    return (clip.permute(1, 0, 2, 3).float() / 255.0 - MEAN) / STD


@pytest.mark.parametrize("width, height, scale", [(480, 360, (0.08, 1.0)), (224, 224, (0.08, 1.0)),
                                                  (10, 1000, (0.5, 1.0)), (1000, 10, (0.5, 1.0)),
                                                  (300, 280, (0.99, 1.0))])
def test_crop_boxes_are_drawn_as_random_resized_crop_draws_them_fallback_included(width, height, scale):
    image = torch.zeros(3, height, width)
    for seed in range(5):
        generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            expected = [RandomResizedCrop.get_params(image, list(scale), [3 / 4, 4 / 3]) for _ in range(20)]
            after = torch.rand(1)  # the generators are in the same state afterwards
        drawn = [crop_box(width, height, generator, scale) for _ in range(20)]
        assert drawn == [tuple(int(v) for v in box) for box in expected]
        assert torch.equal(torch.rand(1, generator=generator), after)
    if width / height < 3 / 4 or width / height > 4 / 3:  # no try fits: the centred fallback, every time
        fallback = (round(width / (3 / 4)), width) if width < height else (height, round(height * 4 / 3))
        assert {box[2:] for box in drawn} == {fallback}


def interior(box: tuple[int, int, int, int], size: int = 224) -> tuple[torch.Tensor, torch.Tensor]:
    """The output rows and columns whose two bilinear taps both lie inside the box."""
    top, left, h, w = box
    steps = torch.arange(size, dtype=torch.float64) + 0.5
    y, x = top - 0.5 + steps * h / size, left - 0.5 + steps * w / size
    return (y >= top) & (y <= top + h - 1), (x >= left) & (x <= left + w - 1)


def test_a_fixed_box_and_flip_give_torchvision_s_resized_crop_within_one_grey_level_inside_the_box():
    frames = torch.randint(0, 256, (5, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    boxes = [(0, 0, 224, 224), (10, 20, 100, 150), (100, 3, 17, 40), (50, 60, 174, 164), (0, 200, 224, 24)]
    flips = [False, True, False, True, True]
    out = resized_crops(frames, torch.tensor(boxes, dtype=torch.float32), torch.tensor(flips), 224)
    assert out.shape == (5, 3, 224, 224) and out.dtype == torch.float32
    for i, (box, flip) in enumerate(zip(boxes, flips, strict=True)):
        expected = TF.resized_crop(frames[i], *box, size=[224, 224], antialias=True).float()
        expected = expected.flip(-1) if flip else expected
        rows, columns = interior(box)
        columns = columns.flip(0) if flip else columns
        inside = (out[i] - expected)[:, rows][:, :, columns]
        assert inside.abs().max() <= 1.0, (box, inside.abs().max())
    assert (out[0] - frames[0].float()).abs().max() <= 0.01  # the whole frame: nothing to blend, the frame itself


def test_evaluation_inputs_are_the_per_sample_transform_s_bit_for_bit():
    for size in (224, 96):  # stored at the crop size, and at another size (resized on the device)
        stored = Stored(clips=4, frames=3, size=size)
        split = clips(stored, train=False)
        samples = [split[i] for i in range(4)]
        assert set(samples[0]["visual"]) == {"frames"} and samples[0]["visual"]["frames"].dtype == torch.uint8
        batch = CremadTask(CremadTask.Params(frames=2)).on_device(collate(samples), training=False)
        expected = torch.stack([old_evaluation_visual(f, 2) for f in stored.fields["frames"]])
        assert batch.inputs["visual"].shape == (4, 3, 2, 224, 224)
        assert torch.equal(batch.inputs["visual"], expected)


def boxes_and_flips(split: audiovisual.ClipDataset) -> list[tuple[list, list]]:
    return [(split[i]["visual"]["boxes"].tolist(), split[i]["visual"]["flip"].tolist()) for i in range(len(split))]


def test_a_sample_s_choices_follow_the_seed_and_the_epoch():
    split = clips(Stored(clips=6, frames=4, size=32), train=True)
    split.reseed(0, 0)
    first = boxes_and_flips(split)
    assert first == boxes_and_flips(split)  # drawn again: the same (nothing global moved)
    split.reseed(0, 1)
    next_epoch = boxes_and_flips(split)
    split.reseed(1, 0)
    other_seed = boxes_and_flips(split)
    assert all(a != b for a, b in zip(first, next_epoch, strict=True))
    assert all(a != b for a, b in zip(first, other_seed, strict=True))
    samples = TrainSamples(split, CremadTask(CremadTask.Params()), seed=0, views=False)
    samples.start_epoch(1, None)  # the engine's call before each epoch reaches the split
    assert boxes_and_flips(split) == next_epoch


def test_a_sample_s_choices_do_not_depend_on_the_worker_count():
    split = clips(Stored(clips=8, frames=3, size=32), train=True)
    split.reseed(7, 3)

    def read(workers: int) -> list[torch.Tensor]:
        loader = DataLoader(split, batch_size=3, num_workers=workers, collate_fn=collate)
        return [torch.cat([b.inputs["visual"]["boxes"].flatten(), b.inputs["visual"]["flip"].float().flatten(),
                           b.inputs["visual"]["frames"].float().flatten()]) for b in loader]

    alone = read(0)
    assert all(torch.equal(a, b) for a, b in zip(alone, read(2), strict=True))


@pytest.mark.parametrize("frames", [1, 3])
def test_on_device_gives_the_declared_shape_for_samples_views_and_generated_samples(frames):
    task = CremadTask(CremadTask.Params(frames=frames))
    split = clips(Stored(clips=3, frames=4, size=224), train=True, frames=frames)
    samples = [split[i] for i in range(3)]
    generator = torch.Generator().manual_seed(0)
    views = [{"visual": task.augment("visual", s["visual"], generator)} for s in samples]
    batch = collate(samples)
    batch.views = collate([{**v, "label": torch.tensor(0)} for v in views]).inputs
    done = task.on_device(batch, training=True)
    declared = (3, *task.modalities["visual"].shape)
    assert done.inputs["visual"].shape == done.views["visual"].shape == declared
    assert done.inputs["audio"] is batch.inputs["audio"]  # the spectrogram arrives finished
    fake = task.on_device(collate([task.fake_sample(generator) for _ in range(2)]), training=True)
    assert fake.inputs["visual"].shape == (2, *task.modalities["visual"].shape)
    assert torch.isfinite(fake.inputs["visual"]).all()


def test_the_augmented_view_mirrors_the_clip_half_the_time_and_scales_its_brightness():
    task = CremadTask(CremadTask.Params(frames=2))
    frames = torch.randint(30, 200, (2, 3, 224, 224), dtype=torch.uint8)  # below 255 / 1.2: brightening never clips
    sample = audiovisual.training_clip(frames, (480, 360), torch.Generator().manual_seed(0))
    pixels = task.on_device(collate([{"visual": sample, "label": torch.tensor(0)}]), True).inputs["visual"][0]
    pixels = pixels * STD + MEAN
    generator, mirrored = torch.Generator().manual_seed(1), 0
    for _ in range(12):
        view = task.augment("visual", sample, generator)
        done = task.on_device(collate([{"visual": view, "label": torch.tensor(0)}]), True).inputs["visual"][0]
        done = done * STD + MEAN
        ratios = [done / source for source in (pixels, pixels.flip(-1))]
        constant = [r for r in ratios if torch.allclose(r, r.mean().expand_as(r), atol=1e-3)]
        assert len(constant) == 1 and 0.8 <= float(constant[0].mean()) <= 1.2
        mirrored += torch.allclose(constant[0], ratios[1])
    assert 0 < mirrored < 12
