"""Putting jobs on the broker. The database row is written first; the message carries only the id."""

from __future__ import annotations

import logging

from celery import Celery
from kombu.exceptions import ChannelError

from farm_config.celery_config import RUN_JOB_TASK, celery_config, celery_priority, prepare_local_broker
from farm_config.settings import Settings
from services.errors import QueueUnavailable

log = logging.getLogger(__name__)


class JobQueue:
    def __init__(self, settings: Settings) -> None:
        from workers.celery_app import make_celery

        prepare_local_broker(settings)
        self.celery: Celery = make_celery(celery_config(settings))
        self.queue_names = (settings.gpu_queue, settings.cpu_queue)

    def depth(self) -> dict[str, int]:
        """Messages waiting per queue, as the broker counts them (all priority levels)."""
        counts: dict[str, int] = {}
        with self.celery.connection_for_read() as conn:
            channel = conn.default_channel
            for name in self.queue_names:
                try:
                    counts[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
                except ChannelError:
                    counts[name] = 0  # Redis drops an empty queue's list, and kombu then calls it unknown
        return counts

    def enqueue(self, job_id: str, priority: int) -> None:
        try:
            self.celery.send_task(RUN_JOB_TASK, args=[job_id], priority=celery_priority(priority))
        except Exception as exc:  # kombu raises several types for an unreachable broker
            log.error("could not queue job %s: %s", job_id, exc)
            raise QueueUnavailable(f"the queue is unreachable ({type(exc).__name__}); try again shortly") from exc

    def close(self) -> None:
        self.celery.close()
