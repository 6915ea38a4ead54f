"""Each task's stored log: lines per attempt, appended with the heartbeat, read by tail."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select

from schemas.task import TaskLog, TaskLogLine
from services.store.db import Database
from services.store.tables import TaskLogRow


class TaskLogs:
    db: Database

    def append_log(self, task_id: int, attempt: int, lines: Iterable[tuple[datetime, str, str]]) -> None:
        rows = [TaskLogRow(task_id=task_id, attempt=attempt, at=at, level=lvl, message=msg) for at, lvl, msg in lines]
        if rows:
            with self.db.session() as s:
                s.add_all(rows)

    def log_tail(self, task_id: int, lines: int, after: int | None = None) -> TaskLog:
        """The last ``lines`` lines; with ``after``, up to ``lines`` lines following the first
        ``after`` (lines are only appended, so a follower asks for what came since it last read)."""
        with self.db.session() as s:
            total = s.scalar(select(func.count()).where(TaskLogRow.task_id == task_id)) or 0
            query = select(TaskLogRow).where(TaskLogRow.task_id == task_id)
            if after is None:
                rows = s.scalars(query.order_by(TaskLogRow.id.desc()).limit(lines)).all()[::-1]
                start = total - len(rows)
            else:
                rows = s.scalars(query.order_by(TaskLogRow.id).offset(after).limit(lines)).all()
                start = min(after, total)
            return TaskLog(
                task_id=task_id,
                total=total,
                start=start,
                lines=[TaskLogLine(at=r.at, attempt=r.attempt, level=r.level, message=r.message) for r in rows],
            )
