"""Re-entry: a layer that starts after another of its label ended continues it only when it is the
same object (appearance, size, no shared frame). Pure logic: descriptors are given."""

from __future__ import annotations

import numpy as np

from workers.core.reentry import LayerSpan, ReentryOptions, plan_joins, similarity, touched_edge


def _look(*weights: float) -> np.ndarray:
    return np.asarray(weights, np.float32)


RED, RED2, BLUE = _look(8, 2, 0, 0), _look(7, 3, 0, 0), _look(0, 0, 6, 4)


def _span(lid: int, first: int, last: int, look: np.ndarray, label: str = "car", area: int = 1000) -> LayerSpan:
    return LayerSpan(lid, label, first, last, area, entry=look, exit=look)


def test_similarity_is_one_for_the_same_histogram_and_zero_for_disjoint_ones() -> None:
    assert similarity(RED, RED * 3) == 1.0
    assert similarity(RED, BLUE) == 0.0
    assert 0.9 < similarity(RED, RED2) < 1.0
    assert similarity(RED, np.zeros(4)) == 0.0


def test_an_object_back_after_leaving_frame_continues_its_layer() -> None:
    assert plan_joins([_span(1, 0, 20, RED), _span(2, 35, 59, RED2)], ReentryOptions()) == {2: 1}


def test_two_layers_on_one_frame_are_never_joined_however_alike() -> None:
    assert plan_joins([_span(1, 0, 30, RED), _span(2, 30, 59, RED)], ReentryOptions()) == {}


def test_a_different_object_of_the_same_label_keeps_its_own_layer() -> None:
    assert plan_joins([_span(1, 0, 20, RED), _span(2, 35, 59, BLUE)], ReentryOptions()) == {}


def test_other_labels_and_implausible_sizes_are_not_joined() -> None:
    assert plan_joins([_span(1, 0, 20, RED), _span(2, 35, 59, RED, label="box")], ReentryOptions()) == {}
    assert plan_joins([_span(1, 0, 20, RED, area=100), _span(2, 35, 59, RED, area=1000)], ReentryOptions()) == {}
    # seen only cut by the frame edge (area 0): its size is unknown, so only its look decides
    assert plan_joins([_span(1, 0, 20, RED, area=100), _span(2, 35, 59, RED, area=0)], ReentryOptions()) == {2: 1}


def test_when_two_ended_layers_look_alike_neither_is_guessed() -> None:
    spans = [_span(1, 0, 10, RED), _span(2, 12, 20, RED), _span(3, 40, 59, RED)]
    # 2 continues 1 (only candidate); then 3 has one chain left (1 … 20) and joins it
    assert plan_joins(spans, ReentryOptions()) == {2: 1, 3: 1}
    rivals = [_span(1, 0, 10, RED), _span(2, 5, 20, RED2), _span(3, 40, 59, RED)]
    assert plan_joins(rivals, ReentryOptions(margin=0.2)) == {}  # 1 and 2 coexist: which one came back?


def test_an_object_that_leaves_twice_stays_one_layer() -> None:
    spans = [_span(1, 0, 10, RED), _span(2, 20, 30, RED), _span(3, 40, 50, RED2)]
    assert plan_joins(spans, ReentryOptions()) == {2: 1, 3: 1}


def test_out_through_one_edge_and_in_through_another_is_another_object() -> None:
    def span(lid: int, first: int, last: int, entry: str | None, exit_: str | None) -> LayerSpan:
        return LayerSpan(lid, "car", first, last, 1000, RED, RED, entry_edge=entry, exit_edge=exit_)

    decoy = [span(1, 0, 13, None, "right"), span(2, 22, 39, "left", None)]
    assert plan_joins(decoy, ReentryOptions()) == {}
    back = [span(1, 0, 13, None, "right"), span(2, 22, 39, "right", None)]
    assert plan_joins(back, ReentryOptions()) == {2: 1}
    hidden = [span(1, 0, 13, None, None), span(2, 22, 39, "left", None)]  # left behind something
    assert plan_joins(hidden, ReentryOptions()) == {2: 1}


def test_touched_edge_names_the_side_a_mask_is_cut_by() -> None:
    mask = np.zeros((10, 20), bool)
    assert touched_edge(mask) is None
    mask[3:6, 15:20] = True
    assert touched_edge(mask) == "right"
    mask[0:2, 0:12] = True
    assert touched_edge(mask) == "top"


def _featured(lid: int, first: int, last: int, look: np.ndarray, features: np.ndarray) -> LayerSpan:
    unit = features / np.linalg.norm(features)
    return LayerSpan(lid, "car", first, last, 1000, look, look, entry_features=unit, exit_features=unit)


def test_with_encoder_features_same_colours_are_not_enough() -> None:
    # two cars of one colour: the histogram matches, the encoder tells them apart
    left, back, other = _look(1, 0, 0), _look(0.95, 0.1, 0), _look(0, 1, 0)
    spans = [_featured(1, 0, 20, RED, left), _featured(2, 35, 59, RED2, other)]
    assert plan_joins(spans, ReentryOptions()) == {}
    spans = [_featured(1, 0, 20, RED, left), _featured(2, 35, 59, RED2, back)]
    assert plan_joins(spans, ReentryOptions()) == {2: 1}
    # …and features never stand in for colour: a blue car is not the red one back
    assert plan_joins([_featured(1, 0, 20, RED, left), _featured(2, 35, 59, BLUE, left)], ReentryOptions()) == {}


def test_encoder_features_pick_which_of_two_same_coloured_layers_came_back() -> None:
    # colour alone cannot choose between two red cars that left (within the margin) …
    assert plan_joins([_span(1, 0, 10, RED), _span(2, 0, 12, RED), _span(3, 30, 50, RED)], ReentryOptions()) == {}
    # … the features can
    a, b = _look(1, 0, 0), _look(0, 1, 0)
    spans = [_featured(1, 0, 10, RED, a), _featured(2, 0, 12, RED, b), _featured(3, 30, 50, RED, b)]
    assert plan_joins(spans, ReentryOptions()) == {3: 2}


def test_a_runner_up_under_the_colour_threshold_still_counts_against_the_margin() -> None:
    # similarities to the later layer's look: 0.82 (over the 0.8 threshold) and 0.79 (under it, but
    # within the 0.05 margin): the pair is unsure, so nothing is joined
    entry = _look(1, 0)
    near, nearer = _look(0.6241, 1 - 0.6241), _look(0.6724, 1 - 0.6724)
    assert round(similarity(nearer, entry), 3) == 0.82 and round(similarity(near, entry), 3) == 0.79
    spans = [_span(1, 0, 10, nearer), _span(2, 0, 12, near), _span(3, 30, 50, entry)]
    assert plan_joins(spans, ReentryOptions()) == {}
    assert plan_joins([_span(1, 0, 10, nearer), _span(3, 30, 50, entry)], ReentryOptions()) == {3: 1}
