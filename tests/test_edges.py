"""Edge refinement at plate resolution (colour unmixing + guided filter), the edge scores, and the
temporal steadier, on small images whose right answer is known."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from schemas import EdgeMode, PipelineOptions
from workers.pipeline.edges import EdgeRefiner, _box, edge_refiner, plate_guide
from workers.pipeline.temporal import TemporalSteadier, to_logits
from workers.synthetic.alpha_eval import boundary_band, frame_errors


def _step(w: int, h: int, edge: float, fg: tuple[float, float, float], bg: tuple[float, float, float]) -> tuple:
    """A vertical edge at x = ``edge`` (sub-pixel, anti-aliased): its alpha and a plate in light."""
    xs = np.arange(w, dtype=np.float32) + 0.5
    alpha = np.clip(edge - xs + 0.5, 0.0, 1.0)[None].repeat(h, 0)
    plate = alpha[..., None] * np.asarray(fg, np.float32) + (1 - alpha[..., None]) * np.asarray(bg, np.float32)
    return alpha.astype(np.float32), plate.astype(np.float32)


def _upsampled(alpha: np.ndarray, scale: int, shift_px: int) -> np.ndarray:
    """What the export had: the matte at 1/scale, a few plate pixels off, upsampled (bilinear)."""
    h, w = alpha.shape
    shifted = np.pad(alpha, ((0, 0), (shift_px, 0)), mode="edge")[:, :w]
    small = cv2.resize(shifted, (w // scale, h // scale), interpolation=cv2.INTER_AREA)
    return np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), 0, 1)


def test_box_sums_match_a_direct_sum() -> None:
    x = torch.rand(2, 19, 27, dtype=torch.float64)
    r = 3
    direct = torch.zeros_like(x)
    for i in range(19):
        for j in range(27):
            direct[:, i, j] = x[:, max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1].sum((-1, -2))
    assert torch.allclose(_box(x, r), direct)


def test_colour_unmixing_puts_an_offset_edge_back_where_the_plate_has_it() -> None:
    truth, plate = _step(256, 64, 128.3, fg=(0.8, 0.2, 0.1), bg=(0.05, 0.1, 0.3))
    coarse = _upsampled(truth, 4, shift_px=6)  # 6 plate px (1.5 inference px) out, and soft
    refined = EdgeRefiner.for_scale(4.0, 1e-3).refine(coarse, plate_guide(plate))
    band = boundary_band(truth, 14)
    before, after = np.abs(coarse - truth)[band].sum(), np.abs(refined - truth)[band].sum()
    assert after < 0.25 * before
    filter_only = EdgeRefiner.for_scale(4.0, 1e-3, colour=False).refine(coarse, plate_guide(plate))
    assert after < np.abs(filter_only - truth)[band].sum()  # unmixing is what moves the edge


def test_where_foreground_and_background_look_alike_colour_says_nothing() -> None:
    truth, plate = _step(128, 32, 64.0, fg=(0.2, 0.2, 0.2), bg=(0.2, 0.2, 0.2))
    coarse = _upsampled(truth, 4, shift_px=4)
    refined = EdgeRefiner.for_scale(4.0, 1e-3).refine(coarse, plate_guide(plate))
    filter_only = EdgeRefiner.for_scale(4.0, 1e-3, colour=False).refine(coarse, plate_guide(plate))
    assert np.allclose(refined, filter_only, atol=1e-4)  # only the filter's smoothing is left
    assert abs(refined.sum() - coarse.sum()) < 0.01 * coarse.sum()  # which moves no edge


def test_only_the_band_changes_and_tiles_agree_with_one_pass() -> None:
    rng = np.random.default_rng(1)
    h, w = 96, 160
    yy, xx = np.mgrid[:h, :w]
    truth = np.clip(30.5 - np.hypot(yy - 48, xx - 80), 0, 1).astype(np.float32)
    plate = truth[..., None] * np.float32([0.9, 0.6, 0.2]) + (1 - truth[..., None]) * np.float32([0.1, 0.2, 0.4])
    plate += rng.normal(0, 0.01, plate.shape).astype(np.float32)
    coarse = _upsampled(truth, 4, shift_px=3)
    one = EdgeRefiner.for_scale(4.0, 1e-3)
    whole = one.refine(coarse, plate_guide(plate))
    decided = (coarse <= 0.0) | (coarse >= 1.0)
    far = cv2.erode(decided.astype(np.uint8), np.ones((2 * one.band + 3,) * 2, np.uint8)).astype(bool)
    assert np.array_equal(whole[far], coarse[far])  # solid interior and empty background untouched
    tiled = EdgeRefiner(**{**one.__dict__, "max_tile_px": 40 * w}).refine(coarse, plate_guide(plate))
    assert np.allclose(tiled, whole, atol=1e-4)


def test_the_jobs_option_picks_the_refiner_by_scale() -> None:
    options = PipelineOptions()
    assert options.edges == EdgeMode.AUTO
    assert edge_refiner(EdgeMode.AUTO, 1e-3, (1024, 576), (1024, 576)) is None  # plate at inference size
    assert edge_refiner(EdgeMode.AUTO, 1e-3, (4096, 2160), (1024, 540)) is not None
    assert edge_refiner(EdgeMode.UPSAMPLE, 1e-3, (4096, 2160), (1024, 540)) is None
    guided = edge_refiner(EdgeMode.GUIDED, 1e-3, (1024, 576), (1024, 576))
    assert guided is not None and guided.colour
    filter_only = edge_refiner(EdgeMode.FILTER, 1e-3, (4096, 2160), (1024, 540))
    assert filter_only is not None and not filter_only.colour and filter_only.radius == 8
    with pytest.raises(ValueError, match="edges"):
        PipelineOptions.model_validate({"edges": "sharpen"})
    with pytest.raises(ValueError, match="steady_frames"):
        PipelineOptions.model_validate({"steady_frames": 9})


def test_edge_scores_are_zero_for_the_truth_and_grow_with_the_error() -> None:
    truth, _ = _step(128, 32, 64.4, fg=(1, 1, 1), bg=(0, 0, 0))
    sad, mse, grad, band = frame_errors(truth.copy(), truth, 4)
    assert (sad, mse, grad) == (0.0, 0.0, 0.0) and band.any()
    off = np.pad(truth, ((0, 0), (2, 0)), mode="edge")[:, :128]
    sad2, mse2, _, _ = frame_errors(off, truth, 4)
    assert sad2 == pytest.approx(2 * 32 / 1000, rel=0.05) and mse2 > 0


def _disc(cx: float, h: int = 72, w: int = 128, r: float = 14.0) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (np.hypot(yy - 36, xx - cx) <= r).astype(np.float32)


def test_the_steadier_removes_one_frames_outlier_without_lagging_a_moving_object() -> None:
    frames = 5
    truth = [_disc(30 + 6 * t) for t in range(frames)]
    greys = [(40 + 160 * m).astype(np.uint8) for m in truth]
    greys = [cv2.GaussianBlur(g, (0, 0), 1.0) for g in greys]
    noisy = [m.copy() for m in truth]
    noisy[2] = cv2.dilate(noisy[2], np.ones((5, 5), np.uint8))  # one frame's guess 2 px too fat
    logits = [{"ball_01": to_logits(m)} for m in noisy]
    steadier = TemporalSteadier(grey=lambda p: greys[p], logits=lambda p: logits[p], positions=frames)
    out = 1 / (1 + np.exp(-steadier.steady(2, logits[2])["ball_01"]))
    err_before = np.abs(noisy[2] - truth[2]).sum()
    err_after = np.abs(out - truth[2]).sum()
    assert err_after < 0.35 * err_before  # the outlier is voted down …
    centre = (out * np.arange(128)[None]).sum() / out.sum()
    assert centre == pytest.approx(30 + 12, abs=0.5)  # … and the disc is where it is on this frame
    assert steadier.steady(0, {}) == {}
    only_here = TemporalSteadier(
        grey=lambda p: greys[p], logits=lambda p: {} if p != 2 else logits[2], positions=frames
    )
    alone = 1 / (1 + np.exp(-only_here.steady(2, logits[2])["ball_01"]))
    assert np.allclose(alone, noisy[2], atol=1e-4)  # no neighbour has the layer: nothing borrowed
