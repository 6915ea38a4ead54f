"""Per-frame clean-up (islands, holes, Sim-based false positives and merges) and window planning:
pure logic on arrays, no torch, no files."""

from __future__ import annotations

import numpy as np
import pytest

from workers.core.cleanup import asymmetric_sim, consolidate, remove_small_regions
from workers.core.masks import iou, tolerant_overlap
from workers.core.windows import keyframe_windows, plan_windows, short_gaps


def rect(x0: int, y0: int, x1: int, y1: int, shape: tuple[int, int] = (50, 50)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_small_islands_go_and_small_holes_fill() -> None:
    mask = rect(5, 5, 30, 30) | rect(40, 40, 42, 42)  # a 4 px island
    mask[10:12, 10:12] = False  # a 4 px hole
    mask[5:7, 20:22] = False  # a 4 px notch: open to the background, so not a hole
    out = remove_small_regions(mask, min_island_px=10, min_hole_px=10)
    assert not out[40:42, 40:42].any()
    assert out[10:12, 10:12].all()
    assert not out[5:7, 20:22].any()
    assert out.sum() == rect(5, 5, 30, 30).sum() - 4


def test_clean_up_never_erases_a_whole_mask_or_fills_the_background() -> None:
    tiny = rect(0, 0, 3, 3)
    assert remove_small_regions(tiny, min_island_px=100, min_hole_px=0).sum() == 9
    ring = rect(0, 0, 50, 50) & ~rect(10, 10, 40, 40)
    assert not remove_small_regions(ring, 0, min_hole_px=100)[20, 20]  # a big hole stays open


def test_asymmetric_sim() -> None:
    small, big = rect(0, 0, 10, 10), rect(0, 0, 20, 20)
    sim = asymmetric_sim([small, big, np.zeros((50, 50), bool)])
    assert sim[0, 1] == 1.0 and sim[1, 0] == 0.25
    assert sim[0, 0] == 0.0 and sim[2, 0] == 0.0


def test_a_box_spanning_two_objects_is_dropped() -> None:
    a, b = rect(0, 0, 10, 10), rect(20, 0, 30, 10)
    spanning = rect(0, 0, 30, 10)  # Sim(spanning, a) = Sim(spanning, b) = 1/3 ≥ 0.1
    result = consolidate([a, b, spanning])
    assert result.dropped == [2] and sorted(result.kept) == [0, 1]


def test_a_duplicate_or_part_merges_into_its_only_partner() -> None:
    whole, part, other = rect(0, 0, 20, 20), rect(0, 0, 10, 10), rect(30, 30, 40, 40)
    result = consolidate([whole, part, other])
    assert result.kept == {0: [1], 2: []} and result.dropped == []


def test_a_part_of_two_objects_is_dropped_not_merged() -> None:
    left, right = rect(0, 0, 20, 20), rect(18, 0, 40, 20)
    between = rect(15, 5, 25, 15)
    assert 2 in consolidate([left, right, between]).dropped


def test_windows_cover_every_frame_in_both_directions() -> None:
    windows = plan_windows(60, length=20, refresh=5)
    forward = [w for w in windows if w.forward]
    backward = [w for w in windows if not w.forward]
    assert [w.start for w in forward] == list(range(0, 60, 5))
    assert [w.start for w in backward] == list(range(59, -1, -5))
    assert forward[0].positions == range(0, 20) and len(forward[0]) == 20
    assert forward[-1].positions == range(55, 60)
    assert list(backward[0].positions) == list(range(59, 39, -1))
    assert list(backward[-1].positions) == [4, 3, 2, 1, 0]
    for direction in (forward, backward):
        covered = {p for w in direction for p in w.positions}
        assert covered == set(range(60))
    # each frame is tracked by length/refresh windows per direction once the shot is long enough
    assert sum(30 in w.positions for w in forward) == 4


def test_window_planning_edge_cases() -> None:
    assert plan_windows(0, 20, 5) == []
    assert [(w.start, w.stop) for w in plan_windows(3, 20, 5)] == [(0, 2), (2, 0)]
    assert len(plan_windows(40, 20, 5, backward=False)) == 8
    with pytest.raises(ValueError, match="length"):
        plan_windows(10, 1, 1)


def test_keyframe_windows_reach_the_next_keyframe() -> None:
    assert [(w.start, w.stop) for w in keyframe_windows(45, 20)] == [(0, 20), (20, 40), (40, 44)]


def test_the_tracking_window_option_keeps_its_old_name() -> None:
    """``window_frames`` was ``chunk_size`` (a name that also meant a task's frames): both are read."""
    from pydantic import ValidationError

    from schemas import PipelineOptions

    assert PipelineOptions(window_frames=12).window_frames == 12
    assert PipelineOptions.model_validate({"chunk_size": 10}).window_frames == 10
    assert "window_frames" in PipelineOptions().model_dump()
    with pytest.raises(ValidationError, match=r"refresh_every must not exceed options\.window_frames"):
        PipelineOptions(window_frames=4, refresh_every=5)


def test_short_gaps_are_drop_outs_between_frames_a_layer_is_on() -> None:
    assert short_gaps([0, 1, 2, 6, 7, 20, 21], max_gap=5) == [(3, 5)]  # 8…19 is too long: an exit
    assert short_gaps([3, 4, 5], max_gap=5) == []  # nothing before 3 or after 5 is a gap
    assert short_gaps([0, 2], max_gap=1) == [(1, 1)] and short_gaps([0, 2], max_gap=0) == []


def test_tolerant_overlap_sees_a_thin_object_off_by_a_pixel_as_itself() -> None:
    stick = np.zeros((40, 60), bool)
    stick[10:30, 20:23] = True  # 3 px wide
    fat = np.zeros_like(stick)
    fat[10:30, 19:25] = True  # the same stick segmented a couple of px fat
    assert iou(stick, fat) == 0.5
    assert tolerant_overlap(stick, fat, 2) == 1.0
    other = np.zeros_like(stick)
    other[10:30, 40:43] = True
    assert tolerant_overlap(stick, other, 2) == 0.0
    assert tolerant_overlap(stick, stick, 0) == 1.0
