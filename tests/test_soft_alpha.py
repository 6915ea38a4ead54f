"""Soft-alpha synthetic truth: coverage per object at plate resolution beside the id map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from workers.io.exr import read_exr_channels
from workers.synthetic.shot import write_shot
from workers.synthetic.soft_alpha import Placement, SoftLook, composite, coverage, draw_box, ids_from_alpha
from workers.synthetic.truth import read_truth_alpha, read_truth_ids


@pytest.fixture(scope="module")
def soft_shot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("soft")
    write_shot(root, "soft1", frames=12, width=480, height=270, objects=4, seed=3, soft=True)
    return root / "soft1"


def test_truth_carries_each_objects_alpha_beside_ids(soft_shot: Path) -> None:
    truth = soft_shot / "truth" / "soft1_truth.1006.exr"
    alphas, ids = read_truth_alpha(truth), read_truth_ids(truth)
    assert alphas and set(alphas) <= {1, 2, 3, 4}
    for oid, alpha in alphas.items():
        assert alpha.shape == ids.shape and alpha.dtype == np.float32
        assert alpha.min() >= 0.0 and alpha.max() <= 1.0 + 1e-3
        partial = (alpha > 0.02) & (alpha < 0.98)
        assert partial.sum() > 20, f"object {oid} has hard edges only"
        # the id map is the hard truth of the same alphas: where the id is the object, it shows most
        assert (alpha[ids == oid] >= 0.5 - 1e-3).all()
    assert json.loads((soft_shot / "truth" / "objects.json").read_text())["soft_alpha"] is True


def test_hard_shots_are_unchanged_by_the_soft_option(tmp_path: Path) -> None:
    write_shot(tmp_path, "hard", frames=3, width=160, height=90, objects=3, seed=3)
    write_shot(tmp_path, "soft", frames=3, width=160, height=90, objects=3, seed=3, soft=True)
    hard = read_exr_channels(tmp_path / "hard" / "truth" / "hard_truth.1002.exr")[0]
    assert set(hard) == {"id"}
    plan = json.loads((tmp_path / "hard" / "truth" / "objects.json").read_text())["plan"]
    assert plan == json.loads((tmp_path / "soft" / "truth" / "objects.json").read_text())["plan"]


def test_motion_blur_spreads_coverage_along_the_motion() -> None:
    look = SoftLook(shutter=0.5)

    def moving(t: float) -> Placement:
        return Placement(100.0 + 40.0 * t, 60.0, 20.0)  # 40 px a frame to the right

    drawn = coverage(draw_box, moving, 1, (400, 120), look)
    assert drawn is not None
    (x0, y0, _, _), cover = drawn
    row = cover[60 - y0]
    ramp = np.count_nonzero((row > 0.05) & (row < 0.95))
    column = cover[:, 140 - x0]
    still_ramp = np.count_nonzero((column > 0.05) & (column < 0.95))
    assert ramp >= 20 > still_ramp  # ~20 px of blur across the motion's edges, ~1 px along it


def test_glass_lets_what_is_behind_it_show_through() -> None:
    background = np.zeros((50, 50, 3), np.float32)
    far = np.ones((50, 50), np.float32)
    near = np.zeros((50, 50), np.float32)
    near[10:40, 10:40] = 1.0
    red, blue = np.full((50, 50, 3), (1, 0, 0), np.float32), np.full((50, 50, 3), (0, 0, 1), np.float32)
    box = (0, 0, 50, 50)
    rgb, visible = composite(background, [(1, box, far, 1.0, red), (2, box, near, 0.7, blue)])
    assert visible[2][20, 20] == pytest.approx(0.7)
    assert visible[1][20, 20] == pytest.approx(0.3) and visible[1][2, 2] == pytest.approx(1.0)
    assert rgb[20, 20] == pytest.approx([0.3, 0.0, 0.7])
    ids = ids_from_alpha(visible, (50, 50))
    assert ids[20, 20] == 2 and ids[2, 2] == 1
