"""API load: many clients submitting jobs at once, then reading their status; latency percentiles,
throughput, how busy the machine was, and the job list's latency at the store's size. The clients
are keep-alive connections on one event loop, cheap enough not to take the CPU the API needs.

Closed loop by default (each client sends its next request when the last one answered: latency
is then clients / throughput once the machine is saturated); with ``rate``, open loop (requests
leave on a schedule, ``rate`` a second across all clients, as TDs' scripts arriving), which shows
the latency a farm gives at a load it can carry."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

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


class ApiConnection:
    """One keep-alive HTTP/1.1 connection that sends a request and reads its answer.

    The load's clients use this rather than httpx: 20 httpx clients on threads spent ~3.3 ms of
    CPU per request, about a third of this 2-core machine, which the API then lacked, and their
    timings included waits for the GIL; this costs ~0.2 ms. It reads what the API sends
    (``Content-Length`` bodies); anything else is an error, not a guess."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, token: str) -> None:
        self.reader, self.writer = reader, writer
        self.head = f"Host: {host}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n"

    @classmethod
    async def open(cls, url: str, token: str) -> ApiConnection:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"bench-api speaks plain HTTP to the farm's API; got {url!r}")
        port = parts.port or 80
        reader, writer = await asyncio.open_connection(parts.hostname, port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer, f"{parts.hostname}:{port}", token)

    async def call(self, method: str, path: str, body: object = None) -> tuple[int, bytes]:
        payload = b"" if body is None else json.dumps(body).encode()
        request = f"{method} {path} HTTP/1.1\r\n{self.head}Content-Length: {len(payload)}\r\n\r\n"
        self.writer.write(request.encode() + payload)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the API closed the connection")
        status, length = int(status_line.split()[1]), None
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise ConnectionError(f"{method} {path}: an answer without Content-Length")
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def run_load(
    url: str,
    token: str,
    spec: dict[str, object],
    jobs: int,
    clients: int,
    timeout: float = 120.0,
    rate: float | None = None,
) -> LoadReport:
    """``clients`` connections submit ``jobs`` between them at once and then each reads the status
    of the jobs it submitted (or, with ``rate``, each submission leaves on a schedule and its
    status is read right after it); then the job list's first and last pages are timed."""
    report = asyncio.run(_run_load(url, token, spec, jobs, clients, timeout, rate))
    report.listing, report.jobs_in_store = time_job_list(url, token, timeout)
    return report


async def _run_load(
    url: str, token: str, spec: dict[str, object], jobs: int, clients: int, timeout: float, rate: float | None
) -> LoadReport:
    submit, status = Latencies(), Latencies()
    ids: list[str] = []
    warmups: list[str] = []
    warmed = 0
    start, submits_done = asyncio.Event(), asyncio.Event()
    submitted = 0

    async def timed(
        own: ApiConnection, lat: Latencies, ok: int, method: str, path: str, body: object = None
    ) -> bytes | None:
        t0 = time.perf_counter()
        try:
            code, answer = await asyncio.wait_for(own.call(method, path, body), timeout)
        except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError) as exc:
            lat.errors.append(type(exc).__name__)
            return None
        if code != ok:
            lat.errors.append(f"HTTP {code}: {answer[:200].decode(errors='replace')}")
            return None
        lat.seconds.append(time.perf_counter() - t0)
        return answer

    async def client(index: int) -> None:
        nonlocal warmed, submitted
        mine: list[str] = []
        own = await ApiConnection.open(url, token)
        try:
            # untimed: one submission and read per client opens its connection and warms the API
            # processes' caches (compiled queries, new database connections), as a running farm is
            code, answer = await own.call("POST", "/jobs", spec)
            if code == 201:
                job_id = json.loads(answer)["id"]
                await own.call("GET", f"/jobs/{job_id}")
                warmups.append(job_id)
            warmed += 1
            if warmed == clients:
                start.set()
            await start.wait()
            began = time.perf_counter()
            for n in range(index, jobs, clients):
                if rate:  # open loop: the n-th submission leaves at n / rate, answered or not
                    await asyncio.sleep(max(0.0, began + n / rate - time.perf_counter()))
                made = await timed(own, submit, 201, "POST", "/jobs", spec)
                if made is not None:
                    mine.append(json.loads(made)["id"])
                    if rate:  # open loop: a script checks the job it just submitted
                        await timed(own, status, 200, "GET", f"/jobs/{mine[-1]}")
            submitted += 1
            if submitted == clients:
                submits_done.set()
            await submits_done.wait()
            for job_id in mine if not rate else ():
                await timed(own, status, 200, "GET", f"/jobs/{job_id}")
        finally:
            await own.close()
            ids.extend(mine)

    tasks = [asyncio.ensure_future(client(i)) for i in range(clients)]
    await _until(start, tasks)
    t0, ticks0 = time.perf_counter(), _cpu_ticks()
    await _until(submits_done, tasks)
    submit_wall, ticks1 = time.perf_counter() - t0, _cpu_ticks()
    await asyncio.gather(*tasks)
    report = LoadReport(jobs, clients, time.perf_counter() - t0, submit, status, ids, rate, submit_wall)
    report.warmup_ids = warmups
    if ticks0 and ticks1 and ticks1[1] > ticks0[1]:
        report.busy = (ticks1[0] - ticks0[0]) / (ticks1[1] - ticks0[1])
    return report


async def _until(event: asyncio.Event, clients: Sequence[asyncio.Future[Any]]) -> None:
    """Wait for ``event``; a client that failed first (it could not connect, or its connection
    broke outside a timed call) ends the run with its error instead of leaving the rest waiting
    for it forever."""
    waiting: asyncio.Future[Any] = asyncio.ensure_future(event.wait())
    pending: list[asyncio.Future[Any]] = [waiting, *clients]
    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    failed = next((c for c in clients if c.done() and not c.cancelled() and c.exception() is not None), None)
    if failed is not None and not event.is_set():
        waiting.cancel()
        for other in clients:
            other.cancel()
        await asyncio.gather(*clients, return_exceptions=True)  # their connections close
        raise failed.exception()  # type: ignore[misc]
    await waiting


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
