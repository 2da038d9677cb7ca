"""What the image-text tasks (`twitter2015`, `sarcasm`, `mmimdb`, `moviescope`) share: two modalities, `text`
(word pieces of a named tokenizer: `{"input_ids", "attention_mask", "token_type_ids"}`, each `(max_length,)`)
and `image` (`(3, 224, 224)`, normalised with the protocol's statistics), a prepared root of memory-mapped
arrays, and the augmentations of Dynamic UDA (text: 10 % of the word pieces replaced, by their nearest
word-vector neighbours when `word_vectors` was given at prepare time; image: RandAugment).

Tokenisation happens once, at prepare time, with the tokenizer the task parameters name (a hub name, or a local
folder saved by `save_pretrained`, which works offline). Its name, vocabulary hash and `max_length` enter the
fingerprint; a grid that names another tokenizer than the one a root was prepared with is refused with the
command that prepares it again (`mmbench data prepare TASK --raw DIR --param tokenizer=NAME`).

Prepared fields per sample: `image` (3, 224, 224) uint8 (the protocol's resize, and crop where it has one),
`input_ids` and `token_type_ids` (ragged: the sample's word pieces with `[CLS]`/`[SEP]`), and `target` (the
multi-hot label vector) for multi-label tasks. Labels of single-label tasks are in `samples.json`.

A dataset subclasses `ImageTextTask`: its raw layout and `records(raw)`, each split's samples as `Record`s (an
annotation line that cannot be read becomes a record with its `error`, listed in prepare's report as bad, never
dropped silently), its image preprocessing and normalisation, and its classes.
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

from mmbench.api import DataError, ModalitySpec, Params, Task
from mmbench.api.data import (
    ARRAYS,
    Item,
    Manifest,
    MediaError,
    PreparedArrays,
    atomic_write_json,
    checked_raw,
    kept_hash,
    prepare_samples,
    raw_error,
    read_manifest,
    read_samples,
    sha256,
    write_manifest,
)
from mmbench_plugins.encoders.weights import weights_identity
from mmbench_plugins.tasks.word_vectors import neighbour_table

SIZE = 224
#: each split's kept sample ids, in the prepared root
SPLITS = "splits.json"
#: the nearest-neighbour table of word pieces (`word_vectors`), in the prepared root
NEIGHBOURS = "neighbours.npy"
#: the share of a text's word pieces the Dynamic UDA augmentation replaces (seed 000: 10 %)
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

    @classmethod
    def bad_line(cls, split: str, path: Path, number: int, reason: str) -> Record:
        """A line of an annotation file that cannot be used, named `<file>:<line>`, with the reason."""
        return cls(f"{path.name}:{number}", split, "", path, -1, error=f"{path} line {number}: {reason}")


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


# ------------------------------------------------------------------------------------------ image


def read_image(path: Path, resize: Literal["square", "shorter_side"]) -> np.ndarray:
    """An RGB image as uint8 (3, 224, 224): `square` resizes to 224 x 224 (Resize((224, 224)), the image-text
    protocols of seed 002); `shorter_side` resizes the shorter side to 256 and centre-crops 224 (MMBT)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if resize == "square":
                image = image.resize((SIZE, SIZE), Image.BILINEAR)
            else:
                w, h = image.size
                scale = 256 / min(w, h)
                image = image.resize((max(SIZE, round(w * scale)), max(SIZE, round(h * scale))), Image.BILINEAR)
                left, top = (image.width - SIZE) // 2, (image.height - SIZE) // 2
                image = image.crop((left, top, left + SIZE, top + SIZE))
            return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise MediaError(f"{path}: cannot decode the image: {exc}") from None


def process_sample(item: Item, resize: str) -> dict[str, np.ndarray]:
    """One record -> its prepared fields (runs in worker processes; the text is already tokenised)."""
    error, ids, types, target = item.extra
    if error:
        raise DataError(error)
    fields = {"image": read_image(item.sources[0], resize), "input_ids": np.asarray(ids, dtype=np.int32),
              "token_type_ids": np.asarray(types, dtype=np.int8)}
    if target is not None:
        fields["target"] = np.asarray(target, dtype=np.uint8)
    return fields


# ---------------------------------------------------------------------------------------- dataset


