"""Cost of NVGesture's optical flow at prepare time: milliseconds per frame pair of OpenCV's Farneback and DIS
(`mmbench.data.media.optical_flow`) at the prepared 256 x 256, on a moving textured clip, interleaved round by
round; and what one recording's 80 flows cost, so a full prepare (1,532 recordings) can be sized.

    python benchmarks/optical_flow.py [--rounds 3] [--frames 17]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from mmbench.data.media import FLOW_METHODS, optical_flow

SIDE = 256
WINDOW = 80


def moving_clip(frames: int) -> np.ndarray:
    """RGB frames (n, 3, 256, 256) of a smooth random texture sliding 2 pixels right per frame."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 255, (SIDE // 8, SIDE // 8, 3)).astype(np.float32)
    texture = np.kron(coarse, np.ones((8, 8, 1)))
    return np.stack([np.roll(texture, 2 * k, axis=1) for k in range(frames)]).astype(np.uint8).transpose(0, 3, 1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=17, help="frames per timed clip (frames - 1 flows)")
    args = parser.parse_args()
    clip = moving_clip(args.frames)
    times: dict[str, list[float]] = {m: [] for m in FLOW_METHODS}
    errors: dict[str, float] = {}
    for _ in range(args.rounds):
        for method in FLOW_METHODS:
            start = time.perf_counter()
            flow = optical_flow(clip, method)
            times[method].append((time.perf_counter() - start) / (args.frames - 1))
            errors[method] = abs(float(flow[:, 0, 64:192, 64:192].mean()) - 2.0)
    for method, runs in times.items():
        per_pair = statistics.median(runs)
        print(f"{method:10s} {1000 * per_pair:7.1f} ms per frame pair, {WINDOW * per_pair:5.2f} s per recording "
              f"({WINDOW} flows), |mean u - 2 px| = {errors[method]:.3f}")


if __name__ == "__main__":
    main()
