"""Artist refinement: one prompt per layer and frame, layer operations, propagation spans, the
synthetic click-answerer's ambiguity, and the simulated artist."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from workers.core.refine import LayerBook, RefineError, brush, propagation_spans
from workers.models.interfaces import ModelFrame, Sweep
from workers.pipeline.refine import RefineEngine

H, W = 40, 60


def _disc(cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


class RecordingRefiner:
    """Answers a disc at the first positive click; records what each call was given."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[np.ndarray, np.ndarray, bool]] = []
        self.counters: Counter[str] = Counter()

    def refine(
        self,
        frame: ModelFrame,
        points: np.ndarray,
        labels: np.ndarray,
        box: tuple[float, float, float, float] | None,
        mask_prompt: np.ndarray | None,
    ) -> np.ndarray:
        self.calls.append((points.copy(), labels.copy(), mask_prompt is not None))
        mask = np.zeros((H, W), bool) if mask_prompt is None else mask_prompt.copy()
        for (x, y), positive in zip(points.tolist(), labels.tolist(), strict=True):
            disc = _disc(x, y, 5)
            mask = mask | disc if positive else mask & ~disc
        return np.where(mask, 8.0, -8.0).astype(np.float32)


class ShiftingTracker:
    """Moves the prompt one pixel right per frame; loses it after ``lose_after`` steps."""

    name = "shifting"

    def __init__(self, lose_after: int = 100) -> None:
        self.lose_after, self.counters = lose_after, Counter[str]()

    def track(
        self, frames: Sequence[ModelFrame], prompts: dict[int, np.ndarray]
    ) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
        for step, frame in enumerate(frames):
            self.counters["tracking_steps"] += 1
            out = {}
            for oid, mask in prompts.items():
                moved = np.roll(mask, step, axis=1) if step < self.lose_after else np.zeros_like(mask)
                out[oid] = np.where(moved, 8.0, -8.0).astype(np.float32)
            yield frame.frame, out

    def sweep(self, frames: Sequence[ModelFrame]) -> Sweep:
        raise AssertionError("propagating an edit tracks in windows from its keyframes; it never sweeps")


def _frame(pos: int) -> ModelFrame:
    return ModelFrame(1001 + pos, np.zeros((H, W, 3), np.uint8), Path(f"/plate.{1001 + pos}.exr"))


def _engine(frames: int = 10, tracker: ShiftingTracker | None = None) -> tuple[RefineEngine, RecordingRefiner]:
    book = LayerBook((H, W), frames)
    book.add("car_01", "car", {p: _disc(20, 20, 6) for p in range(frames)})
    book.add("ball_01", "ball", {p: _disc(45, 20, 4) for p in range(frames)})
    refiner = RecordingRefiner()
    return RefineEngine(book, _frame, refiner, tracker or ShiftingTracker()), refiner


def test_all_clicks_of_a_layer_on_a_frame_are_one_prompt_over_the_mask_before_them() -> None:
    engine, refiner = _engine()
    before = engine.book.mask("car_01", 3).copy()
    engine.click("car_01", 3, 30, 20, True)
    engine.click("car_01", 3, 20, 20, False)
    engine.click("car_01", 3, 33, 25, True)
    points, labels, had_mask = refiner.calls[-1]
    assert points.tolist() == [[30, 20], [20, 20], [33, 25]] and labels.tolist() == [1, 0, 1] and had_mask
    assert len(refiner.calls) == 3  # one answer per click, each from all the frame's clicks
    expected = (before | _disc(30, 20, 5) | _disc(33, 25, 5)) & ~_disc(20, 20, 5)
    expected = (before | _disc(30, 20, 5)) & ~_disc(20, 20, 5) | _disc(33, 25, 5)
    assert np.array_equal(engine.book.mask("car_01", 3), expected)
    assert engine.book.layer("car_01").keyframes == {3}
    # another frame starts its own prompt
    engine.click("car_01", 4, 10, 10, True)
    assert refiner.calls[-1][0].tolist() == [[10, 10]]


