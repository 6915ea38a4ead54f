"""How long an artist waits: click → updated mask, and propagation per frame, with the synthetic
backend and with the real SAM 2.1 architecture (random weights: the speed is real, the masks are
not). Image-encoder passes are counted: a frame is encoded the first time it is touched, never
per click (``mattefarm bench-refine --latency``)."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from farm_config.model_registry import sam2_spec
from farm_config.settings import Sam2Size
from workers.core.refine import LayerBook
from workers.models.builder import build_synthetic, resolve_device
from workers.models.interfaces import ModelFrame, Refiner, Tracker
from workers.pipeline.frames import FrameSource
from workers.pipeline.refine import RefineEngine
from workers.synthetic.shot import synthetic_decoder, write_shot


@dataclass
class Latency:
    backend: str
    clicks: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    first_touch_ms: float  # a click on a frame not yet encoded (the encoder runs once)
    encoder_passes_per_click: float  # after first touch
    frames_encoded: int
    propagate_s_per_frame: float


def _frames(root: Path, frames: int, size: tuple[int, int]) -> list[ModelFrame]:
    pattern = write_shot(root, "latency010", frames=frames, width=size[0], height=size[1], objects=4, seed=7)
    _, decoder = synthetic_decoder(pattern)
    with FrameSource(decoder, keep=4, threads=0) as source:
        return [source.at(pos) for pos in range(len(source))]


def measure(
    backend: str,
    refiner: Refiner,
    tracker: Tracker,
    frames: list[ModelFrame],
    encoder: Counter[str],
    *,
    clicks: int = 120,
    per_prompt: int = 4,
    seed: int = 0,
) -> Latency:
    """``clicks`` clicks spread over the frames, ``per_prompt`` on each (layer, frame) prompt."""
    h, w = frames[0].image.shape[:2]
    book = LayerBook((h, w), len(frames))
    layer = book.new_layer("object")
    engine = RefineEngine(book, lambda pos: frames[pos], refiner, tracker)
    rng = np.random.default_rng(seed)
    warm, cold = [], []
    touched: set[int] = set()
    passes_after_touch = 0
    for n in range(clicks):
        pos = (n // per_prompt) % len(frames)
        x, y = float(rng.uniform(0.2, 0.8) * w), float(rng.uniform(0.2, 0.8) * h)
        before = encoder["image_encoder_passes"]
        started = time.perf_counter()
        engine.click(layer, pos, x, y, positive=bool(n % per_prompt != per_prompt - 1))
        seconds = time.perf_counter() - started
        if pos in touched:
            warm.append(seconds)
            passes_after_touch += encoder["image_encoder_passes"] - before
        else:
            cold.append(seconds)
            touched.add(pos)
    if not book.layer(layer).keyframes:
        raise RuntimeError("no click produced a keyframe")
    book.layer(layer).keyframes = {0}
    book.set_mask(layer, 0, _disc(h, w), keyframe=True)
    started = time.perf_counter()
    changed = engine.propagate(layer)
    propagate = (time.perf_counter() - started) / max(1, len(changed))
    ms = sorted(1000 * s for s in warm)
    return Latency(
        backend=backend,
        clicks=len(warm),
        p50_ms=statistics.median(ms),
        p95_ms=ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))],
        max_ms=ms[-1],
        first_touch_ms=1000 * statistics.median(cold),
        encoder_passes_per_click=passes_after_touch / max(1, len(warm)),
        frames_encoded=len(touched),
        propagate_s_per_frame=propagate,
    )


def _disc(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) < (0.15 * min(h, w)) ** 2


def synthetic_latency(
    root: Path, *, clicks: int = 120, frames: int = 12, size: tuple[int, int] = (1024, 576)
) -> Latency:
    models = build_synthetic()
    assert models.refiner is not None and models.tracker is not None
    return measure("synthetic", models.refiner, models.tracker, _frames(root, frames, size), Counter(), clicks=clicks)


def sam2_latency(
    root: Path,
    *,
    sam2_size: Sam2Size = "tiny",
    clicks: int = 120,
    frames: int = 12,
    size: tuple[int, int] = (1024, 576),
    device: str = "cpu",
    image_size: int | None = None,
) -> Latency:
    """The real SAM 2.1 network at random initialisation (speed only)."""
    import torch  # the real network loads only for this measurement

    from workers.models.sam2_adapter import FeatureCache, Sam2Refiner, Sam2Tracker, build_sam2_model

    torch.manual_seed(0)
    device = resolve_device(device)
    spec = sam2_spec(sam2_size)
    model = build_sam2_model(spec.config, None, device, image_size)
    counters: Counter[str] = Counter()
    cache = FeatureCache(model, device, 1 << 30, counters)
    return measure(
        f"sam2.1 {sam2_size} (random weights, {device})",
        Sam2Refiner(model, cache, spec.key),
        Sam2Tracker(model, cache, spec.key),
        _frames(root, frames, size),
        counters,
        clicks=clicks,
    )
