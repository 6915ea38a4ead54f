"""Layer identities for the tracking pipeline: every decision about which layer a mask belongs to
is made here, with one-to-one matching.

At each window start the book turns the cached layer masks and that frame's detections into the
window's prompts:
- a detection whose IoU with a layer's mask is ≥ ``match_iou`` refreshes that layer (best pairs
  first, each layer and detection used once);
- a detection mostly covered by existing layers is left alone (it is one of them, seen badly);
- a detection mostly uncovered revives a dormant layer whose most recent mask it overlaps (the
  object came back), or else starts a new layer;
- two layers whose masks overlap at ``duplicate_iou`` are one object whatever their labels (the
  detector's label can be wrong): one is merged into the other (``aliases``), the track stage
  folds its frames in; the one kept is the one detections of its label support more recently,
  the older on a tie;
- a layer missing from a window start is dormant; after ``max_empty_windows`` such starts in a row
  it ends for the rest of the pass;
- a layer carried only by its own cached masks — no detection of its label overlapping it at
  ``revive_iou`` — for ``max_unsupported_windows`` window starts in a row is dropped from the
  prompts (dormant, then ended as above, unless a detection revives it): a tracker can keep a
  ghost alive on its own output (SAM2 too), and without this it re-prompted itself forever.
Tracked results replace a cached mask only when their quality (IoU with that frame's detections)
beats it by ``hysteresis``. Masks are compared with a boundary tolerance of ``tolerance_px``
(``masks.tolerant_overlap``): with plain IoU a thin object's own detection, a couple of pixels off,
did not count as supporting it, did not refresh it and started a second layer beside it.
Pure numpy: no models, no files.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass, field

import numpy as np

from workers.core.layers import FrameMask, LayerNamer
from workers.core.masks import grown, iou, tolerant_overlap


@dataclass(frozen=True)
class IdentityOptions:
    match_iou: float = 0.9
    new_layer_max_cover: float = 0.2
    revive_iou: float = 0.3
    duplicate_iou: float = 0.7
    hysteresis: float = 0.1
    max_empty_windows: int = 2
    max_unsupported_windows: int = 4
    min_detected_frames: int = 3  # frames where a detection confirms the layer (quality ≥ 0.5)
    min_layer_frames: int = 1
    tolerance_px: int = 2


@dataclass
class LayerRecord:
    id: int
    label: str
    last_mask: np.ndarray | None = field(default=None, repr=False)
    empty_windows: int = 0
    unsupported_windows: int = 0  # window starts in a row with no detection behind it
    ended: bool = False
    merged_into: int | None = None
    name: str = ""


class IdentityBook:
    def __init__(self, options: IdentityOptions) -> None:
        self.options = options
        self.layers: dict[int, LayerRecord] = {}
        self.aliases: dict[int, int] = {}  # merged layer → the layer it joined

    def start_pass(self) -> None:
        """A new direction: every layer not merged away may be carried again."""
        for layer in self.layers.values():
            layer.empty_windows, layer.ended = 0, layer.merged_into is not None
            layer.unsupported_windows = 0

    def root(self, layer_id: int) -> int:
        while layer_id in self.aliases:
            layer_id = self.aliases[layer_id]
        return layer_id

    def new_layer(self, label: str, mask: np.ndarray) -> int:
        layer_id = len(self.layers) + 1
        self.layers[layer_id] = LayerRecord(layer_id, label, last_mask=mask)
        return layer_id

    def window_prompts(
        self, detections: list[FrameMask], cached: dict[int, np.ndarray], recent: dict[int, np.ndarray] | None = None
    ) -> dict[int, np.ndarray]:
        """Prompts (layer id → mask) for a window starting on a frame with these detections and
        these cached layer masks; ``recent`` holds each absent layer's latest mask before it."""
        opts = self.options
        # A mask cached on this frame (by either pass) keeps its layer alive; ``ended`` only stops
        # a layer from being revived by a detection once it has been absent too long.
        prompts = {lid: m for lid, m in cached.items() if m.any() and self.layers[lid].merged_into is None}
        self._merge_duplicates(prompts)
        pairs = sorted(
            (
                (self._overlap(det.mask, prompts[lid]), i, lid)
                for i, det in enumerate(detections)
                for lid in prompts
                if self.layers[lid].label == det.label
            ),
            key=lambda p: -p[0],
        )
        supported = {lid for score, _, lid in pairs if score >= opts.revive_iou}
        matched: dict[int, int] = {}
        for score, i, lid in pairs:
            if score < opts.match_iou:
                break
            if i not in matched and lid not in matched.values():
                matched[i] = lid
                prompts[lid] = detections[i].mask
        for lid in list(prompts):
            layer = self.layers[lid]
            layer.unsupported_windows = 0 if lid in supported else layer.unsupported_windows + 1
            if layer.unsupported_windows > opts.max_unsupported_windows:
                del prompts[lid]  # a ghost of the tracker's own making: dormant from here
        for i, det in enumerate(detections):
            if i in matched or not det.mask.any():
                continue
            if _covered_fraction(det.mask, prompts.values(), opts.tolerance_px) >= opts.new_layer_max_cover:
                continue
            revived = self._dormant_match(det, recent or {}, exclude=prompts.keys())
            lid = revived if revived is not None else self.new_layer(det.label, det.mask)
            prompts[lid] = det.mask
            self.layers[lid].unsupported_windows = 0  # a detection brought it (back)
        for lid, layer in self.layers.items():
            if lid in prompts:
                layer.empty_windows, layer.last_mask, layer.ended = 0, prompts[lid], False
            elif not layer.ended:
                layer.empty_windows += 1
                layer.ended = layer.empty_windows > opts.max_empty_windows
        return prompts

    def join(self, later: int, earlier: int) -> None:
        """``later`` is ``earlier`` come back (re-entry): its frames become the earlier layer's."""
        self.aliases[later] = self.root(earlier)
        self.layers[later].merged_into, self.layers[later].ended = self.root(earlier), True

    def _merge_duplicates(self, prompts: dict[int, np.ndarray]) -> None:
        for young in sorted(prompts, reverse=True):
            for old in sorted(prompts):
                if old >= young or young not in prompts:
                    break
                if old not in prompts or self._overlap(prompts[old], prompts[young]) < self.options.duplicate_iou:
                    continue
                keep, lose = self._survivor(old, young)
                self.aliases[lose] = keep
                self.layers[lose].merged_into, self.layers[lose].ended = keep, True
                del prompts[lose]

    def _survivor(self, old: int, young: int) -> tuple[int, int]:
        """(kept, merged) of two layers found to be one object: the one its detections support
        more recently, the older on a tie. A ghost held still by the tracker on a false box can
        drift onto a real object; kept because it was older, it gave that object the false box's
        label for the whole shot (and a switch where the real layer had been)."""
        if self.layers[young].unsupported_windows < self.layers[old].unsupported_windows:
            return young, old
        return old, young

    def _dormant_match(self, det: FrameMask, recent: dict[int, np.ndarray], exclude: Container[int]) -> int | None:
        best, best_iou = None, self.options.revive_iou
        for lid, layer in self.layers.items():
            if lid in exclude or layer.ended or layer.label != det.label:
                continue
            last = recent.get(lid, layer.last_mask)
            if last is None:
                continue
            score = self._overlap(det.mask, last)
            if score >= best_iou:
                best, best_iou = lid, score
        return best

    def _overlap(self, a: np.ndarray, b: np.ndarray) -> float:
        return tolerant_overlap(a, b, self.options.tolerance_px)

    def accepts(self, new_quality: float, cached_quality: float | None) -> bool:
        """Hysteresis: a tracked mask replaces a cached one only when clearly better."""
        return cached_quality is None or new_quality > cached_quality + self.options.hysteresis

    def finalize(
        self, frames_present: dict[int, int], frames_detected: dict[int, int], first_seen: dict[int, int]
    ) -> list[LayerRecord]:
        """The layers worth writing, named ``<label>_<NN>`` per label in order of first appearance."""
        opts = self.options
        keep = [
            layer
            for lid, layer in self.layers.items()
            if layer.merged_into is None
            and frames_present.get(lid, 0) >= opts.min_layer_frames
            and frames_detected.get(lid, 0) >= opts.min_detected_frames
        ]
        keep.sort(key=lambda layer: (first_seen.get(layer.id, 0), layer.id))
        namer = LayerNamer()
        for layer in keep:
            layer.name = namer.name(layer.label)
            layer.last_mask = None
        return keep


def _covered_fraction(mask: np.ndarray, others: Iterable[np.ndarray], tolerance_px: int = 0) -> float:
    union = np.zeros_like(mask)
    for other in others:
        union |= other
    union = grown(union, tolerance_px)
    area = mask.sum()
    return float((mask & union).sum() / area) if area else 1.0


def detection_quality(mask: np.ndarray, detections: list[FrameMask], label: str | None = None) -> float:
    """How well a tracked mask agrees with that frame's detections of its label (0 with none)."""
    return max((iou(mask, det.mask) for det in detections if label is None or det.label == label), default=0.0)
