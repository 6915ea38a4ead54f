"""Job webhooks: one POST of the job's summary when it finishes, retried briefly, recorded either way.

Delivery never changes the job's outcome: a receiver that is down costs a logged event, not a job.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

from schemas import EventKind, JobStatus
from services.store import JobStore

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


def notify_finished(store: JobStore, job_id: str, actor: str) -> None:
    job = store.get(job_id)
    if job is None or not job.spec.notify_url:
        return
    problem = deliver(job.spec.notify_url, job_payload(job))
    if problem is None:
        store.add_event(job_id, EventKind.NOTIFIED, actor, f"webhook delivered: job.{job.state.value}")
    else:
        log.warning("job %s: webhook %s failed: %s", job_id, job.spec.notify_url, problem)
        store.add_event(job_id, EventKind.NOTIFIED, actor, f"webhook failed after retries: {problem}")
