"""`sarcasm`: Twitter image-text sarcasm detection, 2 classes (Cai, Cai & Wan, ACL 2019; the HFM release), as
MIE (Jiang, Chi & Yang, arXiv 2407.04587, 2024) uses it.

Raw layout (github.com/headacheboy/data-of-multimodal-sarcasm-detection): `text/train.txt`, `text/valid2.txt`,
`text/test2.txt` and the images of its Drive archive, `<image_folder>/<tweet id>.jpg` (`image_folder`, default
`dataset_image`). Each text line (CRLF) is a Python list literal, read with `ast.literal_eval` (never `eval`):
train `['<id>', '<text>', <label>]`, valid2/test2 `['<id>', '<text>', <hashtag label>, <label>]`; the LAST element
is the label (1 sarcastic, 0 not).

The reference loader (HFM `codes/loadData.py`, headacheboy/data-of-multimodal-sarcasm-detection @ 38d7604, and
every later paper) drops each line whose whitespace-split text contains one of `FILTERED` (those posts' images
are not distributed): after it, train 19,816 / valid2 2,410 / test2 2,409 — MIE's split. The dropped lines are
listed in prepare's report as annotations.

Text: the release's (already lower-cased, tokenised) text, `max_length` 128 (MIE's group's image-text code,
njustkmg/TPAMI-AMSS @ 29da22d). Images: Resize((224, 224)) and AMSS's Sarcasm statistics (mean 0.48456 /
0.49888 / 0.53066, std 0.24399 / 0.24868 / 0.25736). Metrics: accuracy and macro-F1.
"""

from __future__ import annotations

import ast
from pathlib import Path

from pydantic import Field

from mmbench.api import hookimpl
from mmbench_plugins.tasks.common.imagetext import ImageTextParams, ImageTextTask, Record

FILTERED = frozenset({"sarcasm", "sarcastic", "reposting", "<url>", "joke", "humour", "humor", "jokes", "irony",
                      "ironic", "exgag"})


class SarcasmParams(ImageTextParams):
    image_folder: str = Field("dataset_image", description="folder of <id>.jpg under the raw folder")


def parse_line(line: str, fields: int) -> tuple[str, str, int]:
    """(id, text, label) of one release line; ValueError saying why it is not one."""
    try:
        value = ast.literal_eval(line)
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"not a Python list literal ({exc.__class__.__name__})") from None
    if not isinstance(value, list) or len(value) != fields or not all(isinstance(v, str) for v in value[:2]):
        raise ValueError(f"expected a list of {fields} elements [id, text, ..., label]")
    if value[-1] not in (0, 1):
        raise ValueError(f"label {value[-1]!r} is not 0 or 1")
    return value[0], value[1], int(value[-1])


class SarcasmTask(ImageTextTask):
    """Twitter sarcasm (HFM release), 2 classes: tweet text + image."""

    name = "sarcasm"
    version = "1"
    Params = SarcasmParams
    params: SarcasmParams
    source = ("github.com/headacheboy/data-of-multimodal-sarcasm-detection (text/; images: the Drive links of its "
              "README)")
    metrics = ("accuracy", "macro_f1")
    classes = ("not sarcastic", "sarcastic")
    mean = (0.48456, 0.49888, 0.53066)
    std = (0.24399, 0.24868, 0.25736)
    layout = ("  <raw>/text/train.txt, valid2.txt, test2.txt   one Python list literal per line (CRLF)\n"
              "  <raw>/dataset_image/<tweet id>.jpg            (--param image_folder=NAME for another folder)")
    annotation_files = {"train": "text/train.txt", "val": "text/valid2.txt", "test": "text/test2.txt"}

    def records(self, raw: Path) -> list[Record]:
        images = raw / self.params.image_folder
        out = []
        for split, path, number, line in self.annotation_lines(raw):
            try:
                tweet, text, label = parse_line(line, 3 if split == "train" else 4)
            except ValueError as exc:
                out.append(Record.bad_line(split, path, number, str(exc)))
                continue
            words = FILTERED.intersection(text.split())
            if words:
                self.excluded.append({"id": tweet, "path": f"{path}:{number}",
                                      "reason": f"dropped by the reference loader's filter ({sorted(words)[0]})"})
                continue
            out.append(Record(tweet, split, text, images / f"{tweet}.jpg", label))
        return out


@hookimpl
def mmbench_tasks():
    return [SarcasmTask]
