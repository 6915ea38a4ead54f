"""The reconciler's reads and moves: running tasks whose worker went quiet, queued tasks whose
message the broker lost."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from schemas import EventKind
from schemas.task import TaskState
from services.store.db import Database
from services.store.tables import TaskRow, utcnow
from services.store.task_rows import label, lock_job, move, new_event


class TaskReconciliation:
    db: Database

    def stale_running(self, older_than_s: float) -> list[tuple[int, str, str | None]]:
        """(task, job, worker) of running tasks whose heartbeat is older than ``older_than_s``."""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        with self.db.session() as s:
            rows = s.execute(
                select(TaskRow.id, TaskRow.job_id, TaskRow.worker).where(
                    TaskRow.state == TaskState.RUNNING, TaskRow.heartbeat_at < cutoff
                )
            )
            return [(r.id, r.job_id, r.worker) for r in rows]

    def requeue_lost(self, queue: str, keep: int, older_than_s: float, actor: str) -> int:
        """Queued tasks beyond the ``keep`` messages the broker still holds for ``queue``,
        waiting longer than ``older_than_s``, lost their message: they go back to waiting."""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        with self.db.session() as s:
            rows = s.scalars(
                select(TaskRow)
                .where(TaskRow.state == TaskState.QUEUED, TaskRow.queue == queue)
                .order_by(TaskRow.queued_at.desc())
            ).all()
            lost = [r for r in rows[keep:] if r.queued_at is not None and r.queued_at < cutoff]
            for row in lost:
                job = lock_job(s, row.job_id)
                s.refresh(row)
                if row.state != TaskState.QUEUED:
                    continue
                move(row, TaskState.WAITING, token=None, queue=None, queued_at=None)
                s.add(
                    new_event(
                        job.id,
                        EventKind.REQUEUED,
                        actor,
                        f"{label(row)}: its message is gone from '{queue}' (broker restart?); sending it again",
                        row.id,
                    )
                )
            return len(lost)
