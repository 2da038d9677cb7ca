"""Training-step time of MLB's Conformer model on CREMA-D-shaped inputs, for each of MLB's fusions.

The standard configs, randomly initialised: `conformer` (Wav2Vec2 cut to 12 layers + 5 Conformer blocks) on a
16 kHz waveform, `efficientnet_b2` (5 Conformer blocks) on precomputed face features, one fusion, per-modality
heads; one Multi-Loss step (fused + unimodal cross-entropy, backward, Adam) per measurement, bf16 autocast on
CUDA as the engine does. Reports the median and p90 ms/step over the timed steps and the peak accelerator
memory, per fusion. `--frames` feeds face crops through the EfficientNet-B2 instead of features.

    python benchmarks/mlb_stack.py [--device cuda] [--batch-size 8] [--seconds 3] [--face-steps 75] [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from mmbench import registry as registry_lib
from mmbench.api import ModalitySpec
from mmbench.training.model import MultimodalModel
from mmbench_plugins.encoders.conformer import ConformerEncoderParams, Wav2Vec2Conformer
from mmbench_plugins.encoders.efficientnet_b2 import FEATURES, EfficientNetB2Conformer, EfficientNetB2Params

FUSIONS = ("late_linear", "mid_mlp", "film", "gated", "tf")
CLASSES = 6


def build(fusion: str, samples: int, face_steps: int, frames: bool, device: torch.device) -> MultimodalModel:
    registry = registry_lib.default()
    visual_shape = (3, face_steps, 224, 224) if frames else (face_steps, FEATURES)
    encoders = {"audio": Wav2Vec2Conformer(ModalitySpec("audio", "audio", (samples,)), ConformerEncoderParams()),
                "visual": EfficientNetB2Conformer(ModalitySpec("visual", "visual", visual_shape),
                                                  EfficientNetB2Params())}
    resolved = registry.resolve("fusions", fusion)
    fused = resolved.cls({m: e.out_dim for m, e in encoders.items()}, CLASSES, resolved.params)
    return MultimodalModel(encoders, fused, CLASSES, unimodal_heads=True).to(device)


def step_times(model: MultimodalModel, batch: dict, label: torch.Tensor, steps: int, device: torch.device) -> list:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-4)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    times = []
    for i in range(steps + 2):  # two warm-up steps
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            out = model(batch)
            loss = F.cross_entropy(out.logits, label) + sum(F.cross_entropy(u, label) for u in out.unimodal.values())
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 2:
            times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=8, help="MLB's Conformer configs: 8")
    parser.add_argument("--seconds", type=float, default=3.0, help="waveform length (CREMA-D clips: 2-5 s)")
    parser.add_argument("--face-steps", type=int, default=75, help="face frames per clip (MLB caps at 150)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--frames", action="store_true", help="face crops through EfficientNet-B2, not features")
    parser.add_argument("--fusions", nargs="+", default=list(FUSIONS), choices=FUSIONS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    samples = int(args.seconds * 16_000)
    b = args.batch_size
    gen = torch.Generator().manual_seed(0)
    visual = torch.randn(b, 3, args.face_steps, 224, 224, generator=gen) if args.frames \
        else torch.randn(b, args.face_steps, FEATURES, generator=gen)
    batch = {"audio": torch.randn(b, samples, generator=gen).to(device), "visual": visual.to(device)}
    label = torch.randint(0, CLASSES, (b,), generator=gen).to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu, 1 thread"
    print(f"device: {name}; batch {b}, {args.seconds:g} s audio, {args.face_steps} face "
          f"{'frames' if args.frames else 'feature steps'}, {args.steps} timed steps")
    print(f"{'fusion':12} {'ms/step median':>15} {'p90':>8} {'peak MiB':>9}")
    for fusion in args.fusions:
        torch.manual_seed(0)
        model = build(fusion, samples, args.face_steps, args.frames, device).train()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = sorted(step_times(model, batch, label, args.steps, device))
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
        p90 = times[min(len(times) - 1, int(0.9 * len(times)))]
        print(f"{fusion:12} {statistics.median(times) * 1e3:15.1f} {p90 * 1e3:8.1f} {peak:9.0f}")
        del model


if __name__ == "__main__":
    main()
