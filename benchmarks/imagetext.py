"""Image-text throughput: `prepare` and the training pipeline of a Moviescope-shaped copy, and the cost of MMBV's
[CLS] exchange against plain concatenation of the same two transformers.

1. Writes `--samples` movies in Moviescope's layout (jsonl + JPEG posters 182 x 268, synopses of ~300 words),
   prepares them with a WordPiece tokenizer trained on them (max_length 512), then times the training split
   through the engine's DataLoader and collate, without and with Dynamic UDA's augmented views (RandAugment on
   the image, token replacement on the text).
2. One training step (forward, backward, Adam) of BERT + ViT joined by `mmbv` and by `concat`, interleaved,
   at a mid-size configuration (hidden 256, 4 layers, 4 heads, 128 word pieces, batch 8) on the CPU.

    python benchmarks/imagetext.py [--samples 128] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mmbench.api import ModalitySpec
from mmbench.training.engine import AugmentedViews, collate
from mmbench.training.model import MultimodalModel
from mmbench_plugins.encoders.bert import BertEncoder
from mmbench_plugins.encoders.vit import ViTEncoder
from mmbench_plugins.fusions.concat import ConcatFusion
from mmbench_plugins.fusions.mmbv import MMBVFusion
from mmbench_plugins.tasks.moviescope import GENRES, MoviescopeTask

WORDS = "the a hero city night love war family secret journey friend dark past future town ship".split()


def write_copy(raw: Path, samples: int) -> None:
    rng = np.random.default_rng(0)
    (raw / "MatchedPosters").mkdir(parents=True)
    splits = {"train": samples, "dev": max(2, samples // 8), "test": max(2, samples // 8)}
    movie = 0
    for split, count in splits.items():
        lines = []
        for _ in range(count):
            genres = sorted({GENRES[movie % 13], GENRES[int(rng.integers(13))]})
            synopsis = " ".join(rng.choice(WORDS, 300))
            lines.append(json.dumps({"id": movie, "title": f"Movie {movie}", "label": genres,
                                     "plot_keywords": "a|b", "synopsis": synopsis}))
            pixels = rng.integers(0, 255, (268, 182, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(raw / "MatchedPosters" / f"{movie}.jpg", quality=90)
            movie += 1
        (raw / f"{split}.jsonl").write_text("\n".join(lines) + "\n")


def write_tokenizer(folder: Path) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator([" ".join(WORDS)] * 10, trainers.WordPieceTrainer(
        vocab_size=100, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    BertTokenizerFast(tokenizer_object=tok).save_pretrained(str(folder))
    return folder


def loading(samples: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw, root = Path(tmp) / "moviescope", Path(tmp) / "prepared"
        write_copy(raw, samples)
        task = MoviescopeTask(MoviescopeTask.Params(tokenizer=str(write_tokenizer(Path(tmp) / "tok"))), root=root)
        started = time.perf_counter()
        task.prepare(raw, workers=1)
        total = sum(1 for _ in raw.glob("MatchedPosters/*.jpg"))
        print(f"prepare: {total / (time.perf_counter() - started):.0f} samples/s (1 worker, {total} movies)")
        train = task.splits()["train"]
        for name, dataset in (("training pipeline", train), ("with UDA views", AugmentedViews(train, task, 0))):
            loader = DataLoader(dataset, batch_size=16, shuffle=True, collate_fn=collate)
            next(iter(loader))  # warm-up: the first augmentation imports and initialises torchvision's v2 transforms
            started = time.perf_counter()
            count = sum(len(batch.label) for batch in loader)
            print(f"{name}: {count / (time.perf_counter() - started):.0f} samples/s (0 workers, batch 16)")


def steps(repeats: int) -> None:
    sizes = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024}
    text, image = ModalitySpec("text", "tokens", (128,)), ModalitySpec("image", "image", (3, 224, 224))
    inputs = {"text": {"input_ids": torch.randint(5, 100, (8, 128)),
                       "attention_mask": torch.ones(8, 128, dtype=torch.long),
                       "token_type_ids": torch.zeros(8, 128, dtype=torch.long)},
              "image": torch.randn(8, 3, 224, 224)}
    labels = torch.randint(0, 2, (8, 13)).float()
    models = {}
    for fusion_cls in (MMBVFusion, ConcatFusion):
        torch.manual_seed(0)
        encoders = {"text": BertEncoder(text, BertEncoder.Params(**sizes)),
                    "image": ViTEncoder(image, ViTEncoder.Params(**sizes))}
        fusion = fusion_cls({"text": 256, "image": 256}, 13, fusion_cls.Params())
        if fusion.drives_encoders:
            fusion.bind(encoders)
        model = MultimodalModel(encoders, fusion, 13)
        models[fusion_cls.name] = (model, torch.optim.Adam(model.parameters(), lr=1e-5))
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, (model, optimizer) in models.items():
            started = time.perf_counter()
            optimizer.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(inputs).logits, labels)
            loss.backward()
            optimizer.step()
            times[name].append(time.perf_counter() - started)
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values) * 1000:.0f} ms/step over {repeats} (batch 8, CPU)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    loading(args.samples)
    if args.steps:
        steps(args.steps)


if __name__ == "__main__":
    main()
