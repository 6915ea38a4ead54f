"""Task records: dispatch, claim, progress, success, failure, controls and reconciliation.

Every change to a job's tasks locks the job row first (``SELECT … FOR UPDATE``; SQLite takes its
write lock at BEGIN), then moves tasks through :func:`check_transition` and re-derives the job's
state, so two workers finishing the last two chunks at once cannot both miss the end.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from schemas import STAGE_ORDER, EventKind, JobState, StageName, StageState
from schemas.task import (
    ControlAction,
    ControlResult,
    FailureClass,
    TaskKind,
    TaskLog,
    TaskLogLine,
    TaskState,
    TaskStatus,
    check_transition,
)
from services.scheduling.dispatch import Candidate
from services.scheduling.job_state import derive_job_state, job_transition_allowed
from services.scheduling.plan import TaskPlan, is_gpu_stage
from services.scheduling.retry import RetryPolicy, after_failure
from services.store.db import Database
from services.store.tables import BlockRow, EventRow, JobRow, StageRow, TaskLogRow, TaskRow, utcnow

OPEN = [s.value for s in TaskState if s.is_open]


@dataclass(frozen=True)
class Claimed:
    """The outcome of a worker's claim: run it, or why not."""

    run: bool
    task: TaskStatus | None = None
    reason: str = ""


@dataclass(frozen=True)
class Closed:
    """A task state change; ``job_closed`` is set for the one change that finished the job."""

    task_state: TaskState | None
    job_state: JobState | None
    job_closed: bool = False
    message: str = ""


def new_tasks(job_id: str, plans: Iterable[TaskPlan], max_attempts: int) -> list[TaskRow]:
    return [
        TaskRow(
            job_id=job_id,
            stage=p.stage,
            position=p.position,
            index=p.index,
            kind=p.kind,
            first_frame=p.first_frame,
            last_frame=p.last_frame,
            first_pos=p.first_pos,
            end_pos=p.end_pos,
            state=TaskState.WAITING,
            attempts=0,
            max_attempts=max_attempts,
            lighter=0,
            cancel_requested=False,
            frames_done=0,
        )
        for p in plans
    ]


def task_status(row: TaskRow) -> TaskStatus:
    return TaskStatus(
        id=row.id,
        job_id=row.job_id,
        stage=StageName(row.stage),
        index=row.index,
        kind=TaskKind(row.kind),
        first_frame=row.first_frame,
        last_frame=row.last_frame,
        state=TaskState(row.state),
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        lighter=row.lighter,
        worker=row.worker,
        frames_done=row.frames_done,
        frames_total=row.end_pos - row.first_pos,
        queue=row.queue,
        error=row.error,
        failure=FailureClass(row.failure) if row.failure else None,
        peak_gpu_mb=row.peak_gpu_mb,
        seconds=row.seconds,
        queued_at=row.queued_at,
        started_at=row.started_at,
        heartbeat_at=row.heartbeat_at,
        finished_at=row.finished_at,
        not_before=row.not_before,
    )


