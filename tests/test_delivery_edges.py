"""A refinement delivery refines the edges of the layers it makes anew, as the export refined the
automatic pass, and leaves copied layers byte for byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workers.io.exr import read_exr_channels, write_exr_atomic
from workers.pipeline.refine_delivery import deliver_version, load_book


class RecordingRefiner:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def refine(self, matte: np.ndarray, guide: np.ndarray) -> np.ndarray:
        self.calls.append((matte.shape[1], guide.shape[1]))
        return np.clip(matte * 0.5, 0, 1)  # a visible change, to see where it went


def test_remade_layers_are_refined_and_copied_ones_are_not(tmp_path: Path) -> None:
    w, h = 64, 48
    ball, car = np.zeros((h, w), np.float16), np.zeros((h, w), np.float16)
    ball[10:30, 10:30], car[20:40, 34:60] = 1.0, 1.0
    for frame in (1001, 1002):
        channels = {"A": np.maximum(ball, car), "ball_01.A": ball, "car_01.A": car}
        write_exr_atomic(tmp_path / f"v1.{frame}.exr", channels, {})
    book = load_book(lambda f: tmp_path / f"v1.{f}.exr", [1001, 1002], {"ball_01": "ball", "car_01": "car"}, (32, 24))
    fixed = np.zeros((24, 32), bool)
    fixed[4:16, 4:16] = True
    book.set_mask("ball_01", 0, fixed, keyframe=True)
    refiner = RecordingRefiner()
    guides: list[int] = []

    def guide_for(frame: int) -> np.ndarray:
        guides.append(frame)
        return np.zeros((h, w, 3), np.float32)

    written, rewritten = deliver_version(
        book, [1001, 1002], lambda f: tmp_path / f"v1.{f}.exr", lambda f: tmp_path / f"v2.{f}.exr", {},
        edges=refiner, guide_for=guide_for,
    )  # fmt: skip
    assert rewritten == 1 and refiner.calls == [(w, w)] and guides == [1001]
    out, _ = read_exr_channels(written[0])
    assert out["ball_01.A"].max() <= 0.5  # the remade layer went through the refiner
    assert np.array_equal(out["car_01.A"], car)  # the untouched one is the parent's, byte for byte
