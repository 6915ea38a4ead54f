"""Per-frame mask clean-up: drop small islands, fill small holes, remove false positives and merge
duplicates with the asymmetric overlap Sim(A, B) = |A∩B| / |A| (Image Engine's rule).

Pure numpy + OpenCV on arrays: no models, no files.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def remove_small_regions(mask: np.ndarray, min_island_px: int, min_hole_px: int) -> np.ndarray:
    """Drop connected foreground islands under ``min_island_px`` and fill holes under ``min_hole_px``."""
    out = mask.astype(bool)
    if min_island_px > 0 and out.any():
        count, labels, stats, _ = cv2.connectedComponentsWithStats(out.astype(np.uint8), connectivity=8)
        small = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] < min_island_px]
        if small and len(small) < count - 1:  # never erase the whole mask this way
            out &= ~np.isin(labels, small)
    if min_hole_px > 0 and not out.all():
        count, labels, stats, _ = cv2.connectedComponentsWithStats((~out).astype(np.uint8), connectivity=4)
        h, w = out.shape
        for i in range(1, count):
            x, y, bw, bh, area = stats[i]
            touches_border = x == 0 or y == 0 or x + bw == w or y + bh == h
            if area < min_hole_px and not touches_border:
                out[labels == i] = True
    return out


def asymmetric_sim(masks: list[np.ndarray]) -> np.ndarray:
    """S[i, j] = |Mi ∩ Mj| / |Mi| (0 where Mi is empty); the diagonal is 0."""
    n = len(masks)
    if n == 0:
        return np.zeros((0, 0))
    flat = np.stack([m.reshape(-1) for m in masks]).astype(np.float32)
    inter = flat @ flat.T
    area = flat.sum(axis=1)
    sim: np.ndarray = np.divide(inter, area[:, None], out=np.zeros_like(inter), where=area[:, None] > 0)
    np.fill_diagonal(sim, 0.0)
    return sim


@dataclass(frozen=True)
class Consolidated:
    """What survived: for each kept input index, the indices merged into it."""

    kept: dict[int, list[int]]
    dropped: list[int]


def consolidate(
    masks: list[np.ndarray], fp_sim: float = 0.1, fp_min_partners: int = 2, merge_sim: float = 0.6
) -> Consolidated:
    """Drop A when Sim(A, B) ≥ ``fp_sim`` for ``fp_min_partners`` or more others (a box spanning
    several objects); then, smallest first, merge A into B when B is its only partner with
    Sim(A, B) ≥ ``merge_sim`` (a duplicate or a part)."""
    sim = asymmetric_sim(masks)
    n = len(masks)
    dropped = [i for i in range(n) if (sim[i] >= fp_sim).sum() >= fp_min_partners]
    alive = [i for i in range(n) if i not in dropped]
    kept: dict[int, list[int]] = {i: [] for i in alive}
    for i in sorted(alive, key=lambda k: masks[k].sum()):
        partners = [j for j in kept if j != i and sim[i, j] >= merge_sim]
        if len(partners) == 1:
            kept[partners[0]] += [i, *kept.pop(i)]
    return Consolidated(kept=kept, dropped=dropped)
