"""A worker SIGKILLed at a random frame of each stage (detect, segment, track, export, finalise):
the retry resumes or restarts cleanly whatever scratch the kill left, the job succeeds, every frame
is written exactly once, the mattes equal a clean run's, and no scratch or temporary file remains.

The worker runs in a child process (spawned: a fork of the test process would inherit its
threads' locks) and the fault drill (``kill@STAGE:N``) really SIGKILLs it, so
no ``finally`` of the dying attempt runs; the parent then plays the dispatcher (the dead worker's
task goes back after the heartbeat timeout) and a second worker runs the retry. The shot is 60
frames, longer than the scratch stores' memory window, so a killed track leaves layer files on disk.
"""

from __future__ import annotations

import multiprocessing
import random
import signal
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from farm_config import Settings
from schemas import JobState
from tests.factories import submit, write_small_shot
from workers.io.exr import read_exr_channels

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

FRAMES = 60
# (stage, frames it may die at): within a chunk (60 frames in chunks of at most 25 → three of 20);
# the track stage's forward pass and its
# backward pass (by then all 60 frames were touched, so layer scratch has spilled to disk).
CASES = [
    ("detect", 1, 20),
    ("segment", 1, 20),
    ("track", 1, 30),
    ("track", 31, 60),
    ("export", 1, 20),
    ("finalise", 1, 60),
]


def _work(settings: Settings, job_id: str) -> None:  # the child: a worker that may be killed mid-task
    from services.composition import build_worker

    worker = build_worker(settings, register=False, broker=False)
    worker.run_inline(job_id)
    worker.close()


def _run_with_kills(settings: Settings, job_id: str) -> list[int]:
    """Run the job to the end; each child worker may die (returns their exit codes)."""
    from services.composition import build_dispatcher, open_stores
    from tests.factories import RecordingQueue

    codes: list[int] = []
    stores = open_stores(settings)
    try:
        for _ in range(10):
            child = multiprocessing.get_context("spawn").Process(target=_work, args=(settings, job_id))
            child.start()
            child.join(timeout=240)
            codes.append(child.exitcode if child.exitcode is not None else 999)
            job = stores.jobs.get(job_id)
            assert job is not None
            if job.state.is_final:
                return codes
            time.sleep(settings.heartbeat_timeout_s + 0.2)  # the dead worker's heartbeat goes stale
            build_dispatcher(settings, stores, RecordingQueue(), "test").reconcile()
    finally:
        stores.close()
    raise AssertionError(f"the job did not finish after {len(codes)} workers: {codes}")


def _mattes(folder: Path) -> dict[int, dict[str, np.ndarray]]:
    out = {}
    for path in sorted(folder.glob("*.exr")):
        channels, _ = read_exr_channels(path)
        out[int(path.name.split(".")[-2])] = channels
    return out


@pytest.mark.parametrize(("stage", "low", "high"), CASES)
def test_a_worker_killed_at_a_random_frame_of_a_stage_loses_nothing(
    stage: str, low: int, high: int, settings: Settings, farm_root: Path
) -> None:
    from services.composition import open_stores

    settings.task_frames = 25
    settings.heartbeat_timeout_s = 0.5
    settings.review = stage == "finalise"  # the finalise task's frames are the review media's
    plate = write_small_shot(farm_root, "sh070", frames=FRAMES)
    clean_id = submit(settings, plate, farm_root)
    assert _run_with_kills(settings, clean_id) == [0]
    stores = open_stores(settings)
    clean = stores.jobs.get(clean_id)
    assert clean is not None and clean.state == JobState.SUCCEEDED

    frame = random.Random(f"kill {stage} {low}").randrange(low, high)  # random, and the same each run
    settings.fault = f"kill@{stage}:{frame}"
    job_id = submit(settings, plate, farm_root)
    codes = _run_with_kills(settings, job_id)
    job = stores.jobs.get(job_id)
    tasks = stores.tasks.for_job(job_id)
    logs = [line.message for t in tasks for line in stores.tasks.log_tail(t.id, 10_000).lines]
    stores.close()

    assert codes[0] == -signal.SIGKILL, f"the drill did not kill the worker at {stage} frame {frame}: {codes}"
    assert job is not None and job.state == JobState.SUCCEEDED, (job.error if job else None, codes)
    assert any(t.attempts == 2 for t in tasks), "no task was retried"
    output = Path(job.output_dir)
    # every frame written exactly once (or kept from the killed attempt), none missing
    wrote = Counter(int(m.split("wrote frame ")[1].split()[0]) for m in logs if "wrote frame " in m)
    kept = {int(m.split("frame ")[1].split()[0]) for m in logs if "already written by this job" in m}
    assert not wrote or max(wrote.values()) == 1, wrote
    assert set(wrote) | kept == set(job.frames)
    # the same mattes as the clean run, channel for channel
    got, want = _mattes(output), _mattes(Path(clean.output_dir))
    assert sorted(got) == sorted(want) == job.frames
    for n in job.frames:
        assert sorted(got[n]) == sorted(want[n]), n
        for name in want[n]:
            assert np.array_equal(got[n][name], want[n][name]), (stage, frame, n, name)
    # nothing left behind: no scratch folder, no temporary anywhere in the version folder
    assert not (output / ".work").exists()
    assert not [p for p in output.rglob(".*")], sorted(output.rglob(".*"))
