"""A worker process as the farm sees it: run the task (``workers.runtime``), then post the
webhooks its outcome owes and fill the slot it frees, rather than wait for the dispatcher's tick.

The Celery task calls :meth:`FarmWorker.run_task`; so do the tests that run tasks in-process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from schemas.refine import PropagationState, RefineProgress
from services.farm.broker import CeleryBroker
from services.farm.closing import after_job_closed
from services.farm.dispatcher import Dispatcher
from services.farm.refine_runner import run_propagation
from services.farm.webhooks import WebhookSender
from services.store import FarmStores, JobStore
from services.store.task_store import Closed, TaskStore
from workers.models.interfaces import ModelSet
from workers.runtime.heartbeat import WorkerPulse
from workers.runtime.worker import WorkerRuntime

log = logging.getLogger(__name__)


@dataclass
class FarmWorker:
    runtime: WorkerRuntime
    stores: FarmStores
    webhooks: WebhookSender
    dispatcher: Dispatcher | None = None  # None: leave dispatching to the dispatcher's loop
    broker: CeleryBroker | None = None  # owned here, closed with the worker

    def run_task(self, task_id: int, token: str) -> Closed | None:
        closed = self.runtime.run_task(task_id, token)
        if closed is not None and closed.job_closed:
            task = self.tasks.get(task_id)
            if task is not None:
                after_job_closed(self.stores.jobs, task.job_id)
        self.after_task()
        return closed

    def run_propagation(self, task_id: int) -> RefineProgress | None:
        """An artist's propagation (``PROPAGATE_TASK``), with this worker's warm tracker."""
        return run_propagation(task_id, self.name, self.runtime.settings, self.stores, lambda: self.models)

    def run_inline(self, job_id: str | None = None, limit: int = 100_000) -> int:
        """Run queued propagations, then ready tasks in dispatch order, in this process until none
        is ready (no broker: a benchmark's or a test's farm); returns how many ran."""
        ran = 0
        for task in self.stores.refine_tasks.recent(limit=1000):
            if task.state == PropagationState.QUEUED and (job_id is None or task.job_id == job_id):
                ran += self.run_propagation(task.task_id) is not None
        for _ in range(limit):
            ready = [c for c in self.tasks.candidates() if job_id is None or c.job_id == job_id]
            if not ready:
                break
            token = self.tasks.mark_queued(ready[0].task_id, "inline")
            if token is None:
                continue  # someone else took it first
            self.run_task(ready[0].task_id, token)
            ran += 1
        return ran

    def after_task(self) -> None:
        try:
            self.webhooks.drain()
        except Exception:
            log.warning("could not post webhooks after the task; the dispatcher's sender will", exc_info=True)
        if self.dispatcher is None or self.runtime.stopping:  # a draining worker takes nothing new
            return
        try:
            self.dispatcher.dispatch()
        except Exception:
            log.warning("could not dispatch after the task; the dispatcher will", exc_info=True)

    # what the task code and the tests read through the worker
    @property
    def name(self) -> str:
        return self.runtime.name

    @property
    def store(self) -> JobStore:
        return self.stores.jobs

    @property
    def tasks(self) -> TaskStore:
        return self.stores.tasks

    @property
    def pulse(self) -> WorkerPulse:
        return self.runtime.pulse

    @property
    def models(self) -> ModelSet:
        return self.runtime.models

    def close(self) -> None:
        self.runtime.close()
        if self.broker is not None:
            self.broker.close()
        self.stores.close()