class TaskStore:
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

    # --- dispatch ---------------------------------------------------------------------------

    def candidates(self, limit: int = 200) -> list[Candidate]:
        """Tasks that may be sent now, highest priority first, then oldest job, then pipeline order."""
        now = utcnow()
        earlier = aliased(TaskRow)
        blocking = exists().where(
            earlier.job_id == TaskRow.job_id,
            earlier.state != TaskState.SUCCEEDED,
            or_(
                earlier.position < TaskRow.position,
                and_(
                    earlier.position == TaskRow.position,
                    TaskRow.kind == TaskKind.FINALISE,
                    earlier.kind == TaskKind.FRAMES,
                ),
            ),
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
            return {show: n for show, n in rows}

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
            done = s.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id, TaskRow.state.in_([TaskState.WAITING, TaskState.RETRYING]))
                .values(state=TaskState.QUEUED, queue=queue, token=token, queued_at=utcnow(), not_before=None)
            ).rowcount
        return token if done else None

    def unqueue(self, task_id: int, token: str) -> None:
        """The message could not be sent: the task waits for the next dispatch."""
        with self.db.session() as s:
            s.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id, TaskRow.token == token, TaskRow.state == TaskState.QUEUED)
                .values(state=TaskState.WAITING, token=None, queue=None, queued_at=None)
            )

    # --- the worker's side ------------------------------------------------------------------

    def claim(self, task_id: int, token: str, worker: str, host: str) -> Claimed:
        """queued → running for the message that carries the current token (the attempt guard:
        a duplicate or stale message finds another token, or the task no longer queued)."""
        with self.db.session() as s:
            task = s.get(TaskRow, task_id)
            if task is None:
                return Claimed(False, reason="no such task")
            job = _lock_job(s, task.job_id)
            s.refresh(task)
            if task.token != token or task.state != TaskState.QUEUED:
                return Claimed(False, reason=f"stale message (task is {task.state})")
            if job.cancel_requested or task.cancel_requested:
                _move(task, TaskState.CANCELED, finished_at=utcnow())
                self._refresh(s, job, worker)
                return Claimed(False, reason="canceled")
            if job.pause_requested:
                _move(task, TaskState.PAUSED)
                self._refresh(s, job, worker)
                return Claimed(False, reason="paused")
            if s.scalar(select(BlockRow.blocked).where(BlockRow.job_id == job.id, BlockRow.host == host)):
                _move(task, TaskState.WAITING, token=None, queue=None)
                s.add(_event(job.id, EventKind.REQUEUED, worker, f"{_label(task)}: {host} is block-listed", task.id))
                return Claimed(False, reason="block-listed")
            now = utcnow()
            _move(
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
                    _event(
                        job.id,
                        EventKind.RETRY,
                        worker,
                        f"{_label(task)} attempt {task.attempts} of {task.max_attempts} on {worker}",
                        task.id,
                    )
                )
            s.add(_event(job.id, EventKind.STARTED, worker, f"{_label(task)} started on {worker}", task.id))
            self._refresh(s, job, worker)
            return Claimed(True, task_status(task))

    def heartbeat(self, task_id: int, frames_done: int, peak_gpu_mb: int | None) -> bool:
        """Record progress; True when the task should stop (its job or the task was canceled)."""
        with self.db.session() as s:
            values: dict[str, Any] = {"heartbeat_at": utcnow(), "frames_done": frames_done}
            if peak_gpu_mb is not None:
                values["peak_gpu_mb"] = peak_gpu_mb
            moved = s.execute(
                update(TaskRow).where(TaskRow.id == task_id, TaskRow.state == TaskState.RUNNING).values(**values)
            ).rowcount
            if moved:
                _stage_progress(s, task_id)
            row = s.execute(
                select(TaskRow.cancel_requested, JobRow.cancel_requested)
                .join(JobRow, JobRow.id == TaskRow.job_id)
                .where(TaskRow.id == task_id)
            ).one_or_none()
            return bool(row and (row[0] or row[1]))

    def succeed(self, task_id: int, token: str, worker: str, seconds: float, peak_gpu_mb: int | None) -> Closed:
        with self.db.session() as s:
            task, job = _locked_task(s, task_id)
            if task.token != token or task.state != TaskState.RUNNING:
                return Closed(None, JobState(job.state), message="no longer this attempt's task")
            _move(
                task,
                TaskState.SUCCEEDED,
                finished_at=utcnow(),
                seconds=round(seconds, 3),
                frames_done=task.end_pos - task.first_pos,
                peak_gpu_mb=peak_gpu_mb if peak_gpu_mb is not None else task.peak_gpu_mb,
            )
            return self._refresh(s, job, worker, TaskState.SUCCEEDED)

    def fail(
        self, task_id: int, token: str | None, worker: str, host: str, failure: FailureClass, error: str
    ) -> Closed:
        """Apply the retry policy to a failed attempt (``token`` None: the reconciler, any attempt)."""
        with self.db.session() as s:
            task, job = _locked_task(s, task_id)
            if task.state != TaskState.RUNNING or (token is not None and task.token != token):
                return Closed(None, JobState(job.state), message="no longer this attempt's task")
            return self._fail(s, task, job, worker, host, failure, error)

    def _fail(
        self, s: Session, task: TaskRow, job: JobRow, worker: str, host: str, failure: FailureClass, error: str
    ) -> Closed:
        if job.cancel_requested or task.cancel_requested:
            _move(task, TaskState.CANCELED, finished_at=utcnow(), error=error)
            return self._refresh(s, job, worker, TaskState.CANCELED)
        outcome = after_failure(failure, task.attempts, task.max_attempts, self.retry)
        now = utcnow()
        values: dict[str, Any] = {"error": error, "failure": failure, "token": None, "finished_at": now}
        if not outcome.counted:
            values["attempts"] = max(0, task.attempts - 1)
        if outcome.delay_s:
            values["not_before"] = now + timedelta(seconds=outcome.delay_s)
        if outcome.lighter:
            values["lighter"] = task.lighter + 1
        _move(task, outcome.state, **values)
        kind = {TaskState.DEAD: EventKind.TASK_DEAD, TaskState.WAITING: EventKind.REQUEUED}.get(
            outcome.state, EventKind.TASK_FAILED
        )
        when = f" in {outcome.delay_s:.1f}s" if outcome.delay_s else ""
        lighter = " (lighter settings: smaller batch, state offload)" if outcome.lighter else ""
        s.add(
            _event(job.id, kind, worker, f"{_label(task)} {failure}: {error} — {outcome.why}{when}{lighter}", task.id)
        )
        if failure == FailureClass.RETRYABLE and host:  # OOM is the settings' fault, fatal the input's
            self._count_against(s, job.id, host, worker)
        if outcome.state == TaskState.DEAD:
            job.error = f"task {_label(task)} is dead ({outcome.why}): {error}"
            _stop_others(s, job.id, task.id, f"canceled: task {_label(task)} is dead")
        return self._refresh(s, job, worker, outcome.state)

    def _count_against(self, s: Session, job_id: str, host: str, worker: str) -> None:
        row = s.get(BlockRow, (job_id, host))
        if row is None:
            row = BlockRow(job_id=job_id, host=host, failures=0, blocked=False)
            s.add(row)
        row.failures += 1
        if not row.blocked and row.failures >= self.blocklist_after:
            row.blocked = True
            s.add(
                _event(
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
            task, job = _locked_task(s, task_id)
            if task.token != token or task.state != TaskState.RUNNING:
                return Closed(None, JobState(job.state))
            _move(task, TaskState.CANCELED, finished_at=utcnow())
            return self._refresh(s, job, worker, TaskState.CANCELED)

    # --- the reconciler ---------------------------------------------------------------------

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
                job = _lock_job(s, row.job_id)
                s.refresh(row)
                if row.state != TaskState.QUEUED:
                    continue
                _move(row, TaskState.WAITING, token=None, queue=None, queued_at=None)
                s.add(
                    _event(
                        job.id,
                        EventKind.REQUEUED,
                        actor,
                        f"{_label(row)}: its message is gone from '{queue}' (broker restart?); sending it again",
                        row.id,
                    )
                )
            return len(lost)

    # --- controls ---------------------------------------------------------------------------

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
        """The result, and whether this control closed the job (its webhook is then the caller's)."""
        target = f"{job_id}/{stage}" if stage else (f"task {task_id}" if task_id is not None else job_id)
        why = f": {reason}" if reason else ""
        with self.db.session() as s:
            job = _lock_job(s, job_id)
            query = select(TaskRow).where(TaskRow.job_id == job_id)
            if stage is not None:
                query = query.where(TaskRow.stage == stage)
            if task_id is not None:
                query = query.where(TaskRow.id == task_id)
            tasks = list(s.scalars(query.order_by(TaskRow.position, TaskRow.index)))
            whole_job = stage is None and task_id is None
            changed = 0
            if action == ControlAction.PRIORITY:
                old, job.priority = job.priority, int(priority if priority is not None else job.priority)
                s.add(_event(job_id, EventKind.PRIORITY, actor, f"priority {old} → {job.priority}{why}"))
            elif action == ControlAction.PAUSE:
                if whole_job:
                    job.pause_requested = True
                changed = _move_all(tasks, {TaskState.WAITING, TaskState.QUEUED, TaskState.RETRYING}, TaskState.PAUSED)
                s.add(_event(job_id, EventKind.PAUSE_REQUESTED, actor, f"pause {target}{why}"))
            elif action == ControlAction.RESUME:
                if whole_job:
                    job.pause_requested = False
                changed = _move_all(tasks, {TaskState.PAUSED}, TaskState.WAITING, token=None, queue=None)
                s.add(_event(job_id, EventKind.RESUMED, actor, f"resume {target}{why}"))
            elif action == ControlAction.CANCEL:
                if whole_job:
                    job.cancel_requested = True
                    job.error = f"canceled by {actor}{why}"
                closable = {TaskState.WAITING, TaskState.QUEUED, TaskState.RETRYING, TaskState.PAUSED}
                changed = _move_all(tasks, closable, TaskState.CANCELED, finished_at=utcnow())
                for task in tasks:
                    if task.state == TaskState.RUNNING:
                        task.cancel_requested = True
                        changed += 1
                s.add(_event(job_id, EventKind.CANCEL_REQUESTED, actor, f"cancel {target}{why}"))
            elif action == ControlAction.RETRY:
                retry_from = {TaskState.DEAD, TaskState.CANCELED}
                if whole_job:
                    job.cancel_requested = False
                    job.pause_requested = False
                else:
                    retry_from = {TaskState.DEAD}
                changed = _move_all(
                    tasks, retry_from, TaskState.WAITING, attempts=0, token=None, queue=None, error=None,
                    failure=None, lighter=0, cancel_requested=False, finished_at=None, not_before=None,
                )  # fmt: skip
                if changed:
                    job.error = None
                    job.finished_at = None
                    # later stages canceled because of the dead task must come back too
                    later = s.scalars(
                        select(TaskRow).where(TaskRow.job_id == job_id, TaskRow.state == TaskState.CANCELED)
                    )
                    changed += _move_all(list(later), {TaskState.CANCELED}, TaskState.WAITING, finished_at=None)
                s.add(_event(job_id, EventKind.RETRY, actor, f"retry {changed} task(s) of {target}{why}"))
            closed = self._refresh(s, job, actor)
            result = ControlResult(
                target=target,
                action=action,
                ok=True,
                tasks_changed=changed,
                state=str(closed.job_state or job.state),
                message=f"{action} {target}: {changed} task(s) changed",
            )
            return result, closed.job_closed

    # --- logs -------------------------------------------------------------------------------

    def append_log(self, task_id: int, attempt: int, lines: Iterable[tuple[datetime, str, str]]) -> None:
        rows = [TaskLogRow(task_id=task_id, attempt=attempt, at=at, level=lvl, message=msg) for at, lvl, msg in lines]
        if rows:
            with self.db.session() as s:
                s.add_all(rows)

    def log_tail(self, task_id: int, lines: int) -> TaskLog:
        with self.db.session() as s:
            total = s.scalar(select(func.count()).where(TaskLogRow.task_id == task_id)) or 0
            rows = s.scalars(
                select(TaskLogRow).where(TaskLogRow.task_id == task_id).order_by(TaskLogRow.id.desc()).limit(lines)
            ).all()
            return TaskLog(
                task_id=task_id,
                total=total,
                lines=[TaskLogLine(at=r.at, attempt=r.attempt, level=r.level, message=r.message) for r in rows[::-1]],
            )

    # --- the job follows its tasks ----------------------------------------------------------

    def _refresh(self, s: Session, job: JobRow, actor: str, task_state: TaskState | None = None) -> Closed:
        s.flush()
        tasks = list(s.scalars(select(TaskRow).where(TaskRow.job_id == job.id)))
        _cancel_downstream(tasks)
        _refresh_stages(s, job.id, tasks)
        old = JobState(job.state)
        started = any(t.attempts > 0 or t.state == TaskState.SUCCEEDED for t in tasks)
        new = derive_job_state(
            (TaskState(t.state) for t in tasks),
            cancel_requested=job.cancel_requested,
            pause_requested=job.pause_requested,
            started=started,
        )
        if new == old:
            return Closed(task_state, new)
        if not job_transition_allowed(old, new):
            raise RuntimeError(f"job {job.id}: illegal transition {old} → {new}")
        job.state = new
        closed = new.is_final and not old.is_final
        if closed:
            job.finished_at = utcnow()
            kind = {JobState.SUCCEEDED: EventKind.SUCCEEDED, JobState.CANCELED: EventKind.CANCELED}.get(
                new, EventKind.FAILED
            )
            s.add(_event(job.id, kind, actor, job.error or str(new)))
        elif old.is_final:
            job.finished_at = None
        if new == JobState.PAUSED:
            s.add(_event(job.id, EventKind.PAUSED, actor, "paused: no task running"))
        return Closed(task_state, new, job_closed=closed)


def _lock_job(s: Session, job_id: str) -> JobRow:
    job = s.scalar(select(JobRow).where(JobRow.id == job_id).with_for_update())
    if job is None:
        raise LookupError(f"job {job_id} is not in the store")
    return job


def _locked_task(s: Session, task_id: int) -> tuple[TaskRow, JobRow]:
    job_id = s.scalar(select(TaskRow.job_id).where(TaskRow.id == task_id))
    if job_id is None:
        raise LookupError(f"task {task_id} is not in the store")
    job = _lock_job(s, job_id)
    task = s.get(TaskRow, task_id, populate_existing=True)
    assert task is not None
    return task, job


def _move(task: TaskRow, state: TaskState, **values: Any) -> None:
    check_transition(TaskState(task.state), state)
    task.state = state
    for key, value in values.items():
        setattr(task, key, value)


def _move_all(tasks: list[TaskRow], from_states: set[TaskState], to: TaskState, **values: Any) -> int:
    moved = 0
    for task in tasks:
        if TaskState(task.state) in from_states:
            _move(task, to, **values)
            moved += 1
    return moved


def _stop_others(s: Session, job_id: str, except_id: int, why: str) -> None:
    for task in s.scalars(select(TaskRow).where(TaskRow.job_id == job_id, TaskRow.id != except_id)):
        state = TaskState(task.state)
        if state == TaskState.RUNNING:
            task.cancel_requested = True
        elif state.is_open:
            _move(task, TaskState.CANCELED, finished_at=utcnow(), error=why)


def _frames_done(state: str, reported: int, frames: int) -> int:
    """A task's share of its stage's progress: all of it once succeeded, else what it reported."""
    return frames if state == TaskState.SUCCEEDED else min(reported, frames)


def _stage_progress(s: Session, task_id: int) -> None:
    """The stage's frames done, from its frame tasks (a heartbeat's share of the stage row)."""
    job_id, stage = s.execute(select(TaskRow.job_id, TaskRow.stage).where(TaskRow.id == task_id)).one()
    rows = s.execute(
        select(TaskRow.state, TaskRow.frames_done, TaskRow.first_pos, TaskRow.end_pos).where(
            TaskRow.job_id == job_id, TaskRow.stage == stage, TaskRow.kind == TaskKind.FRAMES
        )
    ).all()
    done = sum(_frames_done(r.state, r.frames_done, r.end_pos - r.first_pos) for r in rows)
    s.execute(update(StageRow).where(StageRow.job_id == job_id, StageRow.name == stage).values(frames_done=done))


def _cancel_downstream(tasks: list[TaskRow]) -> None:
    """Tasks that can never become ready (an earlier task ended dead or canceled) are canceled."""
    ended = [t for t in tasks if t.state in (TaskState.DEAD, TaskState.CANCELED)]
    if not ended:
        return
    for task in tasks:
        state = TaskState(task.state)
        if state == TaskState.RUNNING or not state.is_open:
            continue
        if any(
            e.position < task.position
            or (e.position == task.position and task.kind == TaskKind.FINALISE and e.kind == TaskKind.FRAMES)
            for e in ended
        ):
            _move(task, TaskState.CANCELED, finished_at=utcnow(), error="an earlier task ended without its output")


def _refresh_stages(s: Session, job_id: str, tasks: list[TaskRow]) -> None:
    """Stage rows summarise their tasks: state, frames done, first start, last finish, seconds."""
    by_stage: dict[str, list[TaskRow]] = {}
    for task in tasks:
        by_stage.setdefault(task.stage, []).append(task)
    for stage in s.scalars(select(StageRow).where(StageRow.job_id == job_id)):
        group = [t for t in by_stage.get(stage.name, []) if t.kind == TaskKind.FRAMES]
        if not group:
            continue
        states = Counter(TaskState(t.state) for t in by_stage[stage.name])
        stage.frames_total = sum(t.end_pos - t.first_pos for t in group)
        stage.frames_done = sum(_frames_done(t.state, t.frames_done, t.end_pos - t.first_pos) for t in group)
        starts = [t.started_at for t in by_stage[stage.name] if t.started_at]
        stage.started_at = min(starts) if starts else None
        if states[TaskState.SUCCEEDED] == sum(states.values()):
            stage.state = StageState.SUCCEEDED
            stage.finished_at = max((t.finished_at for t in by_stage[stage.name] if t.finished_at), default=None)
            stage.seconds = round(sum(t.seconds or 0.0 for t in by_stage[stage.name]), 3)
        elif states[TaskState.DEAD]:
            stage.state = StageState.FAILED
        elif states[TaskState.RUNNING]:
            stage.state = StageState.RUNNING
        elif states[TaskState.CANCELED] and not any(TaskState(t.state).is_open for t in by_stage[stage.name]):
            stage.state = StageState.CANCELED
        else:
            stage.state = StageState.RUNNING if stage.frames_done else StageState.WAITING


def _label(task: TaskRow) -> str:
    return f"{task.stage}#{task.index} ({task.first_frame}-{task.last_frame})"


def _event(job_id: str, kind: EventKind, actor: str, message: str, task_id: int | None = None) -> EventRow:
    return EventRow(job_id=job_id, at=utcnow(), kind=kind, actor=actor, message=message, task_id=task_id)
