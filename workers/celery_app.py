"""The Celery worker's entry point: the app, its two tasks (a chunk of a stage; an artist's
propagation), and the process signals. Configuration is read lazily from ``farm_config`` the
first time Celery needs it, so importing this module opens nothing and loads no model.

Start a worker with ``mattefarm worker`` (or ``celery -A workers.celery_app:app worker``).
"""

from __future__ import annotations

import logging
from typing import Any

from billiard.process import current_process
from celery import Task
from celery.signals import worker_process_init, worker_process_shutdown, worker_shutting_down

from farm_config.celery_config import PROPAGATE_TASK, RUN_TASK, make_celery
from farm_config.settings import get_settings
from services.composition import build_worker, open_stores
from services.farm.worker_node import FarmWorker
from workers.runtime.worker import worker_name

log = logging.getLogger(__name__)

app = make_celery(include=(__name__,))


class WorkerProcess:
    """The worker process's one :class:`FarmWorker`, built in the child after the fork (Celery's
    documented per-process pattern): CUDA does not survive fork, so nothing is built in the parent."""

    current: FarmWorker | None = None

    @classmethod
    def get(cls) -> FarmWorker:
        if cls.current is None:
            settings = get_settings()
            # the pool slot (billiard's child index) survives recycling: a replaced child is the same worker
            slot = getattr(current_process(), "index", None)
            cls.current = build_worker(settings, name=worker_name(settings, slot))
        return cls.current


@app.task(name=RUN_TASK, bind=True, acks_late=True, ignore_result=True)
def run_task(self: Task, task_id: int, token: str) -> None:
    """Run one attempt of one task (a chunk of a stage). A stale or duplicate message is a no-op."""
    WorkerProcess.get().run_task(task_id, token)


@app.task(name=PROPAGATE_TASK, bind=True, acks_late=True, ignore_result=True)
def propagate(self: Task, task_id: int) -> None:
    """Run an artist's propagation. A duplicate message, or one for a finished propagation, is a no-op."""
    WorkerProcess.get().run_propagation(task_id)


@worker_process_init.connect
def _load_models_in_child(**_: Any) -> None:
    # Building the worker registers it and starts its heartbeat; models load here, in the child.
    worker = WorkerProcess.get()
    if get_settings().warm_models:
        try:
            worker.models  # noqa: B018 - loading is the point
        except Exception:
            log.exception("could not load models at worker start; each job will report the error")
    worker.pulse.beat()  # report the loaded models, and say it is free
    worker.after_task()


@worker_shutting_down.connect
def _drain(sender: str | None = None, **_: Any) -> None:
    # In the parent: a warm shutdown (SIGTERM) marks this node's workers 'stopping'; the child
    # sees it on its next heartbeat, hands its task back between frames, and the task is
    # requeued (not counted) for another worker, which resumes from the frames already written.
    settings = get_settings()
    try:
        stores = open_stores(settings, upgrade=False)
    except Exception:
        log.exception("could not reach the database to mark the worker as stopping")
        return
    try:
        stores.workers.stop_node(settings.worker_node or str(sender or ""))
    except Exception:
        log.exception("could not mark the worker as stopping")
    finally:
        stores.close()


@worker_process_shutdown.connect
def _close_runtime(**_: Any) -> None:
    if WorkerProcess.current is not None:
        WorkerProcess.current.close()
