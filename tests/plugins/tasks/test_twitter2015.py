"""Twitter2015 end to end on a tiny copy in TomBERT's layout: the task's contract (`check_task`, with a local
WordPiece tokenizer) -> a one-epoch cell; a malformed row, a missing and a corrupt image reported in one pass;
the tokenizer in the fingerprint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mmbench.cli import app
from mmbench.contract.errors import DataError
from mmbench.data import prepare as prepare_lib
from mmbench.data.prepared import read_manifest
from mmbench.testing import check_task
from mmbench.training.batches import collate
from mmbench_plugins.tasks.twitter2015 import Twitter2015Task
from tests.fixtures.cells import TEXT_TRAIN, run_cells
from tests.fixtures.text import fixture_texts, write_tokenizer
from tests.fixtures.twitter2015 import write_twitter2015

runner = CliRunner()
TINY_TEXT = {"name": "bert", "params": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                        "intermediate_size": 64, "vocab_size": 200}}
TINY_IMAGE = {"name": "vit", "params": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                        "intermediate_size": 64, "patch_size": 32}}


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("twitter") / "twitter2015"
    write_twitter2015(raw)
    with (raw / "dev.tsv").open("a", encoding="utf-8") as handle:
        handle.write("4\t7\t871618.jpg\tno target here\n")  # a malformed row: label 7, 4 fields, no $T$
    (raw / "twitter2015_images" / "74960.jpg").unlink()  # test row 1's image is missing
    return raw


@pytest.fixture(scope="module")
def tokenizer(raw, tmp_path_factory) -> Path:
    return write_tokenizer(tmp_path_factory.mktemp("tok") / "wordpiece", fixture_texts(raw))


@pytest.fixture(scope="module")
def prepared(raw, tokenizer, tmp_path_factory) -> Path:
    """Prepared through the task's contract, with the 1 % tolerance raised: 1 bad row of 13 is more than a real
    release may have."""
    root = tmp_path_factory.mktemp("prepared") / "twitter2015"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prepare_lib, "MAX_BAD_FRACTION", 0.2)
        check_task(Twitter2015Task, {"tokenizer": str(tokenizer)}, raw=raw, root=root, partial=True,
                   encoders={"text": "bert", "image": "vit"})
    return root


def task(root, tokenizer, **params) -> Twitter2015Task:
    return Twitter2015Task(Twitter2015Task.Params(tokenizer=str(tokenizer), **params), root=root)


def test_prepare_lists_the_malformed_row_and_the_missing_image(prepared, raw):
    report = json.loads((prepared / "prepare-report.json").read_text())
    assert [m["id"] for m in report["missing"]] == ["test-1"]
    assert report["missing"][0]["path"].endswith("twitter2015_images/74960.jpg")
    [bad] = report["bad"]
    assert bad["id"] == "dev.tsv:5" and f"{raw / 'dev.tsv'} line 5" in bad["reason"] and "label 0-2" in bad["reason"]
    assert report["kept"] == 11


def test_text_is_the_tweet_with_its_target_filled_in_then_the_target(prepared, tokenizer):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    splits = task(prepared, tokenizer).splits()
    assert {s: len(d) for s, d in splits.items()} == {"train": 6, "val": 3, "test": 2}
    first = splits["train"][0]
    ids, mask, types = (first["text"][k] for k in ("input_ids", "attention_mask", "token_type_ids"))
    n = int(mask.sum())
    assert ids.shape == (64,) and mask[:n].all() and not mask[n:].any() and not ids[n:].any()
    assert tok.decode(ids[:n]) == "[CLS] rt @ ltschuckbass : chuck bass is everything # mcm [SEP] chuck bass [SEP]"
    target_len = len(tok.tokenize("chuck bass")) + 1
    assert types[:n - target_len].eq(0).all() and types[n - target_len:n].eq(1).all()
    assert int(first["label"]) == 2 and [int(splits["train"][i]["label"]) for i in range(6)] == [2, 1, 1, 0, 2, 1]


def test_images_are_resized_and_normalised_with_the_protocol_statistics(prepared, raw, tokenizer):
    t = task(prepared, tokenizer)
    train = t.splits()["train"]
    stored = train[4]["image"]  # row 5: 871618.jpg, as stored
    assert stored.shape == (3, 224, 224) and stored.dtype == torch.uint8
    image = t.on_device(collate([train[i] for i in range(5)]), training=True).inputs["image"][4]
    expected = np.asarray(Image.open(raw / "twitter2015_images" / "871618.jpg").convert("RGB")
                          .resize((224, 224), Image.BILINEAR), dtype=np.float32).transpose(2, 0, 1) / 255.0
    mean = np.array([0.42455, 0.44051, 0.47076], np.float32)[:, None, None]
    std = np.array([0.24485, 0.24617, 0.25451], np.float32)[:, None, None]
    np.testing.assert_allclose(image.numpy(), (expected - mean) / std, atol=1e-5)
    # the loader's per-image normalisation before the work moved to the device, bit for bit
    before = (stored.float() / 255.0 - torch.tensor(mean)) / torch.tensor(std)
    assert torch.equal(image, before)


def test_check_passes_and_the_tokenizer_enters_the_fingerprint(prepared, raw, tokenizer, tmp_path):
    result = runner.invoke(app, ["data", "check", "twitter2015", "--root", str(prepared),
                                 "--param", f"tokenizer={tokenizer}"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(prepared, "twitter2015", "")
    assert manifest.preprocessing["tokenizer"] == str(tokenizer) and manifest.preprocessing["max_length"] == 64
    other = write_tokenizer(tmp_path / "other", ["a completely different corpus of words"] * 3)
    with pytest.raises(DataError, match="prepare it again with .*--param tokenizer="):
        task(prepared, other).splits()
    assert manifest.preprocessing["vocabulary_sha256"] != _vocabulary_of(other)


def _vocabulary_of(folder: Path) -> str:
    from transformers import AutoTokenizer

    from mmbench_plugins.tasks.common.imagetext import vocabulary_hash

    return vocabulary_hash(AutoTokenizer.from_pretrained(str(folder)))


def test_every_defect_of_a_raw_copy_is_reported_in_one_pass(tokenizer, tmp_path):
    """A malformed row, a missing image and a corrupt one: one prepare lists all three (the corrupt image under its
    own path, in words), names them on the console, and fails on the bad ones."""
    raw = tmp_path / "twitter2015"
    write_twitter2015(raw)
    with (raw / "dev.tsv").open("a", encoding="utf-8") as handle:
        handle.write("4\t7\t871618.jpg\tno target here\n")
    (raw / "twitter2015_images" / "74960.jpg").unlink()
    corrupt = raw / "twitter2015_images" / "280704.jpg"  # train row 6 and dev row 1
    corrupt.write_bytes(corrupt.read_bytes()[:40])
    result = runner.invoke(app, ["data", "prepare", "twitter2015", "--raw", str(raw), "--root", str(tmp_path / "r"),
                                 "--partial", "--workers", "1", "--param", f"tokenizer={tokenizer}"])
    assert result.exit_code == 2 and "3 of the 12 samples present are corrupt" in result.output
    report = json.loads((tmp_path / "r" / "prepare-report.json").read_text())
    bad = {b["id"]: b for b in report["bad"]}
    assert set(bad) == {"dev.tsv:5", "train-6", "val-1"}
    assert bad["train-6"]["path"] == bad["val-1"]["path"] == str(corrupt)
    assert "cannot decode the image" in bad["train-6"]["reason"] or "not an image" in bad["train-6"]["reason"]
    assert [m["id"] for m in report["missing"]] == ["test-1"]
    for entry in bad.values():
        assert f"{entry['id']}: {entry['reason']}" in result.output
    assert "test-1 (no " in result.output


def test_a_missing_tokenizer_is_a_clear_error(raw, tmp_path):
    result = runner.invoke(app, ["data", "prepare", "twitter2015", "--raw", str(raw), "--root", str(tmp_path / "r"),
                                 "--param", f"tokenizer={tmp_path / 'nowhere'}"])
    assert result.exit_code == 2 and "cannot load the tokenizer" in result.output


def test_one_epoch_cell_with_bert_and_an_image_encoder(prepared, tokenizer, tmp_path):
    cells = run_cells("twitter2015", prepared, tmp_path, {"text": TINY_TEXT, "image": TINY_IMAGE}, "concat",
                      ["joint", "ogm_ge"], TEXT_TRAIN, tokenizer=str(tokenizer))
    for cell in cells:
        assert set(cell["test"]["metrics"]) == {"accuracy", "macro_f1"}
        assert set(cell["test"]["missing_modality"]) == {"text", "image"}
