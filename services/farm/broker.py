"""The broker side: sending one task's message, and counting what waits on each queue.

The database row is the truth; a message carries only the task id and the token of the attempt
it may start (see ``TaskStore.claim``), so a duplicate or stale message is harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from celery import Celery
from kombu.exceptions import ChannelError

from farm_config.celery_config import PROPAGATE_TASK, RUN_TASK, celery_config, make_celery, prepare_local_broker
from farm_config.settings import Settings
from services.errors import QueueUnavailable

log = logging.getLogger(__name__)


class CeleryBroker:
    """Sends task messages through Celery (Redis, or the embedded filesystem transport)."""

    def __init__(self, settings: Settings) -> None:
        prepare_local_broker(settings)
        self.celery: Celery = make_celery(celery_config(settings))
        self.queue_names = (settings.gpu_queue, settings.cpu_queue, settings.refine_queue)

    def depth(self, queues: Iterable[str] = ()) -> dict[str, int]:
        """Messages waiting per queue, as the broker counts them."""
        counts: dict[str, int] = {}
        with self.celery.connection_for_read() as conn:
            channel = conn.default_channel
            for name in sorted({*self.queue_names, *queues}):
                try:
                    counts[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
                except ChannelError:
                    counts[name] = 0  # Redis drops an empty queue's list, and kombu then calls it unknown
        return counts

    def send(self, task_id: int, token: str, queue: str) -> None:
        self._send(RUN_TASK, [task_id, token], queue)

    def send_propagation(self, task_id: int, queue: str) -> None:
        self._send(PROPAGATE_TASK, [task_id], queue)

    def _send(self, name: str, args: list[object], queue: str) -> None:
        try:
            self.celery.send_task(name, args=args, queue=queue, routing_key=queue)
        except Exception as exc:  # kombu raises several types for an unreachable broker
            log.error("could not send %s %s to %s: %s", name, args[0], queue, exc)
            raise QueueUnavailable(f"the queue is unreachable ({type(exc).__name__}); try again shortly") from exc

    def close(self) -> None:
        self.celery.close()
