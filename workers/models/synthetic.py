"""The synthetic backend: detector, segmenter and tracker that read ground truth and add seeded noise.

Noise follows the pipeline issue's definition so results are comparable between runs and
strategies. Every random draw is seeded by (seed, role, frame), so a frame's output does not
depend on the order frames are processed in.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from workers.core.masks import mask_to_logits
from workers.models.interfaces import Detection, ModelFrame
from workers.synthetic.truth import TruthReader


@dataclass(frozen=True)
class SyntheticNoise:
    miss_rate: float = 0.1
    min_visible_px: int = 64
    box_jitter: float = 0.05
    fp_rate: float = 0.2
    seg_noise_px: int = 2
    track_loss_rate: float = 0.02
    seed: int = 0


# The harder setting: more misses and false boxes, more tracking loss, worse masks.
HARD_NOISE = SyntheticNoise(miss_rate=0.3, fp_rate=0.6, track_loss_rate=0.06, seg_noise_px=4, box_jitter=0.1)


def _rng(noise: SyntheticNoise, role: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([noise.seed, role, *(k & 0xFFFFFFFF for k in keys)])


def perturb_boundary(mask: np.ndarray, rng: np.random.Generator, max_px: int) -> np.ndarray:
    radius = int(rng.integers(-max_px, max_px + 1)) if max_px > 0 else 0
    if radius == 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(radius) + 1,) * 2)
    op = cv2.dilate if radius > 0 else cv2.erode
    return op(mask.astype(np.uint8), kernel).astype(bool)


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


class SyntheticDetector:
    name = "synthetic-detector"
    batch_frames = 1

    def __init__(self, truth: TruthReader, noise: SyntheticNoise, delay_s: float = 0.0) -> None:
        self.truth, self.noise, self.counters = truth, noise, Counter[str]()
        self.delay_s = delay_s  # stands in for model time, so progress can be watched

    def detect(
        self, frame: ModelFrame, classes: Sequence[str], box_threshold: float, text_threshold: float
    ) -> list[Detection]:
        self.counters["detector_calls"] += 1
        time.sleep(self.delay_s)
        ids = self.truth.ids(frame.plate_path, frame.size)
        labels = self.truth.labels(frame.plate_path)
        rng = _rng(self.noise, 1, frame.frame)
        h, w = ids.shape
        found: list[Detection] = []
        for oid in (int(i) for i in np.unique(ids) if i > 0):
            # Draw for every object so one object's presence doesn't shift another's noise.
            miss, jitter, score = rng.random(), rng.normal(0.0, 1.0, 4), rng.uniform(0.4, 0.95)
            mask = ids == oid
            if labels.get(oid) not in classes or mask.sum() < self.noise.min_visible_px:
                continue
            if miss < self.noise.miss_rate:
                continue
            x0, y0, x1, y1 = _tight_box(mask)
            bw, bh = x1 - x0, y1 - y0
            j = jitter * self.noise.box_jitter * np.array([bw, bh, bw, bh])
            box = (
                float(np.clip(x0 + j[0], 0, w - 1)),
                float(np.clip(y0 + j[1], 0, h - 1)),
                float(np.clip(x1 + j[2], 1, w)),
                float(np.clip(y1 + j[3], 1, h)),
            )
            if box[2] > box[0] + 1 and box[3] > box[1] + 1 and score >= box_threshold:
                found.append(Detection(box, labels[oid], float(score)))
        for _ in range(rng.poisson(self.noise.fp_rate)):
            bw, bh = rng.uniform(0.05, 0.3) * w, rng.uniform(0.05, 0.3) * h
            x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            label, score = str(rng.choice(list(classes))), float(rng.uniform(0.25, 0.5))
            if score >= box_threshold:
                found.append(Detection((x0, y0, x0 + bw, y0 + bh), label, score))
        return found

    def detect_many(
        self, frames: Sequence[ModelFrame], classes: Sequence[str], box_threshold: float, text_threshold: float
    ) -> list[list[Detection]]:
        return [self.detect(frame, classes, box_threshold, text_threshold) for frame in frames]


class SyntheticSegmenter:
    name = "synthetic-segmenter"

    def __init__(self, truth: TruthReader, noise: SyntheticNoise, delay_s: float = 0.0) -> None:
        self.truth, self.noise, self.counters = truth, noise, Counter[str]()
        self.delay_s = delay_s

    def segment(self, frame: ModelFrame, boxes: Sequence[Detection]) -> np.ndarray:
        ids = self.truth.ids(frame.plate_path, frame.size)
        h, w = ids.shape
        self.counters["image_encoder_passes"] += 1
        self.counters["mask_decoder_calls"] += len(boxes)
        time.sleep(self.delay_s)
        out = np.empty((len(boxes), h, w), np.float32)
        areas = np.bincount(ids.ravel()) if boxes else np.zeros(1, np.int64)  # each object's pixels
        for n, det in enumerate(boxes):
            rng = _rng(self.noise, 2, frame.frame, n)
            x0, y0, x1, y1 = (round(v) for v in det.box)
            inside = ids[y0:y1, x0:x1]
            values, counts = np.unique(inside[inside > 0], return_counts=True)
            box_area = max(1, (x1 - x0) * (y1 - y0))
            # A box prompt asks for the object the box bounds: of the objects inside it, the one
            # whose own extent best matches the box (an occluding neighbour that spills into the
            # box, even covering more of it, is not what the box was drawn around). It must still
            # fill a fair share of the box, or lie mostly in it (a thin diagonal strand fills little
            # of its own box, and a real segmenter still returns the strand); the ellipse is for a
            # box on nothing.
            best = _bounded_object(ids, values, det.box) if len(values) else -1
            whole = int(areas[values[best]]) if best >= 0 else 0
            if best >= 0 and (counts[best] >= 0.3 * box_area or counts[best] >= 0.6 * whole):
                gx, gy = 0.05 * (x1 - x0), 0.05 * (y1 - y0)  # box grown by 10 %
                clip = np.zeros((h, w), bool)
                clip[max(0, int(y0 - gy)) : int(y1 + gy) + 1, max(0, int(x0 - gx)) : int(x1 + gx) + 1] = True
                mask = (ids == values[best]) & clip
            else:
                mask = np.zeros((h, w), np.uint8)
                centre = ((x0 + x1) // 2, (y0 + y1) // 2)
                axes = (max(1, (x1 - x0) // 2), max(1, (y1 - y0) // 2))
                cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, -1)
                mask = mask.astype(bool)
            out[n] = mask_to_logits(perturb_boundary(mask, rng, self.noise.seg_noise_px))
        return out


class SyntheticTracker:
    name = "synthetic-tracker"

    def __init__(self, truth: TruthReader, noise: SyntheticNoise) -> None:
        self.truth, self.noise, self.counters = truth, noise, Counter[str]()

    def track(
        self, frames: Sequence[ModelFrame], prompts: dict[int, np.ndarray]
    ) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
        if not frames:
            return
        first = self.truth.ids(frames[0].plate_path, frames[0].size)
        followed: dict[int, int | None] = {oid: _best_truth_match(first, m) for oid, m in prompts.items()}
        areas = {
            tid: np.median([(self.truth.ids(f.plate_path, f.size) == tid).sum() for f in frames])
            for tid in followed.values()
            if tid is not None
        }
        lost: set[int] = set()
        for step, f in enumerate(frames):
            self.counters["tracking_steps"] += 1
            self.counters["object_frames_tracked"] += len(followed)
            ids = self.truth.ids(f.plate_path, f.size)
            result: dict[int, np.ndarray] = {}
            for oid, tid in followed.items():
                rng = _rng(self.noise, 3, f.frame, frames[0].frame, oid)
                area = areas[tid] if tid is not None else 0.0
                result[oid], gone = _follow(ids, tid, prompts[oid], step, area, oid in lost, rng, self.noise)
                if gone:
                    lost.add(oid)
            yield f.frame, result

    def sweep(self, frames: Sequence[ModelFrame]) -> SyntheticSweep:
        return SyntheticSweep(self, frames)


@dataclass
class _Followed:
    """One object of a sweep: the truth object its last prompt matched (None: nothing)."""

    truth_id: int | None
    prompt: np.ndarray
    prompt_frame: int
    area: int  # the object's pixels on the prompt frame: below half of it, it is easier to lose
    steps: int = 0
    lost: bool = False


class SyntheticSweep:
    """The synthetic tracker as one pass: each object follows the truth object its latest prompt
    matched, and is lost for good (until prompted again) at ``track_loss_rate`` per frame, doubled
    while less than half of it shows; a prompt on nothing is held still for ``_STILL_FRAMES``."""

    def __init__(self, tracker: SyntheticTracker, frames: Sequence[ModelFrame]) -> None:
        self.tracker, self.frames, self.index = tracker, frames, -1
        self.objects: dict[int, _Followed] = {}

    def _ids(self) -> np.ndarray:
        f = self.frames[self.index]
        return self.tracker.truth.ids(f.plate_path, f.size)

    def advance(self) -> tuple[int, dict[int, np.ndarray]]:
        self.index += 1
        f, noise = self.frames[self.index], self.tracker.noise
        if not self.objects:
            return f.frame, {}
        self.tracker.counters["tracking_steps"] += 1
        self.tracker.counters["object_frames_tracked"] += len(self.objects)
        ids = self._ids()
        result: dict[int, np.ndarray] = {}
        for oid, obj in self.objects.items():
            obj.steps += 1
            rng = _rng(noise, 3, f.frame, obj.prompt_frame, self.frames[0].frame, oid)
            result[oid], obj.lost = _follow(ids, obj.truth_id, obj.prompt, obj.steps, obj.area, obj.lost, rng, noise)
        return f.frame, result

    def prompt(self, prompts: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        f, ids = self.frames[self.index], self._ids()
        result: dict[int, np.ndarray] = {}
        for oid, mask in prompts.items():
            tid = _best_truth_match(ids, mask)
            truth = ids == tid if tid is not None else mask
            self.objects[oid] = _Followed(tid, mask, f.frame, int(truth.sum()))
            rng = _rng(self.tracker.noise, 3, f.frame, f.frame, self.frames[0].frame, oid)
            shown = perturb_boundary(truth, rng, self.tracker.noise.seg_noise_px) if tid is not None else mask
            result[oid] = mask_to_logits(shown)
        return result

    def drop(self, obj_ids: Iterable[int]) -> None:
        for oid in obj_ids:
            self.objects.pop(oid, None)


_STILL_FRAMES = 5  # a prompt on nothing is held this many frames, then dropped


def _follow(
    ids: np.ndarray,
    truth_id: int | None,
    prompt: np.ndarray,
    steps: int,
    area: float,
    lost: bool,
    rng: np.random.Generator,
    noise: SyntheticNoise,
) -> tuple[np.ndarray, bool]:
    """One tracked object on a frame ``steps`` after its prompt, for windows and sweeps alike:
    (logits, lost). A prompt on no truth object is held still for ``_STILL_FRAMES``; a truth
    object is lost for good at ``track_loss_rate`` per frame, doubled while less than half of
    ``area`` shows."""
    if truth_id is None:
        return mask_to_logits(prompt if steps <= _STILL_FRAMES else np.zeros_like(prompt)), lost
    mask = ids == truth_id
    rate = noise.track_loss_rate * (2 if mask.sum() < 0.5 * area else 1)
    if steps > 0 and rng.random() < rate:
        lost = True
    if lost:
        mask = np.zeros_like(mask)
    return mask_to_logits(perturb_boundary(mask, rng, noise.seg_noise_px)), lost


def _bounded_object(ids: np.ndarray, values: np.ndarray, box: tuple[float, float, float, float]) -> int:
    """Index into ``values`` of the object whose tight box has the highest IoU with ``box``."""
    best, best_iou = 0, -1.0
    for index, value in enumerate(values):
        ox0, oy0, ox1, oy1 = _tight_box(ids == value)
        ix = max(0.0, min(box[2], ox1) - max(box[0], ox0))
        iy = max(0.0, min(box[3], oy1) - max(box[1], oy0))
        inter = ix * iy
        union = (box[2] - box[0]) * (box[3] - box[1]) + (ox1 - ox0) * (oy1 - oy0) - inter
        score = inter / union if union > 0 else 0.0
        if score > best_iou:
            best, best_iou = index, score
    return best


def _best_truth_match(ids: np.ndarray, prompt: np.ndarray, min_iou: float = 0.3) -> int | None:
    best, best_iou = None, min_iou
    for tid in (int(t) for t in np.unique(ids[prompt]) if t > 0):
        truth = ids == tid
        iou = (truth & prompt).sum() / max(1, (truth | prompt).sum())
        if iou >= best_iou:
            best, best_iou = tid, iou
    return best


class SyntheticRefiner:
    """Answers clicks, boxes and mask prompts from the truth, with the ambiguity a real
    click-segmenter has, so click counts mean something: a first positive click on an object the
    mask prompt barely covers gives only the part of the object around the click, or the object
    with a touching neighbour; a second positive click, or a negative click on the neighbour,
    resolves it. A click on background grows a small blob; a negative click on a false region
    removes that region. Seeded by (seed, frame, click), so a prompt's answer is repeatable."""

    name = "synthetic-refiner"
    PART = 0.3  # chance the first click gives part of the object …
    NEIGHBOUR = 0.2  # … or the object plus a touching neighbour

    def __init__(self, truth: TruthReader, noise: SyntheticNoise) -> None:
        self.truth, self.noise, self.counters = truth, noise, Counter[str]()

    def refine(
        self,
        frame: ModelFrame,
        points: np.ndarray,
        labels: np.ndarray,
        box: tuple[float, float, float, float] | None,
        mask_prompt: np.ndarray | None,
    ) -> np.ndarray:
        self.counters["mask_decoder_calls"] += 1
        ids = self.truth.ids(frame.plate_path, frame.size)
        h, w = ids.shape
        mask = mask_prompt.astype(bool).copy() if mask_prompt is not None else np.zeros((h, w), bool)
        target = self._target(ids, points, labels, box, mask_prompt)
        if box is not None and not len(points) and target:
            x0, y0, x1, y1 = (round(v) for v in box)
            clip = np.zeros((h, w), bool)
            clip[max(0, y0) : y1, max(0, x0) : x1] = True
            mask |= (ids == target) & clip
        first_positive = True
        for (x, y), label in zip(points.tolist(), labels.tolist(), strict=True):
            px, py = min(w - 1, max(0, round(x))), min(h - 1, max(0, round(y)))
            under = int(ids[py, px])
            rng = _rng(self.noise, 4, frame.frame, px, py, len(points))
            if label:
                mask |= self._positive(ids, mask_prompt, under, (px, py), rng, first=first_positive)
                first_positive = False
            else:
                mask &= ~self._negative(ids, mask, target, under, (px, py))
        rng = _rng(self.noise, 5, frame.frame, len(points))
        return mask_to_logits(perturb_boundary(mask, rng, min(1, self.noise.seg_noise_px)))

    @staticmethod
    def _target(
        ids: np.ndarray,
        points: np.ndarray,
        labels: np.ndarray,
        box: tuple[float, float, float, float] | None,
        mask_prompt: np.ndarray | None,
    ) -> int:
        """The object the prompt is about: under the first positive click, else the one filling the
        box, else the one the layer's mask already covers most."""
        h, w = ids.shape
        for (x, y), label in zip(points.tolist(), labels.tolist(), strict=True):
            if label:
                return int(ids[min(h - 1, max(0, round(y))), min(w - 1, max(0, round(x)))])
        if box is not None:
            x0, y0, x1, y1 = (round(v) for v in box)
            inside = ids[max(0, y0) : y1, max(0, x0) : x1]
            values, counts = np.unique(inside[inside > 0], return_counts=True)
            if len(values):
                return int(values[counts.argmax()])
        if mask_prompt is not None:
            covered = ids[mask_prompt & (ids > 0)]
            if covered.size:
                values, counts = np.unique(covered, return_counts=True)
                return int(values[counts.argmax()])
        return 0

    def _positive(
        self,
        ids: np.ndarray,
        mask_prompt: np.ndarray | None,
        under: int,
        at: tuple[int, int],
        rng: np.random.Generator,
        *,
        first: bool,
    ) -> np.ndarray:
        h, w = ids.shape
        if under == 0:  # background: a real model grows a small blob around the click
            blob = np.zeros((h, w), np.uint8)
            cv2.circle(blob, at, max(2, round(0.02 * min(h, w))), 1, -1)
            return blob.astype(bool)
        region = ids == under
        covered = mask_prompt is not None and (mask_prompt & region).sum() >= 0.2 * region.sum()
        draw = rng.random()
        if first and not covered and draw < self.PART:
            part = np.zeros((h, w), np.uint8)
            cv2.circle(part, at, max(2, round(0.5 * np.sqrt(region.sum()))), 1, -1)
            return region & part.astype(bool)
        if first and not covered and draw < self.PART + self.NEIGHBOUR:
            ring = cv2.dilate(region.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~region
            touching, counts = np.unique(ids[ring & (ids > 0)], return_counts=True)
            if len(touching):
                return region | (ids == int(touching[counts.argmax()]))
        return region

    @staticmethod
    def _negative(ids: np.ndarray, mask: np.ndarray, target: int, under: int, at: tuple[int, int]) -> np.ndarray:
        h, w = ids.shape
        if under and under != target:
            return ids == under  # "not that object"
        if under == target and target:
            part = np.zeros((h, w), np.uint8)
            cv2.circle(part, at, max(2, round(0.3 * np.sqrt((ids == target).sum()))), 1, -1)
            return part.astype(bool)
        if not mask[at[1], at[0]]:
            return np.zeros((h, w), bool)
        # a false region on background: the connected blob of the mask under the click
        _, components = cv2.connectedComponents((mask & (ids == 0)).astype(np.uint8))
        label = components[at[1], at[0]]
        return components == label if label else np.zeros((h, w), bool)
