"""Artist refinement, the pure part: how an artist's clicks, box and brush strokes on one frame
become ONE prompt, what rename / delete / merge / split do to a shot's layers, and which frames a
fix propagates over. No models, files or database: ``workers.pipeline.refine`` drives the models.

Positions are indices into the shot's frame list (0-based), as everywhere in the pipeline.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import cv2
import numpy as np

from workers.core.layers import channel_safe

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


class RefineError(ValueError):
    """An edit that can't apply; ``field`` names what to fix (the API turns it into a 4xx)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True)
class Click:
    x: float  # working-resolution pixels
    y: float
    positive: bool


@dataclass
class FramePrompt:
    """Everything an artist gave one layer on one frame. The segmenter answers it as one prompt
    (N clicks give one mask, not N), with the layer's mask from before the first click as the
    mask prompt, so undoing a click is answering the prompt without it."""

    clicks: list[Click] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None

    def points(self) -> np.ndarray:
        return np.array([[c.x, c.y] for c in self.clicks], np.float32).reshape(-1, 2)

    def labels(self) -> np.ndarray:
        return np.array([1 if c.positive else 0 for c in self.clicks], np.int32)

    @property
    def empty(self) -> bool:
        return not self.clicks and self.box is None


def check_point(x: float, y: float, size: tuple[int, int], field_name: str = "x") -> None:
    width, height = size
    if not (0 <= x < width and 0 <= y < height):
        raise RefineError(field_name, f"({x:g}, {y:g}) is outside the frame (0..{width - 1}, 0..{height - 1})")


def brush(mask: np.ndarray, points: Iterable[tuple[float, float]], radius: float, erase: bool) -> np.ndarray:
    """The mask with a stroke through ``points`` painted in (or erased), ``radius`` pixels wide; a
    radius under 1 paints single pixels (touching up a sliver without eating its neighbours)."""
    stroke = np.zeros(mask.shape, np.uint8)
    pts = [(round(x), round(y)) for x, y in points]
    r = round(radius) if radius >= 1 else 0
    for a, b in itertools.pairwise(pts):
        cv2.line(stroke, a, b, 1, thickness=max(1, 2 * r))
    for p in pts:
        cv2.circle(stroke, p, r, 1, -1)
    painted = stroke.astype(bool)
    result: np.ndarray = (mask & ~painted) if erase else (mask | painted)
    return result


def propagation_spans(keyframes: Iterable[int], frames: int) -> list[list[int]]:
    """From each keyframe, forward up to the next keyframe and backward down to the previous one
    (exclusive), or to the shot's ends: the positions to track, the keyframe first."""
    keys = sorted(set(keyframes))
    spans: list[list[int]] = []
    for i, key in enumerate(keys):
        stop = keys[i + 1] if i + 1 < len(keys) else frames
        start = keys[i - 1] if i > 0 else -1
        if stop - key > 1:
            spans.append(list(range(key, stop)))
        if key - start > 1:
            spans.append(list(range(key, start, -1)))
    return spans


@dataclass
class Layer:
    name: str
    label: str
    masks: dict[int, np.ndarray] = field(default_factory=dict)  # position → bool mask (present frames)
    keyframes: set[int] = field(default_factory=set)  # positions an artist fixed
    # the delivered layers whose mattes this one is made of, where no edit changed its mask
    # (a loaded layer: itself; merged: both; new: none), so delivery copies them byte for byte
    sources: set[str] = field(default_factory=set)

    def present(self) -> list[int]:
        return sorted(pos for pos, mask in self.masks.items() if mask.any())


