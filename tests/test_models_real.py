"""The real architectures (SAM 2.1, GroundingDINO Swin-T) at random initialisation, on CPU:
they build offline, run through the adapters, count their calls, and a whole job on them says
loudly that its weights are random. Nothing here judges mask quality."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from farm_config import Settings
from schemas import JobState, PipelineOptions
from services.composition import build_worker
from services.farm.worker_node import FarmWorker
from tests.factories import run_tasks, submit
from workers.io.exr import read_exr_header
from workers.models.builder import ModelsMissingError, build_models
from workers.models.interfaces import Detection, ModelFrame, ModelSet
from workers.provenance import RANDOM_WEIGHTS_WARNING

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def random_settings(models_dir: Path, **extra: object) -> Settings:
    base: dict[str, object] = {
        "model_backend": "sam2-gdino",
        "weights": "random",
        "sam2_size": "tiny",
        "gdino_text_encoder": "bert-tiny",
        "models_dir": models_dir,
        "device": "cpu",
        "detector_short_side": 320,
        "detector_max_side": 480,
    }
    return Settings(**(base | extra))


@pytest.fixture(scope="module")
def model_set(models_dir: Path) -> ModelSet:
    return build_models(random_settings(models_dir))


def frame(number: int = 1001) -> ModelFrame:
    rng = np.random.default_rng(number)
    return ModelFrame(number, rng.integers(0, 255, (144, 256, 3), dtype=np.uint8), Path(f"/plate.{number}.exr"))


def test_models_record_random_weights(model_set: ModelSet) -> None:
    assert model_set.backend == "sam2-gdino" and model_set.weights == "random"
    assert model_set.checkpoints["sam2.1-tiny"] == "random"
    assert model_set.segmenter.name == "sam2.1-tiny" and model_set.detector.name == "groundingdino-swint"


def test_sam2_segments_boxes_with_one_encoder_pass_per_frame(model_set: ModelSet) -> None:
    seg = model_set.segmenter
    before = seg.counters.copy()
    boxes = [Detection((10, 10, 100, 100), "ball", 0.9), Detection((50, 20, 200, 120), "box", 0.8)]
    logits = seg.segment(frame(), boxes)
    assert logits.shape == (2, 144, 256) and logits.dtype == np.float32 and np.isfinite(logits).all()
    seg.segment(frame(), boxes[:1])  # same frame: the embedding is reused
    seg.segment(frame(1002), boxes[:1])
    delta = seg.counters - before
    assert delta["image_encoder_passes"] == 2 and delta["mask_decoder_calls"] == 4
    assert seg.segment(frame(1003), []).shape == (0, 144, 256)


def test_sam2_describes_a_mask_from_the_cached_features_without_encoding_again(model_set: ModelSet) -> None:
    describer = model_set.describer
    assert describer is not None
    model_set.segmenter.segment(frame(1004), [Detection((10, 10, 100, 100), "ball", 0.9)])
    passes = model_set.counters()["image_encoder_passes"]
    mask = np.zeros((144, 256), bool)
    mask[20:90, 30:120] = True
    first, again = describer.describe(frame(1004), mask), describer.describe(frame(1004), mask)
    assert first.ndim == 1 and first.size > 1 and abs(float(np.linalg.norm(first)) - 1.0) < 1e-5
    assert float(np.dot(first, again)) > 0.9999  # the same pixels describe the same
    elsewhere = np.zeros_like(mask)
    elsewhere[100:140, 180:250] = True
    assert float(np.dot(first, describer.describe(frame(1004), elsewhere))) < 0.9999
    assert model_set.counters()["image_encoder_passes"] == passes  # read from the cache
    assert not describer.describe(frame(1004), np.zeros_like(mask)).any()  # an empty mask describes nothing


def test_groundingdino_returns_boxes_inside_the_frame(model_set: ModelSet) -> None:
    found = model_set.detector.detect(frame(), ["ball", "box"], 0.3, 0.25)
    assert model_set.detector.counters["detector_calls"] >= 1
    for det in found:
        x0, y0, x1, y1 = det.box
        assert 0 <= x0 < x1 <= 256 and 0 <= y0 < y1 <= 144
        assert det.label in ("ball", "box") and 0 <= det.score <= 1


def test_groundingdino_detects_a_batch_of_frames_in_one_forward_as_it_detects_each_alone(
    model_set: ModelSet,
) -> None:
    detector = model_set.detector
    frames = [frame(1010 + i) for i in range(3)]
    alone = [detector.detect(f, ["ball", "box"], 0.2, 0.2) for f in frames]
    before = detector.counters.copy()
    together = detector.detect_many(frames, ["ball", "box"], 0.2, 0.2)
    delta = detector.counters - before
    assert delta["detector_forwards"] == 1 and delta["detector_calls"] == 3
    assert delta["text_encoder_passes"] == 0  # the batch's rows share the caption's one encoding
    assert sum(len(found) for found in alone) > 0  # random weights still give boxes at these thresholds

    # Batching moves activations by float rounding. A box at a threshold (or a phrase token at the
    # text threshold, hence a label) may cross it, and the two-stage query selection (top 900 of
    # the encoder's proposals) may swap a near-tie, more so with saturated random weights: nearly
    # every box clear of the threshold must come back the same.
    def clear(found: list[Detection]) -> list[Detection]:
        return [d for d in found if d.score > 0.21]

    def matched(d: Detection, among: list[Detection]) -> bool:
        return any(abs(o.score - d.score) < 1e-3 and np.allclose(o.box, d.box, atol=0.05) for o in among)

    for one, batched in zip(alone, together, strict=True):
        for a, b in ((one, batched), (batched, one)):
            assert sum(matched(d, b) for d in clear(a)) >= 0.98 * len(clear(a))


def test_groundingdino_encodes_a_prompt_once_for_every_frame(model_set: ModelSet) -> None:
    det, before = model_set.detector, model_set.detector.counters.copy()
    prompt = ["box", "ball"]  # a caption no other test uses
    first = det.detect(frame(1001), prompt, 0.0, 0.0)
    det.detect(frame(1002), prompt, 0.0, 0.0)
    again = det.detect(frame(1001), prompt, 0.0, 0.0)
    assert again == first  # the kept text encoding gives the same boxes
    det.detect(frame(1003), ["car"], 0.0, 0.0)  # another prompt is encoded anew
    delta = det.counters - before
    assert delta["detector_calls"] == 4 and delta["text_encoder_passes"] == 2


def test_official_weights_missing_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelsMissingError, match="mattefarm models download"):
        build_models(Settings(model_backend="sam2-gdino", weights="official", models_dir=tmp_path, device="cpu"))


@pytest.fixture
def runtime(settings: Settings, model_set: ModelSet) -> Iterator[FarmWorker]:
    rt = build_worker(settings, register=False, broker=False)
    rt.runtime.models_cache.put(settings, model_set)  # built once for the module rather than per test
    yield rt
    rt.close()


def test_a_job_on_random_weights_says_so_in_status_and_output(
    runtime: FarmWorker, settings: Settings, shot: Path, farm_root: Path
) -> None:
    job_id = submit(
        settings,
        shot,
        farm_root,
        frames="1001-1002",
        prompt="ball, box",
        output_root=str(farm_root),
        options=PipelineOptions(max_side=256, max_detections=3),
    )
    run_tasks(runtime, job_id)
    job = runtime.store.get(job_id)
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.warnings == [RANDOM_WEIGHTS_WARNING] and job.models.weights == "random"
    assert job.counters.detector_calls == 2 and job.counters.frames_written == 2
    # Untrained boxes: at most max_detections per frame reach SAM2, each frame encoded at most once.
    assert job.counters.mask_decoder_calls <= 2 * 3 and job.counters.image_encoder_passes <= 2
    header = read_exr_header(sorted(Path(job.output_dir).glob("*.exr"))[0])
    assert header["mattefarm/randomWeights"] == "true" and header["comments"].startswith("RANDOM WEIGHTS")


def test_each_frame_is_encoded_once_across_segmentation_and_both_tracking_passes(tmp_path: Path) -> None:
    """The shadow backend runs real SAM2 (random weights) on every call while ground truth decides
    the masks, so the tracking windows really run."""
    from schemas import Strategy
    from tests.factories import write_small_shot
    from workers.bench.strategies import run_shot

    plate = str(write_small_shot(tmp_path, "enc010", frames=8))
    options = PipelineOptions(strategy=Strategy.FARM, window_frames=4, refresh_every=2, max_detections=3)
    for cache_mb, expect_once in ((256, True), (0, False)):
        models = build_models(
            random_settings(tmp_path / "models", model_backend="shadow", sam2_image_size=256, feature_cache_mb=cache_mb)
        )
        out = tmp_path / f"out{cache_mb}"
        out.mkdir()
        counters = run_shot(plate, ["ball", "box", "car"], options, models, out)
        assert counters["tracking_steps"] > 8  # windows ran forward and backward
        if expect_once:
            assert counters["image_encoder_passes"] == 8 and "image_encoder_recomputes" not in counters
            # every tracking step reads its frame from the cache, once however many objects it tracks
            assert counters["feature_cache_hits"] >= counters["tracking_steps"]
        else:  # no budget: every use re-encodes, and the counters say so
            assert counters["image_encoder_passes"] > 8 and counters["image_encoder_recomputes"] > 0


def test_a_sam2_sweep_takes_prompts_mid_pass_and_keeps_its_memory_bounded(models_dir: Path) -> None:
    """One SAM2 state across a pass: objects join and leave mid-pass, a refresh is a conditioning
    frame, and per object only what SAM2 can still attend to is kept, however long the pass."""
    from workers.models.sam2_adapter import Sam2Sweep

    models = build_models(random_settings(models_dir, sam2_image_size=256))
    assert models.tracker is not None
    frames = [frame(1001 + i) for i in range(24)]
    sweep = models.tracker.sweep(frames)
    assert isinstance(sweep, Sam2Sweep)
    disc = np.zeros((144, 256), bool)
    disc[40:80, 60:120] = True
    assert sweep.advance() == (1001, {})
    assert set(sweep.prompt({1: disc})) == {1}
    for i in range(1, 24):
        number, logits = sweep.advance()
        assert number == 1001 + i and logits[1].shape == (144, 256) and np.isfinite(logits[1]).all()
        if i % 5 == 0:
            sweep.prompt({1: disc, 2: np.roll(disc, 60, axis=1)} if i == 5 else {1: disc})
        if i == 12:
            sweep.drop([2])
            assert set(logits) == {1, 2}
    kept = sweep.outputs[1]
    assert len(kept["non_cond_frame_outputs"]) <= Sam2Sweep.KEEP_RECENT
    assert sorted(kept["cond_frame_outputs"]) == [15, 20]  # the latest refreshes
    assert set(sweep.outputs) == {1}
    assert models.tracker.counters["object_frames_tracked"] == 23 + 7  # layer 2 on frames 6…12
