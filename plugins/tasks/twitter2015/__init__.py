"""`twitter2015`: target-oriented image-text sentiment, 3 classes (Yu & Jiang, IJCAI 2019; TomBERT's release,
jefferyYu/TomBERT @ e84f327), as MIE (Jiang, Chi & Yang, arXiv 2407.04587, 2024) uses it.

Raw layout (TomBERT's `absa_data/twitter2015/` and the IJCAI2019_data image archive):
`train.tsv`, `dev.tsv`, `test.tsv` and `twitter2015_images/<numeric id>.jpg`. The tsv files are read as TomBERT
reads them (tab-delimited, no quoting: tweets contain `"`), by position, not by header name — `test.tsv`'s header
names 4 columns over 5-field rows: index, label (0 negative, 1 neutral, 2 positive), image file, the tweet with
its target replaced by `$T$`, the target. Rows: train 3,179 / dev 1,122 / test 1,037; several rows share a
tweet and image (one row per target).

Text (target-oriented): the tweet with `$T$` filled in by its target, paired with the target as the second
segment (`[CLS] tweet [SEP] target [SEP]`, segment ids 0 / 1), as TomBERT feeds the target beside the sentence;
lower-cased by the uncased tokenizer; `max_length` 64 (TomBERT's max_seq_length). Images: Resize((224, 224)) and
the statistics of the image-text protocol of MIE's group (njustkmg/TPAMI-AMSS @ 29da22d, `AMSS_IT/`: mean
0.42455 / 0.44051 / 0.47076, std 0.24485 / 0.24617 / 0.25451). Metrics: accuracy and macro-F1.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from mmbench.api import hookimpl
from mmbench_plugins.tasks.common.imagetext import ImageTextParams, ImageTextTask, Record

CLASSES = ("negative", "neutral", "positive")


class Twitter2015Params(ImageTextParams):
    max_length: int = Field(64, ge=4, le=512, description="word pieces per text (TomBERT: 64)")


class Twitter2015Task(ImageTextTask):
    """Twitter2015 target-oriented sentiment (3 classes): tweet + target text, tweet image."""

    name = "twitter2015"
    version = "1"
    Params = Twitter2015Params
    source = "github.com/jefferyYu/TomBERT (absa_data/twitter2015/*.tsv; images: its IJCAI2019_data archive)"
    metrics = ("accuracy", "macro_f1")
    primary_metric = "accuracy"
    classes = CLASSES
    mean = (0.42455, 0.44051, 0.47076)
    std = (0.24485, 0.24617, 0.25451)
    layout = ("  <raw>/train.tsv, dev.tsv, test.tsv   index<TAB>label<TAB>image<TAB>tweet with $T$<TAB>target\n"
              "  <raw>/twitter2015_images/<id>.jpg     e.g. 1860693.jpg")
    annotation_files = {"train": "train.tsv", "val": "dev.tsv", "test": "test.tsv"}

    def records(self, raw: Path) -> list[Record]:
        images = raw / "twitter2015_images"
        out = []
        for split, path, number, line in self.annotation_lines(raw):
            row = line.split("\t")  # TomBERT reads with csv, tab-delimited and without quoting: the same fields
            if number == 1:
                continue  # the header
            if len(row) != 5 or row[1] not in ("0", "1", "2") or "$T$" not in row[3]:
                out.append(Record.bad_line(split, path, number, "expected index, label 0-2, image, tweet with $T$ "
                                                                f"and target separated by 4 tabs, got {row!r}"))
                continue
            index, label, image, tweet, target = row
            out.append(Record(f"{split}-{index}", split, tweet.replace("$T$", target), images / image, int(label),
                              pair=target))
        return out


@hookimpl
def mmbench_tasks():
    return [Twitter2015Task]
