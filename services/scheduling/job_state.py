"""A job's state follows from its tasks and its pause/cancel flags; this is the one rule."""

from __future__ import annotations

from collections.abc import Iterable

from schemas import JobState
from schemas.task import TaskState

JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset(
        {JobState.RUNNING, JobState.PAUSING, JobState.PAUSED, JobState.CANCELING, JobState.CANCELED, JobState.FAILED}
    ),
    JobState.RUNNING: frozenset(
        {
            JobState.QUEUED,  # its only running task was requeued
            JobState.PAUSING,
            JobState.PAUSED,
            JobState.CANCELING,
            JobState.SUCCEEDED,
            JobState.FAILED,
            JobState.CANCELED,
        }
    ),
    JobState.PAUSING: frozenset(
        {
            JobState.PAUSED,
            JobState.RUNNING,
            JobState.QUEUED,
            JobState.CANCELING,
            JobState.CANCELED,
            JobState.FAILED,
            JobState.SUCCEEDED,
        }
    ),
    JobState.PAUSED: frozenset({JobState.QUEUED, JobState.RUNNING, JobState.CANCELING, JobState.CANCELED}),
    # canceling → open again: the dead task that was failing the job was retried
    JobState.CANCELING: frozenset(
        {JobState.CANCELED, JobState.FAILED, JobState.SUCCEEDED, JobState.RUNNING, JobState.QUEUED, JobState.PAUSING}
    ),
    # an operator's retry re-opens a failed or canceled job
    JobState.FAILED: frozenset({JobState.QUEUED, JobState.RUNNING}),
    JobState.CANCELED: frozenset({JobState.QUEUED, JobState.RUNNING}),
    JobState.SUCCEEDED: frozenset(),
}


def derive_job_state(
    tasks: Iterable[TaskState], *, cancel_requested: bool, pause_requested: bool, started: bool
) -> JobState:
    """``started``: some task of the job has run (so an idle job is 'running', not 'queued')."""
    states = list(tasks)
    open_states = [t for t in states if t.is_open]
    if not open_states:
        if TaskState.DEAD in states:
            return JobState.FAILED
        if TaskState.CANCELED in states or not states:
            return JobState.CANCELED
        return JobState.SUCCEEDED
    running = TaskState.RUNNING in open_states
    if cancel_requested:
        return JobState.CANCELING
    if TaskState.DEAD in states:
        return JobState.CANCELING  # a dead task fails the job; the rest are being stopped
    if pause_requested:
        return JobState.PAUSING if running else JobState.PAUSED
    if running or started:
        return JobState.RUNNING
    return JobState.QUEUED


def job_transition_allowed(current: JobState, new: JobState) -> bool:
    return current == new or new in JOB_TRANSITIONS[current]
