"""The ghost-end rule (``workers.core.ghosts``): pure logic over per-frame looks, no masks."""

from __future__ import annotations

from workers.core.ghosts import FrameLook, GhostOptions, ghost_frames

OPTIONS = GhostOptions()


def _layer(pattern: str, detected: str | None = None) -> list[FrameLook]:
    """One look per character: S supported and moving, s supported but still, m moving and
    unsupported, h held still and unsupported; ``detected`` (same length, '.' = not run) says where
    the detector ran (everywhere by default)."""
    looks = []
    for pos, kind in enumerate(pattern):
        ran = detected is None or detected[pos] != "."
        quality = 0.9 if kind in "Ss" else 0.0
        still = 1.0 if kind in "sh" and pos else 0.5
        looks.append(FrameLook(pos, still, quality if ran else 0.0, ran))
    return looks


def test_a_mask_held_still_after_its_object_left_is_cut_to_the_last_supported_frame() -> None:
    # frame 6 is where the mask froze (frame 7 on are it held still): the tracker's last estimate stays
    looks = _layer("SSSSSSmhhhhhhhh")
    assert ghost_frames(looks, OPTIONS) == list(range(7, 15))


def test_a_mask_held_still_before_its_object_entered_is_cut_too() -> None:
    # the backward pass's ghost: the head's first frame has no previous one, so its stillness is
    # judged by the next frame's
    looks = _layer("hhhhhhmSSSSS")
    assert ghost_frames(looks, OPTIONS) == list(range(0, 5))


def test_an_undetected_object_that_keeps_moving_keeps_its_frames() -> None:
    assert ghost_frames(_layer("SSSSSmmmmmmmm"), OPTIONS) == []


def test_a_still_object_that_detections_support_is_kept() -> None:
    assert ghost_frames(_layer("SSSsssssssssS"), OPTIONS) == []


def test_a_short_still_end_is_left_to_the_windows() -> None:
    assert ghost_frames(_layer("SSSSSSShhhh"), OPTIONS) == []


def test_no_cut_without_enough_frames_the_detector_ran_on() -> None:
    # detect=refresh: the detector ran on one frame of the end, which says too little
    looks = _layer("SSSSShhhhhh", detected="S....S.....")
    assert ghost_frames(looks, OPTIONS) == []
    # … over more refreshes it is cut from its first held-still frame; the undetected moving
    # frames after the last supported one stay
    looks = _layer("SSSSmhhhhhhhhhhh", detected="S....S....S....S")
    assert ghost_frames(looks, OPTIONS) == list(range(5, 16))


def test_a_layer_no_detection_ever_supported_is_left_to_the_confirmation_rules() -> None:
    assert ghost_frames(_layer("hhhhhhhhhh"), OPTIONS) == []


def test_zero_min_frames_turns_the_rule_off() -> None:
    assert ghost_frames(_layer("SSSSSSmhhhhhhhh"), GhostOptions(min_frames=0)) == []


def test_a_false_box_that_seeded_a_hold_does_not_keep_the_hold_as_support() -> None:
    # frame 12: a false box on nothing, segmented, and held still backward over frames 6-11 (the
    # real object left the layer after frame 4): its own frame "supports" it, nothing else does
    looks = _layer("SSSSSmhhhhhhs")
    assert ghost_frames(looks, OPTIONS) == list(range(6, 13))
    # the forward pass's version, at the layer's head: the seed and the hold after it go
    looks = _layer("shhhhhhmSSSS")
    assert ghost_frames(looks, OPTIONS) == list(range(0, 6))


def test_one_box_landing_on_a_hold_does_not_keep_it_either() -> None:
    # a car left after frame 4 and its sliver was held at the edge (5-12); at frame 13 the car's
    # first box on its way back, mostly background, landed on the sliver and was tracked (held
    # again, 15-18): the returning car gets its own layer, and this one ends where the car left
    looks = _layer("SSSSSmhhhhhhhSmhhhh")
    assert ghost_frames(looks, OPTIONS) == list(range(6, 19))


def test_a_held_frame_is_a_seed_only_behind_a_long_unsupported_hold_the_detector_saw() -> None:
    # a still object missed for three frames, then seen again: its detection is real support
    assert ghost_frames(_layer("SSSSShhhs"), OPTIONS) == []
    # a supported frame inside the hold: the object was there, so the last frame is not a seed
    assert ghost_frames(_layer("SSSSSmhhhshhhhs"), OPTIONS) == []
    # the detector looked at one frame of the hold only: too little to call the support false
    assert ghost_frames(_layer("SSSSSmhhhhhhs", detected="S....S......S"), OPTIONS) == []
