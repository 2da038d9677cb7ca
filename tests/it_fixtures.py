"""Tiny copies of the image-text releases in their real raw layouts, made on the fly (real identifiers and
annotation lines from the datasets spec, real JPEG images written with Pillow), and a small WordPiece
tokenizer trained on the fixture's own text with the `tokenizers` library and saved as a local folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

TWITTER_HEADER = "index\t#1 Label\t#2 ImageID\t#3 String\t#3 String"
#: the real first rows of TomBERT's train.tsv and test.tsv (datasets spec §5.3)
TWITTER_ROWS = {
    "train": ["1\t2\t1860693.jpg\tRT @ ltsChuckBass : $T$ is everything # MCM\tChuck Bass",
              "2\t1\t1860693.jpg\tRT @ ltsChuckBass : Chuck Bass is everything $T$\t# MCM",
              "3\t1\t195984.jpg\t$T$ September 7 - - - - Shut Down New York City\tMillions For Trayvon",
              "4\t0\t195984.jpg\tMillions For Trayvon September 7 - - - - Shut Down $T$\tNew York City",
              "5\t2\t871618.jpg\tMe as $T$ .\tJohn Lennon",
              "6\t1\t280704.jpg\tFormer $T$ boss Rod Petricevic will be released from jail next month .\tBridgecorp"],
    "dev": ["1\t0\t280704.jpg\tFormer Bridgecorp boss $T$ will be released \"soon\" .\tRod Petricevic",
            "2\t1\t871618.jpg\t$T$ as me .\tJohn Lennon",
            "3\t2\t195984.jpg\tShut Down $T$ ! ! !\tNew York City"],
    "test": ["1\t1\t74960.jpg\t...official $T$ football Facebook page ! # onlyONE\tOklahoma",
             "2\t2\t1739565.jpg\tCrazy hair day ! $T$ is a contender . : )\tLydia",
             "3\t0\t1739565.jpg\t$T$ lost the contest .\tLydia"],
}


def write_jpeg(path: Path, seed: int, size: tuple[int, int] = (320, 240)) -> None:
    """A real JPEG: a colour ramp with a bright box whose place depends on `seed`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    image = np.zeros((size[1], size[0], 3), np.uint8)
    image[..., 0] = np.linspace(0, 255, size[0], dtype=np.uint8)[None]
    image[..., 2] = (seed * 37) % 255
    y, x = rng.integers(0, size[1] - 40), rng.integers(0, size[0] - 40)
    image[y:y + 40, x:x + 40, 1] = 230
    Image.fromarray(image).save(path, format="JPEG", quality=90)


