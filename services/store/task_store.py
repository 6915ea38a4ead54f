"""Task records: one store whose parts each have one job (see the modules it is made of).

Every change to a job's tasks locks the job row first (``SELECT … FOR UPDATE``; SQLite takes its
write lock at BEGIN), then moves tasks through the state rules and re-derives the job's state
(``job_refresh``), so two workers finishing the last two chunks at once cannot both miss the end.
"""

from __future__ import annotations

from sqlalchemy import func, select

from schemas.task import TaskStatus
from services.scheduling.retry import RetryPolicy
from services.store.db import Database
from services.store.tables import TaskRow
from services.store.task_attempts import TaskAttempts
from services.store.task_controls import TaskControls
from services.store.task_dispatch import DispatchQueries
from services.store.task_logs import TaskLogs
from services.store.task_reconcile import TaskReconciliation
from services.store.task_rows import Claimed, Closed, new_tasks, task_status

__all__ = ["Claimed", "Closed", "TaskStore", "new_tasks", "task_status"]


class TaskStore(DispatchQueries, TaskAttempts, TaskReconciliation, TaskControls, TaskLogs):
    def __init__(self, db: Database, retry: RetryPolicy | None = None, blocklist_after: int = 3) -> None:
        self.db = db
        self.retry = retry or RetryPolicy()
        self.blocklist_after = blocklist_after

    # --- reads ------------------------------------------------------------------------------

    def get(self, task_id: int) -> TaskStatus | None:
        with self.db.session() as s:
            row = s.get(TaskRow, task_id)
            return task_status(row) if row else None

    def for_job(self, job_id: str) -> list[TaskStatus]:
        with self.db.session() as s:
            rows = s.scalars(select(TaskRow).where(TaskRow.job_id == job_id).order_by(TaskRow.position, TaskRow.index))
            return [task_status(r) for r in rows]

    def counts(self) -> dict[tuple[str, str], int]:
        """(stage, state) → tasks, all jobs."""
        with self.db.session() as s:
            rows = s.execute(select(TaskRow.stage, TaskRow.state, func.count()).group_by(TaskRow.stage, TaskRow.state))
            return {(stage, state): n for stage, state, n in rows}