class LayerBook:
    """A shot's layers as the artist edits them. Only the layer an edit names ever changes."""

    def __init__(self, shape: tuple[int, int], frames: int) -> None:
        self.shape, self.frames = shape, frames
        self.layers: dict[str, Layer] = {}
        self.changed: dict[str, set[int]] = {}  # layer → positions whose mask an edit changed
        self.renamed: dict[str, str] = {}  # original name → current name

    # --- reading -----------------------------------------------------------------------------

    def layer(self, name: str, field_name: str = "layer") -> Layer:
        if name not in self.layers:
            known = ", ".join(sorted(self.layers)) or "none"
            raise RefineError(field_name, f"no layer {name!r} (layers: {known})")
        return self.layers[name]

    def mask(self, name: str, pos: int) -> np.ndarray:
        mask = self.layer(name).masks.get(pos)
        return mask if mask is not None else np.zeros(self.shape, bool)

    def check_position(self, pos: int, field_name: str = "frame") -> None:
        if not 0 <= pos < self.frames:
            raise RefineError(field_name, f"position {pos} is outside the shot (0..{self.frames - 1})")

    # --- masks -------------------------------------------------------------------------------

    def add(
        self, name: str, label: str, masks: dict[int, np.ndarray] | None = None, sources: set[str] | None = None
    ) -> Layer:
        """A layer as delivered (``sources`` defaults to itself)."""
        layer = Layer(name, label, dict(masks or {}), sources={name} if sources is None else set(sources))
        self.layers[name] = layer
        return layer

    def new_layer(self, label: str) -> str:
        """A new layer named after its label, numbered after the ones already there."""
        stem = channel_safe(label)
        taken = {n for n in self.layers if n.startswith(stem + "_")}
        number = 1
        while f"{stem}_{number:02d}" in taken:
            number += 1
        name = f"{stem}_{number:02d}"
        self.add(name, label, sources=set())
        self.changed.setdefault(name, set())
        return name

    def set_mask(self, name: str, pos: int, mask: np.ndarray, *, keyframe: bool) -> None:
        self.check_position(pos)
        layer = self.layer(name)
        if mask.shape != self.shape:
            raise RefineError("mask", f"mask is {mask.shape[::-1]}, the shot works at {self.shape[::-1]}")
        if mask.any():
            layer.masks[pos] = mask.astype(bool)
        else:
            layer.masks.pop(pos, None)
        if keyframe:
            layer.keyframes.add(pos)
        self.changed.setdefault(name, set()).add(pos)

    # --- layer operations --------------------------------------------------------------------

    def rename(self, name: str, to: str) -> None:
        layer = self.layer(name)
        if not _NAME.match(to):
            raise RefineError("to", f"{to!r} is not a layer name: a letter, then letters, digits or '_' (≤ 64)")
        if to in self.layers and to != name:
            raise RefineError("to", f"a layer {to!r} exists; merge into it or pick another name")
        layer.name = to  # the layer keeps its place in the list (and in the EXRs' channel order)
        self.layers = {(to if n == name else n): ly for n, ly in self.layers.items()}
        originals = [original for original, current in self.renamed.items() if current == name]
        for original in originals or [name]:
            self.renamed[original] = to
        if name in self.changed:
            self.changed[to] = self.changed.pop(name)

    def delete(self, name: str) -> None:
        layer = self.layer(name)
        del self.layers[name]
        self.changed[name] = set(layer.masks)

    def merge(self, name: str, into: str) -> None:
        """``name``'s frames join ``into`` (an object split by leaving frame and coming back)."""
        if name == into:
            raise RefineError("into", f"a layer can't merge into itself ({name!r})")
        source, target = self.layer(name), self.layer(into, "into")
        edited = self.changed.get(name, set()) | self.changed.get(into, set())
        for pos, mask in source.masks.items():
            target.masks[pos] = target.masks[pos] | mask if pos in target.masks else mask
            if pos in edited:  # a mask an edit made: delivered from the mask, not copied
                self.changed.setdefault(into, set()).add(pos)
        target.keyframes |= source.keyframes
        target.sources |= source.sources
        del self.layers[name]
        self.changed[name] = set(source.masks)

    def split(self, name: str, pos: int) -> str:
        """Frames from ``pos`` on become a new layer of the same label; returns its name."""
        self.check_position(pos)
        layer = self.layer(name)
        later = {p: m for p, m in layer.masks.items() if p >= pos}
        if not later or len(later) == len(layer.masks):
            raise RefineError("frame", f"{name} has no frames on both sides of position {pos}; nothing to split")
        new = self.new_layer(layer.label)
        part = self.layers[new]
        for p, mask in later.items():
            del layer.masks[p]
            part.masks[p] = mask
        part.keyframes = {k for k in layer.keyframes if k >= pos}
        part.sources = set(layer.sources)  # the same delivered matte, on its own frames
        layer.keyframes -= part.keyframes
        edited = self.changed.setdefault(name, set())
        self.changed[new] = edited & set(later)
        edited -= set(later)
        return new


def doubts(book: LayerBook, *, min_frames: int = 4, jump: float = 1.6) -> list[tuple[str, int, str]]:
    """Frames where the farm itself doubts a layer, so the artist goes there first: a layer seen on
    only a few frames, a sudden change of area, a frame missing between frames it is on."""
    found: list[tuple[str, int, str]] = []
    for name, layer in sorted(book.layers.items()):
        present = layer.present()
        if 0 < len(present) < min_frames:
            found.extend((name, pos, f"on only {len(present)} frame(s)") for pos in present)
        areas = {pos: int(layer.masks[pos].sum()) for pos in present}
        for before, pos in itertools.pairwise(present):
            if pos - before > 1 and pos - before <= 3:
                found.append((name, before + 1, f"missing for {pos - before - 1} frame(s) between frames it is on"))
            ratio = areas[pos] / max(1, areas[before])
            if pos - before == 1 and (ratio > jump or ratio < 1 / jump):
                found.append((name, pos, f"area ×{ratio:.2f} from the frame before"))
    return found