class ImageTextDataset(Dataset):
    """Samples `{"text": {...}, "image": (3, 224, 224), "label": ...}` of some prepared rows."""

    def __init__(self, arrays: PreparedArrays, rows: list[int], labels: list, max_length: int, mean: torch.Tensor,
                 std: torch.Tensor, multilabel: bool) -> None:
        self.arrays, self.rows, self.labels, self.max_length = arrays, rows, labels, max_length
        self.mean, self.std, self.multilabel = mean, std, multilabel

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        image = torch.from_numpy(np.array(self.arrays.get("image", row))).float() / 255.0
        if self.multilabel:
            label = torch.from_numpy(np.array(self.arrays.get("target", row))).float()
        else:
            label = torch.tensor(self.labels[index], dtype=torch.long)
        return {"text": pad_text(self.arrays.get("input_ids", row), self.arrays.get("token_type_ids", row),
                                 self.max_length),
                "image": (image - self.mean) / self.std, "label": label}


def pad_text(ids: np.ndarray, types: np.ndarray, length: int) -> dict[str, torch.Tensor]:
    """Word pieces padded with id 0 to `length`, with their attention mask and segment ids."""
    n = len(ids)
    out = {k: torch.zeros(length, dtype=torch.long) for k in ("input_ids", "attention_mask", "token_type_ids")}
    out["input_ids"][:n] = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    out["token_type_ids"][:n] = torch.from_numpy(np.asarray(types, dtype=np.int64))
    out["attention_mask"][:n] = 1
    return out


# ------------------------------------------------------------------------------------------- task


