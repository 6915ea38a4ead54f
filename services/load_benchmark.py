"""API load: many clients submitting jobs at once, then reading their status; latency percentiles,
throughput, how busy the machine was, and the job list's latency at the store's size.

Closed loop by default (each client sends its next request when the last one answered: latency
is then clients / throughput once the machine is saturated); with ``rate``, open loop (requests
leave on a schedule, ``rate`` a second across all clients, as TDs' scripts arriving), which shows
the latency a farm gives at a load it can carry."""

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


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine, from /proc/stat (Linux); None elsewhere."""
    try:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


@dataclass
class LoadReport:
    jobs: int
    clients: int
    wall_s: float
    submit: Latencies
    status: Latencies
    job_ids: list[str]
    rate: float | None = None
    submit_wall_s: float = 0.0
    busy: float | None = None  # share of the machine's CPU time in use during the submissions
    listing: dict[str, Latencies] = field(default_factory=dict)  # job-list pages, by name
    jobs_in_store: int | None = None
    warmup_ids: list[str] = field(default_factory=list)  # one untimed submission per client

    def lines(self) -> list[str]:
        mode = f"open loop at {self.rate:g} submits/s" if self.rate else "closed loop"
        store = f"; {self.jobs_in_store} jobs in the store" if self.jobs_in_store is not None else ""
        rows = [f"{self.jobs} jobs from {self.clients} clients ({mode}) in {self.wall_s:.1f}s{store}"]
        if self.submit_wall_s:
            busy = f"; machine CPU {100 * self.busy:.0f}% busy" if self.busy is not None else ""
            rows.append(f"throughput: {len(self.submit.seconds) / self.submit_wall_s:.0f} submits/s{busy}")
        for name, lat in (("submit", self.submit), ("status", self.status), *self.listing.items()):
            rows.append(
                f"{name:>6}: {len(lat.seconds)} ok, {len(lat.errors)} failed; "
                f"median {1000 * lat.median:.0f} ms, p99 {1000 * lat.percentile(99):.0f} ms, "
                f"max {1000 * max(lat.seconds, default=float('nan')):.0f} ms"
            )
        return rows


def run_load(
    url: str,
    token: str,
    spec: dict[str, object],
    jobs: int,
    clients: int,
    timeout: float = 120.0,
    rate: float | None = None,
) -> LoadReport:
    """``clients`` threads, each with its own connection, submit ``jobs`` between them at once
    and then each reads the status of the jobs it submitted (or, with ``rate``, each submission
    leaves on a schedule and its status is read right after it); then the job list's first and
    last pages are timed."""
    submit, status = Latencies(), Latencies()
    submits_done = threading.Barrier(clients + 1)
    ids: list[str] = []
    warmups: list[str] = []
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
            # untimed: one submission and read per client opens its connection and warms the API
            # processes' caches (compiled queries, new database connections), as a running farm is
            warm = http.post("/jobs", json=spec)
            if warm.status_code == 201:
                http.get(f"/jobs/{warm.json()['id']}")
                with lock:
                    warmups.append(warm.json()["id"])
            start.wait()
            began = time.perf_counter()
            for n in range(index, jobs, clients):
                if rate:  # open loop: the n-th submission leaves at n / rate, answered or not
                    time.sleep(max(0.0, began + n / rate - time.perf_counter()))
                response = timed(submit, lambda: http.post("/jobs", json=spec), 201)
                if response is not None and response.status_code == 201:
                    mine.append(response.json()["id"])
                    if rate:  # open loop: a script checks the job it just submitted
                        timed(status, functools.partial(http.get, f"/jobs/{mine[-1]}"), 200)
            submits_done.wait()
            for job_id in mine if not rate else ():
                timed(status, functools.partial(http.get, f"/jobs/{job_id}"), 200)
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0, ticks0 = time.perf_counter(), _cpu_ticks()
    for thread in threads:
        thread.start()
    submits_done.wait()
    submit_wall, ticks1 = time.perf_counter() - t0, _cpu_ticks()
    for thread in threads:
        thread.join()
    report = LoadReport(jobs, clients, time.perf_counter() - t0, submit, status, ids, rate, submit_wall)
    report.warmup_ids = warmups
    if ticks0 and ticks1 and ticks1[1] > ticks0[1]:
        report.busy = (ticks1[0] - ticks0[0]) / (ticks1[1] - ticks0[1])
    report.listing, report.jobs_in_store = time_job_list(url, token, timeout)
    return report


def time_job_list(url: str, token: str, timeout: float, samples: int = 40) -> tuple[dict[str, Latencies], int]:
    """The job list's first page and its last, one client, ``samples`` reads each: the list is
    paged on the server, so both should stay flat however many jobs the store holds."""
    pages: dict[str, Latencies] = {"list first page": Latencies(), "list last page": Latencies()}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout) as http:
        total = int(http.get("/jobs", params={"limit": 1}).json()["total"])
        for name, offset in (("list first page", 0), ("list last page", max(0, total - 50))):
            for _ in range(3):  # warm: the process's first reads of a page open connections and plans
                http.get("/jobs", params={"limit": 50, "offset": offset})
            for _ in range(samples):
                t0 = time.perf_counter()
                response = http.get("/jobs", params={"limit": 50, "offset": offset})
                if response.status_code == 200:
                    pages[name].seconds.append(time.perf_counter() - t0)
                else:
                    pages[name].errors.append(f"HTTP {response.status_code}")
    return pages, total
