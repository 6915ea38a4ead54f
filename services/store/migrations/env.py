"""Alembic environment: run on the connection ``Database.upgrade`` passes in."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from farm_config import get_settings
from services.store.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:  # `alembic` run by hand: MATTEFARM_DATABASE_URL or the embedded default
    engine = create_engine(get_settings().resolved_database_url)
    with engine.begin() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
