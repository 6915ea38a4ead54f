"""Idempotent submission (a client's key, unique per user), and a worker's health problem.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("submit_key", sa.String(128), nullable=True))
        batch.create_unique_constraint("uq_jobs_user_submit_key", ["user", "submit_key"])
    op.add_column("workers", sa.Column("problem", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("workers", "problem")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("uq_jobs_user_submit_key", type_="unique")
        batch.drop_column("submit_key")
