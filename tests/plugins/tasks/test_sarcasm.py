"""Sarcasm (the HFM release) on a tiny copy in its real layout: the task's contract (`check_task`), Python-literal
lines, the reference keyword filter, a bad line and a repeated tweet in prepare's report, a one-epoch cell."""

from __future__ import annotations

from mmbench_plugins.tasks.sarcasm import SarcasmTask
from tests.fixtures.cells import TEXT_TRAIN, run_cells
from tests.fixtures.release import prepare_report as report
from tests.fixtures.sarcasm import write_sarcasm
from tests.fixtures.text import IMAGE, TEXT, ids_of, prepared_copy, tokenize


def test_sarcasm_reads_python_literals_filters_keywords_and_reports_a_bad_line(tmp_path):
    raw = tmp_path / "sarcasm"
    write_sarcasm(raw, image_folder="images")
    with (raw / "text" / "test2.txt").open("ab") as handle:  # a tweet of valid2 listed again
        handle.write(b"['900000000000000003', 'sunny day at the park', 0, 0]\r\n")
    raw, root, tokenizer = prepared_copy(SarcasmTask, raw, partial=False, image_folder="images")
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
    run_cells("sarcasm", root, tmp_path / "run", {"text": TEXT, "image": IMAGE}, "concat", ["joint"], TEXT_TRAIN,
              tokenizer=str(tokenizer), image_folder="images")
