"""The worker's side of a task: claim an attempt, report progress, succeed, fail (the retry policy
and the block-list), hand back, or stop on a cancel."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from schemas import EventKind, JobState
from schemas.task import FailureClass, TaskState
from services.scheduling.retry import RetryPolicy, after_failure
from services.store.db import Database, rows_changed
from services.store.job_refresh import refresh_job, stage_progress, stop_others
from services.store.tables import BlockRow, JobRow, TaskFailureRow, TaskRow, utcnow
from services.store.task_rows import Claimed, Closed, label, lock_job, locked_task, move, new_event, task_status


class TaskAttempts:
    db: Database
    retry: RetryPolicy
    blocklist_after: int

    def claim(self, task_id: int, token: str, worker: str, host: str) -> Claimed:
        """queued → running for the message that carries the current token (the attempt guard:
        a duplicate or stale message finds another token, or the task no longer queued)."""
        with self.db.session() as s:
            task = s.get(TaskRow, task_id)
            if task is None:
                return Claimed(False, reason="no such task")
            job = lock_job(s, task.job_id)
            s.refresh(task)
            if task.token != token or task.state != TaskState.QUEUED:
                return Claimed(False, reason=f"stale message (task is {task.state})")
            if job.cancel_requested or task.cancel_requested:
                move(task, TaskState.CANCELED, finished_at=utcnow())
                refresh_job(s, job, worker)
                return Claimed(False, reason="canceled")
            if job.pause_requested:
                move(task, TaskState.PAUSED)
                refresh_job(s, job, worker)
                return Claimed(False, reason="paused")
            if s.scalar(select(BlockRow.blocked).where(BlockRow.job_id == job.id, BlockRow.host == host)):
                move(task, TaskState.WAITING, token=None, queue=None)
                s.add(new_event(job.id, EventKind.REQUEUED, worker, f"{label(task)}: {host} is block-listed", task.id))
                return Claimed(False, reason="block-listed")
            now = utcnow()
            move(
                task,
                TaskState.RUNNING,
                attempts=task.attempts + 1,  # counted at start: a crash mid-task still counts
                worker=worker,
                started_at=now,
                heartbeat_at=now,
                finished_at=None,
                frames_done=0,
                error=None,
                failure=None,
            )
            if job.started_at is None:
                job.started_at = now
            job.attempts = max(job.attempts, task.attempts)
            if task.attempts > 1:
                s.add(
                    new_event(
                        job.id,
                        EventKind.RETRY,
                        worker,
                        f"{label(task)} attempt {task.attempts} of {task.max_attempts} on {worker}",
                        task.id,
                    )
                )
            s.add(new_event(job.id, EventKind.STARTED, worker, f"{label(task)} started on {worker}", task.id))
            refresh_job(s, job, worker)
            return Claimed(True, task_status(task))

    def heartbeat(self, task_id: int, frames_done: int, peak_gpu_mb: int | None) -> bool:
        """Record progress; True when the task should stop (its job or the task was canceled)."""
        with self.db.session() as s:
            values: dict[str, Any] = {"heartbeat_at": utcnow(), "frames_done": frames_done}
            if peak_gpu_mb is not None:
                values["peak_gpu_mb"] = peak_gpu_mb
            moved = rows_changed(
                s, update(TaskRow).where(TaskRow.id == task_id, TaskRow.state == TaskState.RUNNING).values(**values)
            )
            if moved:
                stage_progress(s, task_id)
            row = s.execute(
                select(TaskRow.cancel_requested, JobRow.cancel_requested)
                .join(JobRow, JobRow.id == TaskRow.job_id)
                .where(TaskRow.id == task_id)
            ).one_or_none()
            return bool(row and (row[0] or row[1]))

    def succeed(self, task_id: int, token: str, worker: str, seconds: float, peak_gpu_mb: int | None) -> Closed:
        with self.db.session() as s:
            task, job = locked_task(s, task_id)
            if task.token != token or task.state != TaskState.RUNNING:
                return Closed(None, JobState(job.state), message="no longer this attempt's task")
            move(
                task,
                TaskState.SUCCEEDED,
                finished_at=utcnow(),
                seconds=round(seconds, 3),
                frames_done=task.end_pos - task.first_pos,
                peak_gpu_mb=peak_gpu_mb if peak_gpu_mb is not None else task.peak_gpu_mb,
            )
            return refresh_job(s, job, worker, TaskState.SUCCEEDED)

    def fail(
        self, task_id: int, token: str | None, worker: str, host: str, failure: FailureClass, error: str
    ) -> Closed:
        """Apply the retry policy to a failed attempt (``token`` None: the reconciler, any attempt)."""
        with self.db.session() as s:
            task, job = locked_task(s, task_id)
            if task.state != TaskState.RUNNING or (token is not None and task.token != token):
                return Closed(None, JobState(job.state), message="no longer this attempt's task")
            return self._fail(s, task, job, worker, host, failure, error)

    def _fail(
        self, s: Session, task: TaskRow, job: JobRow, worker: str, host: str, failure: FailureClass, error: str
    ) -> Closed:
        if job.cancel_requested or task.cancel_requested:
            move(task, TaskState.CANCELED, finished_at=utcnow(), error=error)
            return refresh_job(s, job, worker, TaskState.CANCELED)
        outcome = after_failure(failure, task.attempts, task.max_attempts, self.retry)
        now = utcnow()
        values: dict[str, Any] = {"error": error, "failure": failure, "token": None, "finished_at": now}
        if not outcome.counted:
            values["attempts"] = max(0, task.attempts - 1)
        if outcome.delay_s:
            values["not_before"] = now + timedelta(seconds=outcome.delay_s)
        if outcome.lighter:
            values["lighter"] = task.lighter + 1
        move(task, outcome.state, **values)
        s.add(TaskFailureRow(task_id=task.id, job_id=job.id, stage=task.stage, failure=failure, host=host, at=now))
        kind = {TaskState.DEAD: EventKind.TASK_DEAD, TaskState.WAITING: EventKind.REQUEUED}.get(
            outcome.state, EventKind.TASK_FAILED
        )
        when = f" in {outcome.delay_s:.1f}s" if outcome.delay_s else ""
        lighter = " (lighter settings: smaller batch, state offload)" if outcome.lighter else ""
        s.add(
            new_event(job.id, kind, worker, f"{label(task)} {failure}: {error} — {outcome.why}{when}{lighter}", task.id)
        )
        if failure == FailureClass.RETRYABLE and host:  # OOM is the settings' fault, fatal the input's
            self._count_against(s, job.id, host, worker)
        if outcome.state == TaskState.DEAD:
            job.error = f"task {label(task)} is dead ({outcome.why}): {error}"
            stop_others(s, job.id, task.id, f"canceled: task {label(task)} is dead")
        return refresh_job(s, job, worker, outcome.state)

    def _count_against(self, s: Session, job_id: str, host: str, worker: str) -> None:
        row = s.get(BlockRow, (job_id, host))
        if row is None:
            row = BlockRow(job_id=job_id, host=host, failures=0, blocked=False)
            s.add(row)
        row.failures += 1
        if not row.blocked and row.failures >= self.blocklist_after:
            row.blocked = True
            s.add(
                new_event(
                    job_id,
                    EventKind.BLOCKLISTED,
                    worker,
                    f"{host} failed {row.failures} of this job's tasks; it gets no more of them",
                )
            )

    def release(self, task_id: int, token: str, worker: str, why: str) -> Closed:
        """Give a running task back without counting the attempt (graceful shutdown)."""
        return self.fail(task_id, token, worker, "", FailureClass.INFRASTRUCTURE, why)

    def canceled(self, task_id: int, token: str, worker: str) -> Closed:
        with self.db.session() as s:
            task, job = locked_task(s, task_id)
            if task.token != token or task.state != TaskState.RUNNING:
                return Closed(None, JobState(job.state))
            move(task, TaskState.CANCELED, finished_at=utcnow())
            return refresh_job(s, job, worker, TaskState.CANCELED)