def write_twitter2015(raw: Path) -> None:
    """TomBERT's three tsv files (test.tsv with the real 4-name header) and the tweets' images."""
    raw.mkdir(parents=True, exist_ok=True)
    for split, rows in TWITTER_ROWS.items():
        header = "index\t#1 ImageID\t#2 String\t#2 String" if split == "test" else TWITTER_HEADER
        (raw / f"{split}.tsv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    images = {row.split("\t")[2] for rows in TWITTER_ROWS.values() for row in rows}
    for seed, name in enumerate(sorted(images)):
        write_jpeg(raw / "twitter2015_images" / name, seed)


def write_tokenizer(folder: Path, texts: list[str]) -> Path:
    """A lower-casing WordPiece tokenizer (BERT's special tokens, [PAD] = 0) trained on `texts`, saved with
    `save_pretrained` so `AutoTokenizer.from_pretrained(folder)` loads it offline."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    BertTokenizerFast(tokenizer_object=tokenizer).save_pretrained(str(folder))
    return folder


def fixture_texts(raw: Path) -> list[str]:
    """Every line of the fixture's annotation files, to train the tokenizer on."""
    return [line for path in sorted(raw.rglob("*")) if path.suffix in (".tsv", ".txt", ".json", ".jsonl")
            for line in path.read_text(encoding="utf-8").splitlines()]


def run_cells(task: str, root: Path, out: Path, encoders: dict, fusion: str, balancers: list[str],
              **params) -> list[dict]:
    """`mmbench run` of some balancers for one epoch on a prepared root; the cell results."""
    from typer.testing import CliRunner

    from mmbench.cli import app

    grid = out / "grid.yaml"
    grid.parent.mkdir(parents=True, exist_ok=True)
    grid.write_text(json.dumps({
        "name": f"{task}-tiny", "tasks": [{"name": task, "root": str(root), "params": params}],
        "encoders": [encoders], "fusions": [fusion], "balancers": balancers,
        "train": {"epochs": 1, "batch_size": 2, "optimizer": {"name": "adam", "lr": 0.0001}, "device": "cpu"},
        "seeds": [0]}))
    result = CliRunner().invoke(app, ["run", "--matrix", str(grid), "--out", str(out / "run")])
    assert result.exit_code == 0, result.output
    cells = [json.loads(p.read_text()) for p in (out / "run" / "cells").glob("*.json")]
    assert sorted(c["balancer"]["name"] for c in cells) == sorted(balancers)
    assert all(c["status"] == "ok" for c in cells), [c.get("reason") for c in cells]
    return cells


#: the 23 genres of the processed MM-IMDb release (gmu-mmimdb: the 23 most frequent)
MMIMDB_GENRES = ["Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror", "Documentary",
                 "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History", "Music", "Animation",
                 "Musical", "Western", "Sport", "Short", "Film-Noir"]
#: real MM-IMDb test ids (mmbt scripts/hard_gt_ids.json)
MMIMDB_IDS = ["0277941", "0056700", "0120762", "0044209", "0044091", "1724965", "1679332", "0036326"]


def write_mmimdb_hdf5(raw: Path, counts: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """`multimodal_imdb.hdf5` as gmu-mmimdb's make_dataset.py writes it through Fuel: the datasets, `genres`
    with its `target_names` attribute, and the file attribute `split` in the layout of Fuel's
    `H5PYDataset.create_split_array` (one row per split and source). Returns the arrays written."""
    import h5py

    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = sum(counts.values())
    genres = (rng.random((n, 23)) < 0.3).astype(np.int32)
    genres[np.arange(n), np.arange(n) % 23] = 1  # every row has a genre and, with 12 rows or more, every genre
    genres[np.arange(n), (np.arange(n) + 11) % 23] = 1
    arrays = {"features": rng.normal(0, 0.1, (n, 300)).astype(np.float32),
              "vgg_features": rng.gamma(1.0, 1.0, (n, 4096)).astype(np.float32), "genres": genres,
              "imdb_ids": np.array([f"{i:07d}" if i >= len(MMIMDB_IDS) else MMIMDB_IDS[i] for i in range(n)],
                                   dtype="S7")}
    sources = list(arrays)
    dtype = np.dtype([("split", "S5"), ("source", "S12"), ("start", np.int64), ("stop", np.int64),
                      ("indices", h5py.special_dtype(ref=h5py.Reference)), ("available", np.bool_),
                      ("comment", "S1")])
    rows, start = [], 0
    for split in ("train", "dev", "test"):
        for source in sources:
            rows.append((split.encode(), source.encode(), start, start + counts[split], h5py.Reference(), True, b"."))
        start += counts[split]
    with h5py.File(raw / "multimodal_imdb.hdf5", "w") as h5:
        for name, value in arrays.items():
            h5.create_dataset(name, data=value)
        h5["genres"].attrs["target_names"] = json.dumps(MMIMDB_GENRES)
        h5.attrs["split"] = np.array(rows, dtype=dtype)
    return arrays


# ------------------------------------------------------------------------------------------ Sarcasm

#: real lines of the HFM release (datasets spec §6.3), then lines of the same form; the filtered one has <url>
SARCASM_LINES = {
    "train.txt": ["['840006160660983809', '<user> thanks for showing up for our appointment today . ', 1]",
                  "['908913372199915520', 'haha .  # lol', 1]",
                  "['916364004129304576', '22 super funny quotes # funnyquotes  # funnysayings # hilariousquotes "
                  "# quotes <user>', 1]",
                  "['910308516510011393', 'most # funny quotes : ... <url> …', 1]",
                  "['900000000000000001', 'great game last night # braves', 0]",
                  "['900000000000000002', 'new phone who dis', 0]"],
    "valid2.txt": ["['915657464401580032', 'whew ... that extra <num> miles today ...', 1, 1]",
                   "['855466461296504832', '<user> finally found proof that the earth is flat ', 1, 1]",
                   "['900000000000000003', 'sunny day at the park', 0, 0]"],
    "test2.txt": ["['862902619928506372', 'i am guessing # netflix no longer lets you grab screens of movies . ...', "
                  "1, 1]",
                  "['892551658487631873', \"it 's the insensitive strikeouts at suntrust park .  # braves # chopchop\", "
                  "1, 1]",
                  "['900000000000000004', 'dinner with friends tonight', 0, 0]",
                  "['900000000000000005', 'a line cut short"],
}


def write_sarcasm(raw: Path, image_folder: str = "dataset_image") -> None:
    """The HFM text files (Python literals, CRLF line endings) and one JPEG per tweet."""
    (raw / "text").mkdir(parents=True, exist_ok=True)
    for name, lines in SARCASM_LINES.items():
        (raw / "text" / name).write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    ids = [line.split("'")[1] for lines in SARCASM_LINES.values() for line in lines]
    for seed, tweet in enumerate(ids):
        write_jpeg(raw / image_folder / f"{tweet}.jpg", seed)


# ---------------------------------------------------------------------------------------- Moviescope

#: real dev/test records (datasets spec §9.2), train records of the same form covering the 13 genres
MOVIESCOPE = {
    "train": [(101, "Mad Max: Fury Road", ["Action", "Sci-Fi", "Thriller"]),
              (102, "Up", ["Animation", "Family", "Comedy"]),
              (103, "The Theory of Everything", ["Biography", "Drama", "Romance"]),
              (104, "Zodiac", ["Crime", "Mystery", "Thriller"]),
              (105, "Stardust", ["Fantasy", "Romance"]),
              (106, "The Conjuring", ["Horror", "Mystery"])],
    "dev": [(2931, "Harold & Kumar Escape from Guantanamo Bay\u00a0", ["Comedy"]),
            (3003, "Darling Companion", ["Comedy", "Drama", "Romance"]),
            (4210, "Stung", ["Comedy", "Horror"])],
    "test": [(1126, "The Ghost Writer", ["Mystery", "Thriller"]), (1298, "Amélie", ["Comedy", "Romance"]),
             (246, "Gravity", ["Drama", "Sci-Fi", "Thriller"])],
}


def write_moviescope(raw: Path) -> None:
    """`{train,dev,test}.jsonl` with the real keys (a bare NaN keyword field, a TV title ending in U+00A0 and
    spaces) and `MatchedPosters/<id>.jpg`."""
    raw.mkdir(parents=True, exist_ok=True)
    for split, movies in MOVIESCOPE.items():
        lines = []
        for number, (movie, title, genres) in enumerate(movies):
            record = {"id": movie, "title": title + ("  " if title.endswith("\u00a0") else ""), "label": genres,
                      "plot_keywords": "bong|escape|ex girlfriend|guantanamo bay|texas",
                      "synopsis": f"{title.strip()} follows its heroes through {' and '.join(genres).lower()} ."}
            line = json.dumps(record)
            if number == 1:
                line = line.replace('"bong|escape|ex girlfriend|guantanamo bay|texas"', "NaN")
            lines.append(line)
            write_jpeg(raw / "MatchedPosters" / f"{movie}.jpg", movie, size=(182, 268))
        (raw / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------- MM-IMDb (raw)

#: (id, genres, plots) per split; the test ids are real (mmbt hard_gt_ids.json)
MMIMDB_RAW = {
    "train": [("0111161", ["Drama", "Crime"], ["Two imprisoned men bond.", "Two imprisoned men bond over a number "
                                                                           "of years, finding solace."]),
              ("0068646", ["Crime", "Drama"], ["The aging patriarch of an organized crime dynasty."]),
              ("0071562", ["Comedy", "Romance"], ["A comedy of love."]),
              ("0468569", ["Action", "Crime"], ["A vigilante faces a criminal mastermind."])],
    "dev": [("0050083", ["Drama"], ["A jury deliberates."]),
            ("0108052", ["Comedy"], ["A list of names."])],
    "test": list(zip(MMIMDB_IDS[:4], [["Drama", "Romance"], ["Crime"], ["Action", "Comedy"], ["Drama"]],
                     [["A story."], ["A heist."], ["A chase."], ["A family."]])),
}


def write_mmimdb_raw(raw: Path) -> None:
    """`split.json` and `dataset/<id>.json` + `.jpeg` as in mmimdb.tar.gz."""
    (raw / "dataset").mkdir(parents=True, exist_ok=True)
    split = {name: [movie for movie, _, _ in MMIMDB_RAW[name]] for name in ("train", "dev", "test")}
    (raw / "split.json").write_text(json.dumps(split))
    for seed, (movie, genres, plots) in enumerate(m for movies in MMIMDB_RAW.values() for m in movies):
        write_mmimdb_movie(raw, movie, genres, plots, seed)


def write_mmimdb_movie(raw: Path, movie: str, genres: list[str], plots: list[str], seed: int) -> None:
    meta = {"title": f"Movie {movie}", "year": 1990 + seed, "genres": genres, "plot": plots, "imdb_id": movie}
    (raw / "dataset" / f"{movie}.json").write_text(json.dumps(meta))
    write_jpeg(raw / "dataset" / f"{movie}.jpeg", seed, size=(300, 450))
