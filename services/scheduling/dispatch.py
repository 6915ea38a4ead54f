"""Which waiting tasks go to the broker now: priority order, free workers, GPU memory, show caps.

The database decides the order; a message is sent only when a worker is free to take it, so a
high-priority job submitted behind a hundred others starts next (Redis priorities are approximate).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FreeWorker:
    name: str
    host: str
    queues: tuple[str, ...]
    gpu_memory_mb: int | None  # None: no GPU, or not reported


@dataclass(frozen=True)
class Candidate:
    task_id: int
    job_id: str
    show: str | None
    gpu: bool
    gpu_memory_mb: int = 0  # the least a worker must have
    blocked_hosts: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Assignment:
    task_id: int
    queue: str
    worker: str  # the free worker it was counted against (any worker on the queue may take it)


@dataclass(frozen=True)
class QueueNames:
    gpu_prefix: str = "gpu"  # 'gpu', 'gpu.a4000', 'gpu.h100' …
    cpu: str = "cpu"

    def serves(self, queue: str, gpu: bool) -> bool:
        if gpu:
            return queue == self.gpu_prefix or queue.startswith(self.gpu_prefix + ".")
        return queue == self.cpu


def _queue_for(worker: FreeWorker, candidate: Candidate, names: QueueNames) -> str | None:
    if worker.host in candidate.blocked_hosts:
        return None
    if candidate.gpu and candidate.gpu_memory_mb and (worker.gpu_memory_mb or 0) < candidate.gpu_memory_mb:
        return None
    return next((q for q in worker.queues if names.serves(q, candidate.gpu)), None)


def plan_dispatch(
    candidates: Iterable[Candidate],
    free: Iterable[FreeWorker],
    already_queued: Mapping[str, int],
    *,
    names: QueueNames,
    show_gpu_caps: Mapping[str, int] | None = None,
    show_gpu_busy: Mapping[str, int] | None = None,
) -> list[Assignment]:
    """``candidates`` in priority order; ``already_queued``: messages waiting per queue, each
    of which will take one free worker of that queue."""
    slots = list(free)
    for queue, count in already_queued.items():
        for _ in range(count):
            match = next((w for w in slots if queue in w.queues), None)
            if match is None:
                break
            slots.remove(match)
    caps = dict(show_gpu_caps or {})
    busy = Counter(show_gpu_busy or {})
    plan: list[Assignment] = []
    for cand in candidates:
        if not slots:
            break
        if cand.gpu and cand.show in caps and busy[cand.show] >= caps[cand.show]:
            continue
        for worker in slots:
            serving = _queue_for(worker, cand, names)
            if serving is not None:
                plan.append(Assignment(cand.task_id, serving, worker.name))
                slots.remove(worker)
                if cand.gpu and cand.show is not None:
                    busy[cand.show] += 1
                break
    return plan


def why_unplaceable(candidate: Candidate, online: Iterable[FreeWorker], names: QueueNames) -> str | None:
    """Why no online worker, busy or not, could ever take ``candidate`` as the farm stands; None
    when one could (it only waits for a free slot). What a monitor reads beside a stuck job."""
    kind = "GPU" if candidate.gpu else "CPU"
    serving = [w for w in online if any(names.serves(q, candidate.gpu) for q in w.queues)]
    if not serving:
        return f"no online worker serves a {kind} queue: start one (mattefarm worker)"
    allowed = [w for w in serving if w.host not in candidate.blocked_hosts]
    if not allowed:
        hosts = ", ".join(sorted({w.host for w in serving}))
        return f"every host serving its queue is block-listed for this job ({hosts}): an admin retry clears it"
    if candidate.gpu and candidate.gpu_memory_mb:
        big = [w for w in allowed if (w.gpu_memory_mb or 0) >= candidate.gpu_memory_mb]
        if not big:
            most = max((w.gpu_memory_mb or 0) for w in allowed)
            return (
                f"needs a GPU with {candidate.gpu_memory_mb / 1024:.0f} GB; the largest online has {most / 1024:.0f} GB"
            )
    return None
