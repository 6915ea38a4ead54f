"""The simple pipeline's stages: detect every frame, segment each box and link layers, export.

Each stage is a plain function over plate frames; it reports progress through a
:class:`StageReporter` and never touches the database or Celery itself.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from schemas import PipelineOptions, StageName
from workers.io.exr import write_exr_atomic
from workers.io.plate import PlateInfo, read_frame_linear, to_model_frame
from workers.models.interfaces import Detection, ModelFrame, ModelSet
from workers.pipeline.layers import FrameMask, Layer, LayerLinker
from workers.pipeline.masks import sigmoid


class JobCanceled(Exception):
    """Raised between frames when the job was asked to stop."""


class StageReporter(Protocol):
    def started(self, stage: StageName, total: int) -> None: ...
    def advanced(self, stage: StageName, done: int) -> None: ...
    def finished(self, stage: StageName, seconds: float) -> None: ...
    def cancel_requested(self) -> bool: ...


@dataclass(frozen=True)
class ExportedLayer:
    name: str
    label: str


def model_frames(plate: PlateInfo, max_side: int) -> Iterator[ModelFrame]:
    """Plate frames decoded one at a time: memory stays flat however long the shot."""
    for frame in plate.frames:
        path = plate.path_for(frame)
        yield ModelFrame(frame, to_model_frame(read_frame_linear(path), max_side), path)


class _StageClock:
    """Times one stage, reports each frame, and stops the stage when a cancel arrives."""

    def __init__(self, stage: StageName, reporter: StageReporter, total: int) -> None:
        reporter.started(stage, total)
        self.stage, self.reporter, self.start, self.done = stage, reporter, time.monotonic(), 0

    def tick(self) -> None:
        self.done += 1
        self.reporter.advanced(self.stage, self.done)
        if self.reporter.cancel_requested():
            raise JobCanceled(f"canceled during {self.stage}")

    def close(self) -> None:
        self.reporter.finished(self.stage, time.monotonic() - self.start)


def detect_stage(
    plate: PlateInfo, classes: list[str], options: PipelineOptions, models: ModelSet, reporter: StageReporter
) -> dict[int, list[Detection]]:
    clock = _StageClock(StageName.DETECT, reporter, len(plate.frames))
    found: dict[int, list[Detection]] = {}
    for frame in model_frames(plate, options.max_side):
        boxes = models.detector.detect(frame, classes, options.box_threshold, options.text_threshold)
        found[frame.frame] = sorted(boxes, key=lambda d: -d.score)[: options.max_detections]
        clock.tick()
    clock.close()
    return found


def segment_stage(
    plate: PlateInfo,
    detections: dict[int, list[Detection]],
    options: PipelineOptions,
    models: ModelSet,
    scratch: Path,
    reporter: StageReporter,
) -> list[Layer]:
    """Segment each box, link masks to layers, and keep each frame's layer logits in ``scratch``."""
    clock = _StageClock(StageName.SEGMENT, reporter, len(plate.frames))
    linker = LayerLinker(options.link_iou)
    scratch.mkdir(parents=True, exist_ok=True)
    for frame in model_frames(plate, options.max_side):
        boxes = detections.get(frame.frame, [])
        logits = models.segmenter.segment(frame, boxes) if boxes else np.zeros((0, *frame.image.shape[:2]), np.float32)
        keep = [i for i in range(len(boxes)) if (logits[i] > 0).sum() >= max(1, options.min_mask_px)]
        masks = [FrameMask(boxes[i].label, logits[i] > 0, boxes[i].score) for i in keep]
        layer_ids = linker.link(frame.frame, masks)
        _save_frame_logits(scratch, frame.frame, np.array(layer_ids, np.int32), logits[keep])
        clock.tick()
    clock.close()
    for layer in linker.layers:
        layer.last_mask = None
    return linker.layers


def export_stage(
    plate: PlateInfo,
    layers: list[ExportedLayer],
    scratch: Path,
    output_for: dict[int, Path],
    header: dict[str, Any],
    reporter: StageReporter,
) -> list[Path]:
    """Write one EXR per plate frame: each layer's soft matte at plate resolution, plus ``A``.

    Logits are upsampled to the plate before the sigmoid, so edges stay anti-aliased.
    """
    clock = _StageClock(StageName.EXPORT, reporter, len(plate.frames))
    size = (plate.width, plate.height)
    written: list[Path] = []
    for frame in plate.frames:
        layer_ids, logits = _load_frame_logits(scratch, frame)
        mattes = {f"{layer.name}.A": np.zeros((plate.height, plate.width), np.float16) for layer in layers}
        union = np.zeros((plate.height, plate.width), np.float32)
        for layer_id, layer_logits in zip(layer_ids.tolist(), logits, strict=True):
            # cv2's bilinear resize samples at pixel centres (half-pixel alignment).
            matte = sigmoid(cv2.resize(layer_logits.astype(np.float32), size, interpolation=cv2.INTER_LINEAR))
            name = f"{layers[layer_id].name}.A"
            mattes[name] = np.maximum(mattes[name], matte.astype(np.float16))
            np.maximum(union, matte, out=union)
        channels = {"A": union.astype(np.float16), **mattes}
        frame_header = {**header, "mattefarm/sourceFrame": str(frame), "mattefarm/source": str(plate.path_for(frame))}
        write_exr_atomic(output_for[frame], channels, frame_header)
        written.append(output_for[frame])
        clock.tick()
    clock.close()
    return written


def _scratch_file(scratch: Path, frame: int) -> Path:
    return scratch / f"frame_{frame}.npz"


def _save_frame_logits(scratch: Path, frame: int, layer_ids: np.ndarray, logits: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=scratch, suffix=".npz")
    with os.fdopen(fd, "wb") as fh:
        np.savez_compressed(fh, layer_ids=layer_ids, logits=logits.astype(np.float16))
    os.replace(tmp, _scratch_file(scratch, frame))


def _load_frame_logits(scratch: Path, frame: int) -> tuple[np.ndarray, np.ndarray]:
    with np.load(_scratch_file(scratch, frame)) as data:
        return data["layer_ids"], data["logits"]


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=False, default=str)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
