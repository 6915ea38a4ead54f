"""What a layer looks like at its ends, for re-entry: colour descriptors of the plate inside the
layer's mask on its first and last few frames.

The descriptor is a histogram of chromaticity (r, g of r+g+b) and brightness of the working
frame's pixels inside the mask, one pixel in from its edge (so background at the boundary does not
leak in). Chromaticity barely changes with shading, so an object seen lit and in shadow still
matches. It reads the frames the models saw, so it serves every backend. Where the models have a
``Describer`` (SAM2: its image embedding pooled inside the mask), each end also gets a feature
vector, which tells apart objects of one colour that the histogram cannot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import cv2
import numpy as np

BINS = (8, 8, 4)
END_FRAMES = 5  # frames at each end of a layer that describe it


def colour_descriptor(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Unnormalised histogram (``BINS``) of an RGB uint8 image's pixels inside ``mask``."""
    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    pixels = image[inner if inner.any() else mask].astype(np.float32)
    if not len(pixels):
        return np.zeros(int(np.prod(BINS)), np.float32)
    total = pixels.sum(axis=1) + 1e-3
    r, g = pixels[:, 0] / total, pixels[:, 1] / total
    brightness = total / (3 * 255.0)
    hist, _ = np.histogramdd(np.stack([r, g, brightness], 1), bins=BINS, range=((0, 1), (0, 1), (0, 1)))
    return hist.ravel().astype(np.float32)


def end_descriptors(
    positions: list[int], image: Callable[[int], np.ndarray], mask: Callable[[int], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(entry, exit) descriptors of a layer present at ``positions`` (in order)."""

    def summed(chosen: Iterable[int]) -> np.ndarray:
        return np.sum([colour_descriptor(image(p), mask(p)) for p in chosen], axis=0)

    return summed(positions[:END_FRAMES]), summed(positions[-END_FRAMES:])


def end_features(positions: list[int], describe: Callable[[int], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(entry, exit) unit feature vectors of a layer present at ``positions``: the mean of the
    describer's vectors over each end's frames, scaled to unit length."""

    def mean(chosen: Iterable[int]) -> np.ndarray:
        vector = np.mean([describe(p) for p in chosen], axis=0)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

    return mean(positions[:END_FRAMES]), mean(positions[-END_FRAMES:])