class ImageTextTask(Task):
    """Base of the image-text tasks (see the module docstring); subclasses fill in the dataset."""

    Params = ImageTextParams
    needs_data = True
    #: class names in id order
    classes: ClassVar[tuple[str, ...]]
    #: the raw layout prepare reads, shown when the raw folder is wrong
    layout: ClassVar[str]
    #: split -> the release's annotation file for it, relative to the raw folder (their hashes enter the fingerprint)
    annotation_files: ClassVar[dict[str, str]]
    #: how images are brought to 224 x 224 (see `read_image`)
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

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def records(self, raw: Path) -> list[Record]:
        """Every annotated sample of the release (in split order); samples the protocol leaves out go to
        `self.excluded` with the reason."""
        raise NotImplementedError

    def preprocessing(self, tokenizer_hash: str) -> dict[str, Any]:
        vectors = self.params.word_vectors
        return {"tokenizer": self.params.tokenizer, "vocabulary_sha256": tokenizer_hash,
                "max_length": self.params.max_length, "image_resize": self.resize, "image_size": SIZE,
                "word_vectors": weights_identity(vectors) if vectors else None}

    # ---------------------------------------------------------------------------- prepare / read

    def _raw_error(self, raw: Path, what: str) -> DataError:
        return raw_error(self, raw, what)

    def prepare(self, raw: Path, partial: bool = False, workers: int = 1) -> None:
        raw = checked_raw(self, raw)
        self.excluded = []
        records = self.unique(self.records(raw))
        tokenizer = load_tokenizer(self.params.tokenizer)
        preprocessing = self.preprocessing(vocabulary_hash(tokenizer))
        items = [self._item(r, tokenizer) for r in records]
        settings = {"raw": str(raw.resolve()), "version": self.version, "preprocessing": preprocessing}
        outcome = prepare_samples(Path(self.root), self.name, items, self.processor(), settings, partial=partial,
                                  workers=workers, ragged=frozenset({"input_ids", "token_type_ids"}),
                                  annotations=self.excluded)
        kept = {i.id for i in outcome.kept}
        splits = {r.id: r.split for r in records}
        counts = {split: sum(1 for i in kept if splits[i] == split) for split in ("train", "val", "test")}
        atomic_write_json(Path(self.root) / SPLITS,
                          {split: [i.id for i in outcome.kept if splits[i.id] == split] for split in counts})
        if self.params.word_vectors:
            table = neighbour_table(tokenizer, Path(self.params.word_vectors).expanduser())
            np.save(Path(self.root) / NEIGHBOURS, table)
        complete = not outcome.missing and not outcome.bad
        write_manifest(Path(self.root), Manifest(
            task=self.name, version=self.version, split_hashes=self.annotation_hashes(raw),
            preprocessing=preprocessing, partial=partial, counts=counts,
            kept=None if complete else kept_hash(sorted(kept))))

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
            raise self._raw_error(raw, f"has no {', '.join(missing)}")
        return {split: raw / name for split, name in self.annotation_files.items()}

    def annotation_lines(self, raw: Path) -> Iterator[tuple[str, Path, int, str]]:
        """(split, file, line number, line) of every non-empty line of the annotation files. Lines end at LF or
        CRLF only (a tweet may hold other Unicode line separators, which `str.splitlines` would break at)."""
        for split, path in self.annotation_paths(raw).items():
            for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
                line = line.removesuffix("\r")
                if line.strip():
                    yield split, path, number, line

    def annotation_hashes(self, raw: Path) -> dict[str, str]:
        """sha256 of the release's annotation files (the split lists), which enter the fingerprint."""
        return {name: sha256((raw / name).read_bytes()) for name in sorted(set(self.annotation_files.values()))}

    def processor(self):
        return functools.partial(process_sample, resize=self.resize)

    def _item(self, record: Record, tokenizer) -> Item:
        if record.error:
            return Item(record.id, -1, (record.image,), (record.error, (), (), None))
        encoded = tokenizer(record.text, record.pair, truncation=True, max_length=self.params.max_length)
        types = encoded.get("token_type_ids") or [0] * len(encoded["input_ids"])
        target = None
        if self.multilabel:
            target = [int(c in record.label) for c in range(self.num_classes)]
        return Item(record.id, record.label, (record.image, *record.files),
                    (None, encoded["input_ids"], types, target))

    def _manifest(self) -> Manifest:
        try:
            manifest = read_manifest(self.root, self.name, self.source)
        except DataError as exc:
            raise DataError(f"{exc}\nThe raw folder it is prepared from:\n{self.layout}") from None
        wanted = {"tokenizer": self.params.tokenizer, "max_length": self.params.max_length,
                  "word_vectors": self.params.word_vectors is not None}
        have = {"tokenizer": manifest.preprocessing.get("tokenizer"),
                "max_length": manifest.preprocessing.get("max_length"),
                "word_vectors": manifest.preprocessing.get("word_vectors") is not None}
        if have != wanted:
            given = " ".join(f"--param {k}={getattr(self.params, k)}" for k in wanted)
            raise DataError(f"{self.root} was prepared with {have}, the grid asks for {wanted}: prepare it again with "
                            f"`mmbench data prepare {self.name} --raw DIR {given}` (into another --root to keep both)")
        return manifest

    def fingerprint(self) -> str:
        return self._manifest().fingerprint

    def splits(self) -> dict[str, Dataset]:
        self._manifest()
        arrays = PreparedArrays(Path(self.root) / ARRAYS)
        ids, labels = read_samples(Path(self.root))
        row_of = {sample: row for row, sample in enumerate(ids)}
        members = json.loads((Path(self.root) / SPLITS).read_text())
        mean, std = (torch.tensor(v).view(3, 1, 1) for v in (self.mean, self.std))
        out = {}
        for split, names in members.items():
            if not names:
                raise DataError(f"the prepared {self.name!r} root {self.root} holds no sample of the {split} split; "
                                f"prepare it again from a copy that has some")
            rows = [row_of[i] for i in names]
            out[split] = ImageTextDataset(arrays, rows, [labels[r] for r in rows], self.params.max_length, mean, std,
                                          self.multilabel)
        return out

    def check(self) -> list[str]:
        manifest = self._manifest()
        problems = []
        if manifest.version != self.version:
            problems.append(f"prepared by task version {manifest.version}; this is version {self.version}: "
                            "prepare again")
        try:
            arrays = PreparedArrays(Path(self.root) / ARRAYS)
            ids, labels = read_samples(Path(self.root))
            members = json.loads((Path(self.root) / SPLITS).read_text())
        except (OSError, ValueError, KeyError) as exc:
            return problems + [f"cannot read the prepared arrays, samples.json or splits.json: {exc}"]
        wanted = {"image", "input_ids", "token_type_ids"} | ({"target"} if self.multilabel else set())
        absent = wanted - set(arrays.fields)
        if absent:
            return problems + [f"the prepared arrays lack {sorted(absent)}: prepare again"]
        if len(arrays) != len(ids):
            problems.append(f"{len(arrays)} prepared samples but {len(ids)} sample ids")
        if arrays.fields["image"].shape[1:] != (3, SIZE, SIZE):
            problems.append(f"images are {arrays.fields['image'].shape[1:]}, expected {(3, SIZE, SIZE)}")
        too_long = [ids[i] for i in range(len(ids)) if arrays.rows("input_ids", i) > self.params.max_length]
        if too_long:
            problems.append(f"{len(too_long)} texts exceed max_length {self.params.max_length}, e.g. {too_long[0]}")
        if self.multilabel:
            present = np.asarray(arrays.fields["target"]).sum(0)
            if arrays.fields["target"].shape[1:] != (self.num_classes,):
                problems.append(f"targets have {arrays.fields['target'].shape[1:]} classes, expected "
                                f"{self.num_classes}")
        else:
            bad = sorted({y for y in labels if not 0 <= y < self.num_classes})
            if bad:
                problems.append(f"labels {bad} outside 0..{self.num_classes - 1}")
            present = np.bincount(np.asarray(labels, dtype=np.int64), minlength=self.num_classes)
        if not manifest.partial and int((np.asarray(present) > 0).sum()) != self.num_classes:
            problems.append(f"{int((np.asarray(present) > 0).sum())} classes present, expected {self.num_classes}")
        for split, names in members.items():
            if len(names) != manifest.counts.get(split):
                problems.append(f"{split}: {len(names)} samples, but prepare kept {manifest.counts.get(split)}")
        return problems

    # ----------------------------------------------------------------------------- generated data

    def fake_sample(self, generator: torch.Generator) -> dict[str, Any]:
        """A text of random word pieces between [CLS] (101) and [SEP] (102), BERT's ids, and a random image."""
        length = self.params.max_length
        n = int(torch.randint(3, length + 1, (1,), generator=generator))
        ids = torch.randint(1000, 2000, (n,), generator=generator)
        ids[0], ids[-1] = 101, 102
        sample = {"text": pad_text(ids.numpy(), np.zeros(n, dtype=np.int64), length),
                  "image": torch.randn(3, SIZE, SIZE, generator=generator)}
        if self.multilabel:
            sample["label"] = torch.randint(0, 2, (self.num_classes,), generator=generator).float()
        else:
            sample["label"] = torch.randint(0, self.num_classes, (), generator=generator)
        return sample

    # ------------------------------------------------------------------------------ augmentation

    def augment(self, modality: str, x: Any, generator: torch.Generator) -> Any:
        """Dynamic UDA's views (seed 000): the text with 10 % of its word pieces replaced (`replace_tokens`),
        the image through torchvision's RandAugment (2 operations, magnitude 9)."""
        if modality == "text":
            return replace_tokens(x, generator, self.neighbours)
        return rand_augment(x, generator, torch.tensor(self.mean).view(3, 1, 1), torch.tensor(self.std).view(3, 1, 1))

    @functools.cached_property
    def neighbours(self) -> np.ndarray | None:
        """The prepared nearest-neighbour table of word pieces, when the root has one."""
        path = Path(self.root) / NEIGHBOURS if self.root is not None else None
        return np.load(path) if path is not None and path.is_file() else None


def replace_tokens(text: Mapping[str, torch.Tensor], generator: torch.Generator,
                   neighbours: np.ndarray | None) -> dict[str, torch.Tensor]:
    """`REPLACE_SHARE` of the word pieces between [CLS] and [SEP] (at least one) replaced: by their nearest
    word-vector neighbour when a table is given (seed 000), else (the documented fallback) by another word
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


def rand_augment(image: torch.Tensor, generator: torch.Generator, mean: torch.Tensor,
                 std: torch.Tensor) -> torch.Tensor:
    """torchvision RandAugment (num_ops 2, magnitude 9) on the de-normalised uint8 image, normalised again."""
    from torchvision.transforms import v2

    pixels = ((image * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = v2.RandAugment(num_ops=2, magnitude=9)(pixels)
    return (out.float() / 255.0 - mean) / std
