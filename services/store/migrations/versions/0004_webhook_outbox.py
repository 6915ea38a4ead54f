"""The webhook outbox: a row per webhook owed, written with the change that finished the job.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

UTCDateTime = sa.DateTime(timezone=True)

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("claimed_by", sa.String(128)),
        sa.Column("claimed_at", UTCDateTime),
        sa.Column("sent_at", UTCDateTime, index=True),
        sa.Column("problem", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("webhook_outbox")
