"""/metrics after real work: a finished job and a queued one, scraped and parsed like Prometheus does."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from farm_config import Settings
from schemas import JobState
from services.composition import build_worker
from tests.factories import ALICE, RecordingQueue, run_tasks, submit


def scrape(api: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = api.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_after_a_job(
    settings: Settings, shot: Path, farm_root: Path, api: TestClient, queue: RecordingQueue
) -> None:
    runner = build_worker(settings, register=False, broker=False)
    try:
        done = submit(settings, shot, farm_root)
        run_tasks(runner, done)
        assert runner.store.get(done).state == JobState.SUCCEEDED
    finally:
        runner.close()
    api.post(
        "/jobs",
        json={"plate": str(shot), "prompt": "ball", "output_root": str(farm_root / "renders")},
        headers={"Authorization": f"Bearer {ALICE}"},
    )
    idle = build_worker(settings, broker=False)  # registered and free: the API's dispatcher sends it one task
    try:
        deadline = time.monotonic() + 10
        while not queue.sent and time.monotonic() < deadline:
            time.sleep(0.05)
        m = scrape(api)
    finally:
        idle.close()
    assert m[("mattefarm_jobs", (("state", "succeeded"),))] == 1
    assert m[("mattefarm_jobs", (("state", "queued"),))] == 1
    assert m[("mattefarm_jobs", (("state", "failed"),))] == 0
    for stage, chunks in (("detect", 3), ("segment", 3), ("track", 1), ("export", 4)):
        assert m[("mattefarm_stages", (("stage", stage), ("state", "succeeded")))] == 1
        assert m[("mattefarm_stage_seconds_count", (("stage", stage),))] == 1
        assert m[("mattefarm_stage_seconds_sum", (("stage", stage),))] > 0
        assert m[("mattefarm_tasks", (("stage", stage), ("state", "succeeded")))] == chunks
        assert m[("mattefarm_task_seconds_count", (("stage", stage),))] == chunks
        assert m[("mattefarm_tasks", (("stage", stage), ("state", "dead")))] == 0
    # The queued job: 11 tasks not started; one worker is free, so the dispatcher sent one of them.
    assert m[("mattefarm_tasks_waiting", ())] == 11
    assert m[("mattefarm_queue_tasks", (("queue", "gpu"),))] == 1
    assert m[("mattefarm_queue_messages", (("queue", "gpu"),))] == 1
    for stage in ("detect", "segment", "track"):
        assert 0 < m[("mattefarm_gpu_seconds_per_frame", (("stage", stage),))] < 30
    assert m[("mattefarm_broker_up", ())] == 1
    up = [v for (name, labels), v in m.items() if name == "mattefarm_worker_up"]
    assert up == [1.0]
    assert m[("mattefarm_job_wait_seconds_count", ())] == 1  # only the finished job has started
    assert m[("mattefarm_queue_oldest_wait_seconds", ())] >= 0
    assert m[("mattefarm_task_retries_total", ())] == 0
    assert m[("mattefarm_model_calls_total", (("kind", "frames_written"),))] == 8
    assert m[("mattefarm_model_calls_total", (("kind", "detector_calls"),))] == 8
    # Peak GPU memory is reported by GPU workers only; this CPU run has none to report.
    assert not [k for k in m if k[0] == "mattefarm_stage_peak_gpu_memory_bytes"]
