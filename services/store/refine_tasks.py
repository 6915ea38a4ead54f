"""Propagations as farm tasks: asked for by the API, claimed by one worker at a time (a
compare-and-set on the row), their progress beaten into the row, and their result stored with the
edit they become, in one transaction, so there is never an edit without its result or twice one.

A worker that dies holding a propagation stops beating; ``stale`` finds it, and the dispatcher
puts it back in the queue (``requeue``) and sends it again, up to ``refine_attempts`` workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select, update

from schemas.refine import PropagateEdit, PropagationState, RefineProgress, StoredEdit
from services.store.db import Database, rows_changed
from services.store.refine_edits import append_edit
from services.store.tables import RefineEditRow, RefineTaskRow, utcnow

OPEN = (PropagationState.QUEUED.value, PropagationState.RUNNING.value)


@dataclass(frozen=True)
class PropagationClaim:
    task_id: int
    job_id: str
    layer: str
    actor: str
    attempt: int


class RefineTasks:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, job_id: str, layer: str, actor: str) -> RefineProgress | None:
        """A queued propagation; None when the job already has an open one."""
        with self.db.session() as s:
            if s.scalar(select(RefineTaskRow.id).where(RefineTaskRow.job_id == job_id, RefineTaskRow.state.in_(OPEN))):
                return None
            row = RefineTaskRow(
                job_id=job_id, layer=layer, actor=actor, state=PropagationState.QUEUED.value, created_at=utcnow()
            )
            s.add(row)
            s.flush()
            return _progress(row, None)

    def get(self, task_id: int) -> RefineProgress | None:
        return next(iter(self._read(RefineTaskRow.id == task_id)), None)

    def open_for(self, job_id: str) -> RefineProgress | None:
        return next(iter(self._read(RefineTaskRow.job_id == job_id, RefineTaskRow.state.in_(OPEN), limit=1)), None)

    def latest(self, job_id: str) -> RefineProgress | None:
        return next(iter(self._read(RefineTaskRow.job_id == job_id, limit=1)), None)

    def recent(self, limit: int = 50) -> list[RefineProgress]:
        """Open propagations first, then the latest finished ones (the dashboard's list)."""
        return self._read(order=(RefineTaskRow.state.in_(OPEN).desc(), RefineTaskRow.id.desc()), limit=limit)

    def _read(
        self,
        *where: ColumnElement[bool],
        order: tuple[Any, ...] = (RefineTaskRow.id.desc(),),
        limit: int | None = None,
    ) -> list[RefineProgress]:
        """Propagations with the sequence number of the edit each became, in one query."""
        query = (
            select(RefineTaskRow, RefineEditRow.seq)
            .outerjoin(RefineEditRow, RefineEditRow.id == RefineTaskRow.edit_id)
            .where(*where)
            .order_by(*order)
            .limit(limit)
        )
        with self.db.session() as s:
            return [_progress(row, seq) for row, seq in s.execute(query)]

    def claim(self, task_id: int, worker: str) -> PropagationClaim | None:
        """Start the propagation on ``worker`` (from queued: a duplicate message finds it taken).
        None: someone else runs it, or it is over."""
        now = utcnow()
        with self.db.session() as s:
            took = rows_changed(
                s,
                update(RefineTaskRow)
                .where(RefineTaskRow.id == task_id, RefineTaskRow.state == PropagationState.QUEUED.value)
                .values(
                    state=PropagationState.RUNNING.value,
                    worker=worker,
                    attempts=RefineTaskRow.attempts + 1,
                    started_at=now,
                    heartbeat_at=now,
                    frames_done=0,
                    error=None,
                ),
            )
            if not took:
                return None
            row = s.get(RefineTaskRow, task_id)
            assert row is not None
            return PropagationClaim(row.id, row.job_id, row.layer, row.actor, row.attempts)

    def beat(self, task_id: int, worker: str, done: int, total: int) -> bool:
        """Progress; False when the row is no longer this worker's (it was given to another)."""
        return self._move(
            task_id,
            (RefineTaskRow.worker == worker, RefineTaskRow.state == PropagationState.RUNNING.value),
            frames_done=done,
            frames_total=total,
            heartbeat_at=utcnow(),
        )

    def _move(self, task_id: int, where: tuple[ColumnElement[bool], ...], **values: object) -> bool:
        """A compare-and-set on one row: True when ``where`` still held and the row changed."""
        with self.db.session() as s:
            query = update(RefineTaskRow).where(RefineTaskRow.id == task_id, *where).values(**values)
            return bool(rows_changed(s, query))

    def finish(self, task_id: int, worker: str, result: bytes, frames: list[int], seconds: float) -> StoredEdit | None:
        """Store the result and append the propagation to the edit list, together; None when the
        row is no longer this worker's (a slower twin of a reclaimed run stores nothing)."""
        with self.db.session() as s:
            row = s.get(RefineTaskRow, task_id, with_for_update=True)
            if row is None or row.worker != worker or row.state != PropagationState.RUNNING.value:
                return None
            stored = append_edit(s, row.job_id, row.actor, PropagateEdit(layer=row.layer), seconds)
            row.state = PropagationState.SUCCEEDED.value
            row.edit_id, row.result, row.seconds = stored.id, result, round(seconds, 3)
            row.frames_changed = frames
            row.frames_done = row.frames_total = max(row.frames_total, len(frames))
            row.finished_at = utcnow()
            return stored

    def fail(self, task_id: int, worker: str | None, error: str) -> bool:
        """Close it failed (the artist may propagate again); ``worker`` None: whoever holds it."""
        mine = (RefineTaskRow.worker == worker,) if worker is not None else ()
        return self._move(
            task_id,
            (RefineTaskRow.state.in_(OPEN), *mine),
            state=PropagationState.FAILED.value,
            error=error,
            finished_at=utcnow(),
        )

    def stale(self, stale_after_s: float) -> list[RefineProgress]:
        """Open ones nobody has reported on for ``stale_after_s``: running on a worker that went
        quiet (it died), or queued and not taken (its message may be lost)."""
        with self.db.session() as s:
            rows = s.scalars(select(RefineTaskRow).where(*_quiet(stale_after_s)))
            return [_progress(r, None) for r in rows]

    def requeue(self, task_id: int, stale_after_s: float) -> bool:
        """Back to queued, from a worker that went quiet (a compare-and-set: once per staleness)."""
        return self._move(
            task_id, _quiet(stale_after_s), state=PropagationState.QUEUED.value, worker=None, heartbeat_at=utcnow()
        )

    def result_for(self, edit_id: int) -> bytes | None:
        """The kept result of the propagation that became this edit."""
        with self.db.session() as s:
            return s.scalar(select(RefineTaskRow.result).where(RefineTaskRow.edit_id == edit_id))

    def counts(self) -> dict[str, int]:
        with self.db.session() as s:
            rows = s.execute(select(RefineTaskRow.state, func.count()).group_by(RefineTaskRow.state))
            return {state: n for state, n in rows}


def _quiet(stale_after_s: float) -> tuple[ColumnElement[bool], ...]:
    """Open, and silent (no beat, or not taken since it was asked for) for ``stale_after_s``."""
    last = func.coalesce(RefineTaskRow.heartbeat_at, RefineTaskRow.created_at)
    return RefineTaskRow.state.in_(OPEN), last < utcnow() - timedelta(seconds=stale_after_s)


def _progress(row: RefineTaskRow, edit_seq: int | None) -> RefineProgress:
    state = PropagationState(row.state)
    if row.seconds is not None:
        seconds = row.seconds  # how long it ran
    else:  # how long the artist has waited, or waited before it failed
        seconds = ((row.finished_at or utcnow()) - row.created_at).total_seconds()
    return RefineProgress(
        task_id=row.id,
        job_id=row.job_id,
        layer=row.layer,
        actor=row.actor,
        state=state,
        worker=row.worker,
        attempts=row.attempts,
        frames_done=row.frames_done,
        frames_total=row.frames_total,
        running=state.is_open,
        seconds=round(seconds, 3),
        error=row.error,
        edit_seq=edit_seq,
        frames_changed=row.frames_changed or [],
        created_at=row.created_at,
    )
