"""What a worker reports about itself, and what the farm says about its queues."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class WorkerState(StrEnum):
    ONLINE = "online"
    STOPPING = "stopping"  # draining: hands its task back between frames and takes no more
    UNHEALTHY = "unhealthy"  # up, but cannot work (its models would not load): takes nothing, costs no job
    OFFLINE = "offline"


class WorkerInfo(BaseModel):
    name: str = Field(description="node@host:slot (the Celery pool slot), stable across restarts.")
    host: str
    pid: int
    queues: list[str]
    profile: str | None = None
    device: str
    gpu_name: str | None = None
    gpu_memory_total_mb: int | None = None
    gpu_memory_used_mb: int | None = None
    models: list[str] = Field(default_factory=list)
    current_task: int | None = None
    current_job: str | None = None
    frames_done: int = 0
    frames_total: int = 0
    state: WorkerState = Field(WorkerState.ONLINE, description="online, stopping (draining), unhealthy or offline.")
    problem: str | None = Field(None, description="Why it is unhealthy, and the fix.")
    online: bool = Field(True, description="Heartbeat is fresh.")
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None


class QueueInfo(BaseModel):
    name: str
    messages: int | None = Field(description="Messages on the broker; None when the broker is unreachable.")
    tasks_queued: int = Field(description="Tasks the database says are on this queue.")


class Unplaceable(BaseModel):
    """A job with a waiting task no online worker could take, and why."""

    job_id: str
    task_id: int
    why: str


class FarmOverview(BaseModel):
    """One poll's worth for the dashboard."""

    queues: list[QueueInfo]
    tasks_waiting: int
    oldest_wait_s: float | None
    workers: list[WorkerInfo]
    broker_up: bool
    unplaceable: list[Unplaceable] = Field(
        default_factory=list, description="Jobs that wait for a worker that is not there (one line each)."
    )


class HistoryBucket(BaseModel):
    """One interval of the farm's history (its start), drawn from the store."""

    at: datetime
    jobs_succeeded: int = 0
    jobs_failed: int = 0
    jobs_canceled: int = 0
    frames_delivered: int = Field(0, description="Plate frames whose mattes were written (export chunks finished).")
    failures: dict[str, int] = Field(default_factory=dict, description="Failed attempts by reason.")
    tasks_waiting: float | None = Field(None, description="Queue depth: tasks ready or queued, not started (mean).")
    tasks_running: float | None = None
    workers_online: float | None = None


class FarmHistory(BaseModel):
    hours: float
    bucket_s: int
    buckets: list[HistoryBucket]
    failures_total: dict[str, int] = Field(default_factory=dict, description="Failed attempts by reason, whole window.")
