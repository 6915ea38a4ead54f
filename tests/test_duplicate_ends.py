"""The duplicate-end rule (``workers.core.duplicate_ends``): pure logic over per-frame looks."""

from __future__ import annotations

from workers.core.duplicate_ends import LayerFrame, duplicate_end_frames


def _layer(first: int, stills: list[float], duplicates: dict[int, set[int]] | None = None) -> list[LayerFrame]:
    """Looks from frame ``first`` on: each frame's stillness, and the layers it duplicates there."""
    dup = duplicates or {}
    return [LayerFrame(first + i, still, frozenset(dup.get(first + i, set()))) for i, still in enumerate(stills)]


SMOOTH = 0.9


def test_a_head_held_on_the_object_it_came_out_of_is_cut_from_the_newcomer() -> None:
    # layer 2 (ball 4) came out from behind ball 1 at frame 5; the backward pass held it on ball 1
    # over frames 0-4, where ball 1's own layer 1 is
    newcomer = _layer(0, [0.0, 1.0, 1.0, 1.0, 1.0, 0.3] + [SMOOTH] * 6, {p: {1} for p in range(5)})
    ball = _layer(0, [0.0] + [SMOOTH] * 11, {p: {2} for p in range(5)})
    assert duplicate_end_frames({1: ball, 2: newcomer}) == {2: [0, 1, 2, 3, 4]}


def test_a_tail_lost_onto_a_neighbour_is_cut_from_the_layer_that_jumped() -> None:
    lost = _layer(0, [0.0] + [SMOOTH] * 7 + [0.2, 1.0, 1.0], {p: {1} for p in (8, 9, 10)})
    neighbour = _layer(0, [0.0] + [SMOOTH] * 10, {p: {2} for p in (8, 9, 10)})
    assert duplicate_end_frames({1: neighbour, 2: lost}) == {2: [8, 9, 10]}


def test_layers_that_part_smoothly_keep_their_frames() -> None:
    # two objects side by side moving apart: neither jumps
    a = _layer(0, [0.0] + [SMOOTH] * 9, {p: {2} for p in range(3)})
    b = _layer(0, [0.0] + [SMOOTH] * 9, {p: {1} for p in range(3)})
    assert duplicate_end_frames({1: a, 2: b}) == {}


def test_no_cut_when_the_other_layer_jumps_too_or_is_gone() -> None:
    both_jump = {
        1: _layer(0, [0.0, 1.0, 1.0, 0.2, SMOOTH], {p: {2} for p in range(3)}),
        2: _layer(0, [0.0, 1.0, 1.0, 0.2, SMOOTH], {p: {1} for p in range(3)}),
    }
    assert duplicate_end_frames(both_jump) == {}
    other_ends = {
        1: _layer(0, [0.0, 1.0, 1.0]),
        2: _layer(0, [0.0, 1.0, 1.0, 0.2, SMOOTH], {p: {1} for p in range(3)}),
    }
    assert duplicate_end_frames(other_ends) == {}


def test_a_layer_that_duplicates_another_all_its_life_is_left_to_the_merges() -> None:
    twin = _layer(0, [0.0, SMOOTH, SMOOTH], {p: {1} for p in range(3)})
    whole = _layer(0, [0.0, SMOOTH, SMOOTH, SMOOTH], {p: {2} for p in range(3)})
    assert duplicate_end_frames({1: whole, 2: twin}) == {}


def test_a_gap_after_the_run_leaves_the_end_alone() -> None:
    gapped = _layer(0, [0.0, 1.0, 1.0], {p: {1} for p in range(3)}) + _layer(5, [0.0, SMOOTH])
    other = _layer(0, [0.0] + [SMOOTH] * 6, {p: {2} for p in range(3)})
    assert duplicate_end_frames({1: other, 2: gapped}) == {}
