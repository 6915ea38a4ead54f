"""Job events: the audit trail of who did what, when and why."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel


class EventKind(StrEnum):
    SUBMITTED = "submitted"
    STARTED = "started"
    STAGE = "stage"
    WARNING = "warning"
    CANCEL_REQUESTED = "cancel_requested"
    CANCELED = "canceled"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRY = "retry"
    NOTIFIED = "notified"  # a webhook delivery, or its failure
    PAUSE_REQUESTED = "pause_requested"
    PAUSED = "paused"
    RESUMED = "resumed"
    PRIORITY = "priority"
    TASK_FAILED = "task_failed"
    TASK_DEAD = "task_dead"
    REQUEUED = "requeued"  # sent again without counting: shutdown, lost message, infrastructure
    BLOCKLISTED = "blocklisted"
    UNBLOCKED = "unblocked"  # a job's block-list cleared by hand


class Event(BaseModel):
    at: datetime
    kind: EventKind
    actor: str
    message: str
    task_id: int | None = None
