"""Load on loopback: 200 jobs submitted at once by 20 clients to the API under uvicorn (PostgreSQL,
Redis), all accepted and stored with their tasks, none lost; and the benchmark command's report."""

from __future__ import annotations

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
