"""The three model roles the pipeline uses, each behind one small interface.

Adapters count their own model calls in ``counters`` (a ``collections.Counter``), because
only they know when a call reuses cached work; the pipeline records the per-job delta.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class ModelFrame:
    """One plate frame as the models see it: display sRGB uint8 at working resolution."""

    frame: int
    image: np.ndarray  # (h, w, 3) uint8
    plate_path: Path

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in working pixels
    label: str
    score: float


class Detector(Protocol):
    name: str
    counters: Counter[str]
    batch_frames: int  # frames one forward pass takes (``detect_many`` is called with up to this many)

    def detect(
        self, frame: ModelFrame, classes: Sequence[str], box_threshold: float, text_threshold: float
    ) -> list[Detection]: ...

    def detect_many(
        self, frames: Sequence[ModelFrame], classes: Sequence[str], box_threshold: float, text_threshold: float
    ) -> list[list[Detection]]:
        """``detect`` for each of ``frames`` (frames of one plate: one size), in one batch where the
        model allows."""
        ...


class Segmenter(Protocol):
    name: str
    counters: Counter[str]

    def segment(self, frame: ModelFrame, boxes: Sequence[Detection]) -> np.ndarray:
        """Mask logits (N, h, w) float32 at working resolution, one per box; > 0 is inside."""
        ...


class Sweep(Protocol):
    """One tracking pass over a run of frames that keeps its memory from frame to frame (SAM2's
    inference state), prompted again wherever the caller decides, instead of a fresh window of
    frames from every refresh: each frame is tracked once per pass."""

    def advance(self) -> tuple[int, dict[int, np.ndarray]]:
        """Track the next frame (the first call: ``frames[0]``) from memory: (frame number,
        object id -> logits) for every object being tracked; nothing is computed with none."""
        ...

    def prompt(self, prompts: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Mask prompts (object id -> bool mask) on the frame last advanced to, for new objects or
        as corrections of tracked ones; their logits on that frame."""
        ...

    def drop(self, obj_ids: Iterable[int]) -> None:
        """Stop tracking these objects (their memory is freed); a later prompt starts them anew."""
        ...


class Tracker(Protocol):
    name: str
    counters: Counter[str]

    def track(
        self, frames: Sequence[ModelFrame], prompts: dict[int, np.ndarray]
    ) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
        """From mask prompts on ``frames[0]`` (object id -> bool mask), yield
        (frame number, object id -> logits) for every frame in order."""
        ...

    def sweep(self, frames: Sequence[ModelFrame]) -> Sweep:
        """A pass over ``frames`` in the order given (a backward pass gives them reversed)."""
        ...


class Refiner(Protocol):
    """Answers an artist's prompt on one frame from the frame's cached image features (no encoder
    pass per click): all clicks of one layer on the frame at once, as one prompt."""

    name: str
    counters: Counter[str]

    def refine(
        self,
        frame: ModelFrame,
        points: np.ndarray,
        labels: np.ndarray,
        box: tuple[float, float, float, float] | None,
        mask_prompt: np.ndarray | None,
    ) -> np.ndarray:
        """``points`` (N, 2) x, y in working pixels; ``labels`` (N,) 1 positive, 0 negative;
        ``mask_prompt`` the layer's mask before the clicks (bool, h × w). Logits (h, w), > 0 inside."""
        ...


class Describer(Protocol):
    """What an object looks like to the model: its image-encoder features pooled inside a mask,
    for telling apart objects that leave and come back (re-entry). Reads the frame's cached
    features; encodes only a frame not cached (counted by the cache)."""

    name: str
    counters: Counter[str]

    def describe(self, frame: ModelFrame, mask: np.ndarray) -> np.ndarray:
        """A unit-length vector for the pixels of ``frame`` inside ``mask`` (bool, h × w)."""
        ...


@dataclass
class ModelSet:
    """The models one worker process loaded, with what a job must record about them."""

    detector: Detector
    segmenter: Segmenter
    tracker: Tracker | None
    backend: str
    weights: str
    device: str
    checkpoints: dict[str, str] = field(default_factory=dict)
    refiner: Refiner | None = None  # interactive clicks (artist refinement)
    describer: Describer | None = None  # encoder-feature appearance (re-entry); colour alone without

    def counters(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for model in (self.detector, self.segmenter, self.tracker, self.refiner, self.describer):
            if model is not None:
                total.update(model.counters)
        return total
