"""The database: the farm's record of truth for jobs, stages and events."""

from services.store.db import Database
from services.store.repository import JobStore

__all__ = ["Database", "JobStore"]
