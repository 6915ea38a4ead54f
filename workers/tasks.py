"""Celery tasks: thin, idempotent wrappers that take a job id and hand it to the runtime."""

from __future__ import annotations

from farm_config.celery_config import EXPORT_JOB_TASK, RUN_JOB_TASK
from workers.celery_app import RuntimeTask, app


@app.task(name=RUN_JOB_TASK, base=RuntimeTask, bind=True, acks_late=True, ignore_result=True)
def run_job(self: RuntimeTask, job_id: str) -> None:
    """Detect and segment on a GPU worker, then queue the export on the CPU queue."""
    if self.runtime.run_job(job_id):
        self.app.send_task(EXPORT_JOB_TASK, args=[job_id])


@app.task(name=EXPORT_JOB_TASK, base=RuntimeTask, bind=True, acks_late=True, ignore_result=True)
def export_job(self: RuntimeTask, job_id: str) -> None:
    """Write the matte EXRs and the manifest, then close the job."""
    self.runtime.export_job(job_id)
