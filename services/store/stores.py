"""The farm's stores over one database, as the composition root hands them to the API, workers
and tools (``services.composition.open_stores`` builds them from the settings)."""

from __future__ import annotations

from dataclasses import dataclass

from services.store.api_tokens import ApiTokens
from services.store.db import Database
from services.store.farm_history import FarmHistoryStore
from services.store.outbox import WebhookOutbox
from services.store.refine_edits import RefineEdits
from services.store.refine_tasks import RefineTasks
from services.store.repository import JobStore
from services.store.task_store import TaskStore
from services.store.worker_registry import WorkerRegistry


@dataclass
class FarmStores:
    db: Database
    jobs: JobStore
    tasks: TaskStore
    workers: WorkerRegistry
    outbox: WebhookOutbox
    refine_edits: RefineEdits
    refine_tasks: RefineTasks
    tokens: ApiTokens
    history: FarmHistoryStore

    def close(self) -> None:
        self.db.dispose()