def test_an_edit_changes_only_the_layer_it_names() -> None:
    engine, _ = _engine()
    ball = {p: m for p, m in engine.book.layer("ball_01").masks.items()}
    engine.click("car_01", 2, 30, 20, True)
    engine.paint("car_01", 5, [(10, 10), (14, 12)], 2, erase=False)
    engine.propagate("car_01")
    assert all(engine.book.layer("ball_01").masks[p] is m for p, m in ball.items())
    assert set(engine.book.changed) == {"car_01"}


def test_propagation_runs_from_each_keyframe_to_the_next_and_stops_when_the_object_is_lost() -> None:
    assert propagation_spans([3, 7], 10) == [[3, 4, 5, 6], [3, 2, 1, 0], [7, 8, 9], [7, 6, 5, 4]]
    assert propagation_spans([0], 3) == [[0, 1, 2]]
    assert propagation_spans([], 5) == []
    engine, _ = _engine(tracker=ShiftingTracker(lose_after=3))
    engine.click("car_01", 2, 30, 20, True)
    keyframe = engine.book.mask("car_01", 2).copy()
    untouched = engine.book.mask("car_01", 9).copy()
    changed = engine.propagate("car_01")
    # forward 3, 4 (lost at the 3rd step: 5 on keep what they had), backward 1, 0
    assert changed == {0, 1, 3, 4}
    assert np.array_equal(engine.book.mask("car_01", 3), np.roll(keyframe, 1, axis=1))
    assert np.array_equal(engine.book.mask("car_01", 9), untouched)
    assert np.array_equal(engine.book.mask("car_01", 2), keyframe)  # keyframes are never overwritten


def test_bad_edits_name_the_field() -> None:
    engine, _ = _engine()
    book = engine.book
    cases = [
        (lambda: engine.click("car_01", 1, W + 5, 3, True), "x"),
        (lambda: engine.click("car_01", 99, 3, 3, True), "frame"),
        (lambda: engine.click("truck_01", 1, 3, 3, True), "layer"),
        (lambda: book.merge("car_01", "car_01"), "into"),
        (lambda: book.merge("car_01", "nope"), "into"),
        (lambda: book.rename("car_01", "9lives"), "to"),
        (lambda: book.rename("car_01", "ball_01"), "to"),
        (lambda: book.split("car_01", 0), "frame"),
        (lambda: engine.box("car_01", 1, (10, 10, 5, 20)), "box"),
        (lambda: engine.paint("car_01", 1, [], 3, erase=True), "points"),
    ]
    for attempt, field in cases:
        with pytest.raises(RefineError) as caught:
            attempt()
        assert caught.value.field == field, caught.value


def test_layer_operations() -> None:
    engine, _ = _engine()
    book = engine.book
    book.rename("car_01", "hero_car")
    assert "hero_car" in book.layers and book.renamed == {"car_01": "hero_car"}
    new = book.split("hero_car", 6)
    assert book.layers[new].present() == [6, 7, 8, 9] and book.layers["hero_car"].present() == [0, 1, 2, 3, 4, 5]
    book.merge(new, "hero_car")
    assert book.layers["hero_car"].present() == list(range(10)) and new not in book.layers
    book.delete("ball_01")
    assert set(book.layers) == {"hero_car"}
    assert book.new_layer("car") == "car_01"


def test_brush_paints_and_erases() -> None:
    empty = np.zeros((H, W), bool)
    painted = brush(empty, [(10, 10), (20, 10)], 2, erase=False)
    assert painted[10, 10:21].all() and not painted[20, 30]
    assert not brush(painted, [(15, 10)], 3, erase=True)[10, 15]


