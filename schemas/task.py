"""Tasks: a contiguous chunk of one stage's frames, the unit a worker runs and retries.

The states are the farm's contract; which changes between them are allowed is a rule, kept with
the job and stage rules in ``services.scheduling.states``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from schemas.job import StageName


class TaskState(StrEnum):
    WAITING = "waiting"  # not yet sent: earlier stages unfinished, or no free worker
    QUEUED = "queued"  # a message is on the broker
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"  # failed; waits out its backoff, then is sent again
    DEAD = "dead"  # failed past its attempt limit, or fatally
    CANCELED = "canceled"
    PAUSED = "paused"

    @property
    def is_open(self) -> bool:
        return self not in (TaskState.SUCCEEDED, TaskState.DEAD, TaskState.CANCELED)


class TaskKind(StrEnum):
    FRAMES = "frames"  # works on its chunk of frames
    FINALISE = "finalise"  # runs after its stage's frame tasks: review media, manifest


class FailureClass(StrEnum):
    RETRYABLE = "retryable"  # counted; retried with backoff up to the limit
    FATAL = "fatal"  # bad input: retrying cannot help; dead at once
    INFRASTRUCTURE = "infrastructure"  # the farm's fault (shutdown, broker, database): not counted
    OUT_OF_MEMORY = "out_of_memory"  # counted; retried with lighter settings
    WORKER_LOST = "worker_lost"  # its worker died (killed, crashed, cut off): counted, not held against the host
    TIME_LIMIT = "time_limit"  # ran past the soft time limit: another attempt would too; dead at once


class TaskStatus(BaseModel):
    id: int
    job_id: str
    stage: StageName
    index: int = Field(description="Position within the stage, from 0.")
    kind: TaskKind
    first_frame: int
    last_frame: int
    state: TaskState
    attempts: int
    max_attempts: int
    lighter: int = Field(0, description="How many steps of lighter settings an out-of-memory retry asked for.")
    worker: str | None = None
    frames_done: int
    frames_total: int
    queue: str | None = None
    error: str | None = None
    failure: FailureClass | None = None
    peak_gpu_mb: int | None = None
    seconds: float | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    finished_at: datetime | None = None
    not_before: datetime | None = None

    @property
    def label(self) -> str:
        return f"{self.stage}#{self.index} ({self.first_frame}-{self.last_frame})"


class TaskLogLine(BaseModel):
    at: datetime
    attempt: int
    level: str
    message: str


class TaskLog(BaseModel):
    task_id: int
    lines: list[TaskLogLine]
    total: int = Field(description="Lines stored for the task; 'lines' holds the last ones asked for.")
    start: int = Field(
        0, description="Lines stored before the first one in 'lines' (ask again with after=start+len(lines))."
    )


class ControlAction(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    RETRY = "retry"  # dead (and the canceled tasks they took down) run again
    PRIORITY = "priority"


class ControlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=500, description="Why; required to cancel.")
    priority: int | None = Field(None, ge=0, le=100, description="The new priority (action 'priority').")


class BulkControlRequest(ControlRequest):
    job_ids: list[str] = Field(..., min_length=1, max_length=1000)


class ControlResult(BaseModel):
    target: str = Field(description="job id, job/stage or task id acted on")
    action: ControlAction
    ok: bool
    tasks_changed: int = 0
    state: str | None = Field(None, description="The job's state afterwards.")
    message: str = ""


class HostBlock(BaseModel):
    """A worker host's failures on one job; ``blocked`` hosts get none of its tasks."""

    host: str
    failures: int
    blocked: bool


class BulkControlResult(BaseModel):
    results: list[ControlResult]


def require_reason(action: ControlAction, request: ControlRequest) -> None:
    """Cancel needs a reason; 'priority' needs a priority. Raises ValueError naming the field."""
    if action == ControlAction.CANCEL and not (request.reason or "").strip():
        raise ValueError("reason: a cancel needs a reason, e.g. {'reason': 'wrong plate'}")
    if action == ControlAction.PRIORITY and request.priority is None:
        raise ValueError("priority: give the new priority, 0..100, e.g. {'priority': 80}")
