"""The pipeline's stages over a shot: detect → segment → track → export.

Each stage is a plain function that reads the plate through a :class:`FrameSource`, keeps its
per-frame results in the scratch stores, reports progress through a :class:`StageReporter`, and
never touches the database or Celery (export is in ``workers.pipeline.export``). Which frames are
detected and how layers are tracked depends on the strategy (``workers.pipeline.tracking``); the
stages themselves are shared.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from schemas import DetectMode, PipelineOptions, StageName, Strategy, TrackingMode
from workers.core.cleanup import consolidate, remove_small_regions
from workers.core.layers import FrameMask
from workers.core.windows import plan_windows, sweep_starts
from workers.models.interfaces import Detection, ModelSet
from workers.pipeline.frames import FrameSource
from workers.pipeline.scratch import BoxStore, DetectionStore, LayerStore, logits_of, quantize_logits

_LOGIT = 8.0  # logit magnitude given to pixels the clean-up adds or removes


class JobCanceled(Exception):
    """Raised between frames when the job was asked to stop."""


class StageReporter(Protocol):
    def started(self, stage: StageName, total: int) -> None: ...
    def advanced(self, stage: StageName, done: int) -> None: ...
    def finished(self, stage: StageName, seconds: float) -> None: ...
    def cancel_requested(self) -> bool: ...


class StageClock:
    """Times one stage, reports each step, and stops the stage when a cancel arrives.

    ``frames``: a stage whose steps are not frames (the track stage's windows) still reports in
    frames, the unit of the task's progress, so a bar does not sit at 40 % and jump to 100 %."""

    def __init__(self, stage: StageName, reporter: StageReporter, total: int, frames: int | None = None) -> None:
        self.frames = frames
        reporter.started(stage, frames if frames is not None else total)
        self.stage, self.reporter, self.start, self.done, self.total = stage, reporter, time.monotonic(), 0, total

    def tick(self) -> None:
        self.done += 1
        shown = self.done if self.frames is None else (self.frames * self.done) // max(1, self.total)
        self.reporter.advanced(self.stage, shown)
        if self.reporter.cancel_requested():
            raise JobCanceled(f"canceled during {self.stage}")

    def close(self) -> None:
        self.reporter.finished(self.stage, time.monotonic() - self.start)


@dataclass
class Shot:
    """Everything the stages of one job share."""

    source: FrameSource
    options: PipelineOptions
    models: ModelSet
    reporter: StageReporter
    detections: DetectionStore
    layers: LayerStore

    boxes: BoxStore

    @classmethod
    def open(
        cls,
        source: FrameSource,
        options: PipelineOptions,
        models: ModelSet,
        reporter: StageReporter,
        scratch: Path,
        keep: int,
    ) -> Shot:
        """``keep``: frames each scratch store holds in memory (:func:`window_keep`)."""
        return cls(
            source,
            options,
            models,
            reporter,
            DetectionStore(scratch, keep),
            LayerStore(scratch, keep),
            BoxStore(scratch),
        )


def window_keep(options: PipelineOptions) -> int:
    """Frames kept in memory: a forward and a backward window, whatever the shot length."""
    return 2 * options.window_frames + 8


def frames_to_keep(options: PipelineOptions, frames: int, size: tuple[int, int], cache_mb: int) -> int:
    """Decoded frames to keep: the whole shot when it fits in ``cache_mb`` (each frame is then
    decoded once however often tracking revisits it), else two windows' worth."""
    frame_bytes = size[0] * size[1] * 3  # display RGB, uint8
    fits = cache_mb * 1024 * 1024 // max(1, frame_bytes)
    return max(window_keep(options), min(frames, fits))


def detection_positions(frames: int, options: PipelineOptions) -> list[int]:
    """Where the detector runs: every frame, the keyframes of keyframe-greedy, or (``detect``
    refresh) the frames where the farm's passes refresh their layers."""
    if options.strategy == Strategy.KEYFRAME_GREEDY:
        return list(range(0, frames, options.keyframe_step))
    if options.detect == DetectMode.REFRESH:
        return refresh_positions(frames, options)
    return list(range(frames))


def refresh_positions(frames: int, options: PipelineOptions) -> list[int]:
    """Every frame where a farm pass refreshes its layers (window starts, or sweep refreshes)."""
    if options.tracking == TrackingMode.SWEEP:
        forward, backward = sweep_starts(frames, options.refresh_every)
        return sorted({*forward, *backward})
    return sorted({w.start for w in plan_windows(frames, options.window_frames, options.refresh_every)})


def detect_stage(shot: Shot, classes: list[str], positions: list[int] | None = None) -> dict[int, list[Detection]]:
    """Boxes at ``positions`` (default: every detection position of the shot)."""
    if positions is None:
        positions = detection_positions(len(shot.source), shot.options)
    clock = StageClock(StageName.DETECT, shot.reporter, len(positions))
    found: dict[int, list[Detection]] = {}
    opts = shot.options
    detector = shot.models.detector
    step = max(1, detector.batch_frames)
    for start in range(0, len(positions), step):
        batch = positions[start : start + step]
        frames = [shot.source.at(pos) for pos in batch]
        for pos, boxes in zip(
            batch, detector.detect_many(frames, classes, opts.box_threshold, opts.text_threshold), strict=True
        ):
            found[pos] = sorted(boxes, key=lambda d: -d.score)[: opts.max_detections]
            clock.tick()
    clock.close()
    return found


def segment_stage(shot: Shot, boxes: dict[int, list[Detection]]) -> None:
    """SAM2 per box, then clean-up, false-positive removal and duplicate merging per frame."""
    clock = StageClock(StageName.SEGMENT, shot.reporter, len(boxes))
    for pos, frame_boxes in sorted(boxes.items()):
        logits = shot.models.segmenter.segment(shot.source.at(pos), frame_boxes) if frame_boxes else None
        cleaned = [] if logits is None else clean_frame(frame_boxes, logits, shot.options)
        shot.detections.put(pos, cleaned)
        clock.tick()
    shot.detections.flush()
    clock.close()


def clean_frame(boxes: list[Detection], logits: np.ndarray, opts: PipelineOptions) -> list[FrameMask]:
    masks: list[FrameMask] = []
    for det, lg in zip(boxes, logits, strict=True):
        mask = remove_small_regions(lg > 0, opts.min_island_px, opts.min_hole_px)
        if mask.sum() < max(1, opts.min_mask_px):
            continue
        soft = np.where(mask & (lg <= 0), _LOGIT, np.where(~mask & (lg > 0), -_LOGIT, lg))
        masks.append(FrameMask(det.label, mask, det.score, quantize_logits(soft)))
    result = consolidate([m.mask for m in masks], opts.fp_sim, opts.fp_min_partners, opts.merge_sim)
    out: list[FrameMask] = []
    for keep, merged in sorted(result.kept.items()):
        base = masks[keep]
        if not merged:
            out.append(base)
            continue
        mask, logits_ = base.mask.copy(), logits_of(base)
        for i in merged:
            mask |= masks[i].mask
            logits_ = np.maximum(logits_, logits_of(masks[i]))
        out.append(FrameMask(base.label, mask, max(base.score, *(masks[i].score for i in merged)), logits_))
    return out
