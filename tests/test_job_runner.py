"""A whole job through the worker runtime (synthetic backend, no broker): tasks per stage, outputs,
counters, cancel and failure paths."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import OpenEXR
import pytest

from farm_config import Settings
from schemas import JobState, StageState
from schemas.task import ControlAction, TaskState
from services.composition import build_worker
from services.farm.worker_node import FarmWorker
from tests.factories import run_tasks, submit
from workers.io import cryptomatte
from workers.io.exr import read_exr_channels


@pytest.fixture
def runtime(settings: Settings) -> Iterator[FarmWorker]:
    rt = build_worker(settings, register=False, broker=False)
    yield rt
    rt.close()


def test_a_job_writes_one_exr_per_frame_with_a_layer_per_object(
    runtime: FarmWorker, settings: Settings, shot: Path, farm_root: Path
) -> None:
    job_id = submit(settings, shot, farm_root)
    # 8 frames in chunks of 3: detect, segment and export run 3 tasks each, track one, then finalise.
    assert run_tasks(runtime, job_id) == 3 + 3 + 1 + 3 + 1
    job = runtime.store.get(job_id)
    assert job.state == JobState.SUCCEEDED, job.error
    assert [s.name for s in job.stages] == ["detect", "segment", "track", "export"]
    assert [s.state for s in job.stages] == [StageState.SUCCEEDED] * 4
    assert all(s.frames_done == s.frames_total == 8 and s.seconds is not None for s in job.stages)
    tasks = runtime.tasks.for_job(job_id)
    assert [(t.stage, t.first_frame, t.last_frame) for t in tasks if t.stage == "detect"] == [
        ("detect", 1001, 1003),
        ("detect", 1004, 1006),
        ("detect", 1007, 1008),
    ]
    assert all(t.state == TaskState.SUCCEEDED and t.attempts == 1 for t in tasks)
    log = runtime.tasks.log_tail(tasks[-2].id, 50)  # the last export chunk
    assert [line.message for line in log.lines if "wrote frame" in line.message] == [
        "workers.task: wrote frame 1007 → sh010_roto_v001.1007.exr",
        "workers.task: wrote frame 1008 → sh010_roto_v001.1008.exr",
    ]
    c = job.counters
    assert (c.detector_calls, c.frames_written) == (8, 8) and 0 < c.image_encoder_passes <= 8
    assert c.mask_decoder_calls >= 8 and c.tracking_steps > 8  # windows ran forward and backward
    assert job.models.backend == "synthetic" and job.warnings == []
    assert job.layers and {ly.label for ly in job.layers} <= {"ball", "box", "car"}

    files = sorted(Path(job.output_dir).glob("*.exr"))
    assert [f.name for f in files] == [f"sh010_roto_v001.{n}.exr" for n in range(1001, 1009)]
    halves = {"A"} | {f"{ly.name}.A" for ly in job.layers}
    expected = halves | set(cryptomatte.channel_names())
    for path in files:
        exr = OpenEXR.File(str(path), separate_channels=True)
        header = exr.header()
        assert header["compression"] == OpenEXR.ZIP_COMPRESSION
        assert header["type"] == OpenEXR.scanlineimage
        assert set(exr.channels()) == expected  # the same channel set on every frame
        pixels = {name: ch.pixels for name, ch in exr.channels().items()}
        assert all(p.shape == (96, 160) for p in pixels.values())
        assert {n for n, p in pixels.items() if p.dtype == np.float16} == halves
        layers = np.stack([pixels[n].astype(np.float32) for n in halves if n != "A"])
        np.testing.assert_allclose(pixels["A"].astype(np.float32), layers.max(axis=0), atol=1e-3)
        assert header["mattefarm/job"] == job_id and header["mattefarm/randomWeights"] == "false"
    # Soft edges: the mattes hold values between 0 and 1, not only 0 and 1.
    channels, _ = read_exr_channels(files[0])
    values = np.concatenate([v.ravel() for n, v in channels.items() if n in halves]).astype(np.float32)
    assert ((values > 0.05) & (values < 0.95)).any()

    manifest = json.loads(Path(job.manifest).read_text())
    assert manifest["frames"] == "1001-1008" and manifest["random_weights"] is False
    assert [ly["name"] for ly in manifest["layers"]] == [ly.name for ly in job.layers]
    assert not (Path(job.output_dir) / ".work").exists()
    assert not list(Path(job.output_dir).glob(".*tmp"))


def test_reruns_replace_frames_whole_and_keep_the_plate(
    runtime: FarmWorker, settings: Settings, shot: Path, farm_root: Path
) -> None:
    plate_bytes = {p.name: p.read_bytes() for p in shot.parent.iterdir()}
    job_id = submit(settings, shot, farm_root)
    run_tasks(runtime, job_id)
    job = runtime.store.get(job_id)
    first = {p.name: p.read_bytes() for p in Path(job.output_dir).glob("*.exr")}
    # A second job on the same plate writes its own version, byte-identical frames but its own id.
    again = runtime.store.get(submit(settings, shot, farm_root))
    run_tasks(runtime, again.id)
    assert again.output_dir != job.output_dir
    assert {p.name: p.read_bytes() for p in Path(job.output_dir).glob("*.exr")} == first
    assert len(list(Path(again.output_dir).glob("*.exr"))) == 8
    assert {p.name: p.read_bytes() for p in shot.parent.iterdir()} == plate_bytes


def test_cancel_while_running_stops_between_frames(
    runtime: FarmWorker, settings: Settings, shot: Path, farm_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = submit(settings, shot, farm_root)
    detect = runtime.models.detector.detect
    calls = []

    def detect_then_cancel(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # the second chunk's second frame
            runtime.tasks.control(job_id, ControlAction.CANCEL, "alice", reason="wrong prompt")
            runtime.pulse.beat()  # the heartbeat carries the cancel to the running task
        return detect(*args, **kwargs)

    monkeypatch.setattr(runtime.models.detector, "detect", detect_then_cancel)
    run_tasks(runtime, job_id)
    job = runtime.store.get(job_id)
    assert job.state == JobState.CANCELED and len(calls) == 5
    states = [(t.stage, t.index, t.state) for t in runtime.tasks.for_job(job_id)][:3]
    assert states == [("detect", 0, "succeeded"), ("detect", 1, "canceled"), ("detect", 2, "canceled")]
    assert job.stages[0].state == StageState.CANCELED
    assert not list(Path(job.output_dir).glob("*.exr"))
    kinds = [e.kind for e in runtime.store.events(job_id)]
    assert "cancel_requested" in kinds and kinds[-1] == "canceled"


def test_a_vanished_plate_fails_the_job_with_a_readable_error(
    runtime: FarmWorker, settings: Settings, shot: Path, farm_root: Path
) -> None:
    job_id = submit(settings, shot, farm_root)
    (shot.parent / "sh010.1004.exr").unlink()
    run_tasks(runtime, job_id)
    job = runtime.store.get(job_id)
    assert job.state == JobState.FAILED
    # A missing frame is fatal (another attempt reads the same folder): dead at once, not retried.
    first = runtime.tasks.for_job(job_id)[0]
    assert (first.state, first.attempts, first.failure) == ("dead", 1, "fatal")
    assert "frames: 1 frame(s) missing from the plate: 1004; frames on disk: 1001-1003,1005-1008" in job.error
    assert job.error.startswith("task detect#0 (1001-1003) is dead")


def test_a_duplicate_message_for_a_finished_job_does_nothing(
    runtime: FarmWorker, settings: Settings, shot: Path, farm_root: Path
) -> None:
    job_id = submit(settings, shot, farm_root)
    first = runtime.tasks.for_job(job_id)[0]
    token = runtime.tasks.mark_queued(first.id, "gpu")
    assert runtime.run_task(first.id, token) is not None
    # The same message again (Redis redelivered it), and a message with a spent token: no-ops.
    assert runtime.run_task(first.id, token) is None
    assert runtime.run_task(first.id, "not-the-token") is None
    assert runtime.tasks.get(first.id).attempts == 1


def test_a_draining_worker_hands_its_task_back_and_the_next_one_resumes(
    settings: Settings, shot: Path, farm_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workers.pipeline.export as export_module

    job_id = submit(settings, shot, farm_root)
    first = build_worker(settings, register=True, name="w1@a:1", broker=False)
    write = export_module.write_exr_atomic

    def write_then_drain(path, *args, **kwargs):
        write(path, *args, **kwargs)
        # a warm shutdown arrives after the chunk's first frame (Celery's signal marks the node)
        first.stores.workers.stop_node("w1@a")
        first.pulse.beat()

    monkeypatch.setattr(export_module, "write_exr_atomic", write_then_drain)
    try:
        while not first.pulse.stopping:
            ready = first.tasks.candidates()
            token = first.tasks.mark_queued(ready[0].task_id, "gpu")
            first.run_task(ready[0].task_id, token)
    finally:
        first.close()
    monkeypatch.setattr(export_module, "write_exr_atomic", write)
    handed_back = next(t for t in first.tasks.for_job(job_id) if t.stage == "export" and t.index == 0)
    assert (handed_back.state, handed_back.attempts, handed_back.failure) == ("waiting", 0, "infrastructure")
    second = build_worker(settings, register=False, name="w2@b:2", broker=False)
    try:
        run_tasks(second, job_id)
        job = second.store.get(job_id)
        log = [line.message for line in second.tasks.log_tail(handed_back.id, 100).lines]
        events = second.store.events(job_id)
    finally:
        second.close()
    assert job.state == JobState.SUCCEEDED
    assert any("w1@a:1 is shutting down" in m for m in log)
    assert "workers.task: frame 1001 already written by this job; kept sh010_roto_v001.1001.exr" in log
    assert not any("wrote frame 1001" in m for m in log[log.index(next(m for m in log if "kept" in m)) :])
    assert any(e.kind == "requeued" and "shut down" in e.message for e in events)
    assert job.counters.frames_written == 8  # each frame written once across both workers


def test_an_out_of_memory_error_retries_with_lighter_settings(settings: Settings, shot: Path, farm_root: Path) -> None:
    oom = settings.model_copy(update={"fault": "oom@segment"})
    runtime = build_worker(oom, register=False, broker=False)
    try:
        job_id = submit(oom, shot, farm_root)
        run_tasks(runtime, job_id)
        job = runtime.store.get(job_id)
        segment = next(t for t in runtime.tasks.for_job(job_id) if t.stage == "segment")
        log = [line.message for line in runtime.tasks.log_tail(segment.id, 100).lines]
        events = [e.message for e in runtime.store.events(job_id) if e.task_id == segment.id]
    finally:
        runtime.close()
    assert job.state == JobState.SUCCEEDED
    assert (segment.attempts, segment.lighter, segment.state) == (2, 1, "succeeded")
    assert any("out_of_memory" in m and "lighter settings" in m for m in events)
    assert any("lighter settings: feature cache 512 → 256 MB; tracking state offloaded" in m for m in log), log


def test_skipped_frames_are_held_as_slates_so_the_movie_keeps_source_numbering(
    runtime: FarmWorker, settings: Settings, shot: Path, farm_root: Path
) -> None:
    import av

    for frame in (1004, 1005):
        (shot.parent / f"sh010.{frame}.exr").unlink()
    job_id = submit(settings, shot, farm_root, frames="1001-1008", on_missing_frames="skip")
    run_tasks(runtime, job_id)
    job = runtime.store.get(job_id)
    assert job.state == JobState.SUCCEEDED and job.missing_frames == [1004, 1005]
    assert job.review is not None
    with av.open(job.review.movie) as container:
        pictures = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
    assert len(pictures) == 8  # movie frame N is source frame 1001 + N, the gap included
    centre = [p[p.shape[0] // 3 : 2 * p.shape[0] // 3, p.shape[1] // 3 : 2 * p.shape[1] // 3] for p in pictures]
    # a slate is flat dark grey with its message in amber; plate frames are the synthetic shot
    amber = [int(((c[..., 0] > 200) & (c[..., 1] > 150) & (c[..., 2] < 120)).sum()) for c in centre]
    assert amber[3] > 50 and amber[4] > 50 and all(a == 0 for i, a in enumerate(amber) if i not in (3, 4))
    assert not np.array_equal(pictures[2], pictures[3])


def test_edges_are_refined_at_plate_resolution_and_each_stage_decodes_a_frame_once(
    runtime: FarmWorker, settings: Settings, shot: Path, farm_root: Path
) -> None:
    # Inference at 96 px of a 160 px plate: the export refines edges guided by the plate.
    job_id = submit(settings, shot, farm_root, options={"max_side": 96})
    run_tasks(runtime, job_id)
    job = runtime.store.get(job_id)
    assert job.state == JobState.SUCCEEDED, job.error
    exports = [t for t in runtime.tasks.for_job(job_id) if t.stage == "export"]
    messages = [line.message for t in exports for line in runtime.tasks.log_tail(t.id, 50).lines]
    assert any("edges refined at plate resolution" in m for m in messages)
    counters = job.counters.model_dump()
    for stage in ("detect", "segment", "track", "export"):
        assert counters[f"frames_read_{stage}"] == 8, stage  # the whole shot fits the frame cache
    for path in sorted(Path(job.output_dir).glob("*.exr")):
        channels, _ = read_exr_channels(path)
        for name in (f"{ly.name}.A" for ly in job.layers):
            alpha = channels[name].astype(np.float32)
            assert alpha.min() >= 0.0 and alpha.max() <= 1.0
