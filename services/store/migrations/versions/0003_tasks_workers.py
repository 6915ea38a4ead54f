"""Tasks (frame chunks per stage), their logs, the worker registry and per-job block-lists.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

UTCDateTime = sa.DateTime(timezone=True)

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("pause_requested", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("jobs", sa.Column("gpu_memory_mb", sa.Integer, nullable=False, server_default="0"))
    op.add_column("events", sa.Column("task_id", sa.Integer, nullable=True))
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("index", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("first_frame", sa.Integer, nullable=False),
        sa.Column("last_frame", sa.Integer, nullable=False),
        sa.Column("first_pos", sa.Integer, nullable=False),
        sa.Column("end_pos", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("queue", sa.String(64)),
        sa.Column("token", sa.String(32)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("lighter", sa.Integer, nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("worker", sa.String(128)),
        sa.Column("frames_done", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("failure", sa.String(32)),
        sa.Column("peak_gpu_mb", sa.Integer),
        sa.Column("seconds", sa.Float),
        sa.Column("queued_at", UTCDateTime),
        sa.Column("started_at", UTCDateTime),
        sa.Column("heartbeat_at", UTCDateTime),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("not_before", UTCDateTime),
    )
    op.create_table(
        "task_logs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_table(
        "workers",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("host", sa.String(128), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("queues", sa.JSON, nullable=False),
        sa.Column("profile", sa.String(32)),
        sa.Column("device", sa.String(32), nullable=False),
        sa.Column("gpu_name", sa.String(128)),
        sa.Column("gpu_memory_total_mb", sa.Integer),
        sa.Column("gpu_memory_used_mb", sa.Integer),
        sa.Column("models", sa.JSON, nullable=False),
        sa.Column("current_task", sa.Integer),
        sa.Column("current_job", sa.String(32)),
        sa.Column("frames_done", sa.Integer, nullable=False),
        sa.Column("frames_total", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("heartbeat_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "job_blocklist",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("host", sa.String(128), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("blocked", sa.Boolean, nullable=False),
    )


def downgrade() -> None:
    for table in ("job_blocklist", "workers", "task_logs", "tasks"):
        op.drop_table(table)
    with op.batch_alter_table("events") as batch:
        batch.drop_column("task_id")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("gpu_memory_mb")
        batch.drop_column("pause_requested")
