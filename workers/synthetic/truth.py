"""Ground truth beside a synthetic plate: ``SHOT/truth/SHOT_truth.####.exr`` + ``objects.json``."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from workers.io.exr import read_exr_channels


class MissingTruthError(FileNotFoundError):
    pass


def truth_path_for(plate_frame: Path) -> Path:
    """SHOT/plate/SHOT.1001.exr -> SHOT/truth/SHOT_truth.1001.exr."""
    shot_dir = plate_frame.parent.parent
    shot = shot_dir.name
    name = plate_frame.name
    rest = name[len(shot) :] if name.startswith(shot) else "." + name.split(".", 1)[-1]
    return shot_dir / "truth" / f"{shot}_truth{rest}"


def objects_path_for(plate_frame: Path) -> Path:
    return plate_frame.parent.parent / "truth" / "objects.json"


@lru_cache(maxsize=64)
def load_labels(objects_json: Path) -> dict[int, str]:
    if not objects_json.exists():
        raise MissingTruthError(
            f"the synthetic backend needs ground truth beside the plate: {objects_json} is missing "
            "(write shots with `mattefarm synth`, or use MATTEFARM_MODEL_BACKEND=sam2-gdino)"
        )
    data = json.loads(objects_json.read_text())
    return {int(o["id"]): str(o["label"]) for o in data["objects"]}


def read_truth_ids(path: Path) -> np.ndarray:
    if not path.exists():
        raise MissingTruthError(f"ground truth frame {path} is missing")
    channels, _ = read_exr_channels(path)
    return np.rint(channels["id"]).astype(np.int32)


class TruthReader:
    """Reads truth ids at working resolution, keeping the last few frames (tracking rereads them)."""

    def __init__(self, cache_frames: int = 64) -> None:
        self._cache: dict[tuple[Path, tuple[int, int]], np.ndarray] = {}
        self._cache_frames = cache_frames

    def ids(self, plate_frame: Path, size: tuple[int, int]) -> np.ndarray:
        key = (plate_frame, size)
        if key not in self._cache:
            ids = read_truth_ids(truth_path_for(plate_frame))
            if (ids.shape[1], ids.shape[0]) != size:
                ids = cv2.resize(ids, size, interpolation=cv2.INTER_NEAREST)
            if len(self._cache) >= self._cache_frames:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = ids
        return self._cache[key]

    def labels(self, plate_frame: Path) -> dict[int, str]:
        return load_labels(objects_path_for(plate_frame))
