"""A failed or canceled job's version folder is marked so nothing takes it for a delivery, and a
retry that succeeds removes the mark."""

from __future__ import annotations

import json
from pathlib import Path

from farm_config import Settings, TokenGrant
from schemas import JobState
from schemas.task import ControlAction, ControlRequest
from tests.factories import run_tasks, submit
from workers.io.version_marker import MARKER


def test_a_canceled_job_marks_its_version_folder(settings: Settings, shot: Path, farm_root: Path) -> None:
    from services.composition import build_job_service, open_stores

    job_id = submit(settings, shot, farm_root)
    stores = open_stores(settings)
    try:
        jobs = build_job_service(settings, stores)
        jobs.control(job_id, ControlAction.CANCEL, TokenGrant("alice", False), ControlRequest(reason="wrong prompt"))
        job = jobs.get(job_id)
    finally:
        stores.close()
    assert job.state == JobState.CANCELED
    marker = json.loads((Path(job.output_dir) / MARKER).read_text())
    assert marker["state"] == "canceled" and marker["frames_on_disk"] == 0 and "do not use" in marker["note"]


def test_a_failed_job_is_marked_until_a_retry_delivers_it(settings: Settings, shot: Path, farm_root: Path) -> None:
    from services.composition import build_job_service, build_worker

    settings.max_attempts, settings.fault = 1, "crash@segment"
    job_id = submit(settings, shot, farm_root)
    worker = build_worker(settings, register=False, broker=False)
    try:
        run_tasks(worker, job_id)
        failed = worker.store.get(job_id)
        assert failed is not None and failed.state == JobState.FAILED
        output = Path(failed.output_dir)
        assert json.loads((output / MARKER).read_text())["state"] == "failed"
        worker.runtime.settings.fault = ""  # the cause is fixed; an admin retries
        jobs = build_job_service(settings, worker.stores)
        jobs.control(job_id, ControlAction.RETRY, TokenGrant("admin", True), ControlRequest(reason="fixed"))
        run_tasks(worker, job_id)
        done = worker.store.get(job_id)
    finally:
        worker.close()
    assert done is not None and done.state == JobState.SUCCEEDED
    assert not (output / MARKER).exists() and len(list(output.glob("*.exr"))) == len(done.frames)
