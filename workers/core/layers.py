"""Layer bookkeeping for the simple pipeline: link each frame's masks to layers by IoU.

Pure logic: no files, no models. Layers are named ``<label>_<NN>``, numbered per label in
order of first appearance.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from workers.core.masks import iou


@dataclass
class Layer:
    index: int
    label: str
    name: str
    first_frame: int
    last_frame: int
    frames: int = 0
    score_sum: float = 0.0
    last_mask: np.ndarray | None = field(default=None, repr=False)

    @property
    def mean_score(self) -> float:
        return self.score_sum / self.frames if self.frames else 0.0


@dataclass(frozen=True)
class FrameMask:
    label: str
    mask: np.ndarray  # bool, working resolution
    score: float
    logits: np.ndarray | None = field(default=None, repr=False)  # int16-quantized, for soft output


def channel_safe(label: str) -> str:
    """A label as an EXR/Nuke layer-name stem: letters, digits and '_', starting with a letter."""
    safe = "".join(c if c.isascii() and c.isalnum() else "_" for c in label).strip("_") or "object"
    return safe if safe[0].isalpha() else f"obj_{safe}"


def layer_name(label: str, number: int) -> str:
    return f"{channel_safe(label)}_{number:02d}"


class LayerNamer:
    """Numbers layers per name stem in the order they are named: car_01, ball_01, car_02.

    Numbered by stem, not label, so labels that map to one stem never share a name.
    """

    def __init__(self) -> None:
        self._numbers: Counter[str] = Counter()

    def name(self, label: str) -> str:
        stem = channel_safe(label)
        self._numbers[stem] += 1
        return f"{stem}_{self._numbers[stem]:02d}"


class LayerLinker:
    """One-to-one linking of masks to layers of the same label, best IoU first."""

    def __init__(self, link_iou: float) -> None:
        self.link_iou = link_iou
        self.layers: list[Layer] = []
        self._namer = LayerNamer()

    def link(self, frame: int, masks: list[FrameMask]) -> list[int]:
        """The layer index for each mask, creating layers for masks that match none."""
        pairs = [
            (iou(m.mask, layer.last_mask), i, layer.index)
            for i, m in enumerate(masks)
            for layer in self.layers
            if layer.label == m.label and layer.last_mask is not None
        ]
        assigned: dict[int, int] = {}
        taken: set[int] = set()
        for score, i, j in sorted(pairs, key=lambda p: -p[0]):
            if score < self.link_iou:
                break
            if i not in assigned and j not in taken:
                assigned[i] = j
                taken.add(j)
        result: list[int] = []
        for i, m in enumerate(masks):
            if i not in assigned:
                layer = Layer(len(self.layers), m.label, self._namer.name(m.label), frame, frame)
                self.layers.append(layer)
                assigned[i] = layer.index
            layer = self.layers[assigned[i]]
            layer.last_frame, layer.last_mask = frame, m.mask
            layer.frames += 1
            layer.score_sum += m.score
            result.append(layer.index)
        return result


NESTED_SHARE = 0.9  # a mask this much inside another is part of it …
NESTED_FRAMES = 0.6  # … and a layer inside another on this share of their shared frames is part of it
NESTED_MIN_FRAMES = 3


def nested_pairs(inside: dict[tuple[int, int], int], shared: dict[tuple[int, int], int]) -> list[tuple[int, int]]:
    """(older, younger) layer pairs where the younger lay inside the older on at least
    ``NESTED_FRAMES`` of the (at least ``NESTED_MIN_FRAMES``) frames they share; each younger layer
    joins at most one older one, the one it lay inside most often."""
    best: dict[int, tuple[float, int]] = {}
    for (old, young), count in shared.items():
        if count < NESTED_MIN_FRAMES:
            continue
        share = inside.get((old, young), 0) / count
        if share >= NESTED_FRAMES and share > best.get(young, (0.0, 0))[0]:
            best[young] = (share, old)
    return sorted((old, young) for young, (_, old) in best.items())
