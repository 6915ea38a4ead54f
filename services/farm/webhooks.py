"""Job webhooks: one POST of the job's summary when it finishes, retried briefly, recorded either way.

The job's closing owes the webhook in the outbox (``services.store.outbox``); this sender delivers it.

Delivery never changes the job's outcome: a receiver that is down costs a logged event, not a job.
Every delivery is signed (``X-Mattefarm-Signature``), and goes only to a public address or an
allow-listed host (``webhook_target_problem``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from farm_config.settings import Settings
from schemas import EventKind, JobStatus
from services.paths import kept_secret
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


Resolver = Callable[[str], list[str]]


def resolve_host(host: str) -> list[str]:
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None)})


def webhook_target_problem(url: str, allowed: list[str], resolve: Resolver = resolve_host) -> str | None:
    """Why the farm must not POST to ``url`` (None: it may). A host on the allow-list may be
    anything; any other must resolve only to public addresses, so a job cannot make the farm
    call its own loopback, link-local (cloud metadata) or private services (SSRF). Checked at
    submit and again before each delivery (a name may resolve elsewhere by then)."""
    host = (urlsplit(url).hostname or "").lower()
    if not host:
        return "has no host"
    try:
        addresses = resolve(host)
    except OSError as exc:
        return f"host {host} does not resolve ({exc})"
    for entry in allowed:
        if host == entry.lower():
            return None
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            continue
        if addresses and all(ipaddress.ip_address(a) in network for a in addresses):
            return None
    for address in addresses:
        ip = ipaddress.ip_address(address)
        if not ip.is_global or ip.is_multicast:
            return (
                f"host {host} is {address}, a loopback, link-local or private address; "
                "ask an admin to add it to MATTEFARM_WEBHOOK_HOSTS"
            )
    return None


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """What ``X-Mattefarm-Signature`` carries: HMAC-SHA256 of 'TIMESTAMP.BODY' under the farm's secret
    (receivers recompute it, and refuse old timestamps to stop replays)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def farm_webhook_secret(settings: Settings) -> str:
    """The secret from the settings, else the one kept in data_dir (made once, mode 0600)."""
    if settings.webhook_secret:
        return settings.webhook_secret
    return kept_secret(settings.webhook_secret_path, lambda: secrets.token_hex(32))


def deliver(
    url: str,
    payload: dict[str, Any],
    *,
    secret: str,
    attempts: int = 3,
    timeout_s: float = 5.0,
    backoff_s: float = 0.5,
) -> str | None:
    """POST ``payload``, signed; None on a 2xx, else the last problem in words."""
    problem = "not tried"
    body = json.dumps(payload, sort_keys=True, default=str).encode()
    for attempt in range(attempts):
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Mattefarm-Timestamp": stamp,
            "X-Mattefarm-Signature": signature(secret, stamp, body),
        }
        try:
            response = httpx.post(url, content=body, headers=headers, timeout=timeout_s, follow_redirects=False)
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

    def __init__(
        self,
        outbox: WebhookOutbox,
        jobs: JobStore,
        actor: str,
        settings: Settings,
        resolve: Resolver = resolve_host,
    ) -> None:
        self.outbox, self.jobs, self.actor, self.settings, self.resolve = outbox, jobs, actor, settings, resolve
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
        problem = webhook_target_problem(owed.url, self.settings.webhook_hosts, self.resolve)
        if problem is not None:
            problem = f"refused: notify_url {problem}"
        else:
            problem = deliver(owed.url, job_payload(job), secret=farm_webhook_secret(self.settings))
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
