"""Sarcasm, Moviescope and MM-IMDb (raw) on tiny copies in their real layouts: prepare -> check -> what the
model reads; each malformed input in prepare's report; one-epoch cells of the joint models; Dynamic UDA's views."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mmbench.cli import app
from mmbench.data import prepare as prepare_lib
from mmbench_plugins.tasks.imagetext import pad_text, replace_tokens
from mmbench_plugins.tasks.mmimdb import MMIMDbTask
from mmbench_plugins.tasks.moviescope import MoviescopeTask
from mmbench_plugins.tasks.sarcasm import SarcasmTask
from tests.fixtures.imagetext import (
    fixture_texts,
    run_cells,
    write_jpeg,
    write_mmimdb_movie,
    write_mmimdb_raw,
    write_moviescope,
    write_sarcasm,
    write_tokenizer,
)

runner = CliRunner()
TINY = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32}
TEXT = {"name": "bert", "params": {**TINY, "vocab_size": 200}}


def prepare(task: str, raw: Path, root: Path, tokenizer: Path, *flags: str, **params) -> None:
    """`mmbench data prepare`, with the bad-sample tolerance raised: the tiny copies hold one bad line in ~12."""
    args = [f"--param=tokenizer={tokenizer}"] + [f"--param={k}={v}" for k, v in params.items()]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prepare_lib, "MAX_BAD_FRACTION", 0.2)
        result = runner.invoke(app, ["data", "prepare", task, "--raw", str(raw), "--root", str(root), "--workers",
                                     "1", *flags, *args])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["data", "check", task, "--root", str(root), *args])
    assert result.exit_code == 0, result.output


def prepared_copy(task: str, raw: Path, **params) -> tuple[Path, Path, Path]:
    """A partial copy in `raw` prepared beside it with a tokenizer trained on its text: (raw, root, tokenizer)."""
    tokenizer = write_tokenizer(raw.parent / "tok", fixture_texts(raw))
    root = raw.parent / "prepared"
    prepare(task, raw, root, tokenizer, "--partial", **params)
    return raw, root, tokenizer


def report(root: Path) -> dict:
    return json.loads((root / "prepare-report.json").read_text())


def tokenize(tokenizer: Path, text: str, max_length: int) -> list[int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer))(text, truncation=True, max_length=max_length)["input_ids"]


def ids_of(sample: dict) -> list[int]:
    text = sample["text"]
    return text["input_ids"][: int(text["attention_mask"].sum())].tolist()


# ------------------------------------------------------------------------------------------ Sarcasm


def test_sarcasm_reads_python_literals_filters_keywords_and_reports_a_bad_line(tmp_path):
    raw = tmp_path / "sarcasm"
    write_sarcasm(raw, image_folder="images")
    with (raw / "text" / "test2.txt").open("ab") as handle:  # a tweet of valid2 listed again
        handle.write(b"['900000000000000003', 'sunny day at the park', 0, 0]\r\n")
    tokenizer = write_tokenizer(tmp_path / "tok", fixture_texts(raw))
    root = tmp_path / "prepared"
    prepare("sarcasm", raw, root, tokenizer, image_folder="images")
    facts = report(root)
    assert facts["annotations"] == [{"id": "910308516510011393", "path": f"{raw / 'text' / 'train.txt'}:4",
                                     "reason": "dropped by the reference loader's filter (<url>)"},
                                    {"id": "900000000000000003", "path": str(raw / "images" / "900000000000000003.jpg"),
                                     "reason": "listed again in test (first in val)"}]
    [bad] = facts["bad"]
    assert bad["id"] == "test2.txt:4" and "test2.txt line 4: not a Python list literal" in bad["reason"]
    task = SarcasmTask(SarcasmTask.Params(tokenizer=str(tokenizer), image_folder="images"), root=root)
    splits = task.splits()
    assert {s: len(d) for s, d in splits.items()} == {"train": 5, "val": 3, "test": 3}
    assert [int(splits["train"][i]["label"]) for i in range(5)] == [1, 1, 1, 0, 0]
    assert ids_of(splits["train"][0]) == tokenize(tokenizer, "<user> thanks for showing up for our appointment "
                                                             "today . ", 128)
    quoted = "it 's the insensitive strikeouts at suntrust park .  # braves # chopchop"  # the double-quoted literal
    assert ids_of(splits["test"][1]) == tokenize(tokenizer, quoted, 128)
    assert [int(splits["val"][i]["label"]) for i in range(3)] == [1, 1, 0]  # the last element is the label
    image = {"name": "vit", "params": {**TINY, "patch_size": 32}}
    run_cells("sarcasm", root, tmp_path / "run", {"text": TEXT, "image": image}, "concat", ["joint"],
              tokenizer=str(tokenizer), image_folder="images")


# ---------------------------------------------------------------------------------------- Moviescope


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
    return prepared_copy("moviescope", raw, max_length=32)


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
    assert image.shape == (3, 224, 224)


def test_one_epoch_of_mmbv_with_joint_and_dynamic_uda(moviescope, tmp_path):
    _, root, tokenizer = moviescope
    image = {"name": "vit", "params": {**TINY, "patch_size": 32}}
    cells = run_cells("moviescope", root, tmp_path, {"text": TEXT, "image": image}, "mmbv",
                      ["joint", "dynamic_uda"], tokenizer=str(tokenizer), max_length=32)
    for cell in cells:
        assert set(cell["test"]["metrics"]) == {"f1_micro", "f1_macro", "map_micro", "map_macro"}
        assert set(cell["test"]["missing_modality"]) == {"text", "image"}


# ------------------------------------------------------------------------------------- MM-IMDb (raw)


@pytest.fixture(scope="module")
def mmimdb(tmp_path_factory):
    base = tmp_path_factory.mktemp("mmimdb")
    raw = base / "mmimdb"
    write_mmimdb_raw(raw)
    split = json.loads((raw / "split.json").read_text())
    extra = {"train": [("0000001", ["News", "Drama"], ["Headlines."])],
             "dev": [("0000002", ["Western"], ["A sheriff rides."]), ("0000003", ["Drama"], ["", ""])],
             "test": [("0000004", ["Cooking"], ["A chef."]), ("0000005", ["Drama"], ["Lost poster."])]}
    for name, movies in extra.items():
        for seed, (movie, genres, plots) in enumerate(movies):
            write_mmimdb_movie(raw, movie, genres, plots, 50 + seed)
            split[name].append(movie)
    (raw / "dataset" / "0000005.jpeg").unlink()
    (raw / "split.json").write_text(json.dumps(split))
    return prepared_copy("mmimdb", raw, max_length=24)


def test_mmimdb_applies_mmbt_s_rules_and_reports_unknown_genres(mmimdb):
    raw, root, tokenizer = mmimdb
    facts = report(root)
    left_out = {a["id"]: a["reason"] for a in facts["annotations"]}
    assert left_out == {"0000001": "genre News (MMBT leaves these out)",
                        "0000002": "genre Western has no train movie (MMBT leaves these out)",
                        "0000003": "empty plot (MMBT leaves these out)"}
    assert [m["id"] for m in facts["missing"]] == ["0000005"]
    [bad] = facts["bad"]
    assert bad["id"] == "0000004" and "unknown genre 'Cooking'" in bad["reason"]
    task = MMIMDbTask(MMIMDbTask.Params(tokenizer=str(tokenizer), max_length=24), root=root)
    splits = task.splits()
    assert {s: len(d) for s, d in splits.items()} == {"train": 4, "val": 2, "test": 4}
    longest = "Two imprisoned men bond over a number of years, finding solace."
    assert ids_of(splits["train"][0]) == tokenize(tokenizer, longest, 24)
    assert torch.nonzero(splits["train"][0]["label"]).flatten().tolist() == [0, 4]  # Drama, Crime
    assert splits["test"][0]["label"].shape == (26,)


def test_one_epoch_on_mmimdb(mmimdb, tmp_path):
    """MMBV here (tiny ViT); MMBT's ResNet-152 at 224 x 224 is minutes on a CPU: it trains in
    test_joint_models on small images."""
    _, root, tokenizer = mmimdb
    image = {"name": "vit", "params": {**TINY, "patch_size": 32}}
    [cell] = run_cells("mmimdb", root, tmp_path, {"text": TEXT, "image": image}, "mmbv", ["joint"],
                       tokenizer=str(tokenizer), max_length=24)
    assert set(cell["test"]["unimodal"]) == {"text", "image"} and len(cell["test"]["metrics"]) == 4


# -------------------------------------------------------------------------------- Dynamic UDA views


def test_text_view_replaces_a_tenth_of_the_word_pieces():
    ids = np.array([2] + list(range(10, 30)) + [3])  # [CLS], 20 word pieces, [SEP]
    text = pad_text(ids, np.zeros(22, dtype=np.int64), 32)
    generator = torch.Generator().manual_seed(0)
    view = replace_tokens(text, generator, neighbours=None)
    changed = torch.nonzero(view["input_ids"] != text["input_ids"]).flatten()
    assert 1 <= len(changed) <= 2 and set(changed.tolist()) <= set(range(1, 21))  # never [CLS], [SEP], padding
    assert set(view["input_ids"][changed].tolist()) <= set(range(10, 30))  # fallback: the text's own pieces
    table = np.full(64, -1)
    table[10:30] = np.arange(40, 60)  # each piece's nearest neighbour
    view = replace_tokens(text, torch.Generator().manual_seed(0), neighbours=table)
    changed = torch.nonzero(view["input_ids"] != text["input_ids"]).flatten()
    assert len(changed) == 2  # round(0.1 * 20)
    assert (view["input_ids"][changed] == text["input_ids"][changed] + 30).all()


def test_image_view_is_rand_augment_of_the_image(moviescope):
    _, root, tokenizer = moviescope
    task = MoviescopeTask(MoviescopeTask.Params(tokenizer=str(tokenizer), max_length=32), root=root)
    image = task.splits()["train"][0]["image"]
    views = [task.augment("image", image, torch.Generator().manual_seed(seed)) for seed in range(4)]
    assert all(v.shape == image.shape for v in views)
    assert sum(not torch.allclose(v, image, atol=1e-2) for v in views) >= 3
    assert torch.equal(views[0], task.augment("image", image, torch.Generator().manual_seed(0)))


def test_word_vector_neighbours_in_text_and_binary_word2vec(tmp_path):
    from transformers import AutoTokenizer

    from mmbench_plugins.tasks.word_vectors import neighbour_table

    folder = write_tokenizer(tmp_path / "tok", ["comedy drama romance horror thriller"] * 20)
    tok = AutoTokenizer.from_pretrained(str(folder))
    vectors = {"comedy": [1.0, 0.1, 0.0], "romance": [0.9, 0.2, 0.0], "drama": [0.0, 1.0, 0.0],
               "horror": [0.0, 0.0, 1.0], "thriller": [0.0, 0.3, 0.9], "unrelated": [1.0, 1.0, 1.0]}
    text = tmp_path / "vectors.txt"
    text.write_text("6 3\n" + "".join(f"{w} {' '.join(map(str, v))}\n" for w, v in vectors.items()))
    binary = tmp_path / "vectors.bin"
    binary.write_bytes(b"6 3\n" + b"".join(w.encode() + b" " + np.asarray(v, "<f4").tobytes() + b"\n"
                                           for w, v in vectors.items()))
    ids = tok.get_vocab()
    for path in (text, binary):
        table = neighbour_table(tok, path)
        assert table[ids["comedy"]] == ids["romance"] and table[ids["romance"]] == ids["comedy"]
        assert table[ids["horror"]] == ids["thriller"] and table[ids["drama"]] == ids["thriller"]
        assert table[ids["[CLS]"]] == -1 and all(table[i] == -1 for t, i in ids.items() if t.startswith("##"))
