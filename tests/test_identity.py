"""The identity book: one-to-one matching, new layers only for uncovered detections, revival,
duplicate merging, hysteresis and finalisation. Pure numpy, no torch, no files."""

from __future__ import annotations

import numpy as np

from workers.core.identity import IdentityBook, IdentityOptions, detection_quality
from workers.core.layers import FrameMask


def disc(cx: int, cy: int, r: int = 8, shape: tuple[int, int] = (64, 96)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def det(mask: np.ndarray, label: str = "ball") -> FrameMask:
    return FrameMask(label, mask, 0.9)


def book(**kw: float) -> IdentityBook:
    return IdentityBook(IdentityOptions(**kw))


def test_first_window_makes_one_layer_per_uncovered_detection() -> None:
    b = book()
    prompts = b.window_prompts([det(disc(20, 20)), det(disc(60, 30), "car"), det(disc(21, 20))], {})
    # the third detection is covered by the first layer: no new layer for it
    assert sorted(prompts) == [1, 2] and b.layers[2].label == "car"


def test_direct_match_refreshes_one_to_one() -> None:
    b = book(match_iou=0.6)
    b.window_prompts([det(disc(20, 20)), det(disc(40, 20))], {})
    cached = {1: disc(20, 20), 2: disc(40, 20)}
    fresh_a, fresh_b = disc(21, 20), disc(39, 20)
    prompts = b.window_prompts([det(fresh_b), det(fresh_a)], cached)
    assert prompts[1] is fresh_a and prompts[2] is fresh_b


def test_a_partly_covered_detection_neither_refreshes_nor_spawns() -> None:
    b = book()
    b.window_prompts([det(disc(20, 20))], {})
    cached = {1: disc(20, 20)}
    shifted = disc(24, 20)  # IoU < 0.9 but mostly covered
    prompts = b.window_prompts([det(shifted)], cached)
    assert list(prompts) == [1] and prompts[1] is cached[1]


def test_layers_survive_missed_detections_and_end_after_empty_windows() -> None:
    b = book(max_empty_windows=2)
    b.window_prompts([det(disc(20, 20))], {})
    assert list(b.window_prompts([], {1: disc(21, 20)})) == [1]  # missed by the detector, still tracked
    for _ in range(3):
        b.window_prompts([], {})
    assert b.layers[1].ended
    # once ended, a detection where it used to be is a new layer...
    assert 2 in b.window_prompts([det(disc(21, 20))], {}, recent={})
    # ...but a cached mask (from the other pass) brings a layer back
    b.start_pass()
    assert not b.layers[1].ended


def test_a_dormant_layer_is_revived_by_a_detection_near_its_recent_mask() -> None:
    b = book(max_empty_windows=3)
    b.window_prompts([det(disc(20, 20))], {})
    b.window_prompts([], {})  # occluded at this window start
    prompts = b.window_prompts([det(disc(23, 20))], {}, recent={1: disc(22, 20)})
    assert list(prompts) == [1] and len(b.layers) == 1


def test_duplicates_merge_into_the_older_layer() -> None:
    b = book()
    b.window_prompts([det(disc(20, 20)), det(disc(60, 20))], {})
    # Both layers' tracks converged on one object (IoU ≥ 0.7): the younger joins the older.
    prompts = b.window_prompts([], {1: disc(20, 20), 2: disc(21, 20)})
    assert list(prompts) == [1] and b.aliases == {2: 1} and b.root(2) == 1
    b.start_pass()
    assert b.layers[2].ended  # a merged layer stays merged in the other pass
    # labels do not matter: a mislabelled duplicate is still the same object
    b3 = book()
    b3.window_prompts([det(disc(20, 20)), det(disc(60, 20), "car")], {})
    assert list(b3.window_prompts([], {1: disc(20, 20), 2: disc(21, 20)})) == [1] and b3.aliases == {2: 1}


def test_a_ghost_that_drifts_onto_a_supported_layer_is_the_one_merged_away() -> None:
    # Layer 1 (a false "box") is held still by the tracker with no box detection behind it; layer
    # 2 follows a ball its detections keep confirming. When the ghost lands on the ball, keeping
    # the older layer gave the ball the label "box" for the whole shot.
    b = book()
    b.window_prompts([det(disc(70, 40), "box")], {})
    b.window_prompts([det(disc(20, 20))], {1: disc(70, 40)})
    for x in (22, 24):
        b.window_prompts([det(disc(x, 20))], {1: disc(70, 40), 2: disc(x, 20)})
    assert b.layers[1].unsupported_windows == 3 and b.layers[2].unsupported_windows == 0
    prompts = b.window_prompts([], {1: disc(26, 20), 2: disc(26, 21)})
    assert list(prompts) == [2] and b.aliases == {1: 2} and b.root(1) == 2
    assert b.layers[2].label == "ball"


def test_labels_never_share_a_layer() -> None:
    b = book()
    b.window_prompts([det(disc(20, 20), "ball")], {})
    prompts = b.window_prompts([det(disc(50, 40), "car")], {1: disc(20, 20)})
    assert b.layers[2].label == "car" and sorted(prompts) == [1, 2]


def test_hysteresis() -> None:
    b = book(hysteresis=0.1)
    assert b.accepts(0.5, None)
    assert not b.accepts(0.85, 0.8) and b.accepts(0.95, 0.8)


def test_quality_is_best_iou_with_the_frames_detections_of_the_label() -> None:
    assert detection_quality(disc(20, 20), []) == 0.0
    assert detection_quality(disc(20, 20), [det(disc(60, 20)), det(disc(20, 20))]) == 1.0
    assert detection_quality(disc(20, 20), [det(disc(20, 20), "car")], "ball") == 0.0


def test_finalize_drops_unconfirmed_layers_and_names_by_first_appearance() -> None:
    b = book(min_detected_frames=3)
    for label in ("car", "ball", "car", "ball"):
        b.new_layer(label, disc(10, 10))
    kept = b.finalize(
        frames_present={1: 10, 2: 10, 3: 10, 4: 2},
        frames_detected={1: 9, 2: 8, 3: 5, 4: 2},
        first_seen={1: 5, 2: 0, 3: 1, 4: 0},
    )
    assert [(layer.id, layer.name) for layer in kept] == [(2, "ball_01"), (3, "car_01"), (1, "car_02")]


def test_a_layer_no_detection_supports_goes_dormant_then_ends() -> None:
    """A tracker that keeps returning a ghost mask (its own output, every window) does not keep
    the layer alive: after max_unsupported_windows starts with no detection behind it, it is
    dropped from the prompts, and it ends once dormant past max_empty_windows."""
    book = IdentityBook(IdentityOptions(max_unsupported_windows=2, max_empty_windows=1))
    ghost, real = disc(15, 15), disc(60, 40)
    first = book.window_prompts([FrameMask("ball", ghost, 0.9), FrameMask("ball", real, 0.9)], {})
    ghost_id, real_id = sorted(first)
    cached = {ghost_id: ghost, real_id: real}
    alive = []
    for _ in range(6):  # the detector sees only the real ball; the tracker keeps both masks
        prompts = book.window_prompts([FrameMask("ball", real, 0.9)], cached)
        alive.append(ghost_id in prompts)
        assert real_id in prompts
    assert alive == [True, True, False, False, False, False]
    assert book.layers[ghost_id].ended
    # a missed detection now and then does not end a real layer: one detection resets the count
    book2 = IdentityBook(IdentityOptions(max_unsupported_windows=2))
    (lid,) = book2.window_prompts([FrameMask("car", real, 0.9)], {})
    for detected in (False, False, True, False, False, True):
        assert lid in book2.window_prompts([FrameMask("car", real, 0.9)] if detected else [], {lid: real})
