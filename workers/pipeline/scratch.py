"""Per-frame scratch on disk with a small in-memory window, so a shot's masks never all sit in RAM.

Two kinds of record per frame position: the cleaned per-frame detections, and the tracked layers
(logits and quality per layer id). Files are replaced atomically; a retry overwrites them.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from workers.core.layers import FrameMask
from workers.io.atomic import atomic_path, write_json_atomic
from workers.models.interfaces import Detection

LOGIT_SCALE = 256.0  # logits are kept as int16 in 1/256 steps: exact enough, fast, half of float32


def quantize_logits(logits: np.ndarray) -> np.ndarray:
    if logits.dtype == np.int16:
        return logits
    return np.clip(np.rint(logits * LOGIT_SCALE), -32767, 32767).astype(np.int16)


def dequantize_logits(stored: np.ndarray) -> np.ndarray:
    return stored.astype(np.float32) * (1.0 / LOGIT_SCALE)


@dataclass
class TrackedMask:
    logits: np.ndarray  # int16, quantized (see ``quantize_logits``)
    quality: float

    @property
    def mask(self) -> np.ndarray:
        return self.logits > 0


V = TypeVar("V")


class _DiskLRU(Generic[V]):
    """Per-position records of type ``V``: the last ``keep`` in memory, the rest on disk."""

    def __init__(self, folder: Path, kind: str, keep: int) -> None:
        self.folder, self.kind, self.keep = folder, kind, max(1, keep)
        folder.mkdir(parents=True, exist_ok=True)
        self._memory: OrderedDict[int, V | None] = OrderedDict()
        self._dirty: set[int] = set()

    def path(self, pos: int) -> Path:
        return self.folder / f"{self.kind}_{pos:06d}.npz"

    def _get(self, pos: int) -> V | None:
        if pos in self._memory:
            self._memory.move_to_end(pos)
            return self._memory[pos]
        value = self._load(self.path(pos)) if self.path(pos).exists() else None
        self._remember(pos, value)
        return value

    def _put(self, pos: int, value: V) -> None:
        self._remember(pos, value)
        self._dirty.add(pos)

    def _remember(self, pos: int, value: V | None) -> None:
        self._memory[pos] = value
        self._memory.move_to_end(pos)
        while len(self._memory) > self.keep:
            old, old_value = self._memory.popitem(last=False)
            if old in self._dirty and old_value is not None:
                self._write(old, old_value)

    def clear(self) -> None:
        """Forget every record, in memory and on disk (and a killed writer's temporaries): a stage
        that rebuilds them all starts from nothing, not from what an earlier attempt left."""
        self._memory.clear()
        self._dirty.clear()
        for stale in [*self.folder.glob(f"{self.kind}_*.npz"), *self.folder.glob(f".{self.kind}_*")]:
            stale.unlink(missing_ok=True)

    def flush(self) -> None:
        for pos in sorted(self._dirty):
            value = self._memory.get(pos)
            if value is not None:
                self._write(pos, value)
        self._dirty.clear()

    def _write(self, pos: int, value: V) -> None:
        self._dirty.discard(pos)
        # Stored, not deflated: SAM2's logits are smooth int16 that deflate shrinks by about a fifth
        # only, for 20× the time (5 layers at 1024×576: 205 ms a frame compressed, 9 ms stored;
        # written at least once per frame per stage, and again whenever a long shot spills).
        with atomic_path(self.path(pos)) as temporary, temporary.open("wb") as fh:
            np.savez(fh, allow_pickle=False, **self._encode(value))

    def _encode(self, value: V) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _load(self, path: Path) -> V:
        raise NotImplementedError


class DetectionStore(_DiskLRU[list[FrameMask]]):
    """Each frame's cleaned detections (label, bool mask, score)."""

    def __init__(self, folder: Path, keep: int = 48) -> None:
        super().__init__(folder, "detections", keep)

    def get(self, pos: int) -> list[FrameMask]:
        return self._get(pos) or []

    def put(self, pos: int, detections: list[FrameMask]) -> None:
        self._put(pos, detections)

    def _load(self, path: Path) -> list[FrameMask]:
        return _load_detections(path)

    def _encode(self, value: list[FrameMask]) -> dict[str, np.ndarray]:
        dets = value
        shape = dets[0].mask.shape if dets else (0, 0)
        return {
            "labels": np.array([d.label for d in dets], dtype=str),
            "scores": np.array([d.score for d in dets], np.float32),
            "masks": np.packbits(np.stack([d.mask for d in dets]), axis=-1) if dets else np.zeros((0, 0, 0), np.uint8),
            "logits": np.stack([logits_of(d) for d in dets]) if dets else np.zeros((0, 1, 1), np.int16),
            "shape": np.array(shape),
        }


def logits_of(det: FrameMask) -> np.ndarray:
    """A detection's quantized logits; a hard mask without logits gets ±8."""
    if det.logits is not None:
        return quantize_logits(det.logits)
    return quantize_logits(np.where(det.mask, 8.0, -8.0))


def _load_detections(path: Path) -> list[FrameMask]:
    with np.load(path) as data:
        _, width = data["shape"].tolist()
        if not len(data["labels"]):
            return []
        masks = np.unpackbits(data["masks"], axis=-1, count=width).astype(bool)
        return [
            FrameMask(str(lbl), m, float(s), lg)
            for lbl, m, s, lg in zip(data["labels"], masks, data["scores"], data["logits"], strict=True)
        ]


class LayerStore(_DiskLRU[dict[int, TrackedMask]]):
    """Each frame's tracked layers: layer id → logits and quality."""

    def __init__(self, folder: Path, keep: int = 48) -> None:
        super().__init__(folder, "layers", keep)

    def get(self, pos: int) -> dict[int, TrackedMask]:
        value = self._get(pos)
        if value is None:
            value = {}
            self._remember(pos, value)
        return value

    def put(self, pos: int, layers: dict[int, TrackedMask]) -> None:
        self._put(pos, layers)

    def _load(self, path: Path) -> dict[int, TrackedMask]:
        return _load_layers(path)

    def _encode(self, value: dict[int, TrackedMask]) -> dict[str, np.ndarray]:
        layers = value
        ids = sorted(layers)
        return {
            "ids": np.array(ids, np.int32),
            "quality": np.array([layers[i].quality for i in ids], np.float32),
            "logits": np.stack([layers[i].logits for i in ids]) if ids else np.zeros((0, 1, 1), np.int16),
        }


def _load_layers(path: Path) -> dict[int, TrackedMask]:
    with np.load(path) as data:
        return {
            int(i): TrackedMask(logits, float(q))
            for i, q, logits in zip(data["ids"], data["quality"], data["logits"], strict=True)
        }


class BoxStore:
    """Each detected frame's boxes, as JSON: what the detect tasks hand to the segment tasks."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder / "boxes"
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, pos: int) -> Path:
        return self.folder / f"boxes_{pos:06d}.json"

    def put(self, pos: int, boxes: list[Detection]) -> None:
        write_json_atomic(self.path(pos), [{"box": list(d.box), "label": d.label, "score": d.score} for d in boxes])

    def get(self, pos: int) -> list[Detection]:
        """The boxes of a detected frame; a missing file is an error (the detect task did not run)."""
        with self.path(pos).open() as fh:
            return [Detection(tuple(d["box"]), d["label"], float(d["score"])) for d in json.load(fh)]
