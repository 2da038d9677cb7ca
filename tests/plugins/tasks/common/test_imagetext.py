"""What the image-text family shares, apart from any dataset: Dynamic UDA's text view and the nearest word-vector
neighbours it substitutes."""

from __future__ import annotations

import numpy as np
import torch

from mmbench_plugins.tasks.common.imagetext import pad_text, replace_tokens
from tests.fixtures.text import write_tokenizer


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


def test_word_vector_neighbours_in_text_and_binary_word2vec(tmp_path):
    from transformers import AutoTokenizer

    from mmbench_plugins.tasks.common.word_vectors import neighbour_table

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
