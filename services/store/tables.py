"""SQLAlchemy tables. Migrations in ``migrations/`` must match these."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, deferred, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


def table_of(row: type[Base]) -> Table:
    """A mapped class's table, typed as one: for Core statements over plain column values."""
    return cast(Table, row.__table__)


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    user: Mapped[str] = mapped_column(String(64), index=True)
    show: Mapped[str | None] = mapped_column(String(64), index=True)
    shot: Mapped[str] = mapped_column(String(64), index=True)
    priority: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    frames: Mapped[list[int]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer)
    output_dir: Mapped[str] = mapped_column(Text)
    output_pattern: Mapped[str] = mapped_column(Text)
    manifest: Mapped[str | None] = mapped_column(Text)
    review: Mapped[dict[str, str] | None] = mapped_column(JSON)
    counters: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    models: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    layers: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    pause_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    gpu_memory_mb: Mapped[int] = mapped_column(Integer, default=0)  # least a GPU worker needs for it
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    submit_key: Mapped[str | None] = mapped_column(String(128))  # the client's Idempotency-Key

    __table_args__ = (UniqueConstraint("user", "submit_key", name="uq_jobs_user_submit_key"),)

    stages: Mapped[list[StageRow]] = relationship(
        back_populates="job", order_by="StageRow.position", cascade="all, delete-orphan"
    )


class StageRow(Base):
    __tablename__ = "stages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(16))
    position: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    frames_done: Mapped[int] = mapped_column(Integer, default=0)
    frames_total: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    seconds: Mapped[float | None] = mapped_column(Float)

    job: Mapped[JobRow] = relationship(back_populates="stages")


class EventRow(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    task_id: Mapped[int | None] = mapped_column(Integer)


class TaskRow(Base):
    """One chunk of one stage; the unit that is queued, run, retried and logged."""

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(16))
    position: Mapped[int] = mapped_column(Integer)  # the stage's place in the pipeline
    index: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    first_frame: Mapped[int] = mapped_column(Integer)
    last_frame: Mapped[int] = mapped_column(Integer)
    first_pos: Mapped[int] = mapped_column(Integer)  # index into the job's frame list
    end_pos: Mapped[int] = mapped_column(Integer)  # exclusive
    state: Mapped[str] = mapped_column(String(16), index=True)
    queue: Mapped[str | None] = mapped_column(String(64))
    token: Mapped[str | None] = mapped_column(String(32))  # the message that may claim it
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    lighter: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(128))
    frames_done: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    failure: Mapped[str | None] = mapped_column(String(32))
    peak_gpu_mb: Mapped[int | None] = mapped_column(Integer)
    seconds: Mapped[float | None] = mapped_column(Float)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TaskLogRow(Base):
    __tablename__ = "task_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    level: Mapped[str] = mapped_column(String(8))
    message: Mapped[str] = mapped_column(Text)


class WorkerRow(Base):
    """A worker process (one per GPU): what it is, what it holds, what it is doing."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(128))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[list[str]] = mapped_column(JSON)
    profile: Mapped[str | None] = mapped_column(String(32))
    device: Mapped[str] = mapped_column(String(32))
    gpu_name: Mapped[str | None] = mapped_column(String(128))
    gpu_memory_total_mb: Mapped[int | None] = mapped_column(Integer)
    gpu_memory_used_mb: Mapped[int | None] = mapped_column(Integer)
    models: Mapped[list[str]] = mapped_column(JSON, default=list)
    current_task: Mapped[int | None] = mapped_column(Integer)
    current_job: Mapped[str | None] = mapped_column(String(32))
    frames_done: Mapped[int] = mapped_column(Integer, default=0)
    frames_total: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16))  # online, stopping, unhealthy, offline
    problem: Mapped[str | None] = mapped_column(Text)  # why it is unhealthy (its models would not load)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BlockRow(Base):
    """A worker host's failures on one job; at the threshold it gets none of that job's tasks."""

    __tablename__ = "job_blocklist"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    host: Mapped[str] = mapped_column(String(128), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)


class OutboxRow(Base):
    """A webhook owed for a finished job, written in the same transaction that finished it, so a
    crash between "job done" and "POST sent" loses nothing; one sender drains it."""

    __tablename__ = "webhook_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    problem: Mapped[str | None] = mapped_column(Text)


class RefineEditRow(Base):
    """One artist edit on a finished job, in order; undone edits stay (redo) until a new edit."""

    __tablename__ = "refine_edits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    edit: Mapped[dict[str, Any]] = mapped_column(JSON)
    kind: Mapped[str] = mapped_column(String(16), index=True)  # the edit's kind, for /metrics
    seconds: Mapped[float] = mapped_column(Float, default=0.0)  # how long the artist waited for it
    undone: Mapped[bool] = mapped_column(Boolean, default=False)


class RefineTaskRow(Base):
    """One propagation: a farm task that tracks a layer from its keyframes. Its result (the
    masks it wrote) is kept here, where the API and every worker can read it, so a replay of the
    edit list (undo, reopen, another API process) applies it instead of tracking again."""

    __tablename__ = "refine_tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    layer: Mapped[str] = mapped_column(String(128))
    actor: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), index=True)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    frames_done: Mapped[int] = mapped_column(Integer, default=0)
    frames_total: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    edit_id: Mapped[int | None] = mapped_column(ForeignKey("refine_edits.id", ondelete="SET NULL"), nullable=True)
    frames_changed: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)  # plate frames it rewrote
    result: Mapped[bytes | None] = deferred(mapped_column(LargeBinary, nullable=True))


class ApiTokenRow(Base):
    """An API token made with ``mattefarm tokens add``: only its SHA-256 is kept (the plaintext is
    shown once), with who it acts as, when it expires and whether it was revoked."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))  # the token's first characters, to tell tokens apart in lists
    user: Mapped[str] = mapped_column(String(64), index=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class TaskFailureRow(Base):
    """One failed attempt, kept for the monitors' failure counts by reason and their history."""

    __tablename__ = "task_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str] = mapped_column(String(32))
    stage: Mapped[str] = mapped_column(String(16))
    failure: Mapped[str] = mapped_column(String(32))
    host: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class FarmSampleRow(Base):
    """The farm's load, sampled by the dispatcher about once a minute: the queue-depth history."""

    __tablename__ = "farm_samples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    tasks_waiting: Mapped[int] = mapped_column(Integer)  # ready or queued, not started
    tasks_running: Mapped[int] = mapped_column(Integer)
    workers_online: Mapped[int] = mapped_column(Integer)
