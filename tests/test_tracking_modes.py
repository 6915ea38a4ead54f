"""The farm strategy's sweep tracking (one pass each way, refreshed on one grid) and detecting only
where layers refresh: the schedule, the synthetic sweep's behaviour, and a whole shot tracked with
each frame-object tracked about twice instead of about eight times, identities kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from schemas import DetectMode, PipelineOptions, Strategy, TrackingMode
from workers.bench.strategies import run_shot
from workers.core.windows import sweep_starts
from workers.models.builder import build_synthetic
from workers.models.interfaces import ModelFrame
from workers.models.synthetic import SyntheticNoise
from workers.pipeline.stages import detection_positions
from workers.synthetic.evaluate import evaluate, shot_labels
from workers.synthetic.shot import write_shot
from workers.synthetic.truth import TruthReader


def test_both_sweeps_refresh_on_one_grid_and_the_backward_one_starts_at_the_last_frame() -> None:
    assert sweep_starts(12, 5) == ([0, 5, 10], [11, 10, 5, 0])
    assert sweep_starts(11, 5) == ([0, 5, 10], [10, 5, 0])
    assert sweep_starts(0, 5) == ([], [])


def test_detecting_where_layers_refresh_costs_one_detection_per_refresh() -> None:
    sweep = PipelineOptions(tracking=TrackingMode.SWEEP, detect=DetectMode.REFRESH)
    assert detection_positions(40, sweep) == [0, 5, 10, 15, 20, 25, 30, 35, 39]
    windows = PipelineOptions(detect=DetectMode.REFRESH)  # forward and backward starts differ
    assert detection_positions(12, windows) == [0, 1, 5, 6, 10, 11]
    assert detection_positions(7, PipelineOptions()) == list(range(7))
    with pytest.raises(ValidationError, match="detect 'refresh' needs the farm strategy"):
        PipelineOptions(strategy=Strategy.PER_FRAME, detect=DetectMode.REFRESH)


def _frames(plate: Path, count: int) -> list[ModelFrame]:
    pattern = str(plate)
    return [
        ModelFrame(1001 + i, np.zeros((180, 320, 3), np.uint8), Path(pattern.replace("####", str(1001 + i))))
        for i in range(count)
    ]


def test_the_synthetic_sweep_follows_its_prompt_and_is_prompted_again_mid_pass(tmp_path: Path) -> None:
    plate = write_shot(tmp_path, "s", frames=12, width=320, height=180, objects=3, seed=5)
    models = build_synthetic(noise=SyntheticNoise(track_loss_rate=0.0, seg_noise_px=0))
    assert models.tracker is not None
    frames = _frames(plate, 12)
    truth = TruthReader()
    ids0 = truth.ids(frames[0].plate_path, frames[0].size)
    target = int(np.bincount(ids0.ravel())[1:].argmax()) + 1
    sweep = models.tracker.sweep(frames)
    assert sweep.advance() == (1001, {})  # nothing to track yet
    first = sweep.prompt({7: ids0 == target})
    assert np.array_equal(first[7] > 0, ids0 == target)
    for i in range(1, 6):
        frame, out = sweep.advance()
        assert frame == 1001 + i and np.array_equal(out[7] > 0, truth.ids(frames[i].plate_path, (320, 180)) == target)
    sweep.prompt({8: truth.ids(frames[5].plate_path, (320, 180)) == target})  # a second object mid-pass
    sweep.drop([7])
    _, out = sweep.advance()
    assert list(out) == [8]
    assert models.tracker.counters["object_frames_tracked"] == 6


def test_a_sweep_tracks_each_object_frame_about_twice_and_keeps_identities(tmp_path: Path) -> None:
    plate = write_shot(tmp_path / "shots", "s", frames=40, width=640, height=360, objects=4, seed=301)
    truth = plate.parent.parent / "truth"
    classes = shot_labels(truth)
    counts = {}
    for mode, detect in ((TrackingMode.WINDOWS, DetectMode.EVERY), (TrackingMode.SWEEP, DetectMode.REFRESH)):
        out = tmp_path / mode.value
        out.mkdir()
        options = PipelineOptions(tracking=mode, detect=detect)
        counts[mode] = run_shot(str(plate), classes, options, build_synthetic(), out)
        score = evaluate(out, truth, classes)
        assert score.id_switches == 0 and score.false_layers == 0 and score.fragments == 0
        assert score.j >= 0.85
    windows, sweep = counts[TrackingMode.WINDOWS], counts[TrackingMode.SWEEP]
    # ~8 tracks of each object-frame against ~2, plus the second tries of layers a sweep lost
    assert windows["object_frames_tracked"] > 2.5 * sweep["object_frames_tracked"]
    assert windows["detector_calls"] == 40 and sweep["detector_calls"] == 9  # 0, 5, …, 35 and 39
