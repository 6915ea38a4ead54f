"""The store on SQLite and on a real PostgreSQL server: same migrations, same behaviour."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect

from schemas import JobSpec, JobState, StageName, StageState
from services.store import Database, JobStore
from services.store.repository import Claim, JobFilter, NewJob


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    url = f"sqlite:///{tmp_path / 'farm.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    db = Database(url)
    db.upgrade()
    db.upgrade()  # applying migrations twice is a no-op
    yield JobStore(db)
    if request.param == "postgres":  # the database is shared for the session: empty it
        with db.engine.begin() as conn:
            for table in ("events", "stages", "jobs"):
                conn.exec_driver_sql(f"DELETE FROM {table}")
    db.dispose()


def new_job(
    job_id: str, user: str = "alice", shot: str = "sh010", show: str | None = "demo", frames: int = 4
) -> NewJob:
    spec = JobSpec(plate="/p/sh010.####.exr", prompt="person, car", output_root="/o", show=show)
    out = f"/o/{shot}/roto/v001"
    return NewJob(job_id, spec, user, shot, list(range(1001, 1001 + frames)), 1, out, f"{out}/x.####.exr", [])


def test_migrations_create_the_tables(store: JobStore) -> None:
    assert {"jobs", "stages", "events", "alembic_version"} <= set(inspect(store.db.engine).get_table_names())


def test_job_round_trip(store: JobStore) -> None:
    store.create(new_job("j1"))
    job = store.get("j1")
    assert job is not None and job.state == JobState.QUEUED and job.user == "alice"
    assert [s.name for s in job.stages] == [StageName.DETECT, StageName.SEGMENT, StageName.TRACK, StageName.EXPORT]
    assert all(s.frames_total == 4 and s.frames_done == 0 for s in job.stages)
    assert job.spec.prompt == "person, car" and job.created_at.tzinfo is not None
    assert store.get("nope") is None


def test_list_filters_and_pages(store: JobStore) -> None:
    for i in range(5):
        store.create(new_job(f"a{i}", user="alice" if i % 2 == 0 else "bob", shot=f"sh{i % 2}"))
    assert store.list(JobFilter(user="alice"), 0, 10).total == 3
    assert store.list(JobFilter(shot="sh1"), 0, 10).total == 2
    assert store.list(JobFilter(show="demo", state=JobState.QUEUED), 0, 10).total == 5
    page = store.list(JobFilter(), 1, 2)
    assert page.total == 5 and len(page.items) == 2 and page.offset == 1


def test_claim_progress_and_finish(store: JobStore) -> None:
    store.create(new_job("j2"))
    assert store.claim("j2", "w1", max_attempts=3) == Claim.RUN
    store.stage_started("j2", StageName.DETECT, 4)
    store.stage_progress("j2", StageName.DETECT, 3)
    running = store.get("j2")
    assert running.state == JobState.RUNNING and running.attempts == 1
    assert running.stages[0].state == StageState.RUNNING and running.stages[0].frames_done == 3
    store.stage_finished("j2", StageName.DETECT, StageState.SUCCEEDED, 1.25)
    store.record_run("j2", counters={"detector_calls": 4}, warning="random weights")
    assert store.finish("j2", JobState.SUCCEEDED, "w1", manifest="/o/m.json")
    assert not store.finish("j2", JobState.FAILED, "w1", error="late")  # already closed
    done = store.get("j2")
    assert done.state == JobState.SUCCEEDED and done.stages[0].seconds == 1.25
    assert done.counters.detector_calls == 4 and done.warnings == ["random weights"]
    assert [e.kind for e in store.events("j2")][:2] == ["submitted", "started"]


def test_redelivery_is_a_new_attempt_and_the_cap_stops_loops(store: JobStore) -> None:
    store.create(new_job("j3"))
    assert store.claim("j3", "w1", 2) == Claim.RUN
    assert store.claim("j3", "w2", 2) == Claim.RUN  # the first worker died; its message came back
    assert store.claim("j3", "w3", 2) == Claim.GAVE_UP
    assert any(e.kind == "retry" for e in store.events("j3"))


def test_cancel_queued_is_immediate_running_is_requested(store: JobStore) -> None:
    store.create(new_job("q"))
    store.create(new_job("r"))
    assert store.request_cancel("q", "alice", "wrong plate") == JobState.CANCELED
    assert store.claim("q", "w", 3) == Claim.CANCELED
    store.claim("r", "w", 3)
    assert store.request_cancel("r", "alice", None) == JobState.CANCELING
    assert store.cancel_requested("r")
    assert store.finish("r", JobState.CANCELED, "w")
    assert store.get("r").state == JobState.CANCELED
    assert "wrong plate" in store.events("q")[-1].message
