"""Task rows: mapping to the contract, locking a job's row, moving tasks through the state rules,
and the audit-trail rows every change writes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas import EventKind, JobState, StageName
from schemas.task import FailureClass, TaskKind, TaskState, TaskStatus
from services.scheduling.plan import TaskPlan
from services.scheduling.states import check_transition
from services.store.tables import EventRow, JobRow, TaskRow, utcnow


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


def new_tasks(job_id: str, plans: Iterable[TaskPlan], max_attempts: int) -> list[dict[str, Any]]:
    """A new job's task rows as column values, for one multi-row INSERT (a submit makes a dozen or
    so; building them as ORM objects cost more than the rest of the submission)."""
    return [
        {
            "job_id": job_id,
            "stage": str(p.stage),
            "position": p.position,
            "index": p.index,
            "kind": str(p.kind),
            "first_frame": p.first_frame,
            "last_frame": p.last_frame,
            "first_pos": p.first_pos,
            "end_pos": p.end_pos,
            "state": str(TaskState.WAITING),
            "attempts": 0,
            "max_attempts": max_attempts,
            "lighter": 0,
            "cancel_requested": False,
            "frames_done": 0,
        }
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


def lock_job(s: Session, job_id: str) -> JobRow:
    job = s.scalar(select(JobRow).where(JobRow.id == job_id).with_for_update())
    if job is None:
        raise LookupError(f"job {job_id} is not in the store")
    return job


def locked_task(s: Session, task_id: int) -> tuple[TaskRow, JobRow]:
    job_id = s.scalar(select(TaskRow.job_id).where(TaskRow.id == task_id))
    if job_id is None:
        raise LookupError(f"task {task_id} is not in the store")
    job = lock_job(s, job_id)
    task = s.get(TaskRow, task_id, populate_existing=True)
    assert task is not None
    return task, job


def move(task: TaskRow, state: TaskState, **values: Any) -> None:
    check_transition(TaskState(task.state), state)
    task.state = state
    for key, value in values.items():
        setattr(task, key, value)


def move_all(tasks: list[TaskRow], from_states: set[TaskState], to: TaskState, **values: Any) -> int:
    moved = 0
    for task in tasks:
        if TaskState(task.state) in from_states:
            move(task, to, **values)
            moved += 1
    return moved


def label(task: TaskRow) -> str:
    return f"{task.stage}#{task.index} ({task.first_frame}-{task.last_frame})"


def new_event(job_id: str, kind: EventKind, actor: str, message: str, task_id: int | None = None) -> EventRow:
    return EventRow(job_id=job_id, at=utcnow(), kind=kind, actor=actor, message=message, task_id=task_id)
