"""What the image-text tasks (`twitter2015`, `sarcasm`, `mmimdb`, `moviescope`) share: two modalities, `text`
(word pieces of a named tokenizer: `{"input_ids", "attention_mask", "token_type_ids"}`, each `(max_length,)`)
and `image` (`(3, 224, 224)`, normalised with the protocol's statistics), a prepared root of memory-mapped
arrays, and the augmentations of Dynamic UDA (Monter-Aldana, López-Monroy & Sánchez-Vega, ACL 2023;
IvonneMont/Multimodal-Transformers @ 86d0e85) — text: 10 % of the word pieces replaced, by their nearest
word-vector neighbours when `word_vectors` was given at prepare time; image: RandAugment.

Tokenisation happens once, at prepare time, with the tokenizer the task parameters name (a hub name, or a local
folder saved by `save_pretrained`, which works offline). Its name, vocabulary hash and `max_length` enter the
fingerprint; a grid that names another tokenizer than the one a root was prepared with is refused with the
command that prepares it again (`mmbench data prepare TASK --raw DIR --param tokenizer=NAME`).

Prepared fields per sample: `image` (3, 224, 224) uint8 (the protocol's resize, and crop where it has one),
`input_ids` and `token_type_ids` (ragged: the sample's word pieces with `[CLS]`/`[SEP]`), and `target` (the
multi-hot label vector) for multi-label tasks. Labels are in `samples.json`, each split's samples in
`splits.json` (the release's annotation files say which split a sample is in).
The loader hands each image over as stored, uint8; `on_device` scales and normalises a batch at a time on the
cell's device, with the operations the loader ran per image before, and RandAugment works on the uint8 image it
used to recover from the normalised one: the same inputs and views, bit for bit on the CPU (the tasks' versions
stay).

A dataset subclasses `ImageTextTask` (a `PreparedTask`): its raw layout and `records(raw)`, each split's samples
as `Record`s (an annotation line that cannot be read becomes a record with its `error`, listed in prepare's
report as bad, never dropped silently), its image preprocessing and normalisation, and its classes.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import Dataset

from mmbench.api import Batch, DataError, ModalitySpec, Params
from mmbench.api.data import (
    Item,
    Label,
    Manifest,
    Outcome,
    PreparedArrays,
    PreparedTask,
    read_image,
    sha256,
)
from mmbench_plugins.encoders.weights import weights_identity
from mmbench_plugins.tasks.common.frames import channel_stats, finished, normalise
from mmbench_plugins.tasks.common.word_vectors import neighbour_table

SIZE = 224
#: the nearest-neighbour table of word pieces (`word_vectors`), in the prepared root
NEIGHBOURS = "neighbours.npy"
#: the share of a text's word pieces the Dynamic UDA augmentation replaces (the paper's 10 %)
REPLACE_SHARE = 0.1


class ImageTextParams(Params):
    tokenizer: str = Field("bert-base-uncased", description="tokenizer used at prepare time: a hub name (needs "
                                                            "network once) or a local folder (save_pretrained)")
    max_length: int = Field(128, ge=4, le=512, description="word pieces per text, [CLS] and [SEP] included")
    word_vectors: str | None = Field(None, description="word2vec file (text or .bin) whose nearest neighbours the "
                                                       "text augmentation substitutes (read at prepare time); null: "
                                                       "the fallback of `replace_tokens`")


@dataclass(frozen=True)
class Record:
    """One annotated sample of the release: its id, text (and second text), image file and label(s)."""

    id: str
    split: str
    text: str
    image: Path
    label: int | tuple[int, ...]
    pair: str | None = None
    #: other raw files the sample needs (a missing one makes the sample missing)
    files: tuple[Path, ...] = ()
    #: why the annotation cannot be used (a bad line, an unknown class); prepare lists it as bad
    error: str | None = None

    @property
    def classes(self) -> tuple[int, ...]:
        """The record's classes (one for a single-label record)."""
        return (self.label,) if isinstance(self.label, int) else self.label

    @classmethod
    def bad_line(cls, split: str, path: Path, number: int, reason: str) -> Record:
        """A line of an annotation file that cannot be used, named `<file>:<line>`, with the reason."""
        item = Item.bad_line(path, number, reason)
        return cls(item.id, split, "", path, -1, error=item.error)


