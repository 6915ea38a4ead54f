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


class Event(BaseModel):
    at: datetime
    kind: EventKind
    actor: str
    message: str
