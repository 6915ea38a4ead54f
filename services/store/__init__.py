"""The database: the farm's record of truth for jobs, stages, tasks, workers, events and webhooks."""

from services.store.db import Database
from services.store.repository import JobStore
from services.store.stores import FarmStores

__all__ = ["Database", "FarmStores", "JobStore"]
