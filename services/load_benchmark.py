"""API load: many clients submitting jobs at once, then reading their status; latency percentiles."""

from __future__ import annotations

import functools
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx


@dataclass
class Latencies:
    seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.seconds)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")


@dataclass
class LoadReport:
    jobs: int
    clients: int
    wall_s: float
    submit: Latencies
    status: Latencies
    job_ids: list[str]

    def lines(self) -> list[str]:
        rows = [f"{self.jobs} jobs from {self.clients} clients in {self.wall_s:.1f}s"]
        for name, lat in (("submit", self.submit), ("status", self.status)):
            rows.append(
                f"{name:>6}: {len(lat.seconds)} ok, {len(lat.errors)} failed; "
                f"median {1000 * lat.median:.0f} ms, p99 {1000 * lat.percentile(99):.0f} ms, "
                f"max {1000 * max(lat.seconds, default=float('nan')):.0f} ms"
            )
        return rows


def run_load(
    url: str, token: str, spec: dict[str, object], jobs: int, clients: int, timeout: float = 120.0
) -> LoadReport:
    """``clients`` threads, each with its own connection, submit ``jobs`` between them at once,
    then each reads the status of the jobs it submitted."""
    submit, status = Latencies(), Latencies()
    ids: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def timed(lat: Latencies, call: Callable[[], httpx.Response], ok: int) -> httpx.Response | None:
        t0 = time.perf_counter()
        try:
            response = call()
        except httpx.HTTPError as exc:
            with lock:
                lat.errors.append(type(exc).__name__)
            return None
        elapsed = time.perf_counter() - t0
        with lock:
            if response.status_code == ok:
                lat.seconds.append(elapsed)
            else:
                lat.errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
        return response

    def client(index: int) -> None:
        mine: list[str] = []
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=timeout) as http:
            start.wait()
            for _ in range(index, jobs, clients):
                response = timed(submit, lambda: http.post("/jobs", json=spec), 201)
                if response is not None and response.status_code == 201:
                    mine.append(response.json()["id"])
            for job_id in mine:
                timed(status, functools.partial(http.get, f"/jobs/{job_id}"), 200)
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return LoadReport(jobs, clients, time.perf_counter() - t0, submit, status, ids)
