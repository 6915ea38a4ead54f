"""The farm's history for the monitors' graphs: jobs finished, frames delivered, failed attempts
by reason (from the jobs, tasks and failures the store keeps anyway) and queue depth (sampled by
the dispatcher about once a minute), bucketed over the last hours."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select

from schemas import FarmHistory, HistoryBucket, JobState, StageName
from schemas.task import TaskKind, TaskState
from services.store.db import Database
from services.store.tables import FarmSampleRow, JobRow, TaskFailureRow, TaskRow, WorkerRow, utcnow

KEEP = timedelta(days=7)  # samples and failure rows older than this are dropped


class FarmHistoryStore:
    def __init__(self, db: Database, stale_after_s: float) -> None:
        self.db, self.stale_after_s = db, stale_after_s

    def sample(self, every_s: float, now: datetime | None = None) -> bool:
        """Record the farm's load unless a process did less than ``every_s`` ago (several API
        processes each run a dispatcher; one sample per interval is enough). True if recorded."""
        now = now or utcnow()
        with self.db.session() as s:
            last = s.scalar(select(func.max(FarmSampleRow.at)))
            if last is not None and (now - last).total_seconds() < 0.9 * every_s:
                return False
            counts = dict(
                s.execute(
                    select(TaskRow.state, func.count())
                    .where(TaskRow.state.in_([TaskState.WAITING, TaskState.QUEUED, TaskState.RUNNING]))
                    .group_by(TaskRow.state)
                ).all()
            )
            fresh = now - timedelta(seconds=self.stale_after_s)
            online = s.scalar(select(func.count()).where(WorkerRow.state != "offline", WorkerRow.heartbeat_at >= fresh))
            s.add(
                FarmSampleRow(
                    at=now,
                    tasks_waiting=counts.get(TaskState.WAITING, 0) + counts.get(TaskState.QUEUED, 0),
                    tasks_running=counts.get(TaskState.RUNNING, 0),
                    workers_online=online or 0,
                )
            )
            s.execute(delete(FarmSampleRow).where(FarmSampleRow.at < now - KEEP))
            s.execute(delete(TaskFailureRow).where(TaskFailureRow.at < now - KEEP))
            return True

    def failures_since(self, since: datetime) -> dict[str, int]:
        """Failed attempts by reason since ``since`` (for /metrics)."""
        with self.db.session() as s:
            query = (
                select(TaskFailureRow.failure, func.count())
                .where(TaskFailureRow.at >= since)
                .group_by(TaskFailureRow.failure)
            )
            return {reason: n for reason, n in s.execute(query)}

    def history(self, hours: float, bucket_s: int, now: datetime | None = None) -> FarmHistory:
        now = now or utcnow()
        since = now - timedelta(hours=hours)
        count = max(1, int(-(-hours * 3600 // bucket_s)))
        start = now - timedelta(seconds=count * bucket_s)
        buckets = [HistoryBucket(at=start + timedelta(seconds=i * bucket_s)) for i in range(count)]

        def index_of(at: datetime | None) -> int | None:
            if at is None:
                return None
            index = int((at - start).total_seconds() // bucket_s)
            return index if 0 <= index < count else None

        def slot(at: datetime | None) -> HistoryBucket | None:
            index = index_of(at)
            return buckets[index] if index is not None else None

        totals: defaultdict[str, int] = defaultdict(int)
        with self.db.session() as s:
            for at, state in s.execute(select(JobRow.finished_at, JobRow.state).where(JobRow.finished_at >= since)):
                bucket = slot(at)
                if bucket is not None and state == JobState.SUCCEEDED:
                    bucket.jobs_succeeded += 1
                elif bucket is not None and state == JobState.FAILED:
                    bucket.jobs_failed += 1
                elif bucket is not None and state == JobState.CANCELED:
                    bucket.jobs_canceled += 1
            delivered = select(TaskRow.finished_at, TaskRow.end_pos - TaskRow.first_pos).where(
                TaskRow.finished_at >= since,
                TaskRow.stage == StageName.EXPORT,
                TaskRow.kind == TaskKind.FRAMES,
                TaskRow.state == TaskState.SUCCEEDED,
            )
            for at, frames in s.execute(delivered):
                bucket = slot(at)
                if bucket is not None:
                    bucket.frames_delivered += int(frames)
            for at, failure in s.execute(
                select(TaskFailureRow.at, TaskFailureRow.failure).where(TaskFailureRow.at >= since)
            ):
                bucket = slot(at)
                if bucket is not None:
                    bucket.failures[failure] = bucket.failures.get(failure, 0) + 1
                    totals[failure] += 1
            sums: defaultdict[int, list[tuple[int, int, int]]] = defaultdict(list)
            samples = select(
                FarmSampleRow.at, FarmSampleRow.tasks_waiting, FarmSampleRow.tasks_running, FarmSampleRow.workers_online
            ).where(FarmSampleRow.at >= since)
            for at, waiting, running, online in s.execute(samples):
                index = index_of(at)
                if index is not None:
                    sums[index].append((waiting, running, online))
        for index, values in sums.items():
            n = len(values)
            buckets[index].tasks_waiting = round(sum(v[0] for v in values) / n, 2)
            buckets[index].tasks_running = round(sum(v[1] for v in values) / n, 2)
            buckets[index].workers_online = round(sum(v[2] for v in values) / n, 2)
        return FarmHistory(hours=hours, bucket_s=bucket_s, buckets=buckets, failures_total=dict(totals))
