"""The farm as monitors see it: workers, queues and waits, in one read for the dashboard."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from schemas import FarmHistory, FarmOverview, QueueInfo, Unplaceable, WorkerInfo, WorkerState
from services.errors import JobNotFound, WrongState
from services.scheduling.dispatch import FreeWorker, QueueNames, why_unplaceable
from services.store.farm_history import FarmHistoryStore
from services.store.tables import utcnow
from services.store.task_store import TaskStore
from services.store.worker_registry import WorkerRegistry

log = logging.getLogger(__name__)


class FarmService:
    def __init__(
        self,
        tasks: TaskStore,
        workers: WorkerRegistry,
        depth: Callable[[list[str]], dict[str, int]] | None,
        names: QueueNames | None = None,
        history: FarmHistoryStore | None = None,
    ) -> None:
        self.tasks, self.workers, self.depth, self.names = tasks, workers, depth, names or QueueNames()
        self.history_store = history

    def failures_last_hour(self) -> dict[str, int]:
        if self.history_store is None:
            return {}
        return self.history_store.failures_since(utcnow() - timedelta(hours=1))

    def history(self, hours: float, bucket_s: int | None = None) -> FarmHistory:
        """Jobs finished, frames delivered, failures by reason and queue depth, in about 60 buckets."""
        if self.history_store is None:
            raise LookupError("this farm service has no history store")
        bucket = bucket_s or max(60, round(hours * 3600 / 60 / 60) * 60)
        return self.history_store.history(hours, bucket)

    def unplaceable(self, workers: list[WorkerInfo]) -> list[Unplaceable]:
        """Each job's first waiting task that no online worker could take, with the reason."""
        healthy = [w for w in workers if w.online and w.state != WorkerState.UNHEALTHY]
        online = [FreeWorker(w.name, w.host, tuple(w.queues), w.gpu_memory_total_mb) for w in healthy]
        sick = "; ".join(f"{w.name} is unhealthy ({w.problem})" for w in workers if w.state == WorkerState.UNHEALTHY)
        found: dict[str, Unplaceable] = {}
        for candidate in self.tasks.candidates(limit=500):
            if candidate.job_id in found:
                continue
            why = why_unplaceable(candidate, online, self.names)
            if why is not None and sick and why.startswith("no online worker"):
                why = f"{why}; {sick}"
            if why is not None:
                found[candidate.job_id] = Unplaceable(job_id=candidate.job_id, task_id=candidate.task_id, why=why)
        return list(found.values())

    def overview(self) -> FarmOverview:
        workers = self.workers.all()
        queued = self.tasks.queued_by_queue()
        names = sorted({*queued, *(q for w in workers if w.online for q in w.queues)})
        broker_up = True
        try:
            depth = self.depth(names) if self.depth else {}
        except Exception as exc:  # the dashboard must still load when the broker is down
            log.warning("queue depth unavailable: %s", exc)
            depth, broker_up = {}, False
        waiting, oldest = self.tasks.waiting_summary()
        return FarmOverview(
            queues=[
                QueueInfo(name=n, messages=depth.get(n, 0) if broker_up else None, tasks_queued=queued.get(n, 0))
                for n in sorted({*names, *depth})
            ],
            tasks_waiting=waiting,
            oldest_wait_s=round((utcnow() - oldest).total_seconds(), 1) if oldest else None,
            workers=workers,
            broker_up=broker_up,
            unplaceable=self.unplaceable(workers),
        )

    def worker(self, name: str) -> WorkerInfo:
        for worker in self.workers.all():
            if worker.name == name:
                return worker
        raise JobNotFound(f"no worker {name!r}; list them with GET /workers")

    def drain(self, name: str) -> WorkerInfo:
        """Ask a worker to hand back its task between frames and take no more."""
        self.worker(name)
        self.workers.set_state(name, WorkerState.STOPPING)
        return self.worker(name)

    def undrain(self, name: str) -> WorkerInfo:
        """A drained worker takes work again (its next heartbeat sees it); an unhealthy one stays
        out until restarted with working models."""
        worker = self.worker(name)
        if worker.state == WorkerState.UNHEALTHY:
            raise WrongState(f"worker {name} is unhealthy ({worker.problem}); restart it once its models load")
        self.workers.set_state(name, WorkerState.ONLINE)
        return self.worker(name)
