"""The shadow backend: real networks run on every call (so time, memory and call counts are
real), while the masks and boxes the pipeline acts on come from synthetic ground truth.

Random weights make masks meaningless, and meaningless masks change the pipeline's work (no
layers, nothing to track). Shadowing keeps the workload of a real shot for benchmarks; it only
works on synthetic shots, which carry the truth.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from workers.models.interfaces import Detection, Detector, ModelFrame, Segmenter, Sweep, Tracker


class ShadowDetector:
    def __init__(self, real: Detector, truth: Detector) -> None:
        self.real, self.truth, self.name = real, truth, f"{real.name} (shadowed)"
        self.counters: Counter[str] = real.counters
        self.batch_frames = real.batch_frames

    def detect(
        self, frame: ModelFrame, classes: Sequence[str], box_threshold: float, text_threshold: float
    ) -> list[Detection]:
        self.real.detect(frame, classes, box_threshold, text_threshold)
        return self.truth.detect(frame, classes, box_threshold, text_threshold)

    def detect_many(
        self, frames: Sequence[ModelFrame], classes: Sequence[str], box_threshold: float, text_threshold: float
    ) -> list[list[Detection]]:
        self.real.detect_many(frames, classes, box_threshold, text_threshold)
        return self.truth.detect_many(frames, classes, box_threshold, text_threshold)


class ShadowSegmenter:
    def __init__(self, real: Segmenter, truth: Segmenter) -> None:
        self.real, self.truth, self.name = real, truth, f"{real.name} (shadowed)"
        self.counters: Counter[str] = real.counters

    def segment(self, frame: ModelFrame, boxes: Sequence[Detection]) -> np.ndarray:
        self.real.segment(frame, boxes)
        return self.truth.segment(frame, boxes)


class ShadowTracker:
    def __init__(self, real: Tracker, truth: Tracker) -> None:
        self.real, self.truth, self.name = real, truth, f"{real.name} (shadowed)"
        self.counters: Counter[str] = real.counters

    def track(
        self, frames: Sequence[ModelFrame], prompts: dict[int, np.ndarray]
    ) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
        for (_, _), (frame, truth) in zip(
            self.real.track(frames, prompts), self.truth.track(frames, prompts), strict=True
        ):
            yield frame, truth

    def sweep(self, frames: Sequence[ModelFrame]) -> ShadowSweep:
        return ShadowSweep(self.real.sweep(frames), self.truth.sweep(frames))


class ShadowSweep:
    def __init__(self, real: Sweep, truth: Sweep) -> None:
        self.real, self.truth = real, truth

    def advance(self) -> tuple[int, dict[int, np.ndarray]]:
        self.real.advance()
        return self.truth.advance()

    def prompt(self, prompts: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        self.real.prompt(prompts)
        return self.truth.prompt(prompts)

    def drop(self, obj_ids: Iterable[int]) -> None:
        ids = list(obj_ids)
        self.real.drop(ids)
        self.truth.drop(ids)
