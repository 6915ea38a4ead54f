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


def read_truth_alpha(path: Path) -> dict[int, np.ndarray]:
    """Each object's visible alpha (float32, plate resolution) from a soft-alpha truth frame;
    empty for a hard-truth shot."""
    if not path.exists():
        raise MissingTruthError(f"ground truth frame {path} is missing")
    channels, _ = read_exr_channels(path)
    return {
        int(name.split(".", 1)[1]): ch.astype(np.float32) for name, ch in channels.items() if name.startswith("alpha.")
    }


def ids_at(ids: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The id map at ``size`` (width, height) as a model sees the plate there: each pixel takes the
    id covering most of its area (area-downsampled, as the plate itself is), not the id under one
    sample (nearest-neighbour shifts a 4K matte 1.5–3 px at 1024 and drops thin objects)."""
    if (ids.shape[1], ids.shape[0]) == size:
        return ids
    if size[0] > ids.shape[1] or size[1] > ids.shape[0]:
        return cv2.resize(ids, size, interpolation=cv2.INTER_NEAREST)
    present = [int(v) for v in np.unique(ids)]
    coverage = np.stack(
        [cv2.resize((ids == v).astype(np.float32), size, interpolation=cv2.INTER_AREA) for v in present]
    )
    return np.asarray(present, np.int32)[np.argmax(coverage, axis=0)]


class TruthReader:
    """Reads truth ids at working resolution, keeping the last few frames (tracking rereads them)."""

    def __init__(self, cache_frames: int = 64) -> None:
        self._cache: dict[tuple[Path, tuple[int, int]], np.ndarray] = {}
        self._cache_frames = cache_frames

    def ids(self, plate_frame: Path, size: tuple[int, int]) -> np.ndarray:
        key = (plate_frame, size)
        if key not in self._cache:
            ids = ids_at(read_truth_ids(truth_path_for(plate_frame)), size)
            if len(self._cache) >= self._cache_frames:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = ids
        return self._cache[key]

    def labels(self, plate_frame: Path) -> dict[int, str]:
        return load_labels(objects_path_for(plate_frame))
