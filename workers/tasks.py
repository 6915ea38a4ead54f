"""The Celery task: a thin, idempotent wrapper that hands a task id and its token to the runtime."""

from __future__ import annotations

from farm_config.celery_config import RUN_TASK
from workers.celery_app import RuntimeTask, app


@app.task(name=RUN_TASK, base=RuntimeTask, bind=True, acks_late=True, ignore_result=True)
def run_task(self: RuntimeTask, task_id: int, token: str) -> None:
    """Run one attempt of one task (a chunk of a stage). A stale or duplicate message is a no-op."""
    self.runtime.run_task(task_id, token)
