"""The composition root: the one place that builds the farm's parts from :class:`Settings` and
wires them together, for the API process, a worker process and the CLI's tools.

Nothing else constructs a ``Database``, a broker, a dispatcher or a service; everything else is
handed what it needs. See ``docs/architecture.md`` for the layers this sits on.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from farm_config.settings import Settings
from services.farm.broker import CeleryBroker
from services.farm.dispatcher import Broker, Dispatcher
from services.farm.jobs import JobService
from services.farm.overview import FarmService
from services.farm.refine import PropagationSender, RefineService
from services.farm.review_links import ReviewLinkSigner, review_link_secret
from services.farm.tokens import TokenBook
from services.farm.webhooks import WebhookSender
from services.farm.worker_node import FarmWorker
from services.scheduling.dispatch import QueueNames
from services.scheduling.retry import RetryPolicy
from services.store import Database, FarmStores, JobStore
from services.store.api_tokens import ApiTokens
from services.store.farm_history import FarmHistoryStore
from services.store.outbox import WebhookOutbox
from services.store.refine_edits import RefineEdits
from services.store.refine_tasks import RefineTasks
from services.store.task_store import TaskStore
from services.store.worker_registry import WorkerRegistry
from workers.runtime.model_cache import ModelCache
from workers.runtime.worker import WorkerRuntime

log = logging.getLogger(__name__)


def open_stores(settings: Settings, *, upgrade: bool = True) -> FarmStores:
    """Every store over one database, migrated to head unless ``upgrade`` is False."""
    db = Database(settings.resolved_database_url, pool_size=settings.db_pool_size, ping_idle_s=settings.db_ping_idle_s)
    if upgrade:
        db.upgrade()
    return FarmStores(
        db=db,
        jobs=JobStore(db),
        tasks=TaskStore(
            db, RetryPolicy(settings.retry_backoff_s, settings.retry_backoff_max_s), settings.blocklist_after
        ),
        workers=WorkerRegistry(db, settings.heartbeat_timeout_s),
        outbox=WebhookOutbox(db),
        refine_edits=RefineEdits(db),
        refine_tasks=RefineTasks(db),
        tokens=ApiTokens(db),
        history=FarmHistoryStore(db, settings.heartbeat_timeout_s),
    )


def build_dispatcher(settings: Settings, stores: FarmStores, broker: Broker, name: str) -> Dispatcher:
    return Dispatcher(
        settings,
        stores.tasks,
        stores.workers,
        broker,
        name=name,
        refine_tasks=stores.refine_tasks,
        jobs=stores.jobs,
        history=stores.history,
    )


@dataclass
class FarmLoops:
    """The dispatcher/reconciler and the webhook sender, each on its own thread."""

    dispatcher: Dispatcher
    webhooks: WebhookSender
    every_s: float
    _threads: list[tuple[threading.Thread, threading.Event]] = field(default_factory=list)

    def start(self) -> None:
        self._threads = [self.dispatcher.start_thread(), self.webhooks.start_thread(self.every_s)]

    def run_forever(self, stop: threading.Event) -> None:
        """In the foreground (``mattefarm dispatcher``): the sender on a thread, the dispatcher here."""
        self._threads = [self.webhooks.start_thread(self.every_s)]
        try:
            self.dispatcher.run(stop)
        finally:
            self.stop()

    def stop(self) -> None:
        for _, stop in self._threads:
            stop.set()
        self.webhooks.wake()
        for thread, _ in self._threads:
            thread.join(timeout=10)
        self._threads = []


@dataclass
class ApiFarm:
    """What the API process holds: the stores, the broker, the services, and (optionally) the loops."""

    stores: FarmStores
    broker: Broker
    jobs: JobService
    farm: FarmService
    refine: RefineService
    tokens: TokenBook
    review_links: ReviewLinkSigner
    loops: FarmLoops
    run_loops: bool
    owned_broker: CeleryBroker | None = None

    def start(self) -> None:
        if self.run_loops:
            self.loops.start()

    def close(self) -> None:
        self.loops.stop()
        if self.owned_broker is not None:
            self.owned_broker.close()
        self.stores.close()


def build_api_farm(settings: Settings, broker: Broker | None = None) -> ApiFarm:
    """``broker``: where task messages go (default: Celery's, from the settings)."""
    stores = open_stores(settings)
    owned: CeleryBroker | None = None
    if broker is None:
        broker = owned = CeleryBroker(settings)
    sender: Broker = broker
    dispatcher = build_dispatcher(settings, stores, sender, "api")
    webhooks = WebhookSender(stores.outbox, stores.jobs, "api", settings)

    def kick(*, job_closed: bool = False) -> None:
        if settings.dispatcher:  # this process runs the loop: it sends at once, on its own thread
            dispatcher.wake()
        else:  # the dispatcher runs elsewhere (`mattefarm dispatcher`): send now rather than wait for its tick
            try:
                dispatcher.dispatch()
            except Exception:  # the loop tries again; a submit must not fail because of it
                log.warning("dispatch after a request failed", exc_info=True)
        if job_closed:
            webhooks.wake()

    jobs = JobService(settings, stores.jobs, stores.tasks, kick)
    return ApiFarm(
        stores=stores,
        broker=sender,
        jobs=jobs,
        farm=FarmService(
            stores.tasks,
            stores.workers,
            sender.depth,
            QueueNames(settings.gpu_queue, settings.cpu_queue),
            history=stores.history,
        ),
        refine=build_refine_service(settings, stores, jobs, sender),
        tokens=TokenBook(settings, stores.tokens),
        review_links=ReviewLinkSigner(review_link_secret(settings)),
        loops=FarmLoops(dispatcher, webhooks, settings.dispatch_every_s),
        run_loops=settings.dispatcher,
        owned_broker=owned,
    )


def build_dispatcher_loops(settings: Settings) -> tuple[FarmLoops, FarmStores, CeleryBroker]:
    """The dispatcher on its own (``mattefarm dispatcher``, with ``MATTEFARM_DISPATCHER=false`` on the APIs)."""
    stores = open_stores(settings)
    broker = CeleryBroker(settings)
    loops = FarmLoops(
        build_dispatcher(settings, stores, broker, "dispatcher"),
        WebhookSender(stores.outbox, stores.jobs, "dispatcher", settings),
        settings.dispatch_every_s,
    )
    return loops, stores, broker


def build_refine_service(
    settings: Settings, stores: FarmStores, jobs: JobService, broker: PropagationSender
) -> RefineService:
    """Refinement answers clicks in this process from its own warm models, and sends propagations
    to the workers (docs/refinement.md)."""
    return RefineService(settings, stores, jobs, ModelCache(), broker)


def build_job_service(settings: Settings, stores: FarmStores) -> JobService:
    """Submissions and controls without a farm loop (scripts and tests): the dispatcher's next tick sends."""
    return JobService(settings, stores.jobs, stores.tasks)


def build_worker(settings: Settings, *, register: bool = True, name: str = "", broker: bool = True) -> FarmWorker:
    """A worker process's runtime over its own stores; with ``broker`` it fills free slots after
    each task, else it leaves dispatching to the dispatcher's loop."""
    stores = open_stores(settings)
    runtime = WorkerRuntime(settings, stores, register=register, name=name)
    owned = CeleryBroker(settings) if broker else None
    return FarmWorker(
        runtime=runtime,
        stores=stores,
        webhooks=WebhookSender(stores.outbox, stores.jobs, runtime.name, settings),
        dispatcher=build_dispatcher(settings, stores, owned, runtime.name) if owned is not None else None,
        broker=owned,
    )
