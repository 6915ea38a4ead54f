"""Artist refinement with the models: answer a layer's prompt on a frame, paint it, and propagate
the fixed frames (keyframes) through the shot with mask-prompted tracking.

The pure rules (one prompt per layer and frame, layer operations, propagation spans) are in
``workers.core.refine``; this module only asks the refiner and the tracker. Only the layer an
action names changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from schemas.refine import (
    BoxEdit,
    BrushEdit,
    ClickEdit,
    DeleteEdit,
    Edit,
    MergeEdit,
    PropagateEdit,
    RenameEdit,
    SplitEdit,
)
from workers.core.refine import Click, FramePrompt, LayerBook, RefineError, brush, check_point, propagation_spans
from workers.models.interfaces import ModelFrame, Refiner, Tracker

TRACKED_ID = 1  # the one object a propagation tracks


@dataclass
class RefineEngine:
    book: LayerBook
    frame_at: Callable[[int], ModelFrame]  # position → the frame as the models see it
    refiner: Refiner
    tracker: Tracker
    prompts: dict[tuple[str, int], FramePrompt] = field(default_factory=dict)
    bases: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)  # the mask before the prompt
    on_progress: Callable[[int, int], None] = lambda done, total: None  # frames tracked of at most total

    @property
    def size(self) -> tuple[int, int]:
        return self.book.shape[1], self.book.shape[0]

    def _prompt(self, layer: str, pos: int) -> FramePrompt:
        self.book.layer(layer)
        self.book.check_position(pos)
        key = (layer, pos)
        if key not in self.prompts:
            self.prompts[key] = FramePrompt()
            self.bases[key] = self.book.mask(layer, pos).copy()
        return self.prompts[key]

    def answer(self, layer: str, pos: int) -> np.ndarray:
        """Ask the refiner for the layer's mask on the frame from all its clicks (one prompt)."""
        key = (layer, pos)
        prompt, base = self.prompts[key], self.bases[key]
        if prompt.empty:
            mask = base
        else:
            logits = self.refiner.refine(
                self.frame_at(pos), prompt.points(), prompt.labels(), prompt.box, base if base.any() else None
            )
            mask = logits > 0
        self.book.set_mask(layer, pos, mask, keyframe=True)
        return mask

    def click(self, layer: str, pos: int, x: float, y: float, positive: bool) -> np.ndarray:
        check_point(x, y, self.size)
        self._prompt(layer, pos).clicks.append(Click(x, y, positive))
        return self.answer(layer, pos)

    def box(self, layer: str, pos: int, box: tuple[float, float, float, float]) -> np.ndarray:
        x0, y0, x1, y1 = box
        check_point(x0, y0, self.size, "box")
        check_point(x1 - 1e-3, y1 - 1e-3, self.size, "box")
        if x1 <= x0 or y1 <= y0:
            raise RefineError("box", "give x0 < x1 and y0 < y1")
        self._prompt(layer, pos).box = box
        return self.answer(layer, pos)

    def paint(
        self, layer: str, pos: int, points: Iterable[tuple[float, float]], radius: float, erase: bool
    ) -> np.ndarray:
        """A brush stroke: the mask changes where painted, and later clicks start from it."""
        stroke = list(points)
        if not stroke:
            raise RefineError("points", "a brush stroke needs at least one point")
        for x, y in stroke:
            check_point(x, y, self.size, "points")
        self._prompt(layer, pos)
        mask = brush(self.book.mask(layer, pos), stroke, radius, erase)
        self.prompts[(layer, pos)] = FramePrompt()
        self.bases[(layer, pos)] = mask
        self.book.set_mask(layer, pos, mask, keyframe=True)
        return mask

    def propagate(self, layer: str) -> set[int]:
        """Track the layer from each keyframe forward and backward up to the layer's next keyframe,
        or until the object is lost; returns the positions whose mask this rewrote."""
        target = self.book.layer(layer)
        changed: set[int] = set()
        spans = propagation_spans(target.keyframes, self.book.frames)
        total, done = sum(len(span) - 1 for span in spans), 0
        self.on_progress(0, total)
        for span in spans:
            prompt = self.book.mask(layer, span[0])
            if not prompt.any():
                done += len(span) - 1
                continue  # a keyframe where the artist removed the object: nothing to carry
            frames = [self.frame_at(pos) for pos in span]
            for pos, (_, out) in zip(span, self.tracker.track(frames, {TRACKED_ID: prompt}), strict=False):
                if pos == span[0]:
                    continue
                done += 1
                self.on_progress(done, total)
                mask = out[TRACKED_ID] > 0
                if not mask.any():
                    break  # lost: frames beyond keep what they had
                self.book.set_mask(layer, pos, mask, keyframe=False)
                changed.add(pos)
        self.on_progress(total, total)  # a span cut short by a lost object is done too
        return changed


def position_of(frames: Mapping[int, int], frame: int) -> int:
    if frame not in frames:
        first, last = min(frames), max(frames)
        raise RefineError("frame", f"frame {frame} is not in the shot ({first}-{last})")
    return frames[frame]


def apply_edit(engine: RefineEngine, edit: Edit, frames: Mapping[int, int]) -> tuple[str | None, set[int]]:
    """Apply one edit (plate frame numbers, via ``frames``: frame → position); returns the layer it
    made or changed and the positions whose mask changed. Raises RefineError naming the field."""
    book = engine.book
    match edit:
        case ClickEdit() | BoxEdit():
            pos = position_of(frames, edit.frame)
            layer = edit.layer
            if layer is None:
                if not edit.label:
                    raise RefineError("label", "a click that starts a new layer needs its label, e.g. 'car'")
                layer = book.new_layer(edit.label)
            else:
                book.layer(layer)
            if isinstance(edit, ClickEdit):
                engine.click(layer, pos, edit.x, edit.y, edit.positive)
            else:
                engine.box(layer, pos, edit.box)
            return layer, {pos}
        case BrushEdit():
            pos = position_of(frames, edit.frame)
            engine.paint(edit.layer, pos, edit.points, edit.radius, edit.erase)
            return edit.layer, {pos}
        case RenameEdit():
            book.rename(edit.layer, edit.to)
            return edit.to, set()
        case DeleteEdit():
            gone = set(book.layer(edit.layer).masks)
            book.delete(edit.layer)
            return None, gone
        case MergeEdit():
            moved = set(book.layer(edit.layer).masks)
            book.merge(edit.layer, edit.into)
            return edit.into, moved
        case SplitEdit():
            new = book.split(edit.layer, position_of(frames, edit.frame))
            return new, set(book.layer(new).masks)
        case PropagateEdit():
            return edit.layer, engine.propagate(edit.layer)
    raise RefineError("kind", f"unknown edit {edit!r}")
