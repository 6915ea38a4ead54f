"""Score matte edges against soft-alpha truth, in the boundary band where mattes differ.

The image-matting measures (Rhemann et al. 2009, alphamatting.com) and the video-matting one
(Erofeev et al. 2015), taken per object over its *boundary band*: the pixels the truth leaves
partly covered (anti-aliasing, motion blur, strands, glass), grown by ``band_px``. Inside and
far outside an object every method agrees; J already counts gross errors there.

- SAD: sum of |α − α*| over the band, in thousands, per object-frame.
- MSE: mean of (α − α*)² over the band, ×1000.
- Gradient error: sum over the band of (|∇α| − |∇α*|)², gradients of a Gaussian (σ 1.4), per object-frame.
- dtSSD: per pair of consecutive frames, √ mean over both frames' bands of
  ((α_t − α_{t−1}) − (α*_t − α*_{t−1}))², ×100: flicker the truth does not have.

Layers go to objects as for J (``assign_layers``); an object's matte is the union (max) of its
layers. Objects no layer reached are left out (``missed``): a miss is J's business, and counting
its whole outline here would hide the edges behind it. One frame in memory at a time, plus the
previous frame's mattes for dtSSD.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from workers.io.exr import read_exr_channels
from workers.synthetic.evaluate import assign_layers, manifest_classes, matte_layers, numbered_frames, prompted_objects
from workers.synthetic.truth import read_truth_alpha, read_truth_ids

GRAD_SIGMA = 1.4
SOFT = 1.0 / 255.0  # truth coverage strictly between this and 1 − this is a partly covered pixel


@dataclass
class EdgeScore:
    sad: float
    mse: float
    grad: float
    dtssd: float
    band_px: int
    object_frames: int
    missed: list[int] = field(default_factory=list)
    per_object: dict[int, dict[str, float]] = field(default_factory=dict)


def boundary_band(truth: np.ndarray, band_px: int) -> np.ndarray:
    """Partly covered truth pixels, grown by ``band_px`` (a disc)."""
    soft = ((truth > SOFT) & (truth < 1.0 - SOFT)).astype(np.uint8)
    if band_px <= 0:
        return soft.astype(bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band_px + 1, 2 * band_px + 1))
    return cv2.dilate(soft, kernel).astype(bool)


def _gradient(alpha: np.ndarray) -> np.ndarray:
    smooth = cv2.GaussianBlur(alpha, (0, 0), GRAD_SIGMA)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    magnitude: np.ndarray = np.sqrt(gx * gx + gy * gy)
    return magnitude


def _box(mask: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        return None
    y0, y1 = np.argmax(rows), len(rows) - np.argmax(rows[::-1])
    x0, x1 = np.argmax(cols), len(cols) - np.argmax(cols[::-1])
    h, w = mask.shape
    return slice(max(0, y0 - margin), min(h, y1 + margin)), slice(max(0, x0 - margin), min(w, x1 + margin))


def frame_errors(matte: np.ndarray, truth: np.ndarray, band_px: int) -> tuple[float, float, float, np.ndarray]:
    """(SAD, MSE, gradient error, band) of one object on one frame; the work is done in the band's box."""
    band = boundary_band(truth, band_px)
    box = _box(band, 3 * band_px + 8)  # room for the gradient's support
    if box is None:
        return 0.0, 0.0, 0.0, band
    p, t, b = matte[box], truth[box], band[box]
    diff = (p - t)[b]
    grad = (_gradient(p) - _gradient(t))[b]
    n = max(1, int(b.sum()))
    return (
        float(np.abs(diff).sum() / 1000.0),
        float((diff * diff).sum() / n * 1000.0),
        float((grad * grad).sum() / 1000.0),
        band,
    )


def _frames(output: dict[int, Path], truth: dict[int, Path]) -> Iterator[tuple[int, dict[str, np.ndarray], Path]]:
    for frame in sorted(output):
        channels, _ = read_exr_channels(output[frame])
        yield frame, {name: a.astype(np.float32) for name, a in matte_layers(channels).items()}, truth[frame]


def evaluate_edges(output_dir: Path, truth_dir: Path, band_px: int, classes: Iterable[str] | None = None) -> EdgeScore:
    """Edge scores of a version folder's mattes against the soft-alpha truth beside them."""
    output, truth = numbered_frames(output_dir), numbered_frames(truth_dir)
    if not output:
        raise FileNotFoundError(f"no matte EXRs in {output_dir}")
    objects = prompted_objects(truth_dir, classes if classes is not None else manifest_classes(output_dir))

    def hard() -> Iterator[tuple[int, dict[str, np.ndarray], np.ndarray]]:
        for frame, mattes, path in _frames(output, truth):
            yield frame, {n: m >= 0.5 for n, m in mattes.items()}, read_truth_ids(path)

    owner, _, _ = assign_layers(hard, objects)
    missed = [o for o in objects if o not in owner.values()]
    objects = [o for o in objects if o in owner.values()]
    sums: dict[int, dict[str, float]] = {o: {"sad": 0.0, "mse": 0.0, "grad": 0.0, "dtssd": 0.0} for o in objects}
    frames_of: dict[int, int] = dict.fromkeys(objects, 0)
    pairs_of: dict[int, int] = dict.fromkeys(objects, 0)
    previous: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for _, mattes, path in _frames(output, truth):
        alphas = read_truth_alpha(path)
        if not alphas:
            raise ValueError(f"{path} has no soft alpha: write the shot with `mattefarm synth --soft-alpha`")
        present: set[int] = set()
        for obj in objects:
            t = alphas.get(obj)
            if t is None or not (t > SOFT).any():
                continue
            present.add(obj)
            mine = [m for name, m in mattes.items() if owner.get(name) == obj]
            p = np.maximum.reduce(mine) if mine else np.zeros_like(t)
            sad, mse, grad, band = frame_errors(p, t, band_px)
            s = sums[obj]
            s["sad"], s["mse"], s["grad"] = s["sad"] + sad, s["mse"] + mse, s["grad"] + grad
            frames_of[obj] += 1
            if obj in previous:
                p0, t0, b0 = previous[obj]
                both = band | b0
                d = ((p - p0) - (t - t0))[both]
                s["dtssd"] += float(np.sqrt((d * d).mean()) * 100.0) if d.size else 0.0
                pairs_of[obj] += 1
            previous[obj] = (p, t, band)
        for obj in set(previous) - present:  # a pair needs the object on both frames
            del previous[obj]
    per_object = {
        o: {
            "sad": sums[o]["sad"] / frames_of[o],
            "mse": sums[o]["mse"] / frames_of[o],
            "grad": sums[o]["grad"] / frames_of[o],
            "dtssd": sums[o]["dtssd"] / pairs_of[o] if pairs_of[o] else 0.0,
        }
        for o in objects
        if frames_of[o]
    }
    total = sum(frames_of.values())

    def mean(key: str) -> float:
        weight = pairs_of if key == "dtssd" else frames_of
        count = sum(weight[o] for o in per_object)
        return float(sum(per_object[o][key] * weight[o] for o in per_object) / count) if count else 0.0

    return EdgeScore(mean("sad"), mean("mse"), mean("grad"), mean("dtssd"), band_px, total, missed, per_object)


def edge_score_dict(score: EdgeScore) -> dict[str, object]:
    return asdict(score)
