"""The synthetic backend: detector, segmenter and tracker that read ground truth and add seeded noise.

Noise follows the pipeline issue's definition so results are comparable between runs and
strategies. Every random draw is seeded by (seed, role, frame), so a frame's output does not
depend on the order frames are processed in.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from workers.models.interfaces import Detection, ModelFrame
from workers.synthetic.truth import TruthReader

_LOGIT_CLIP = 12.0


@dataclass(frozen=True)
class SyntheticNoise:
    miss_rate: float = 0.1
    min_visible_px: int = 64
    box_jitter: float = 0.05
    fp_rate: float = 0.2
    seg_noise_px: int = 2
    track_loss_rate: float = 0.02
    seed: int = 0


def _rng(noise: SyntheticNoise, role: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([noise.seed, role, *(k & 0xFFFFFFFF for k in keys)])


def mask_to_logits(mask: np.ndarray) -> np.ndarray:
    """A hard mask as logits with a one-pixel soft edge, like a segmenter's output."""
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.7)
    soft = np.clip(soft, 1e-5, 1 - 1e-5)
    return np.clip(np.log(soft / (1 - soft)), -_LOGIT_CLIP, _LOGIT_CLIP).astype(np.float32)


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
        for n, det in enumerate(boxes):
            rng = _rng(self.noise, 2, frame.frame, n)
            x0, y0, x1, y1 = (round(v) for v in det.box)
            inside = ids[y0:y1, x0:x1]
            values, counts = np.unique(inside[inside > 0], return_counts=True)
            box_area = max(1, (x1 - x0) * (y1 - y0))
            if len(values) and counts.max() >= 0.3 * box_area:
                gx, gy = 0.05 * (x1 - x0), 0.05 * (y1 - y0)  # box grown by 10 %
                clip = np.zeros((h, w), bool)
                clip[max(0, int(y0 - gy)) : int(y1 + gy) + 1, max(0, int(x0 - gx)) : int(x1 + gx) + 1] = True
                mask = (ids == values[counts.argmax()]) & clip
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
    _STILL_FRAMES = 5

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
            ids = self.truth.ids(f.plate_path, f.size)
            result: dict[int, np.ndarray] = {}
            for oid, tid in followed.items():
                rng = _rng(self.noise, 3, f.frame, frames[0].frame, oid)
                if tid is None:
                    still = step <= self._STILL_FRAMES
                    result[oid] = mask_to_logits(prompts[oid] if still else np.zeros_like(prompts[oid]))
                    continue
                mask = ids == tid
                rate = self.noise.track_loss_rate * (2 if mask.sum() < 0.5 * areas[tid] else 1)
                if step > 0 and rng.random() < rate:
                    lost.add(oid)
                if oid in lost:
                    mask = np.zeros_like(mask)
                result[oid] = mask_to_logits(perturb_boundary(mask, rng, self.noise.seg_noise_px))
            yield f.frame, result


def _best_truth_match(ids: np.ndarray, prompt: np.ndarray, min_iou: float = 0.3) -> int | None:
    best, best_iou = None, min_iou
    for tid in (int(t) for t in np.unique(ids[prompt]) if t > 0):
        truth = ids == tid
        iou = (truth & prompt).sum() / max(1, (truth | prompt).sum())
        if iou >= best_iou:
            best, best_iou = tid, iou
    return best
