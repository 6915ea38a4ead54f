"""A whole job through the worker runtime (synthetic backend, no broker): stages, outputs,
counters, cancel and failure paths."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import OpenEXR
import pytest

from farm_config import Settings
from schemas import JobSpec, JobState, StageState
from services.jobs import JobService
from services.store import Database, JobStore
from services.store.tables import JobRow
from tests.factories import RecordingQueue
from workers.io import cryptomatte
from workers.io.exr import read_exr_channels
from workers.job_runner import WorkerRuntime


@pytest.fixture
def runtime(settings: Settings) -> Iterator[WorkerRuntime]:
    rt = WorkerRuntime(settings)
    yield rt
    rt.close()


def submit(settings: Settings, plate: Path, farm_root: Path, **extra: object) -> str:
    from farm_config import TokenGrant

    store = JobStore(Database(settings.resolved_database_url))
    service = JobService(settings, store, RecordingQueue())
    spec = JobSpec(plate=str(plate), prompt="ball, box, car", output_root=str(farm_root / "renders"), **extra)
    return service.submit(spec, TokenGrant("alice", False)).id


def test_a_job_writes_one_exr_per_frame_with_a_layer_per_object(
    runtime: WorkerRuntime, settings: Settings, shot: Path, farm_root: Path
) -> None:
    job_id = submit(settings, shot, farm_root)
    assert runtime.run_job(job_id) is True
    runtime.export_job(job_id)
    job = runtime.store.get(job_id)
    assert job.state == JobState.SUCCEEDED, job.error
    assert [s.name for s in job.stages] == ["detect", "segment", "track", "export"]
    assert [s.state for s in job.stages] == [StageState.SUCCEEDED] * 4
    assert all(s.frames_done == s.frames_total and s.seconds is not None for s in job.stages)
    # Frames for detect/segment/export; windows for track (8 frames: 2 forward + 2 backward).
    assert [s.frames_total for s in job.stages] == [8, 8, 4, 8]
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
    runtime: WorkerRuntime, settings: Settings, shot: Path, farm_root: Path
) -> None:
    plate_bytes = {p.name: p.read_bytes() for p in shot.parent.iterdir()}
    job_id = submit(settings, shot, farm_root)
    runtime.run_job(job_id)
    runtime.export_job(job_id)
    job = runtime.store.get(job_id)
    first = {p.name: p.read_bytes() for p in Path(job.output_dir).glob("*.exr")}
    # The export runs again (a redelivered message): identical frames, nothing extra.
    with runtime.store.db.session() as s:
        s.get(JobRow, job_id).state = JobState.RUNNING
    runtime.run_job(job_id)
    runtime.export_job(job_id)
    assert {p.name: p.read_bytes() for p in Path(job.output_dir).glob("*.exr")} == first
    assert {p.name: p.read_bytes() for p in shot.parent.iterdir()} == plate_bytes


def test_cancel_while_running_stops_between_frames(
    runtime: WorkerRuntime, settings: Settings, shot: Path, farm_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = submit(settings, shot, farm_root)
    runtime.progress_every_s = 0.0  # check for the cancel on every frame
    detect = runtime.models.detector.detect
    calls = []

    def detect_then_cancel(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            runtime.store.request_cancel(job_id, "alice", "wrong prompt")
        return detect(*args, **kwargs)

    monkeypatch.setattr(runtime.models.detector, "detect", detect_then_cancel)
    assert runtime.run_job(job_id) is False
    job = runtime.store.get(job_id)
    assert job.state == JobState.CANCELED and len(calls) == 3
    assert job.stages[0].state == StageState.CANCELED and job.stages[0].frames_done == 3
    assert not list(Path(job.output_dir).glob("*.exr"))


def test_a_vanished_plate_fails_the_job_with_a_readable_error(
    runtime: WorkerRuntime, settings: Settings, shot: Path, farm_root: Path
) -> None:
    job_id = submit(settings, shot, farm_root)
    (shot.parent / "sh010.1004.exr").unlink()
    assert runtime.run_job(job_id) is False
    job = runtime.store.get(job_id)
    assert job.state == JobState.FAILED
    assert job.error.startswith("frames: 1 frame(s) missing from the plate: 1004; frames on disk: 1001-1003,1005-1008")


def test_a_duplicate_message_for_a_finished_job_does_nothing(
    runtime: WorkerRuntime, settings: Settings, shot: Path, farm_root: Path
) -> None:
    job_id = submit(settings, shot, farm_root)
    runtime.run_job(job_id)
    runtime.export_job(job_id)
    assert runtime.run_job(job_id) is False
    assert runtime.store.get(job_id).attempts == 1
