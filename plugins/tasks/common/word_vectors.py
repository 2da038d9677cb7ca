"""Nearest word-vector neighbours of a tokenizer's word pieces, for Dynamic UDA's text augmentation (Monter-Aldana
et al., ACL 2023: "10 % of the tokens replaced by their nearest word2vec neighbour").

`neighbour_table` reads word vectors in word2vec's text format (an optional `count dim` header, then `word v1
... vD` per line) or its binary format (`.bin`: the header, then each word, a space and D little-endian float32),
keeps the vocabulary's whole-word pieces that have a vector (looked up lower-cased for an uncased tokenizer),
and gives each its nearest other such piece by cosine similarity. Pieces without a vector (sub-word `##`
pieces, special tokens, rare words) get -1: the augmentation then falls back (`imagetext.replace_tokens`).
Neighbours are restricted to the tokenizer's vocabulary because a replacement must be a word piece.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmbench.api import DataError

CHUNK = 1024


def read_vectors(path: Path, wanted: set[str]) -> dict[str, np.ndarray]:
    """The vectors of the `wanted` words in a word2vec text or binary file."""
    found: dict[str, np.ndarray] = {}
    try:
        with open(path, "rb") as handle:
            header = handle.readline().split()
            if path.suffix == ".bin":
                count, dim = int(header[0]), int(header[1])
                for _ in range(count):
                    word = b"".join(iter(lambda: handle.read(1), b" ")).strip().decode("utf-8", "replace")
                    vector = np.frombuffer(handle.read(4 * dim), dtype="<f4")
                    if word in wanted:
                        found[word] = vector
                return found
            lines = handle if len(header) == 2 else [b" ".join(header)] + list(handle)
            for line in lines:
                key, *values = line.rstrip().split(b" ")
                text = key.decode("utf-8", "replace")
                if text in wanted and values:
                    found[text] = np.asarray(values, dtype=np.float32)
    except (OSError, ValueError, IndexError) as exc:
        raise DataError(f"cannot read word vectors from {path} ({exc}); give a word2vec text or .bin file") from None
    return found


def neighbour_table(tokenizer, path: Path) -> np.ndarray:
    """`table[id]` = the id of the piece nearest to piece `id` in the vectors, or -1 (see the module docstring)."""
    vocab = tokenizer.get_vocab()
    lower = bool(getattr(tokenizer, "do_lower_case", False))
    special = set(tokenizer.all_special_tokens)
    pieces = {token: i for token, i in vocab.items() if token not in special and not token.startswith("##")}
    words = {t: t.lower() if lower else t for t in pieces}
    vectors = read_vectors(Path(path), set(words.values()))
    keys = [(i, vectors[words[t]]) for t, i in pieces.items() if words[t] in vectors]
    table = np.full(max(vocab.values()) + 1, -1, dtype=np.int64)
    if len(keys) < 2:
        return table
    ids = torch.tensor([i for i, _ in keys])
    matrix = torch.nn.functional.normalize(torch.from_numpy(np.stack([v for _, v in keys])).float(), dim=1)
    for start in range(0, len(ids), CHUNK):
        similarity = matrix[start:start + CHUNK] @ matrix.T
        similarity[torch.arange(similarity.shape[0]), torch.arange(start, start + similarity.shape[0])] = -2.0
        table[ids[start:start + CHUNK].numpy()] = ids[similarity.argmax(1)].numpy()
    return table
