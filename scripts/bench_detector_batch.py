"""GroundingDINO milliseconds per frame by frames per forward pass (1, 2, 4, 8), on the same frames,
interleaved repetitions: the real architecture at random weights (speed is real, boxes are not).

    .venv/bin/python scripts/bench_detector_batch.py [--size 320x180] [--device cpu] [--repeat 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from farm_config import Settings
from workers.models.builder import build_models
from workers.models.interfaces import ModelFrame

BATCHES = (1, 2, 4, 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="320x180", help="frame size WIDTHxHEIGHT")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    settings = Settings(
        model_backend="sam2-gdino",
        weights="random",
        sam2_size="tiny",
        gdino_text_encoder="bert-tiny",
        models_dir=Path(tempfile.mkdtemp()),
        device=args.device,
    )
    detector = build_models(settings).detector
    rng = np.random.default_rng(0)
    frames = [
        ModelFrame(1001 + i, rng.integers(0, 255, (height, width, 3), dtype=np.uint8), Path(f"/plate.{1001 + i}.exr"))
        for i in range(max(BATCHES))
    ]
    detector.detect_many(frames[:2], ["person", "car"], 0.35, 0.25)  # warm-up
    results: dict[int, list[float]] = {b: [] for b in BATCHES}
    for _ in range(args.repeat):
        for batch in BATCHES:
            started = time.perf_counter()
            for start in range(0, len(frames), batch):
                detector.detect_many(frames[start : start + batch], ["person", "car"], 0.35, 0.25)
            results[batch].append(1000 * (time.perf_counter() - started) / len(frames))
    for batch, times in results.items():
        runs = [round(t) for t in times]
        print(f"frames per forward {batch}: {min(times):.0f} ms/frame (min of {len(times)}), runs {runs}")


if __name__ == "__main__":
    main()
