"""Load on loopback: 200 jobs submitted at once by 20 clients to the API under uvicorn (PostgreSQL,
Redis), all accepted and stored with their tasks, none lost; and the benchmark command's report."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import fresh_database
from tests.factories import ALICE, write_small_shot
from tests.harness import RedisServer, live_farm

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_200_jobs_from_20_clients_are_all_accepted_and_queued(
    redis_server: RedisServer, postgres_server: str, tmp_path: Path
) -> None:
    from services.load_benchmark import run_load

    plate = write_small_shot(tmp_path, "sh080", frames=4)
    spec = {"plate": str(plate), "prompt": "ball", "output_root": str(tmp_path / "renders"), "show": "load"}
    with fresh_database(postgres_server) as database_url, live_farm(tmp_path, redis_server, database_url) as farm:
        report = run_load(farm.url, ALICE, spec, jobs=200, clients=20)
        with farm.client() as client:
            page = client.jobs(show="load", limit=200)
            everything = client.jobs(show="load", limit=200, offset=200)
            overview = client.farm()
        bench = farm.cli("bench-api", str(plate), "--jobs", "40", "--clients", "8", "-o", str(tmp_path / "b"))
    print("\n".join(report.lines()))
    assert report.submit.errors == [] and report.status.errors == []
    made = report.job_ids + report.warmup_ids  # one untimed warm-up submission per client
    assert len(report.job_ids) == 200 and len(report.warmup_ids) == 20 and len(set(made)) == 220
    assert page.total == 220 and {j.state for j in page.items + everything.items} == {"queued"}
    assert {j.id for j in page.items + everything.items} == set(made)
    assert all(j.tasks == {"waiting": 5} for j in page.items)  # 4 frames: detect, segment, track, export, finalise
    assert overview.tasks_waiting == 1100  # no worker: every task waits in the database, none lost
    assert len({p.name for p in (tmp_path / "renders" / "sh080" / "roto").iterdir()}) == 220
    assert 0 < report.submit.median <= report.submit.percentile(99)
    assert bench.returncode == 0, bench.stderr + bench.stdout
    assert "40 jobs from 8 clients" in bench.stdout and "p99" in bench.stdout and "canceled 48" in bench.stdout


def test_a_client_that_fails_during_the_load_ends_it_with_the_error_instead_of_waiting() -> None:
    """A fake API answers the warm-up, then submissions without an id: the client that breaks
    on that ends the run (a failure after the start once left the others waiting forever)."""
    from services.load_benchmark import run_load

    served = {"posts": 0}

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                sizes = [
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ]
                await reader.readexactly(sizes[0] if sizes else 0)
                if head.startswith(b"POST"):
                    served["posts"] += 1
                    body, code = (b'{"id": "w"}' if served["posts"] <= 2 else b"{}"), b"201 Created"
                else:
                    body, code = b"{}", b"200 OK"
                writer.write(
                    b"HTTP/1.1 " + code + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client hung up
        finally:
            writer.close()

    ready, stop, port = threading.Event(), threading.Event(), []

    def serve() -> None:
        async def main() -> None:
            server = await asyncio.start_server(answer, "127.0.0.1", 0)
            port.append(server.sockets[0].getsockname()[1])
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)
            server.close()
            await server.wait_closed()

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    started = time.monotonic()
    with pytest.raises(KeyError):
        run_load(f"http://127.0.0.1:{port[0]}", ALICE, {"plate": "/x"}, jobs=4, clients=2, timeout=5)
    assert time.monotonic() - started < 5
    stop.set()
    thread.join(timeout=10)


def test_a_load_whose_clients_cannot_connect_ends_with_the_error_instead_of_waiting() -> None:
    from services.load_benchmark import run_load

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        run_load(f"http://127.0.0.1:{port}", ALICE, {"plate": "/x"}, jobs=4, clients=2, timeout=5)
    assert time.monotonic() - started < 5
