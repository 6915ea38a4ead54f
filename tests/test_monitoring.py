"""What the monitors' dashboard reads: the farm's history from the store (jobs finished, frames
delivered, failures by reason, queue depth), a job's block-list viewed and cleared, drain and
undrain, and a worker list without ghost rows."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from farm_config import Settings
from schemas import WorkerInfo
from services.api.app import create_app
from services.composition import build_worker, open_stores
from services.store.tables import WorkerRow, utcnow
from tests.factories import ADMIN, BOB, RecordingQueue, auth, run_tasks, submit


def test_history_counts_jobs_frames_failures_and_queue_depth(settings: Settings, shot: Path, farm_root: Path) -> None:
    settings = settings.model_copy(update={"dispatcher": False})  # this test's samples only
    crashing = settings.model_copy(update={"fault": "oom@segment"})  # one failed attempt, then lighter
    worker = build_worker(crashing, register=False, broker=False)
    try:
        stores = worker.stores
        waiting = submit(settings, shot, farm_root)  # stays waiting: the queue depth
        assert stores.history.sample(60.0)
        assert not stores.history.sample(60.0)  # one sample per interval, however many dispatchers
        done = submit(settings, shot, farm_root)
        run_tasks(worker, done)
    finally:
        worker.close()
    with TestClient(create_app(settings, queue=RecordingQueue())) as api:
        history = api.get("/farm/history", params={"hours": 1}, headers=auth()).json()
        metrics = api.get("/metrics", headers=auth()).text
    assert history["bucket_s"] == 60 and len(history["buckets"]) == 60
    assert sum(b["jobs_succeeded"] for b in history["buckets"]) >= 1
    assert sum(b["frames_delivered"] for b in history["buckets"]) == 8  # the finished job's plate frames
    assert history["failures_total"] == {"out_of_memory": 3}  # each segment chunk once, then lighter
    assert 'mattefarm_task_failures_last_hour{reason="out_of_memory"} 3.0' in metrics
    assert 'mattefarm_task_failures_last_hour{reason="fatal"} 0.0' in metrics
    depth = [b["tasks_waiting"] for b in history["buckets"] if b["tasks_waiting"] is not None]
    assert depth and depth[-1] >= 1
    assert waiting


def test_a_jobs_block_list_is_shown_and_cleared_by_its_owner(
    api: TestClient, settings: Settings, shot: Path, farm_root: Path
) -> None:
    job_id = submit(settings, shot, farm_root)
    stores = open_stores(settings)
    try:
        from services.store.tables import BlockRow

        with stores.db.session() as s:
            s.add(BlockRow(job_id=job_id, host="bad-node", failures=3, blocked=True))
            s.add(BlockRow(job_id=job_id, host="ok-node", failures=1, blocked=False))
    finally:
        stores.close()
    listed = api.get(f"/jobs/{job_id}/blocklist", headers=auth()).json()
    assert listed == [
        {"host": "bad-node", "failures": 3, "blocked": True},
        {"host": "ok-node", "failures": 1, "blocked": False},
    ]
    refused = api.request("DELETE", f"/jobs/{job_id}/blocklist", headers=auth(BOB), json={"reason": "not mine"})
    assert refused.status_code == 403
    cleared = api.request("DELETE", f"/jobs/{job_id}/blocklist", headers=auth(), json={"reason": "node fixed"})
    assert cleared.status_code == 200 and cleared.json() == []
    events = api.get(f"/jobs/{job_id}/events", headers=auth()).json()
    assert any(e["kind"] == "unblocked" and "bad-node" in e["message"] and "node fixed" in e["message"] for e in events)


def test_drain_and_undrain_a_worker(api: TestClient, settings: Settings) -> None:
    stores = open_stores(settings)
    try:
        stores.workers.register(WorkerInfo(name="gpu0@h1:0", host="h1", pid=1, queues=["gpu"], device="cuda"))
    finally:
        stores.close()
    admin = auth(ADMIN)
    assert api.post("/workers/gpu0@h1:0/drain", headers=auth(BOB)).status_code == 403
    assert api.post("/workers/gpu0@h1:0/drain", headers=admin).json()["state"] == "stopping"
    assert api.post("/workers/gpu0@h1:0/undrain", headers=auth(BOB)).status_code == 403
    assert api.post("/workers/gpu0@h1:0/undrain", headers=admin).json()["state"] == "online"
    assert api.post("/workers/nobody@h1:0/undrain", headers=admin).status_code == 404


def test_an_unhealthy_worker_is_not_undrained(api: TestClient, settings: Settings) -> None:
    stores = open_stores(settings)
    try:
        stores.workers.register(WorkerInfo(name="gpu1@h1:0", host="h1", pid=1, queues=["gpu"], device="cuda"))
        stores.workers.set_unhealthy("gpu1@h1:0", "no checkpoints: run mattefarm models download")
    finally:
        stores.close()
    answer = api.post("/workers/gpu1@h1:0/undrain", headers=auth(ADMIN))
    assert answer.status_code == 409 and "unhealthy" in answer.json()["message"]


def test_workers_offline_for_long_leave_the_list_and_a_restart_reuses_its_row(settings: Settings) -> None:
    stores = open_stores(settings)
    try:
        reg = stores.workers
        for name in ("gpu0@h1:0", "gpu0@h2:0"):
            reg.register(WorkerInfo(name=name, host=name[5:7], pid=1, queues=["gpu"], device="cuda"))
        with stores.db.session() as s:
            for row in s.query(WorkerRow):
                row.heartbeat_at = utcnow() - timedelta(hours=2 if row.name == "gpu0@h2:0" else 0.5)
        assert sorted(reg.mark_stale_offline()) == ["gpu0@h1:0", "gpu0@h2:0"]
        assert reg.forget_offline(3600.0) == ["gpu0@h2:0"]  # gone for two hours: dropped
        # the node that is only down half an hour comes back under the same name (node:slot): one row
        reg.register(WorkerInfo(name="gpu0@h1:0", host="h1", pid=2, queues=["gpu"], device="cuda"))
        assert [(w.name, w.online, w.pid) for w in reg.all()] == [("gpu0@h1:0", True, 2)]
    finally:
        stores.close()
