"""Benchmarks that print measured numbers: encoder passes per frame by strategy, and peak memory by
shot length. Each run is a fresh subprocess, so its peak resident memory is its own."""

from __future__ import annotations

import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from farm_config.settings import ModelBackend, Sam2Size, Settings
from schemas import DetectMode, PipelineOptions, Strategy, TrackingMode
from workers.bench.strategies import detect_for, run_shot
from workers.io.sequence import SequencePattern
from workers.models.builder import build_models
from workers.synthetic.shot import write_shot
from workers.synthetic.truth import read_truth_ids, truth_path_for

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
    tracking: str = "windows",
    detect: str = "every",
) -> dict[str, Any]:
    """One shot in this process; returns counters (with each stage's ms), seconds, tracking steps
    per frame-object (object-frames tracked over the object-frames the truth shows) and peak RSS."""
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
        tracking=TrackingMode(tracking),
        detect=detect_for(strategy, DetectMode(detect)),
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
        "tracking": f"{tracking}, detect {detect}" if strategy == Strategy.FARM else "-",
        "frames": frames,
        "steps_per_object_frame": round(counters.get("object_frames_tracked", 0) / max(1, _object_frames(plate)), 2),
        "seconds": round(time.monotonic() - started, 2),
        "encoder_passes_per_frame": round(counters.get("image_encoder_passes", 0) / frames, 3),
        "counters": counters,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _object_frames(plate: str) -> int:
    """(frame, object) pairs the truth shows at least 16 px of."""
    total, pattern = 0, SequencePattern.parse(plate)
    for frame in pattern.frames_on_disk():
        counts = np.bincount(read_truth_ids(truth_path_for(pattern.path_for(frame))).ravel())
        total += int((counts[1:] >= 16).sum())
    return total


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


STAGES = ("detect", "segment", "track", "export")


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Repeated runs of one configuration (frames, strategy, tracking) folded into one row:
    seconds per frame min and median, each stage's median ms per frame, the counts of the first."""
    groups: dict[tuple[int, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["frames"], row["strategy"], row["tracking"]), []).append(row)
    summary = []
    for (frames, strategy, tracking), runs in groups.items():
        per_frame = [run["seconds"] / frames for run in runs]
        first = runs[0]
        summary.append(
            {
                "frames": frames,
                "strategy": strategy,
                "tracking": tracking,
                "runs": len(runs),
                "s_per_frame_min": round(min(per_frame), 3),
                "s_per_frame_median": round(statistics.median(per_frame), 3),
                "stage_ms_per_frame": {
                    stage: round(statistics.median(run["counters"].get(f"ms_{stage}", 0) for run in runs) / frames, 1)
                    for stage in STAGES
                },
                "steps_per_object_frame": first["steps_per_object_frame"],
                "encoder_passes_per_frame": first["encoder_passes_per_frame"],
                "decodes_per_frame": round(first["counters"].get("frames_read", 0) / frames, 2),
                "detector_calls": first["counters"].get("detector_calls", 0),
                "peak_rss_mib": max(run["peak_rss_mib"] for run in runs),
            }
        )
    return summary


def synthetic_plate(root: Path, frames: int, width: int, height: int) -> str:
    return str(write_shot(root, f"bench{frames:04d}", frames=frames, width=width, height=height, objects=3, seed=7))


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    result = run_once(spec.pop("plate"), Strategy(spec.pop("strategy")), **spec)
    print(json.dumps(result))
