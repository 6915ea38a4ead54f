"""Job webhooks: one POST of the job's summary when it finishes, retried briefly, recorded either way.

The job's closing owes the webhook in the outbox (``services.store.outbox``); this sender delivers it.

Delivery never changes the job's outcome: a receiver that is down costs a logged event, not a job.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpx

from schemas import EventKind, JobStatus
from services.store import JobStore
from services.store.outbox import OwedWebhook, WebhookOutbox

log = logging.getLogger(__name__)


def job_payload(job: JobStatus) -> dict[str, Any]:
    return {
        "event": f"job.{job.state.value}",
        "id": job.id,
        "state": job.state.value,
        "user": job.user,
        "show": job.show,
        "shot": job.shot,
        "version": job.version,
        "frames": len(job.frames),
        "missing_frames": job.missing_frames,
        "output_pattern": job.output_pattern,
        "manifest": job.manifest,
        "review": job.review.model_dump() if job.review else None,
        "layers": [layer.name for layer in job.layers],
        "error": job.error,
        "warnings": job.warnings,
    }


def deliver(
    url: str, payload: dict[str, Any], *, attempts: int = 3, timeout_s: float = 5.0, backoff_s: float = 0.5
) -> str | None:
    """POST ``payload``; None on a 2xx, else the last problem in words."""
    problem = "not tried"
    for attempt in range(attempts):
        try:
            response = httpx.post(url, json=payload, timeout=timeout_s, follow_redirects=False)
            if response.is_success:
                return None
            problem = f"HTTP {response.status_code}"
            if 400 <= response.status_code < 500 and response.status_code != 429:
                break  # the receiver refuses this payload; asking again won't change its mind
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if attempt + 1 < attempts:
            time.sleep(backoff_s * 2**attempt)
    return problem


class WebhookSender:
    """The one place webhooks are sent from: it drains the outbox the job's closing wrote.

    The API process runs it beside the dispatcher, and a worker drains it after each task so the
    receiver hears at once; claims make each delivery happen once whoever drains."""

    def __init__(self, outbox: WebhookOutbox, jobs: JobStore, actor: str) -> None:
        self.outbox, self.jobs, self.actor = outbox, jobs, actor
        self._wake = threading.Event()

    def drain(self) -> int:
        """Deliver every owed webhook; returns how many were settled."""
        settled = 0
        while owed := self.outbox.claim(self.actor):
            for item in owed:
                self._send(item)
                settled += 1
        return settled

    def _send(self, owed: OwedWebhook) -> None:
        job = self.jobs.get(owed.job_id)
        if job is None:
            self.outbox.settle(owed, "the job is gone")
            return
        problem = deliver(owed.url, job_payload(job))
        self.outbox.settle(owed, problem)
        if problem is None:
            self.jobs.add_event(job.id, EventKind.NOTIFIED, self.actor, f"webhook delivered: job.{job.state.value}")
        else:
            log.warning("job %s: webhook %s failed: %s", job.id, owed.url, problem)
            self.jobs.add_event(job.id, EventKind.NOTIFIED, self.actor, f"webhook failed after retries: {problem}")

    def wake(self) -> None:
        """Ask the running loop to drain now (after a control closed a job)."""
        self._wake.set()

    def run(self, stop: threading.Event, every_s: float) -> None:
        while not stop.is_set():
            try:
                self.drain()
            except Exception:
                log.exception("webhook outbox drain failed; trying again")
            self._wake.wait(every_s)
            self._wake.clear()

    def start_thread(self, every_s: float) -> tuple[threading.Thread, threading.Event]:
        stop = threading.Event()
        thread = threading.Thread(target=self.run, args=(stop, every_s), name="mattefarm-webhooks", daemon=True)
        thread.start()
        return thread, stop
