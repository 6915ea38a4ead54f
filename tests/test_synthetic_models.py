"""The synthetic backend answers as a real model would: a thin or sparse object inside its box
comes back as itself; only a box on nothing gets the stand-in ellipse."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from workers.core.masks import iou
from workers.models.interfaces import Detection, ModelFrame
from workers.models.synthetic import SyntheticNoise, SyntheticSegmenter
from workers.synthetic.truth import TruthReader


class FixedTruth(TruthReader):
    def __init__(self, ids: np.ndarray) -> None:
        super().__init__()
        self.fixed = ids

    def ids(self, plate_frame: Path, size: tuple[int, int]) -> np.ndarray:
        return self.fixed


def test_a_thin_diagonal_object_comes_back_as_itself_and_an_empty_box_as_an_ellipse() -> None:
    ids = np.zeros((200, 300), np.int32)
    cv2.line(ids, (20, 20), (180, 170), 7, 3)  # a spoke 3 px wide: it fills ~4 % of its box
    ids[150:190, 220:290] = 4
    noise = SyntheticNoise(seg_noise_px=0)
    segmenter = SyntheticSegmenter(FixedTruth(ids), noise)
    frame = ModelFrame(1001, np.zeros((200, 300, 3), np.uint8), Path("/nowhere/p.1001.exr"))
    boxes = [Detection((18, 18, 183, 173), "spoke", 0.9), Detection((230, 20, 290, 80), "ball", 0.5)]
    spoke, empty = segmenter.segment(frame, boxes) > 0
    assert iou(spoke, ids == 7) > 0.95
    assert not (empty & (ids > 0)).any() and empty.sum() > 0.6 * 60 * 60  # the ellipse, on nothing
