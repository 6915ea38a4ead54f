"""The Celery application. Configuration is read lazily from ``farm_config`` the first time
Celery needs it, so importing this module opens nothing and loads no model.

Start a worker with ``mattefarm worker`` (or ``celery -A workers.celery_app:app worker``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init, worker_process_shutdown, worker_shutting_down

from farm_config.celery_config import celery_config
from farm_config.settings import get_settings

log = logging.getLogger(__name__)


def make_celery(config: dict[str, Any] | None = None) -> Celery:
    """A Celery app; with no config, one that reads the settings when first used."""
    celery = Celery("mattefarm", set_as_current=False, include=["workers.tasks"])
    if config is None:
        celery.add_defaults(lambda: celery_config(get_settings()))
    else:
        celery.conf.update(config)
    return celery


app = make_celery()


class RuntimeTask(Task):
    """Tasks share one :class:`WorkerRuntime` per worker process, built after the fork."""

    _runtime = None  # a per-process cache, filled in the child (Celery's documented pattern)

    @property
    def runtime(self):
        from services.queue import JobQueue
        from workers.task_runner import WorkerRuntime

        if RuntimeTask._runtime is None:
            settings = get_settings()
            RuntimeTask._runtime = WorkerRuntime(settings, queue=JobQueue(settings))
        return RuntimeTask._runtime


@worker_process_init.connect
def _load_models_in_child(**_: Any) -> None:
    # Models (and CUDA) are initialised here, in the child, never in the parent: CUDA does
    # not survive fork. Building the runtime registers the worker and starts its heartbeat.
    runtime = RuntimeTask().runtime
    if os.environ.get("MATTEFARM_WARM_MODELS", "1") == "1":
        try:
            runtime.models  # noqa: B018 - loading is the point
        except Exception:
            log.exception("could not load models at worker start; each job will report the error")
    runtime.pulse.beat()  # report the loaded models, and say it is free
    runtime.fill_free_slots()


@worker_shutting_down.connect
def _drain(sender: str | None = None, **_: Any) -> None:
    # In the parent: a warm shutdown (SIGTERM) marks this node's workers 'stopping'; the child
    # sees it on its next heartbeat, hands its task back between frames, and the task is
    # requeued (not counted) for another worker, which resumes from the frames already written.
    from services.store import Database
    from services.store.workers import WorkerRegistry

    settings = get_settings()
    db = Database(settings.resolved_database_url)
    try:
        node = os.environ.get("MATTEFARM_WORKER_NODE") or str(sender or "")
        WorkerRegistry(db, settings.heartbeat_timeout_s).stop_node(node)
    except Exception:
        log.exception("could not mark the worker as stopping")
    finally:
        db.dispose()


@worker_process_shutdown.connect
def _close_runtime(**_: Any) -> None:
    if RuntimeTask._runtime is not None:
        RuntimeTask._runtime.close()
