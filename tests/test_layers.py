"""Layer linking and naming: pure logic, no torch, no files."""

from __future__ import annotations

import numpy as np

from workers.core.layers import FrameMask, LayerLinker, channel_safe, layer_name, nested_pairs
from workers.core.masks import contained, iou


def square(x: int, y: int, size: int = 10, shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y : y + size, x : x + size] = True
    return mask


def test_iou() -> None:
    assert iou(square(0, 0), square(0, 0)) == 1.0
    assert iou(square(0, 0), square(30, 30)) == 0.0
    assert abs(iou(square(0, 0), square(5, 0)) - 50 / 150) < 1e-9
    assert iou(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 0.0


def test_layers_are_numbered_per_label_in_order_of_appearance() -> None:
    linker = LayerLinker(0.5)
    ids = linker.link(1, [FrameMask("person", square(0, 0), 0.9), FrameMask("car", square(30, 30), 0.8)])
    ids2 = linker.link(2, [FrameMask("person", square(40, 0), 0.7)])
    assert ids == [0, 1] and ids2 == [2]
    assert [layer.name for layer in linker.layers] == ["person_01", "car_01", "person_02"]


def test_linking_is_one_to_one_best_iou_first() -> None:
    linker = LayerLinker(0.3)
    linker.link(1, [FrameMask("ball", square(0, 0), 0.9), FrameMask("ball", square(12, 0), 0.9)])
    # Both new masks overlap layer 0 most; one-to-one gives each its own layer anyway.
    ids = linker.link(2, [FrameMask("ball", square(9, 0), 0.9), FrameMask("ball", square(2, 0), 0.9)])
    assert sorted(ids) == [0, 1] and ids == [1, 0]
    assert all(layer.frames == 2 for layer in linker.layers)


def test_labels_never_link_across_classes() -> None:
    linker = LayerLinker(0.5)
    linker.link(1, [FrameMask("ball", square(0, 0), 0.9)])
    assert linker.link(2, [FrameMask("box", square(0, 0), 0.9)]) == [1]


def test_layer_names_are_channel_safe_and_unique() -> None:
    assert channel_safe("traffic light") == "traffic_light"
    assert channel_safe("3d cube") == "obj_3d_cube"
    assert channel_safe("émoji ✓") == "moji"
    assert layer_name("car", 3) == "car_03"
    linker = LayerLinker(0.5)
    linker.link(1, [FrameMask("car!", square(0, 0), 0.9), FrameMask("car?", square(40, 40), 0.9)])
    assert [layer.name for layer in linker.layers] == ["car_01", "car_02"]


def test_layer_keeps_first_last_frame_and_mean_score() -> None:
    linker = LayerLinker(0.5)
    for frame, score in ((10, 0.6), (11, 0.8), (12, 1.0)):
        linker.link(frame, [FrameMask("ball", square(frame - 10, 0), score)])
    (layer,) = linker.layers
    assert (layer.first_frame, layer.last_frame, layer.frames) == (10, 12, 3)
    assert abs(layer.mean_score - 0.8) < 1e-9


def test_a_layer_inside_another_on_most_shared_frames_is_part_of_it() -> None:
    shared = {(1, 3): 10, (2, 3): 10, (1, 2): 10, (1, 4): 2}
    inside = {(1, 3): 4, (2, 3): 9, (1, 4): 2}
    # 3 lay inside 2 on 9 of 10 frames (inside 1 on only 4); 4 shares too few frames to judge
    assert nested_pairs(inside, shared) == [(2, 3)]
    assert nested_pairs({}, shared) == []


def test_contained_is_the_share_of_a_mask_inside_another() -> None:
    whole = np.zeros((20, 20), bool)
    whole[2:18, 2:18] = True
    part = np.zeros_like(whole)
    part[4:10, 4:10] = True
    assert contained(part, whole, 0) == 1.0 and contained(whole, part, 0) < 0.2
    assert contained(np.zeros_like(whole), whole, 2) == 0.0
