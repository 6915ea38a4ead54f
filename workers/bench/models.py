"""Benchmarks that print measured numbers: encoder passes per frame by strategy, and peak memory by
shot length. Each run is a fresh subprocess, so its peak resident memory is its own."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from farm_config.settings import ModelBackend, Sam2Size, Settings
from schemas import PipelineOptions, Strategy
from workers.bench.strategies import run_shot
from workers.io.sequence import SequencePattern
from workers.models.builder import build_models
from workers.synthetic.shot import write_shot

CLASSES = ["ball", "box", "car"]


def run_once(
    plate: str,
    strategy: Strategy,
    *,
    backend: ModelBackend,
    sam2_size: Sam2Size,
    window: int,
    refresh: int,
    feature_cache_mb: int,
    max_side: int,
    sam2_image_size: int | None = None,
) -> dict[str, Any]:
    """One shot in this process; returns counters, seconds and peak RSS (MiB)."""
    settings = Settings(
        model_backend=backend,
        weights="random",
        sam2_size=sam2_size,
        gdino_text_encoder="bert-tiny",
        models_dir=Path(tempfile.gettempdir()) / "mattefarm-bench-models",
        device="auto",
        detector_short_side=320,
        detector_max_side=480,
        feature_cache_mb=feature_cache_mb,
        sam2_image_size=sam2_image_size,
    )
    models = build_models(settings)
    options = PipelineOptions(
        strategy=strategy,
        window_frames=window,
        refresh_every=min(refresh, window),
        keyframe_step=window,
        max_side=max_side,
        max_detections=3,
        min_detected_frames=0,
    )
    out = Path(tempfile.mkdtemp(prefix="mattefarm-bench-"))
    started = time.monotonic()
    try:
        counters = run_shot(plate, CLASSES, options, models, out)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    frames = counters.get("frames_written") or _frame_count(plate)
    return {
        "strategy": strategy.value,
        "frames": frames,
        "seconds": round(time.monotonic() - started, 2),
        "encoder_passes_per_frame": round(counters.get("image_encoder_passes", 0) / frames, 3),
        "counters": counters,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _frame_count(plate: str) -> int:
    return len(SequencePattern.parse(plate).frames_on_disk())


def run_in_subprocess(plate: str, strategy: Strategy, **kwargs: Any) -> dict[str, Any]:
    args = json.dumps({"plate": plate, "strategy": strategy.value, **kwargs})
    done = subprocess.run(
        [sys.executable, "-m", "workers.bench.models", args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def synthetic_plate(root: Path, frames: int, width: int, height: int) -> str:
    return str(write_shot(root, f"bench{frames:04d}", frames=frames, width=width, height=height, objects=3, seed=7))


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    result = run_once(spec.pop("plate"), Strategy(spec.pop("strategy")), **spec)
    print(json.dumps(result))
