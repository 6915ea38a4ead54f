"""The dispatcher's reads and moves: which tasks may go now, what is queued, queued and back."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, exists, func, or_, select, update
from sqlalchemy.orm import aliased

from schemas import STAGE_ORDER
from schemas.task import TaskKind, TaskState
from services.scheduling.dispatch import Candidate
from services.scheduling.plan import is_gpu_stage
from services.scheduling.states import dependency_rank
from services.store.db import Database, rows_changed
from services.store.tables import BlockRow, JobRow, TaskRow, utcnow


class DispatchQueries:
    db: Database

    def candidates(self, limit: int = 200) -> list[Candidate]:
        """Tasks that may be sent now, highest priority first, then oldest job, then pipeline order."""
        now = utcnow()
        earlier = aliased(TaskRow)
        blocking = exists().where(
            earlier.job_id == TaskRow.job_id,
            earlier.state != TaskState.SUCCEEDED,
            _rank(earlier) < _rank(TaskRow),  # the rule of services.scheduling.states.waits_for, in SQL
        )
        query = (
            select(TaskRow.id, TaskRow.job_id, TaskRow.stage, JobRow.show, JobRow.gpu_memory_mb)
            .join(JobRow, JobRow.id == TaskRow.job_id)
            .where(
                or_(
                    TaskRow.state == TaskState.WAITING,
                    and_(
                        TaskRow.state == TaskState.RETRYING,
                        or_(TaskRow.not_before.is_(None), TaskRow.not_before <= now),
                    ),
                ),
                JobRow.pause_requested.is_(False),
                JobRow.cancel_requested.is_(False),
                ~blocking,
            )
            .order_by(JobRow.priority.desc(), JobRow.created_at, JobRow.id, TaskRow.position, TaskRow.index)
            .limit(limit)
        )
        with self.db.session() as s:
            rows = s.execute(query).all()
            job_ids = {r.job_id for r in rows}
            blocked: dict[str, set[str]] = {}
            if job_ids:
                for job_id, host in s.execute(
                    select(BlockRow.job_id, BlockRow.host).where(BlockRow.job_id.in_(job_ids), BlockRow.blocked)
                ):
                    blocked.setdefault(job_id, set()).add(host)
        return [
            Candidate(
                task_id=r.id,
                job_id=r.job_id,
                show=r.show,
                gpu=is_gpu_stage(r.stage),
                gpu_memory_mb=r.gpu_memory_mb if is_gpu_stage(r.stage) else 0,
                blocked_hosts=frozenset(blocked.get(r.job_id, ())),
            )
            for r in rows
        ]

    def queued_by_queue(self) -> dict[str, int]:
        with self.db.session() as s:
            rows = s.execute(
                select(TaskRow.queue, func.count()).where(TaskRow.state == TaskState.QUEUED).group_by(TaskRow.queue)
            )
            return {queue: n for queue, n in rows if queue}

    def gpu_busy_by_show(self) -> dict[str, int]:
        with self.db.session() as s:
            rows = s.execute(
                select(JobRow.show, func.count())
                .join(TaskRow, TaskRow.job_id == JobRow.id)
                .where(
                    TaskRow.state.in_([TaskState.QUEUED, TaskState.RUNNING]),
                    TaskRow.stage.in_([st.value for st in STAGE_ORDER if is_gpu_stage(st)]),
                    JobRow.show.is_not(None),
                )
                .group_by(JobRow.show)
            )
            return {str(show): n for show, n in rows}  # shows without a name are not capped

    def waiting_summary(self) -> tuple[int, datetime | None]:
        """Tasks not yet running (waiting, retrying, queued), and the submit time of the oldest one's job."""
        with self.db.session() as s:
            row = s.execute(
                select(func.count(), func.min(JobRow.created_at))
                .select_from(TaskRow)
                .join(JobRow, JobRow.id == TaskRow.job_id)
                .where(TaskRow.state.in_([TaskState.WAITING, TaskState.RETRYING, TaskState.QUEUED]))
            ).one()
            return int(row[0]), row[1]

    def mark_queued(self, task_id: int, queue: str) -> str | None:
        """waiting/retrying → queued with a fresh token; None if someone else moved it first."""
        token = secrets.token_hex(8)
        with self.db.session() as s:
            done = rows_changed(
                s,
                update(TaskRow)
                .where(TaskRow.id == task_id, TaskRow.state.in_([TaskState.WAITING, TaskState.RETRYING]))
                .values(state=TaskState.QUEUED, queue=queue, token=token, queued_at=utcnow(), not_before=None),
            )
        return token if done else None

    def unqueue(self, task_id: int, token: str) -> None:
        """The message could not be sent: the task waits for the next dispatch."""
        with self.db.session() as s:
            s.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id, TaskRow.token == token, TaskRow.state == TaskState.QUEUED)
                .values(state=TaskState.WAITING, token=None, queue=None, queued_at=None)
            )


def _rank(task: Any) -> Any:
    """:func:`dependency_rank` of a task row, as an SQL expression."""
    return dependency_rank(task.position, case((task.kind == TaskKind.FINALISE, 1), else_=0))
