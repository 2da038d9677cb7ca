"""Moviescope on a tiny copy in the layout of Dynamic UDA's code: the task's contract (`check_task`), the jsonl read
leniently, bad lines and a missing poster in prepare's report, MMBV with joint and Dynamic UDA, the image view."""

from __future__ import annotations

import json

import pytest
import torch

from mmbench.training.batches import collate
from mmbench_plugins.tasks.moviescope import MoviescopeTask
from tests.fixtures.cells import TEXT_TRAIN, run_cells
from tests.fixtures.moviescope import write_moviescope
from tests.fixtures.release import prepare_report as report
from tests.fixtures.release import write_jpeg
from tests.fixtures.text import IMAGE, TEXT, ids_of, prepared_copy, tokenize


@pytest.fixture(scope="module")
def moviescope(tmp_path_factory):
    base = tmp_path_factory.mktemp("moviescope")
    raw = base / "moviescope"
    write_moviescope(raw)
    with (raw / "dev.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"id": 3684, "title": "R100", "label": ["Comedy", "Drama"], "synopsis": "cut short\n')
    with (raw / "test.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": 4476, "title": "The Lost Weekend", "label": ["Drama", "Western"],
                                 "plot_keywords": "alcohol", "synopsis": "A writer drinks."}) + "\n")
        handle.write(json.dumps({"id": 2252, "title": "Silent Hill: Revelation 3D", "label": ["Horror"],
                                 "plot_keywords": "fog", "synopsis": ""}) + "\n")
    write_jpeg(raw / "MatchedPosters" / "4476.jpg", 1)
    write_jpeg(raw / "MatchedPosters" / "2252.jpg", 2)
    (raw / "MatchedPosters" / "4210.jpg").unlink()
    return prepared_copy(MoviescopeTask, raw, max_length=32)


def test_moviescope_reads_the_jsonl_leniently_and_reports_bad_lines(moviescope):
    raw, root, tokenizer = moviescope
    facts = report(root)
    assert [m["id"] for m in facts["missing"]] == ["4210"]
    reasons = {b["id"]: b["reason"] for b in facts["bad"]}
    assert set(reasons) == {"dev.jsonl:4", "test.jsonl:4"}
    assert reasons["dev.jsonl:4"].startswith(f"{raw / 'dev.jsonl'} line 4: Unterminated string")
    assert "unknown genre 'Western' (the 13 genres of moviescope: Action, Animation" in reasons["test.jsonl:4"]
    task = MoviescopeTask(MoviescopeTask.Params(tokenizer=str(tokenizer), max_length=32), root=root)
    splits = task.splits()
    assert {s: len(d) for s, d in splits.items()} == {"train": 6, "val": 2, "test": 4}
    harold = splits["val"][0]  # 2931, Comedy; 3003 (the NaN keywords line) is kept
    assert harold["label"].tolist() == [0, 0, 0, 1] + [0] * 9 and splits["val"][1]["label"].sum() == 3
    assert ids_of(splits["test"][3]) == tokenize(tokenizer, "", 32)  # an empty synopsis is [CLS] [SEP]
    image = splits["train"][0]["image"]
    assert image.shape == (3, 224, 224) and image.dtype == torch.uint8


def test_one_epoch_of_mmbv_with_joint_and_dynamic_uda(moviescope, tmp_path):
    _, root, tokenizer = moviescope
    cells = run_cells("moviescope", root, tmp_path, {"text": TEXT, "image": IMAGE}, "mmbv",
                      ["joint", "dynamic_uda"], TEXT_TRAIN, tokenizer=str(tokenizer), max_length=32)
    for cell in cells:
        assert set(cell["test"]["metrics"]) == {"f1_micro", "f1_macro", "map_micro", "map_macro"}
        assert set(cell["test"]["missing_modality"]) == {"text", "image"}


def old_rand_augment(image: torch.Tensor, generator: torch.Generator, mean: torch.Tensor,
                     std: torch.Tensor) -> torch.Tensor:
    """The view before the work moved to the device: RandAugment of the normalised image, recovered as uint8."""
    from torchvision.transforms import v2

    pixels = ((image * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = v2.RandAugment(num_ops=2, magnitude=9)(pixels)
    return (out.float() / 255.0 - mean) / std


def test_image_view_is_rand_augment_of_the_image_as_before(moviescope):
    _, root, tokenizer = moviescope
    task = MoviescopeTask(MoviescopeTask.Params(tokenizer=str(tokenizer), max_length=32), root=root)
    sample = task.splits()["train"][0]
    image = sample["image"]
    views = [task.augment("image", image, torch.Generator().manual_seed(seed)) for seed in range(4)]
    assert all(v.shape == image.shape and v.dtype == torch.uint8 for v in views)
    assert sum(not torch.equal(v, image) for v in views) >= 3
    assert torch.equal(views[0], task.augment("image", image, torch.Generator().manual_seed(0)))
    batch = collate([sample] * 4)
    batch.views = {"image": torch.stack(views)}
    finished = task.on_device(batch, training=True)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (task.mean, task.std))
    normalised = finished.inputs["image"][0]
    for seed in range(4):
        expected = old_rand_augment(normalised, torch.Generator().manual_seed(seed), mean, std)
        assert torch.equal(finished.views["image"][seed], expected)
