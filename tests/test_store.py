"""The store on SQLite and on a real PostgreSQL server: same migrations, same behaviour — jobs,
their tasks' state machine, retries, the block-list, controls and reconciliation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, update

from schemas import JobSpec, JobState, StageName, StageState, WorkerInfo
from schemas.task import ControlAction, FailureClass, TaskState
from services.scheduling.retry import RetryPolicy
from services.store import Database, JobStore
from services.store.repository import JobFilter, NewJob
from services.store.tables import TaskRow, utcnow
from services.store.task_store import TaskStore
from services.store.worker_registry import WorkerRegistry

TABLES = ("task_logs", "events", "job_blocklist", "tasks", "stages", "workers", "jobs")


@dataclass
class Stores:
    jobs: JobStore
    tasks: TaskStore
    workers: WorkerRegistry


@pytest.fixture(params=["sqlite", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    url = f"sqlite:///{tmp_path / 'farm.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    db = Database(url)
    db.upgrade()
    db.upgrade()  # applying migrations twice is a no-op
    yield Stores(JobStore(db), TaskStore(db, RetryPolicy(0.0, 0.0, 0.0), blocklist_after=2), WorkerRegistry(db, 30))
    if request.param == "postgres":  # the database is shared for the session: empty it
        with db.engine.begin() as conn:
            for table in TABLES:
                conn.exec_driver_sql(f"DELETE FROM {table}")
    db.dispose()


def new_job(
    job_id: str,
    user: str = "alice",
    shot: str = "sh010",
    show: str | None = "demo",
    frames: int = 4,
    priority: int = 50,
    task_frames: int = 2,
    max_attempts: int = 2,
) -> NewJob:
    spec = JobSpec(plate="/p/sh010.####.exr", prompt="person, car", output_root="/o", show=show, priority=priority)
    out = f"/o/{shot}/roto/v001"
    return NewJob(
        job_id,
        spec,
        user,
        shot,
        list(range(1001, 1001 + frames)),
        1,
        out,
        f"{out}/x.####.exr",
        [],
        task_frames=task_frames,
        max_attempts=max_attempts,
    )


def start(tasks: TaskStore, task_id: int, worker: str = "w1", host: str = "h1") -> str:
    token = tasks.mark_queued(task_id, "gpu")
    assert token is not None
    assert tasks.claim(task_id, token, worker, host).run
    return token


def next_task(tasks: TaskStore, job_id: str | None = None) -> int:
    return next(c.task_id for c in tasks.candidates() if job_id is None or c.job_id == job_id)


def test_migrations_create_the_tables(stores: Stores) -> None:
    names = set(inspect(stores.jobs.db.engine).get_table_names())
    assert {*TABLES, "alembic_version"} <= names


def test_job_round_trip_with_its_tasks(stores: Stores) -> None:
    stores.jobs.create(new_job("j1", frames=5, task_frames=3))
    job = stores.jobs.get("j1")
    assert job is not None and job.state == JobState.QUEUED and job.user == "alice"
    assert [s.name for s in job.stages] == [StageName.DETECT, StageName.SEGMENT, StageName.TRACK, StageName.EXPORT]
    tasks = stores.tasks.for_job("j1")
    assert [(t.stage, t.kind, t.first_frame, t.last_frame) for t in tasks] == [
        ("detect", "frames", 1001, 1003),
        ("detect", "frames", 1004, 1005),
        ("segment", "frames", 1001, 1003),
        ("segment", "frames", 1004, 1005),
        ("track", "frames", 1001, 1005),
        ("export", "frames", 1001, 1003),
        ("export", "frames", 1004, 1005),
        ("export", "finalise", 1001, 1005),
    ]
    assert all(t.state == TaskState.WAITING and t.attempts == 0 for t in tasks)
    assert stores.jobs.get("nope") is None


def test_list_filters_and_pages(stores: Stores) -> None:
    for i in range(5):
        stores.jobs.create(new_job(f"a{i}", user="alice" if i % 2 == 0 else "bob", shot=f"sh{i % 2}"))
    assert stores.jobs.page(JobFilter(user="alice"), 0, 10).total == 3
    assert stores.jobs.page(JobFilter(shot="sh1"), 0, 10).total == 2
    assert stores.jobs.page(JobFilter(show="demo", state=JobState.QUEUED), 0, 10).total == 5
    page = stores.jobs.page(JobFilter(), 1, 2)
    assert page.total == 5 and len(page.items) == 2 and page.items[0].tasks == {"waiting": 8}


def test_stages_run_in_order_and_the_last_task_closes_the_job(stores: Stores) -> None:
    tasks = stores.tasks
    stores.jobs.create(new_job("j2"))
    ready = [c.task_id for c in tasks.candidates()]
    assert [tasks.get(t).stage for t in ready] == ["detect", "detect"]  # segment waits for both
    token = start(tasks, ready[0])
    assert stores.jobs.get("j2").state == JobState.RUNNING
    assert tasks.heartbeat(ready[0], 1, None) is False
    assert stores.jobs.get("j2").stages[0].frames_done == 1
    assert not tasks.succeed(ready[0], "not-my-token", "w1", 1.0, None).task_state  # a stale attempt
    assert tasks.succeed(ready[0], token, "w1", 1.0, 900).task_state == TaskState.SUCCEEDED
    closed = None
    for _ in range(20):
        ids = [c.task_id for c in tasks.candidates()]
        if not ids:
            break
        closed = tasks.succeed(ids[0], start(tasks, ids[0]), "w1", 0.5, None)
    assert closed is not None and closed.job_closed and closed.job_state == JobState.SUCCEEDED
    job = stores.jobs.get("j2")
    assert job.state == JobState.SUCCEEDED and all(s.state == StageState.SUCCEEDED for s in job.stages)
    assert job.stages[0].seconds == 1.5 and job.stages[0].frames_done == 4
    kinds = [e.kind for e in stores.jobs.events("j2")]
    assert kinds[0] == "submitted" and kinds[-1] == "succeeded" and kinds.count("started") == 8


def test_a_task_message_claims_once(stores: Stores) -> None:
    stores.jobs.create(new_job("dup"))
    task_id = next_task(stores.tasks)
    token = stores.tasks.mark_queued(task_id, "gpu")
    assert stores.tasks.mark_queued(task_id, "gpu") is None  # a second dispatcher lost the race
    assert stores.tasks.claim(task_id, token, "w1", "h1").run
    again = stores.tasks.claim(task_id, token, "w2", "h2")  # Redis redelivered the same message
    assert not again.run and "stale" in again.reason
    assert stores.tasks.get(task_id).attempts == 1


def test_failures_retry_with_backoff_then_die_and_fail_the_job(stores: Stores) -> None:
    tasks = stores.tasks
    stores.jobs.create(new_job("f", max_attempts=2))
    task_id = next_task(tasks)
    tasks.fail(task_id, start(tasks, task_id), "w1", "h1", FailureClass.RETRYABLE, "RuntimeError: boom")
    retrying = tasks.get(task_id)
    assert (retrying.state, retrying.attempts, retrying.error) == (TaskState.RETRYING, 1, "RuntimeError: boom")
    assert task_id in [c.task_id for c in tasks.candidates()]  # backoff 0 here: ready again
    closed = tasks.fail(task_id, start(tasks, task_id), "w1", "h1", FailureClass.RETRYABLE, "RuntimeError: boom")
    assert tasks.get(task_id).state == TaskState.DEAD and closed.job_state == JobState.FAILED and closed.job_closed
    job = stores.jobs.get("f")
    assert job.error.startswith("task detect#0 (1001-1002) is dead (dead after 2 of 2 attempts)")
    assert {t.state for t in tasks.for_job("f")} == {TaskState.DEAD, TaskState.CANCELED}
    kinds = [e.kind for e in stores.jobs.events("f")]
    assert kinds.count("task_failed") == 1 and "task_dead" in kinds and "retry" in kinds and kinds[-1] == "failed"
    # An operator retries: the dead task and the ones it took down run again, attempts from zero.
    result, closed_again = tasks.control("f", ControlAction.RETRY, "ops", reason="plate fixed")
    assert result.tasks_changed == 8 and not closed_again and stores.jobs.get("f").state == JobState.QUEUED
    assert tasks.get(task_id).attempts == 0 and stores.jobs.get("f").error is None


def test_failure_classes(stores: Stores) -> None:
    tasks = stores.tasks
    stores.jobs.create(new_job("c", max_attempts=3))
    first = next_task(tasks)
    tasks.fail(first, start(tasks, first), "w1", "h1", FailureClass.INFRASTRUCTURE, "OperationalError: db gone")
    infra = tasks.get(first)
    assert (infra.state, infra.attempts) == (TaskState.WAITING, 0)  # not counted
    tasks.fail(first, start(tasks, first), "w1", "h1", FailureClass.OUT_OF_MEMORY, "CUDA out of memory")
    oom = tasks.get(first)
    assert (oom.state, oom.attempts, oom.lighter) == (TaskState.RETRYING, 1, 1)
    assert "lighter settings" in stores.jobs.events("c")[-1].message
    tasks.fail(first, start(tasks, first), "w1", "h1", FailureClass.FATAL, "plate: no files match")
    assert tasks.get(first).state == TaskState.DEAD and stores.jobs.get("c").state == JobState.FAILED


def test_a_host_that_keeps_failing_a_job_is_block_listed(stores: Stores) -> None:
    tasks = stores.tasks
    stores.jobs.create(new_job("b", max_attempts=5))
    first = next_task(tasks)
    for _ in range(2):
        tasks.fail(first, start(tasks, first, host="bad"), "w-bad", "bad", FailureClass.RETRYABLE, "boom")
    assert "blocklisted" in [e.kind for e in stores.jobs.events("b")]
    assert next(c for c in tasks.candidates() if c.task_id == first).blocked_hosts == {"bad"}
    token = tasks.mark_queued(first, "gpu")
    refused = tasks.claim(first, token, "w-bad", "bad")
    assert not refused.run and refused.reason == "block-listed" and tasks.get(first).state == TaskState.WAITING
    assert tasks.claim(first, tasks.mark_queued(first, "gpu"), "w-good", "good").run


def test_a_dead_worker_counts_as_an_attempt_but_not_against_its_host(stores: Stores) -> None:
    tasks = stores.tasks
    stores.jobs.create(new_job("k", max_attempts=5))
    first = next_task(tasks)
    for _ in range(3):  # killed three times on one host: the host may still take the job's work
        tasks.fail(first, start(tasks, first, host="h1"), "w1", "h1", FailureClass.WORKER_LOST, "stopped heartbeating")
    assert tasks.get(first).attempts == 3 and tasks.get(first).failure == FailureClass.WORKER_LOST
    assert "blocklisted" not in [e.kind for e in stores.jobs.events("k")]
    assert next(c for c in tasks.candidates() if c.task_id == first).blocked_hosts == set()


def test_retry_clears_the_block_list_so_the_job_can_run_again(stores: Stores) -> None:
    tasks = stores.tasks
    stores.jobs.create(new_job("r", max_attempts=2))
    first = next_task(tasks)
    for _ in range(2):  # the only host fails it twice: block-listed, and the task is dead
        tasks.fail(first, start(tasks, first, host="only"), "w1", "only", FailureClass.RETRYABLE, "boom")
    assert tasks.get(first).state == TaskState.DEAD and stores.jobs.get("r").state == JobState.FAILED
    result, _ = tasks.control("r", ControlAction.RETRY, "admin")
    assert result.ok and "block-list cleared (only)" in stores.jobs.events("r")[-1].message
    assert next(c for c in tasks.candidates() if c.task_id == first).blocked_hosts == set()
    assert tasks.claim(first, tasks.mark_queued(first, "gpu"), "w1", "only").run


def test_failures_are_classed_by_what_another_attempt_could_change() -> None:
    from celery.exceptions import SoftTimeLimitExceeded

    from services.scheduling.retry import after_failure
    from workers.runtime.failures import classify, describe

    assert classify(SoftTimeLimitExceeded()) == FailureClass.TIME_LIMIT
    assert "TASK_SOFT_TIME_LIMIT_S" in describe(SoftTimeLimitExceeded())
    policy = RetryPolicy(0.0, 0.0)
    assert after_failure(FailureClass.TIME_LIMIT, 1, 3, policy).state == TaskState.DEAD  # not retried like a crash
    lost = after_failure(FailureClass.WORKER_LOST, 1, 3, policy)
    assert lost.state == TaskState.RETRYING and lost.counted  # counted: a task that kills every worker ends
    assert after_failure(FailureClass.WORKER_LOST, 3, 3, policy).state == TaskState.DEAD


def test_pause_resume_cancel_and_priority(stores: Stores) -> None:
    tasks = stores.tasks
    stores.jobs.create(new_job("p"))
    running = next_task(tasks)
    token = start(tasks, running)
    result, _ = tasks.control("p", ControlAction.PAUSE, "alice", reason="client notes")
    assert result.state == JobState.PAUSING and result.tasks_changed == 7  # the running one finishes its chunk
    assert not tasks.candidates()
    tasks.succeed(running, token, "w1", 1.0, None)
    assert stores.jobs.get("p").state == JobState.PAUSED
    result, _ = tasks.control("p", ControlAction.RESUME, "alice")
    assert result.state == JobState.RUNNING and len(tasks.candidates()) == 1
    tasks.control("p", ControlAction.PRIORITY, "ops", priority=90, reason="rush")
    assert stores.jobs.get("p").priority == 90
    other = next_task(tasks)
    other_token = start(tasks, other)
    result, closed = tasks.control("p", ControlAction.CANCEL, "alice", reason="wrong plate")
    assert result.state == JobState.CANCELING and not closed
    assert tasks.heartbeat(other, 1, None) is True  # the worker hears it on its next heartbeat
    assert tasks.canceled(other, other_token, "w1").job_closed
    job = stores.jobs.get("p")
    assert job.state == JobState.CANCELED
    messages = [(e.kind, e.actor, e.message) for e in stores.jobs.events("p")]
    assert ("cancel_requested", "alice", "cancel p: wrong plate") in messages
    assert ("priority", "ops", "priority 50 → 90: rush") in messages


def test_a_stage_or_task_control_touches_only_its_tasks(stores: Stores) -> None:
    tasks = stores.tasks
    stores.jobs.create(new_job("s"))
    result, _ = tasks.control("s", ControlAction.PAUSE, "alice", stage=StageName.EXPORT)
    assert result.tasks_changed == 3 and result.state == JobState.QUEUED
    first = tasks.for_job("s")[0]
    result, _ = tasks.control("s", ControlAction.CANCEL, "alice", reason="not needed", task_id=first.id)
    assert result.tasks_changed == 1
    # The rest of its stage could still run, but everything after it can never: canceled too.
    states = {t.stage: t.state for t in tasks.for_job("s") if t.index == 0}
    assert states["detect"] == TaskState.CANCELED and states["export"] == TaskState.CANCELED


def test_the_reconciler_finds_dead_workers_and_lost_messages(stores: Stores) -> None:
    tasks = stores.tasks
    stores.jobs.create(new_job("r", max_attempts=3))
    running, queued = [c.task_id for c in tasks.candidates()][:2]
    start(tasks, running, worker="w-dead")
    tasks.mark_queued(queued, "gpu")
    with tasks.db.session() as s:  # a minute passes without a heartbeat, and with the message gone
        old = utcnow() - timedelta(seconds=120)
        s.execute(update(TaskRow).where(TaskRow.id == running).values(heartbeat_at=old))
        s.execute(update(TaskRow).where(TaskRow.id == queued).values(queued_at=old))
    assert [t for t, _, _ in tasks.stale_running(60)] == [running]
    assert tasks.requeue_lost("gpu", keep=0, older_than_s=60, actor="dispatcher") == 1
    assert tasks.get(queued).state == TaskState.WAITING
    stale = tasks.stale_running(60)[0]
    tasks.fail(stale[0], None, "dispatcher", "h1", FailureClass.RETRYABLE, "worker w-dead stopped heartbeating")
    assert tasks.get(running).state == TaskState.RETRYING and tasks.get(running).attempts == 1
    assert [e.kind for e in stores.jobs.events("r")].count("requeued") == 1


def test_workers_register_beat_and_go_offline(stores: Stores) -> None:
    reg = stores.workers
    info = WorkerInfo(
        name="gpu0@h1:10", host="h1", pid=10, queues=["gpu.a4000"], device="cuda", gpu_memory_total_mb=16384
    )
    reg.register(info)
    assert [w.name for w in reg.free()] == ["gpu0@h1:10"]
    reg.beat("gpu0@h1:10", task_id=5, job_id="j", frames_done=3, frames_total=10, gpu_memory_used_mb=9000)
    (worker,) = reg.all()
    assert worker.online and (worker.current_task, worker.frames_done, worker.gpu_memory_used_mb) == (5, 3, 9000)
    assert reg.free() == []
    reg.stop_node("gpu0@h1")
    assert (
        reg.beat("gpu0@h1:10", task_id=None, job_id=None, frames_done=0, frames_total=0, gpu_memory_used_mb=None)
        == "stopping"
    )
    assert reg.free() == []  # a draining worker gets nothing new
