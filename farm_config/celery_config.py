"""Celery configuration for long GPU tasks, derived from :class:`Settings`.

Why each setting (docs/queue.md has the long form):
- late acks + reject-on-worker-lost: a worker killed mid-shot puts the job back on the queue;
  the attempt counter in the database stops a crash loop.
- prefetch 1: a GPU process holds exactly one shot, so nothing waits behind a long task.
- visibility timeout above the hard limit, in every place Celery reads it: Redis redelivers
  unacked messages older than it, even ones still running.
- events on, so Flower and the monitors see task progress; no result backend: the
  database is the record of truth.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from farm_config.settings import Settings, get_settings

RUN_TASK = "mattefarm.run_task"  # one message per task (a chunk of a stage); the dispatcher names its queue
PROPAGATE_TASK = "mattefarm.propagate"  # one message per artist propagation (``refine_queue``)


def celery_config(settings: Settings) -> dict[str, Any]:
    transport_options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout_s}
    if settings.uses_local_broker:
        folder = str(settings.broker_folder / "messages")
        broker_url = "filesystem://"
        transport_options |= {
            "data_folder_in": folder,
            "data_folder_out": folder,
            "control_folder": str(settings.broker_folder / "control"),
            "store_processed": False,
        }
    else:
        # No broker priorities: the dispatcher sends a message only when a worker is free, in
        # priority order from the database, so nothing needs to overtake on the broker.
        broker_url = settings.broker_url
    return {
        "broker_url": broker_url,
        "broker_transport_options": transport_options,
        "result_backend_transport_options": {"visibility_timeout": settings.visibility_timeout_s},
        "visibility_timeout": settings.visibility_timeout_s,
        "broker_connection_retry_on_startup": True,
        # A submit must fail fast (and say so) when the broker is down, not hang the API.
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Keep running through a broker outage: the result lands in the database, and the message
        # Redis later redelivers carries a spent token, so it is dropped (no second run).
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "task_time_limit": settings.task_time_limit_s,
        "task_send_sent_event": True,
        "task_track_started": True,
        "worker_send_task_events": True,
        "worker_max_tasks_per_child": 50,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": settings.gpu_queue,
        # a warm shutdown gives the running task this long to hand itself back (it checks between frames)
        "worker_soft_shutdown_timeout": max(10.0, 3 * settings.heartbeat_s),
        "worker_hijack_root_logger": False,
    }


def prepare_local_broker(settings: Settings) -> None:
    """Create the folders the embedded filesystem broker exchanges messages through."""
    if settings.uses_local_broker:
        for name in ("messages", "control"):
            (settings.broker_folder / name).mkdir(parents=True, exist_ok=True)


def make_celery(config: dict[str, Any] | None = None, include: tuple[str, ...] = ()) -> Celery:
    """A Celery app; with no config, one that reads the settings when first used. Senders (the
    dispatcher) need no task modules: a message names its task (``RUN_TASK``); the worker's app
    passes ``include`` to register them."""
    celery = Celery("mattefarm", set_as_current=False, include=list(include))
    if config is None:
        celery.add_defaults(lambda: celery_config(get_settings()))
    else:
        celery.conf.update(config)
    return celery
