"""Operators' controls on a job, a stage or a task: pause, resume, cancel, retry, priority.

Each action is one function over the same :class:`Target` (the locked job, the tasks it covers,
who and why); :data:`ACTIONS` maps the contract's :class:`ControlAction` to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas import EventKind, StageName
from schemas.task import ControlAction, ControlResult, HostBlock, TaskState
from services.store.db import Database
from services.store.job_refresh import refresh_job
from services.store.tables import BlockRow, JobRow, TaskRow, utcnow
from services.store.task_rows import lock_job, move_all, new_event


@dataclass
class Target:
    s: Session
    job: JobRow
    tasks: list[TaskRow]
    whole_job: bool
    name: str  # job id, job/stage, or "task N"
    actor: str
    why: str  # ": reason", or ""
    priority: int | None

    def note(self, kind: EventKind, message: str) -> None:
        self.s.add(new_event(self.job.id, kind, self.actor, message))


def _priority(t: Target) -> int:
    old, t.job.priority = t.job.priority, int(t.priority if t.priority is not None else t.job.priority)
    t.note(EventKind.PRIORITY, f"priority {old} → {t.job.priority}{t.why}")
    return 0


def _pause(t: Target) -> int:
    if t.whole_job:
        t.job.pause_requested = True
    changed = move_all(t.tasks, {TaskState.WAITING, TaskState.QUEUED, TaskState.RETRYING}, TaskState.PAUSED)
    t.note(EventKind.PAUSE_REQUESTED, f"pause {t.name}{t.why}")
    return changed


def _resume(t: Target) -> int:
    if t.whole_job:
        t.job.pause_requested = False
    changed = move_all(t.tasks, {TaskState.PAUSED}, TaskState.WAITING, token=None, queue=None)
    t.note(EventKind.RESUMED, f"resume {t.name}{t.why}")
    return changed


def _cancel(t: Target) -> int:
    if t.whole_job:
        t.job.cancel_requested = True
        t.job.error = f"canceled by {t.actor}{t.why}"
    closable = {TaskState.WAITING, TaskState.QUEUED, TaskState.RETRYING, TaskState.PAUSED}
    changed = move_all(t.tasks, closable, TaskState.CANCELED, finished_at=utcnow())
    for task in t.tasks:
        if task.state == TaskState.RUNNING:  # stops between frames, at its next heartbeat
            task.cancel_requested = True
            changed += 1
    t.note(EventKind.CANCEL_REQUESTED, f"cancel {t.name}{t.why}")
    return changed


def _retry(t: Target) -> int:
    retry_from = {TaskState.DEAD, TaskState.CANCELED}
    if t.whole_job:
        t.job.cancel_requested = False
        t.job.pause_requested = False
    else:
        retry_from = {TaskState.DEAD}
    changed = move_all(
        t.tasks, retry_from, TaskState.WAITING, attempts=0, token=None, queue=None, error=None,
        failure=None, lighter=0, cancel_requested=False, finished_at=None, not_before=None,
    )  # fmt: skip
    if changed:
        t.job.error = None
        t.job.finished_at = None
        # later stages canceled because of the dead task must come back too
        later = t.s.scalars(select(TaskRow).where(TaskRow.job_id == t.job.id, TaskRow.state == TaskState.CANCELED))
        changed += move_all(list(later), {TaskState.CANCELED}, TaskState.WAITING, finished_at=None)
    # A retry is a fresh start on every host: a block-list left in place can leave the job with
    # nowhere to run (the only host blocked) and its tasks waiting forever.
    blocked = list(t.s.scalars(select(BlockRow).where(BlockRow.job_id == t.job.id)))
    cleared = [row.host for row in blocked if row.blocked]
    for row in blocked:
        t.s.delete(row)
    unblocked = f"; block-list cleared ({', '.join(cleared)})" if cleared else ""
    t.note(EventKind.RETRY, f"retry {changed} task(s) of {t.name}{t.why}{unblocked}")
    return changed


ACTIONS: dict[ControlAction, Callable[[Target], int]] = {
    ControlAction.PRIORITY: _priority,
    ControlAction.PAUSE: _pause,
    ControlAction.RESUME: _resume,
    ControlAction.CANCEL: _cancel,
    ControlAction.RETRY: _retry,
}


class TaskControls:
    db: Database

    def blocklist(self, job_id: str) -> list[HostBlock]:
        with self.db.session() as s:
            rows = s.scalars(select(BlockRow).where(BlockRow.job_id == job_id).order_by(BlockRow.host))
            return [HostBlock(host=r.host, failures=r.failures, blocked=r.blocked) for r in rows]

    def clear_blocklist(self, job_id: str, actor: str, reason: str | None = None) -> list[str]:
        """Forget every host's failures on the job (a fixed node may take its tasks again);
        returns the hosts that were blocked. Recorded in the job's events."""
        with self.db.session() as s:
            lock_job(s, job_id)
            rows = list(s.scalars(select(BlockRow).where(BlockRow.job_id == job_id)))
            blocked = sorted(r.host for r in rows if r.blocked)
            for row in rows:
                s.delete(row)
            if rows:
                why = f": {reason}" if reason else ""
                hosts = ", ".join(blocked) or "none blocked yet"
                s.add(new_event(job_id, EventKind.UNBLOCKED, actor, f"block-list cleared ({hosts}){why}"))
            return blocked

    def control(
        self,
        job_id: str,
        action: ControlAction,
        actor: str,
        *,
        reason: str | None = None,
        priority: int | None = None,
        stage: StageName | None = None,
        task_id: int | None = None,
    ) -> tuple[ControlResult, bool]:
        """The result, and whether this control closed the job (the outbox then owes its webhook)."""
        name = f"{job_id}/{stage}" if stage else (f"task {task_id}" if task_id is not None else job_id)
        with self.db.session() as s:
            job = lock_job(s, job_id)
            query = select(TaskRow).where(TaskRow.job_id == job_id)
            if stage is not None:
                query = query.where(TaskRow.stage == stage)
            if task_id is not None:
                query = query.where(TaskRow.id == task_id)
            tasks = list(s.scalars(query.order_by(TaskRow.position, TaskRow.index)))
            target = Target(
                s, job, tasks, stage is None and task_id is None, name, actor, f": {reason}" if reason else "", priority
            )
            changed = ACTIONS[action](target)
            closed = refresh_job(s, job, actor)
            result = ControlResult(
                target=name,
                action=action,
                ok=True,
                tasks_changed=changed,
                state=str(closed.job_state or job.state),
                message=f"{action} {name}: {changed} task(s) changed",
            )
            return result, closed.job_closed
