"""The job follows its tasks: after every change, its stages and its own state are derived again
(by the rules in ``services.scheduling.states``) inside the same transaction."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from schemas import EventKind, JobState, StageState
from schemas.task import TaskKind, TaskState
from services.scheduling.states import (
    derive_job_state,
    derive_stage_state,
    frames_done_share,
    job_transition_allowed,
    rank_of,
    waits_for,
)
from services.store.outbox import owe_webhook
from services.store.tables import JobRow, StageRow, TaskRow, utcnow
from services.store.task_rows import Closed, move, new_event


def refresh_job(s: Session, job: JobRow, actor: str, task_state: TaskState | None = None) -> Closed:
    s.flush()
    tasks = list(s.scalars(select(TaskRow).where(TaskRow.job_id == job.id)))
    cancel_downstream(tasks)
    refresh_stages(s, job.id, tasks)
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
        owe_webhook(s, job)
        kind = {JobState.SUCCEEDED: EventKind.SUCCEEDED, JobState.CANCELED: EventKind.CANCELED}.get(
            new, EventKind.FAILED
        )
        s.add(new_event(job.id, kind, actor, job.error or str(new)))
    elif old.is_final:
        job.finished_at = None
    if new == JobState.PAUSED:
        s.add(new_event(job.id, EventKind.PAUSED, actor, "paused: no task running"))
    return Closed(task_state, new, job_closed=closed)


def stop_others(s: Session, job_id: str, except_id: int, why: str) -> None:
    for task in s.scalars(select(TaskRow).where(TaskRow.job_id == job_id, TaskRow.id != except_id)):
        state = TaskState(task.state)
        if state == TaskState.RUNNING:
            task.cancel_requested = True
        elif state.is_open:
            move(task, TaskState.CANCELED, finished_at=utcnow(), error=why)


def stage_progress(s: Session, task_id: int) -> None:
    """The stage's frames done, from its frame tasks (a heartbeat's share of the stage row)."""
    job_id, stage = s.execute(select(TaskRow.job_id, TaskRow.stage).where(TaskRow.id == task_id)).one()
    rows = s.execute(
        select(TaskRow.state, TaskRow.frames_done, TaskRow.first_pos, TaskRow.end_pos).where(
            TaskRow.job_id == job_id, TaskRow.stage == stage, TaskRow.kind == TaskKind.FRAMES
        )
    ).all()
    done = sum(frames_done_share(TaskState(r.state), r.frames_done, r.end_pos - r.first_pos) for r in rows)
    s.execute(update(StageRow).where(StageRow.job_id == job_id, StageRow.name == stage).values(frames_done=done))


def cancel_downstream(tasks: list[TaskRow]) -> None:
    """Tasks that can never become ready (an earlier task ended dead or canceled) are canceled."""
    ended = [t for t in tasks if t.state in (TaskState.DEAD, TaskState.CANCELED)]
    if not ended:
        return
    for task in tasks:
        state = TaskState(task.state)
        if state == TaskState.RUNNING or not state.is_open:
            continue
        rank = rank_of(task.position, TaskKind(task.kind))
        if any(waits_for(rank, rank_of(e.position, TaskKind(e.kind))) for e in ended):
            move(task, TaskState.CANCELED, finished_at=utcnow(), error="an earlier task ended without its output")


def refresh_stages(s: Session, job_id: str, tasks: list[TaskRow]) -> None:
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
        stage.frames_done = sum(
            frames_done_share(TaskState(t.state), t.frames_done, t.end_pos - t.first_pos) for t in group
        )
        starts = [t.started_at for t in by_stage[stage.name] if t.started_at]
        stage.started_at = min(starts) if starts else None
        stage.state = derive_stage_state(states, stage.frames_done)
        if stage.state == StageState.SUCCEEDED:
            stage.finished_at = max((t.finished_at for t in by_stage[stage.name] if t.finished_at), default=None)
            stage.seconds = round(sum(t.seconds or 0.0 for t in by_stage[stage.name]), 3)