def test_the_synthetic_refiner_is_ambiguous_on_a_first_click_and_a_second_resolves_it(tmp_path: Path) -> None:
    from workers.models.builder import build_synthetic
    from workers.pipeline.frames import FrameSource
    from workers.synthetic.shot import synthetic_decoder, write_shot
    from workers.synthetic.truth import TruthReader

    pattern = write_shot(tmp_path, "amb010", frames=12, width=320, height=180, objects=4, seed=3)
    _, decoder = synthetic_decoder(pattern)
    with FrameSource(decoder, keep=2, threads=0) as source:
        frames = [source.at(p) for p in range(len(source))]
    refiner = build_synthetic().refiner
    assert refiner is not None
    reader = TruthReader()
    outcomes: Counter[str] = Counter()
    unresolved = []
    for frame in frames:
        ids = reader.ids(frame.plate_path, frame.size)
        for obj in (int(i) for i in np.unique(ids) if i > 0):
            truth = ids == obj
            if truth.sum() < 800:
                continue
            ys, xs = np.nonzero(truth)
            first = np.array([[xs[len(xs) // 2], ys[len(ys) // 2]]], np.float32)
            one = refiner.refine(frame, first, np.array([1]), None, None) > 0
            extra = one & ~truth
            if (one & truth).sum() < 0.8 * truth.sum():
                outcome = "part"  # a second positive click on the missed part brings the rest
                my, mx = np.nonzero(truth & ~one)
                second, label = np.array([[mx[len(mx) // 2], my[len(my) // 2]]], np.float32), 1
            elif extra.sum() > 0.2 * truth.sum():
                outcome = "neighbour"  # a negative click on the neighbour takes it away
                ey, ex = np.nonzero(extra)
                second, label = np.array([[ex[len(ex) // 2], ey[len(ey) // 2]]], np.float32), 0
            else:
                outcomes["whole"] += 1
                continue
            outcomes[outcome] += 1
            two = refiner.refine(frame, np.concatenate([first, second]), np.array([1, label]), None, None) > 0
            if (two & truth).sum() / (two | truth).sum() < 0.85:
                unresolved.append((frame.frame, obj, outcome))
    assert outcomes["whole"] > 0 and outcomes["part"] + outcomes["neighbour"] > 0, outcomes  # clicks aren't free
    assert not unresolved, (unresolved, outcomes)


@pytest.mark.slow
def test_the_simulated_artist_removes_fragments_and_false_layers_and_propagation_saves_clicks(tmp_path: Path) -> None:
    from workers.bench.refine_artist import run_benchmark

    bench = run_benchmark(tmp_path, shots=2, frames=24, objects=4, budget=20, first_seed=310)
    end = {row["mode"]: row for row in bench.table() if row["round"] == "end"}
    assert end["propagate"]["fragments"] == 0 and end["propagate"]["false_layers"] == 0
    clicks = bench.clicks()
    assert clicks["propagate"]["edits_that_changed_another_layer"] == 0  # type: ignore[index]
    assert clicks["frame-only"]["edits_that_changed_another_layer"] == 0  # type: ignore[index]
    start = {row["mode"]: row["mean_j"] for row in bench.table() if row["round"] == 0}
    assert end["propagate"]["mean_j"] >= start["propagate"]  # type: ignore[operator]


def test_bench_refine_refuses_a_bad_device_before_any_work() -> None:
    from click.testing import CliRunner

    from services.cli.main import cli

    result = CliRunner().invoke(cli, ["bench-refine", "--latency-only", "--device", "gpu0"])
    assert result.exit_code == 2 and "--device" in result.output and "cuda:N" in result.output


def test_bench_deliver_prints_seconds_per_frame_and_refuses_a_bad_size(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from services.cli.main import cli

    result = CliRunner().invoke(cli, ["bench-deliver", "--frames", "4", "--size", "320x180", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "delivered v002 of 4 frames at 320x180" in result.output and "s/frame" in result.output
    assert (tmp_path / "farm/renders/bench010/roto/v002").is_dir()
    bad = CliRunner().invoke(cli, ["bench-deliver", "--size", "big"])
    assert bad.exit_code == 2 and "--size" in bad.output
