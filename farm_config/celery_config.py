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

from farm_config.settings import Settings

RUN_JOB_TASK = "mattefarm.run_job"
EXPORT_JOB_TASK = "mattefarm.export_job"


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
        broker_url = settings.broker_url
        transport_options |= {"queue_order_strategy": "priority", "priority_steps": list(range(10))}
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
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "task_time_limit": settings.task_time_limit_s,
        "task_send_sent_event": True,
        "task_track_started": True,
        "worker_send_task_events": True,
        "worker_max_tasks_per_child": 50,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": settings.gpu_queue,
        "task_routes": {
            RUN_JOB_TASK: {"queue": settings.gpu_queue},
            EXPORT_JOB_TASK: {"queue": settings.cpu_queue},
        },
        "worker_hijack_root_logger": False,
    }


def prepare_local_broker(settings: Settings) -> None:
    """Create the folders the embedded filesystem broker exchanges messages through."""
    if settings.uses_local_broker:
        for name in ("messages", "control"):
            (settings.broker_folder / name).mkdir(parents=True, exist_ok=True)


def celery_priority(priority: int) -> int:
    """Job priority 0..100 (100 first) to the broker's 0..9 (0 first). Redis only approximates it."""
    return round((100 - priority) * 9 / 100)
