"""What follows a job's closing on the file system: a job that closed failed or canceled marks
its version folder (``workers.io.version_marker``) so nothing takes it for a delivery. Called by
whoever closed it: a worker (a task died), the dispatcher (a dead worker's task died), or the job
service (a cancel)."""

from __future__ import annotations

import logging
from pathlib import Path

from schemas import JobState
from services.store import JobStore
from workers.io.version_marker import mark_incomplete

log = logging.getLogger(__name__)


def after_job_closed(store: JobStore, job_id: str) -> None:
    job = store.get(job_id)
    if job is None or job.state not in (JobState.FAILED, JobState.CANCELED):
        return
    try:
        mark_incomplete(
            Path(job.output_dir),
            {"job": job.id, "state": str(job.state), "error": job.error, "version": job.version, "shot": job.shot},
        )
    except OSError:
        log.warning("could not mark %s as incomplete", job.output_dir, exc_info=True)
