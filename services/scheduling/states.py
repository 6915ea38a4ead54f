"""The state rules, in one place: which task changes are allowed, which task waits for which,
a stage's state and progress from its tasks, and a job's state from its tasks and flags.

Every change of a task's state goes through :func:`check_transition`, so a transition not listed
here is a bug, not a race. The store applies these rules; it does not restate them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from schemas import JobState, StageState
from schemas.task import TaskKind, TaskState

TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.WAITING: frozenset({TaskState.QUEUED, TaskState.PAUSED, TaskState.CANCELED}),
    # queued → waiting: the message was lost (a Redis crash); the reconciler sends it again
    TaskState.QUEUED: frozenset({TaskState.RUNNING, TaskState.WAITING, TaskState.PAUSED, TaskState.CANCELED}),
    # running → waiting: the worker shut down gracefully or lost infrastructure (not counted)
    TaskState.RUNNING: frozenset(
        {TaskState.SUCCEEDED, TaskState.RETRYING, TaskState.DEAD, TaskState.CANCELED, TaskState.WAITING}
    ),
    TaskState.RETRYING: frozenset({TaskState.QUEUED, TaskState.PAUSED, TaskState.CANCELED}),
    TaskState.PAUSED: frozenset({TaskState.WAITING, TaskState.CANCELED}),
    TaskState.DEAD: frozenset({TaskState.WAITING}),  # an operator's retry
    TaskState.CANCELED: frozenset({TaskState.WAITING}),  # retrying a failed or canceled job
    TaskState.SUCCEEDED: frozenset(),
}


class IllegalTransition(ValueError):
    pass


def check_transition(current: TaskState, new: TaskState) -> None:
    if new not in TASK_TRANSITIONS[current]:
        raise IllegalTransition(f"a task cannot go from {current} to {new}")


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


# --- which task waits for which ------------------------------------------------------------------


def dependency_rank(position: Any, finalise: Any) -> Any:
    """A task waits for every task of its job with a lower rank: all tasks of earlier stages, and
    (for a stage's finalise task) that stage's frame tasks. ``finalise`` is 1 or 0.

    Written with ``*`` and ``+`` only, so the same rule runs on ints here and on SQL column
    expressions in the store's dispatch query."""
    return position * 2 + finalise


def rank_of(position: int, kind: TaskKind) -> int:
    return int(dependency_rank(position, int(kind == TaskKind.FINALISE)))


def waits_for(task_rank: int, other_rank: int) -> bool:
    return other_rank < task_rank


# --- stages ----------------------------------------------------------------------------------------


def frames_done_share(state: TaskState, reported: int, frames: int) -> int:
    """A task's share of its stage's progress: all of it once succeeded, else what it reported."""
    return frames if state == TaskState.SUCCEEDED else min(reported, frames)


def derive_stage_state(states: Counter[TaskState], frames_done: int) -> StageState:
    """A stage's state from its tasks' states (frame and finalise tasks alike)."""
    if states[TaskState.SUCCEEDED] == sum(states.values()):
        return StageState.SUCCEEDED
    if states[TaskState.DEAD]:
        return StageState.FAILED
    if states[TaskState.RUNNING]:
        return StageState.RUNNING
    if states[TaskState.CANCELED] and not any(state.is_open for state in states if states[state]):
        return StageState.CANCELED
    return StageState.RUNNING if frames_done else StageState.WAITING
