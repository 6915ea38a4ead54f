"""The production shape on loopback: a real Redis broker, a real Celery worker process, the API
under uvicorn, PostgreSQL as the store, and the ``mattefarm`` CLI talking to it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from schemas import JobState, StageState
from tests.conftest import fresh_database
from tests.factories import ALICE, BOB, write_small_shot
from tests.harness import MATTEFARM, LiveFarm, RedisServer, live_farm

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def farm(
    redis_server: RedisServer, postgres_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveFarm]:
    root = tmp_path_factory.mktemp("redis_farm").resolve()
    write_small_shot(root, "sh020", frames=24)
    with (
        fresh_database(postgres_server) as database_url,
        live_farm(
            root, redis_server, database_url, synthetic_delay_s="0.08", task_frames="8", review="true"
        ) as running,
    ):
        running.start_worker("test-worker")
        yield running


def plate(farm: LiveFarm) -> str:
    return str(farm.root / "sh020" / "plate" / "sh020.####.exr")


def test_a_job_runs_end_to_end_through_redis_and_a_worker_process(farm: LiveFarm) -> None:
    submitted = farm.cli(
        "submit",
        plate(farm),
        "--prompt",
        "ball, box, car",
        "--output-root",
        str(farm.root / "renders"),
        "--show",
        "demo",
        "--priority",
        "70",
        "--colourspace",
        "linear",
        "--frames",
        "1001-1024",
        "--skip-missing",
    )
    assert submitted.returncode == 0, submitted.stderr + submitted.stdout
    job_id = submitted.stdout.split("submitted ", 1)[1].split()[0]

    seen_midway = None
    with farm.client() as client:
        deadline = time.monotonic() + 120
        while True:
            job = client.job(job_id)
            running = [s for s in job.stages if s.state == StageState.RUNNING and 0 < s.frames_done < s.frames_total]
            if running and seen_midway is None:
                seen_midway = (running[0].name, running[0].frames_done, running[0].frames_total)
            if job.state.is_final or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    worker_log = farm.log("test-worker")
    assert job.state == JobState.SUCCEEDED, f"{job.error}\n{worker_log[-3000:]}"
    assert job.spec.colourspace == "linear" and job.spec.on_missing_frames == "skip" and job.missing_frames == []
    assert job.review is not None and Path(job.review.movie).is_file()  # the cpu-queue export made it
    assert seen_midway is not None, "status never showed a stage part-way through"
    assert seen_midway[2] == 24

    # Per-stage timings and model-call counts when done.
    assert [s.frames_done for s in job.stages] == [24, 24, 24, 24]
    assert all(s.seconds and s.seconds > 0 for s in job.stages)
    # A frame with no boxes needs no encoder pass.
    assert job.counters.detector_calls == 24 and 0 < job.counters.image_encoder_passes <= 24
    assert job.counters.frames_written == 24 and job.attempts == 1
    assert len(list(Path(job.output_dir).glob("sh020_roto_v001.*.exr"))) == 24
    # Chunks of 8: 3 detect + 3 segment + 1 track + 3 export + finalise, each one message.
    tasks = farm.cli("tasks", job_id)
    assert tasks.returncode == 0 and tasks.stdout.count("succeeded") == 11, tasks.stdout
    with farm.client() as client:
        queues = {t.queue for t in client.tasks(job_id)}
    assert queues == {"gpu", "cpu"}  # detection on gpu, EXR packing on cpu
    assert worker_log.count("mattefarm.run_task") >= 11

    status = farm.cli("status", job_id)
    assert status.returncode == 0 and "succeeded" in status.stdout and "detector 24" in status.stdout
    listed = farm.cli("jobs", "--show", "demo")
    assert job_id in listed.stdout and "1 of 1 job(s)" in listed.stdout
    followed = farm.cli("status", job_id, "--follow")
    assert followed.returncode == 0 and "24/24" in followed.stdout

    # Prometheus sees the finished job, and Redis answers for the queue depth (nothing left waiting).
    metrics = httpx.get(f"{farm.url}/metrics", timeout=10).text
    assert 'mattefarm_jobs{state="succeeded"} 1.0' in metrics
    assert "mattefarm_broker_up 1.0" in metrics and 'mattefarm_queue_messages{queue="gpu"} 0.0' in metrics


def test_cancel_a_running_job_from_the_cli(farm: LiveFarm) -> None:
    with farm.client() as client:
        job = client.submit({"plate": plate(farm), "prompt": "ball", "output_root": str(farm.root / "renders")})
        deadline = time.monotonic() + 60
        while client.job(job.id).state != JobState.RUNNING and time.monotonic() < deadline:
            time.sleep(0.05)
        refused = farm.cli("cancel", job.id, "--reason", "mine", token=BOB)
        assert refused.returncode == 1 and "belongs to alice" in refused.stderr
        canceled = farm.cli("cancel", job.id, "--reason", "wrong prompt")
        assert canceled.returncode == 0, canceled.stderr
        final = client.wait(job.id, timeout=60, poll=0.1)
    assert final.state == JobState.CANCELED
    assert not list(Path(final.output_dir).glob("*.exr"))


def test_cli_errors_are_one_readable_line(farm: LiveFarm) -> None:
    bad = farm.cli(
        "submit", str(farm.root / "nowhere" / "x.####.exr"), "--prompt", "ball", "--output-root", str(farm.root)
    )
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr and "plate:" in bad.stderr and "no files match" in bad.stderr
    unauthorised = farm.cli("jobs", token="not-a-real-token-at-all")
    assert unauthorised.returncode == 1 and "token" in unauthorised.stderr
    unreachable = subprocess.run(
        [*MATTEFARM, "jobs"],
        capture_output=True,
        text=True,
        timeout=60,
        env=farm.env | {"MATTEFARM_API_URL": "http://127.0.0.1:9", "MATTEFARM_TOKEN": ALICE},
    )
    assert unreachable.returncode == 3 and "can't reach the farm" in unreachable.stderr


def test_a_propagation_runs_as_a_farm_task_on_the_worker(farm: LiveFarm, tmp_path: Path) -> None:
    import json

    with farm.client() as client:
        job = client.submit(
            {
                "plate": plate(farm),
                "prompt": "ball, box",
                "output_root": str(farm.root / "renders"),
                "frames": "1001-1012",
            }
        )
        job = client.wait(job.id, timeout=120, poll=0.2)
        assert job.state == JobState.SUCCEEDED
        layer = client.refine_state(job.id).layers[0]
    edits = tmp_path / "edits.json"
    edits.write_text(
        json.dumps(
            {
                "edits": [
                    {"kind": "brush", "layer": layer.name, "frame": layer.frames[0], "points": [[4, 4], [9, 6]]},
                    {"kind": "propagate", "layer": layer.name},
                ]
            }
        )
    )
    replayed = farm.cli("refine", job.id, "--edits", str(edits), "--deliver")
    assert replayed.returncode == 0, replayed.stderr + replayed.stdout + farm.log_tails()
    parent = f"v{job.version:03d}" if job.version else ""
    assert "2 edit(s) applied" in replayed.stdout and f"(from {parent})" in replayed.stdout, replayed.stdout
    with farm.client() as client:
        done = client.refine_progress(job.id)
    assert done is not None and done.state == "succeeded" and done.worker and done.worker.startswith("test-worker")
    assert "mattefarm.propagate" in farm.log("test-worker")  # the Celery worker process ran it
    metrics = httpx.get(f"{farm.url}/metrics", timeout=10).text
    assert 'mattefarm_refine_propagations{state="succeeded"} 1.0' in metrics
