"""Pure scheduling logic: chunk plans, the task state machine, job states, retries, dispatch."""

from __future__ import annotations

import pytest

from schemas import JobState, StageName
from schemas.task import FailureClass, TaskKind, TaskState
from services.scheduling.dispatch import Candidate, FreeWorker, QueueNames, plan_dispatch
from services.scheduling.plan import chunk_bounds, plan_tasks
from services.scheduling.retry import RetryPolicy, after_failure
from services.scheduling.states import IllegalTransition, check_transition, derive_job_state

NAMES = QueueNames("gpu", "cpu")


def test_chunks_are_contiguous_and_even() -> None:
    assert chunk_bounds(10, 4) == [(0, 4), (4, 7), (7, 10)]
    assert chunk_bounds(3, 50) == [(0, 3)] and chunk_bounds(0, 5) == []
    plans = plan_tasks(list(range(1001, 1011)), 4)
    by_stage = {
        stage: [(p.first_frame, p.last_frame, p.kind) for p in plans if p.stage == stage] for stage in StageName
    }
    assert by_stage[StageName.DETECT] == [(1001, 1004, "frames"), (1005, 1007, "frames"), (1008, 1010, "frames")]
    assert by_stage[StageName.TRACK] == [(1001, 1010, "frames")]  # identities need the whole shot
    assert by_stage[StageName.EXPORT][-1] == (1001, 1010, TaskKind.FINALISE)


def test_the_task_state_machine_refuses_what_it_does_not_list() -> None:
    check_transition(TaskState.QUEUED, TaskState.RUNNING)
    check_transition(TaskState.DEAD, TaskState.WAITING)  # an operator's retry
    for bad in ((TaskState.SUCCEEDED, TaskState.WAITING), (TaskState.WAITING, TaskState.RUNNING)):
        with pytest.raises(IllegalTransition):
            check_transition(*bad)


@pytest.mark.parametrize(
    ("tasks", "flags", "expected"),
    [
        ([TaskState.WAITING] * 3, {}, JobState.QUEUED),
        ([TaskState.SUCCEEDED, TaskState.WAITING], {"started": True}, JobState.RUNNING),
        ([TaskState.RUNNING, TaskState.PAUSED], {"pause_requested": True, "started": True}, JobState.PAUSING),
        ([TaskState.SUCCEEDED, TaskState.PAUSED], {"pause_requested": True, "started": True}, JobState.PAUSED),
        ([TaskState.RUNNING, TaskState.CANCELED], {"cancel_requested": True, "started": True}, JobState.CANCELING),
        ([TaskState.DEAD, TaskState.RUNNING], {"started": True}, JobState.CANCELING),
        ([TaskState.DEAD, TaskState.CANCELED], {"started": True}, JobState.FAILED),
        ([TaskState.SUCCEEDED, TaskState.CANCELED], {"started": True}, JobState.CANCELED),
        ([TaskState.SUCCEEDED] * 2, {"started": True}, JobState.SUCCEEDED),
    ],
)
def test_a_job_state_follows_its_tasks(tasks: list[TaskState], flags: dict[str, bool], expected: JobState) -> None:
    args = {"cancel_requested": False, "pause_requested": False, "started": False} | flags
    assert derive_job_state(tasks, **args) == expected


def test_retry_policy() -> None:
    policy = RetryPolicy(backoff_s=10, backoff_max_s=60, jitter=0.0)
    assert [policy.delay(a) for a in (1, 2, 3, 4)] == [10, 20, 40, 60]
    retry = after_failure(FailureClass.RETRYABLE, 1, 3, policy)
    assert (retry.state, retry.counted, retry.delay_s) == (TaskState.RETRYING, True, 10)
    assert after_failure(FailureClass.RETRYABLE, 3, 3, policy).state == TaskState.DEAD
    assert after_failure(FailureClass.FATAL, 1, 3, policy).state == TaskState.DEAD
    infra = after_failure(FailureClass.INFRASTRUCTURE, 3, 3, policy)
    assert (infra.state, infra.counted) == (TaskState.WAITING, False)  # never dead for the farm's fault
    assert after_failure(FailureClass.OUT_OF_MEMORY, 1, 3, policy).lighter


def free(name: str, queues: tuple[str, ...] = ("gpu", "cpu"), mem: int | None = 16384, host: str = "") -> FreeWorker:
    return FreeWorker(name, host or name, queues, mem)


def test_dispatch_fills_free_workers_in_priority_order() -> None:
    candidates = [Candidate(1, "hi", None, True), Candidate(2, "hi", None, True), Candidate(3, "lo", None, True)]
    plan = plan_dispatch(candidates, [free("w1"), free("w2")], {}, names=NAMES)
    assert [(a.task_id, a.queue) for a in plan] == [(1, "gpu"), (2, "gpu")]
    # A message already waiting takes a free worker: nothing more is sent.
    assert plan_dispatch(candidates, [free("w1")], {"gpu": 1}, names=NAMES) == []
    assert plan_dispatch(candidates, [], {}, names=NAMES) == []


def test_dispatch_respects_gpu_memory_blocklists_queues_and_show_caps() -> None:
    big = Candidate(1, "j", None, True, gpu_memory_mb=40000)
    plan = plan_dispatch([big], [free("a4000", ("gpu.a4000",)), free("h100", ("gpu.h100",), 81920)], {}, names=NAMES)
    assert [(a.worker, a.queue) for a in plan] == [("h100", "gpu.h100")]
    blocked = Candidate(2, "j", None, True, blocked_hosts=frozenset({"bad"}))
    assert [a.worker for a in plan_dispatch([blocked], [free("bad"), free("good")], {}, names=NAMES)] == ["good"]
    export = Candidate(3, "j", None, False)
    assert plan_dispatch([export], [free("gpu-only", ("gpu.a4000",))], {}, names=NAMES) == []
    capped = [Candidate(i, f"j{i}", "showA", True) for i in (4, 5, 6)]
    plan = plan_dispatch(capped, [free(f"w{i}") for i in range(3)], {}, names=NAMES, show_gpu_caps={"showA": 2},
                         show_gpu_busy={"showA": 1})  # fmt: skip
    assert [a.task_id for a in plan] == [4]


def test_a_task_no_online_worker_could_take_says_why() -> None:
    from services.scheduling.dispatch import Candidate, FreeWorker, QueueNames, why_unplaceable

    names = QueueNames()
    gpu16 = FreeWorker("w1", "h1", ("gpu", "cpu"), 16 * 1024)
    cpu_only = FreeWorker("w2", "h2", ("cpu",), None)
    task = Candidate(1, "j", None, gpu=True)
    assert why_unplaceable(task, [gpu16, cpu_only], names) is None  # it only waits for a slot
    assert "no online worker serves a GPU queue" in (why_unplaceable(task, [cpu_only], names) or "")
    blocked = Candidate(1, "j", None, gpu=True, blocked_hosts=frozenset({"h1"}))
    why = why_unplaceable(blocked, [gpu16, cpu_only], names) or ""
    assert "block-listed" in why and "h1" in why and "retry" in why
    big = Candidate(1, "j", None, gpu=True, gpu_memory_mb=40 * 1024)
    assert why_unplaceable(big, [gpu16], names) == "needs a GPU with 40 GB; the largest online has 16 GB"
    assert why_unplaceable(Candidate(2, "j", None, gpu=False), [cpu_only], names) is None