# -------------------------------------------------------------------------------------- tokenizer


def load_tokenizer(source: str):
    """A fast Hugging Face tokenizer from a hub name or a local folder; a clear error offline."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot load the tokenizer {source!r} ({str(exc).splitlines()[0]}); give a local folder "
                        "written by `tokenizer.save_pretrained(...)` with --param tokenizer=FOLDER, or a hub name "
                        "with network access") from None


def vocabulary_hash(tokenizer) -> str:
    """sha256 of the (token, id) pairs: two tokenizers with the same hash split text into the same ids."""
    pairs = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode()).hexdigest()


def process_sample(item: Item, resize: Literal["square", "shorter_side"]) -> dict[str, np.ndarray]:
    """One record -> its prepared fields (runs in worker processes; the text is already tokenised). `square`
    resizes the image to 224 x 224 (Resize((224, 224)), the image-text protocols of MIE's group); `shorter_side`
    resizes the shorter side to 256 and centre-crops 224 (MMBT)."""
    ids, types, target = item.extra
    fields = {"image": read_image(item.sources[0], SIZE, resize), "input_ids": np.asarray(ids, dtype=np.int32),
              "token_type_ids": np.asarray(types, dtype=np.int8)}
    if target is not None:
        fields["target"] = np.asarray(target, dtype=np.uint8)
    return fields


# ---------------------------------------------------------------------------------------- dataset


class ImageTextDataset(Dataset):
    """Samples `{"text": {...}, "image": (3, 224, 224) uint8 as stored, "label": ...}` of some prepared rows; the
    task's `on_device` normalises the images a batch at a time."""

    def __init__(self, arrays: PreparedArrays, rows: list[int], labels: list, max_length: int,
                 multilabel: bool) -> None:
        self.arrays, self.rows, self.labels, self.max_length = arrays, rows, labels, max_length
        self.multilabel = multilabel

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        image = torch.from_numpy(np.array(self.arrays.get("image", row)))
        if self.multilabel:
            label = torch.from_numpy(np.array(self.arrays.get("target", row))).float()
        else:
            label = torch.tensor(self.labels[index], dtype=torch.long)
        return {"text": pad_text(self.arrays.get("input_ids", row), self.arrays.get("token_type_ids", row),
                                 self.max_length),
                "image": image, "label": label}


def pad_text(ids: np.ndarray, types: np.ndarray, length: int) -> dict[str, torch.Tensor]:
    """Word pieces padded with id 0 to `length`, with their attention mask and segment ids."""
    n = len(ids)
    out = {k: torch.zeros(length, dtype=torch.long) for k in ("input_ids", "attention_mask", "token_type_ids")}
    out["input_ids"][:n] = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    out["token_type_ids"][:n] = torch.from_numpy(np.asarray(types, dtype=np.int64))
    out["attention_mask"][:n] = 1
    return out


# ------------------------------------------------------------------------------------------- task


class ImageTextTask(PreparedTask):
    """Base of the image-text tasks (see the module docstring); subclasses fill in the dataset."""

    Params = ImageTextParams
    params: ImageTextParams
    ragged = frozenset({"input_ids", "token_type_ids"})
    #: split -> the release's annotation file for it, relative to the raw folder (their hashes enter the fingerprint)
    annotation_files: ClassVar[dict[str, str]]
    #: how images are brought to 224 x 224 (see `process_sample`)
    resize: ClassVar[Literal["square", "shorter_side"]] = "square"
    #: per-channel normalisation of the protocol
    mean: ClassVar[tuple[float, float, float]] = (0.485, 0.456, 0.406)
    std: ClassVar[tuple[float, float, float]] = (0.229, 0.224, 0.225)

    def __init__(self, params: ImageTextParams, root: Path | None = None) -> None:
        super().__init__(params, root)
        #: samples the protocol leaves out on purpose, filled by `records` and listed in prepare's report
        self.excluded: list[dict[str, str]] = []

    @property
    def modalities(self) -> dict[str, ModalitySpec]:
        return {"text": ModalitySpec("text", "tokens", (self.params.max_length,)),
                "image": ModalitySpec("image", "image", (3, SIZE, SIZE))}

    def records(self, raw: Path) -> list[Record]:
        """Every annotated sample of the release (in split order); samples the protocol leaves out go to
        `self.excluded` with the reason."""
        raise NotImplementedError

    @functools.cached_property
    def tokenizer(self):
        return load_tokenizer(self.params.tokenizer)

    # --------------------------------------------------------------------- the PreparedTask hooks

    def preprocessing(self) -> dict[str, Any]:
        """What the prepared root depends on (loads the tokenizer: its vocabulary hash is part of it)."""
        vectors = self.params.word_vectors
        return {"tokenizer": self.params.tokenizer, "vocabulary_sha256": vocabulary_hash(self.tokenizer),
                "max_length": self.params.max_length, "image_resize": self.resize, "image_size": SIZE,
                "word_vectors": weights_identity(vectors) if vectors else None}

    def items(self, raw: Path) -> list[Item]:
        self.excluded = []
        return [self._item(r) for r in self.unique(self.records(raw))]

    def annotation_problems(self, raw: Path) -> list[dict[str, str]]:
        return self.excluded

    def processor(self):
        return functools.partial(process_sample, resize=self.resize)

    def split_hashes(self, raw: Path | None) -> dict[str, str] | None:
        """sha256 of the release's annotation files (the split lists); they stay in the release."""
        if raw is None:
            return None
        return {name: sha256((raw / name).read_bytes()) for name in sorted(set(self.annotation_files.values()))}

    def after_prepare(self, raw: Path, outcome: Outcome) -> None:
        if self.params.word_vectors:
            table = neighbour_table(self.tokenizer, Path(self.params.word_vectors).expanduser())
            np.save(self._root / NEIGHBOURS, table)

    def fields(self) -> dict[str, tuple[int, ...]]:
        text = {"input_ids": (), "token_type_ids": ()}
        return {"image": (3, SIZE, SIZE), **text} | ({"target": (self.num_classes,)} if self.multilabel else {})

    def preprocessing_problem(self, manifest: Manifest) -> str | None:
        """A root serves only the tokenizer, `max_length` and word vectors it was prepared with."""
        wanted = {"tokenizer": self.params.tokenizer, "max_length": self.params.max_length,
                  "word_vectors": self.params.word_vectors is not None}
        have = {"tokenizer": manifest.preprocessing.get("tokenizer"),
                "max_length": manifest.preprocessing.get("max_length"),
                "word_vectors": manifest.preprocessing.get("word_vectors") is not None}
        if have == wanted:
            return None
        given = " ".join(f"--param {k}={getattr(self.params, k)}" for k in wanted)
        return (f"it was prepared with {have}, the grid asks for {wanted}: prepare it again with "
                f"`mmbench data prepare {self.name} --raw DIR {given}` (into another --root to keep both)")

    def sample_problems(self, arrays: PreparedArrays, ids: list[str], labels: list[Label]) -> list[str]:
        too_long = [ids[i] for i in range(len(ids)) if arrays.rows("input_ids", i) > self.params.max_length]
        return [f"{len(too_long)} texts exceed max_length {self.params.max_length}, e.g. {too_long[0]}"] \
            if too_long else []

    def datasets(self, arrays: PreparedArrays, parts: dict[str, tuple[list[int], list[Label]]]) -> dict[str, Dataset]:
        return {split: ImageTextDataset(arrays, rows, labels, self.params.max_length, self.multilabel)
                for split, (rows, labels) in parts.items()}

    def on_device(self, batch: Batch, training: bool) -> Batch:
        """The uint8 images (and augmented views) scaled to [0, 1] and normalised with the protocol's statistics, a
        batch at a time: the operations the loader ran per image before, so the same values, bit for bit on the
        CPU."""
        device = batch.label.device
        mean, std = (channel_stats(v, device, 4) for v in (self.mean, self.std))
        return finished(batch, {"image": lambda image: normalise(image, mean, std)})

    # ----------------------------------------------------------------------------- the records

    def unique(self, records: list[Record]) -> list[Record]:
        """The records with each id once: a later listing of an id is left out and reported."""
        first: dict[str, str] = {}
        kept = []
        for record in records:
            if record.id in first:
                self.excluded.append({"id": record.id, "path": str(record.image),
                                      "reason": f"listed again in {record.split} (first in {first[record.id]})"})
            else:
                first[record.id] = record.split
                kept.append(record)
        return kept

    def annotation_paths(self, raw: Path) -> dict[str, Path]:
        """Split -> its annotation file in `raw`; a clear error when one is missing."""
        missing = [name for name in self.annotation_files.values() if not (raw / name).is_file()]
        if missing:
            raise self.raw_error(raw, f"has no {', '.join(missing)}")
        return {split: raw / name for split, name in self.annotation_files.items()}

    def annotation_lines(self, raw: Path) -> Iterator[tuple[str, Path, int, str]]:
        """(split, file, line number, line) of every non-empty line of the annotation files. Lines end at LF or
        CRLF only (a tweet may hold other Unicode line separators, which `str.splitlines` would break at)."""
        for split, path in self.annotation_paths(raw).items():
            for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
                line = line.removesuffix("\r")
                if line.strip():
                    yield split, path, number, line

    def _item(self, record: Record) -> Item:
        if record.error:
            return Item(record.id, -1, (record.image,), split=record.split, error=record.error)
        encoded = self.tokenizer(record.text, record.pair, truncation=True, max_length=self.params.max_length)
        types = encoded.get("token_type_ids") or [0] * len(encoded["input_ids"])
        target = [int(c in record.classes) for c in range(self.num_classes)] if self.multilabel else None
        return Item(record.id, record.label, (record.image, *record.files), (encoded["input_ids"], types, target),
                    split=record.split)

    # ----------------------------------------------------------------------------- generated data

    def fake_sample(self, generator: torch.Generator) -> dict[str, Any]:
        """A text of random word pieces between [CLS] (101) and [SEP] (102), BERT's ids, and a random uint8 image."""
        length = self.params.max_length
        n = int(torch.randint(3, length + 1, (1,), generator=generator))
        ids = torch.randint(1000, 2000, (n,), generator=generator)
        ids[0], ids[-1] = 101, 102
        sample = {"text": pad_text(ids.numpy(), np.zeros(n, dtype=np.int64), length),
                  "image": torch.randint(0, 256, (3, SIZE, SIZE), dtype=torch.uint8, generator=generator)}
        if self.multilabel:
            sample["label"] = torch.randint(0, 2, (self.num_classes,), generator=generator).float()
        else:
            sample["label"] = torch.randint(0, self.num_classes, (), generator=generator)
        return sample

    # ------------------------------------------------------------------------------ augmentation

    def augment(self, modality: str, x: Any, generator: torch.Generator) -> Any:
        """Dynamic UDA's views: the text with 10 % of its word pieces replaced (`replace_tokens`),
        the image through torchvision's RandAugment (2 operations, magnitude 9)."""
        if modality == "text":
            return replace_tokens(x, generator, self.neighbours)
        return rand_augment(x, generator)

    @functools.cached_property
    def neighbours(self) -> np.ndarray | None:
        """The prepared nearest-neighbour table of word pieces, when the root has one."""
        path = Path(self.root) / NEIGHBOURS if self.root is not None else None
        return np.load(path) if path is not None and path.is_file() else None


def replace_tokens(text: Mapping[str, torch.Tensor], generator: torch.Generator,
                   neighbours: np.ndarray | None) -> dict[str, torch.Tensor]:
    """`REPLACE_SHARE` of the word pieces between [CLS] and [SEP] (at least one) replaced: by their nearest
    word-vector neighbour when a table is given (Dynamic UDA's), else (the documented fallback) by another word
    piece of the same text, drawn uniformly — the text keeps its vocabulary, only its order is disturbed."""
    ids = text["input_ids"].clone()
    inner = torch.nonzero(text["attention_mask"]).flatten()[1:-1]
    if len(inner) == 0:
        return {**text, "input_ids": ids}
    count = max(1, round(REPLACE_SHARE * len(inner)))
    chosen = inner[torch.randperm(len(inner), generator=generator)[:count]]
    for position in chosen.tolist():
        token = int(ids[position])
        if neighbours is not None and 0 <= token < len(neighbours) and neighbours[token] >= 0:
            ids[position] = int(neighbours[token])
        else:
            ids[position] = ids[inner[int(torch.randint(0, len(inner), (1,), generator=generator))]]
    return {**text, "input_ids": ids}


def rand_augment(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """torchvision RandAugment (num_ops 2, magnitude 9) on the uint8 image (normalised on the device with the rest)."""
    from torchvision.transforms import v2

    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return v2.RandAugment(num_ops=2, magnitude=9)(image)
