"""The worker registry: workers register at start, heartbeat while alive, and go offline."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select, update

from schemas import WorkerInfo, WorkerState
from services.scheduling.dispatch import FreeWorker
from services.store.db import Database, rows_changed
from services.store.tables import WorkerRow, utcnow


class WorkerRegistry:
    def __init__(self, db: Database, stale_after_s: float) -> None:
        self.db, self.stale_after_s = db, stale_after_s

    def register(self, info: WorkerInfo) -> None:
        with self.db.session() as s:
            row = s.get(WorkerRow, info.name) or WorkerRow(name=info.name)
            row.host, row.pid, row.queues, row.profile = info.host, info.pid, info.queues, info.profile
            row.device, row.gpu_name, row.models = info.device, info.gpu_name, info.models
            row.gpu_memory_total_mb, row.gpu_memory_used_mb = info.gpu_memory_total_mb, info.gpu_memory_used_mb
            row.current_task = row.current_job = None
            row.frames_done = row.frames_total = 0
            row.state = WorkerState.ONLINE
            row.problem = None
            row.started_at = row.heartbeat_at = utcnow()
            s.merge(row)

    def beat(
        self,
        name: str,
        *,
        task_id: int | None,
        job_id: str | None,
        frames_done: int,
        frames_total: int,
        gpu_memory_used_mb: int | None,
        models: list[str] | None = None,
    ) -> WorkerState:
        """Record liveness and progress; returns the state an operator set (stopping means drain)."""
        values: dict[str, object] = {
            "heartbeat_at": utcnow(),
            "current_task": task_id,
            "current_job": job_id,
            "frames_done": frames_done,
            "frames_total": frames_total,
            "gpu_memory_used_mb": gpu_memory_used_mb,
        }
        if models is not None:
            values["models"] = models
        with self.db.session() as s:
            s.execute(update(WorkerRow).where(WorkerRow.name == name).values(**values))
            state = s.scalar(select(WorkerRow.state).where(WorkerRow.name == name))
            if state == WorkerState.OFFLINE:  # declared dead while it was only slow: it is back
                s.execute(update(WorkerRow).where(WorkerRow.name == name).values(state=WorkerState.ONLINE))
                state = WorkerState.ONLINE
            return WorkerState(state or WorkerState.ONLINE)

    def set_unhealthy(self, name: str, problem: str) -> bool:
        """The worker cannot work (its models would not load): it takes nothing until restarted."""
        with self.db.session() as s:
            query = update(WorkerRow).where(WorkerRow.name == name)
            return bool(rows_changed(s, query.values(state=WorkerState.UNHEALTHY, problem=problem[:2000])))

    def set_state(self, name: str, state: WorkerState) -> bool:
        with self.db.session() as s:
            return bool(rows_changed(s, update(WorkerRow).where(WorkerRow.name == name).values(state=state)))

    def stop_node(self, node: str) -> None:
        """Mark a worker node's processes (named ``node:pid``) as stopping: they drain."""
        with self.db.session() as s:
            s.execute(
                update(WorkerRow)
                .where(WorkerRow.name.startswith(node + ":", autoescape=True), WorkerRow.state == WorkerState.ONLINE)
                .values(state=WorkerState.STOPPING)
            )

    def all(self) -> list[WorkerInfo]:
        cutoff = utcnow() - timedelta(seconds=self.stale_after_s)
        with self.db.session() as s:
            rows = s.scalars(select(WorkerRow).order_by(WorkerRow.name)).all()
            return [_info(r, online=r.state != WorkerState.OFFLINE and r.heartbeat_at >= cutoff) for r in rows]

    def mark_stale_offline(self) -> list[str]:
        cutoff = utcnow() - timedelta(seconds=self.stale_after_s)
        with self.db.session() as s:
            names = list(
                s.scalars(
                    select(WorkerRow.name).where(
                        WorkerRow.state != WorkerState.OFFLINE, WorkerRow.heartbeat_at < cutoff
                    )
                )
            )
            if names:
                s.execute(
                    update(WorkerRow)
                    .where(WorkerRow.name.in_(names))
                    .values(state=WorkerState.OFFLINE, current_task=None)
                )
            return names

    def forget_offline(self, older_than_s: float) -> list[str]:
        """Drop workers offline for longer than ``older_than_s`` (a node taken out of the farm):
        no permanent ghost rows, no ``worker_up 0`` series forever."""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        with self.db.session() as s:
            gone = select(WorkerRow.name).where(WorkerRow.state == WorkerState.OFFLINE, WorkerRow.heartbeat_at < cutoff)
            names = list(s.scalars(gone))
            if names:
                s.execute(delete(WorkerRow).where(WorkerRow.name.in_(names)))
            return names

    def free(self) -> list[FreeWorker]:
        """Online workers with no task: the slots the dispatcher may fill."""
        return [
            FreeWorker(w.name, w.host, tuple(w.queues), w.gpu_memory_total_mb)
            for w in self.all()
            if w.online and w.state == WorkerState.ONLINE and w.current_task is None
        ]


def _info(row: WorkerRow, online: bool) -> WorkerInfo:
    return WorkerInfo(
        name=row.name,
        host=row.host,
        pid=row.pid,
        queues=list(row.queues),
        profile=row.profile,
        device=row.device,
        gpu_name=row.gpu_name,
        gpu_memory_total_mb=row.gpu_memory_total_mb,
        gpu_memory_used_mb=row.gpu_memory_used_mb,
        models=list(row.models or []),
        current_task=row.current_task,
        current_job=row.current_job,
        frames_done=row.frames_done,
        frames_total=row.frames_total,
        state=WorkerState(row.state),
        problem=row.problem,
        online=online,
        started_at=row.started_at,
        heartbeat_at=row.heartbeat_at,
    )
