"""MM-IMDb from its raw release on a tiny copy: the task's contract (`check_task`), MMBT's sample rules and an
unknown genre in prepare's report, a one-epoch cell of MMBV."""

from __future__ import annotations

import json

import pytest
import torch

from mmbench_plugins.tasks.mmimdb import MMIMDbTask
from tests.fixtures.cells import TEXT_TRAIN, run_cells
from tests.fixtures.mmimdb import write_mmimdb_movie, write_mmimdb_raw
from tests.fixtures.release import prepare_report as report
from tests.fixtures.text import IMAGE, TEXT, ids_of, prepared_copy, tokenize


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
    return prepared_copy(MMIMDbTask, raw, max_length=24)


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
    [cell] = run_cells("mmimdb", root, tmp_path, {"text": TEXT, "image": IMAGE}, "mmbv", ["joint"], TEXT_TRAIN,
                       tokenizer=str(tokenizer), max_length=24)
    assert set(cell["test"]["unimodal"]) == {"text", "image"} and len(cell["test"]["metrics"]) == 4
