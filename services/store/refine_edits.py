"""Each finished job's refinement edits: appended in order, undone and redone, replayed."""

from __future__ import annotations

from pydantic import TypeAdapter
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from schemas.refine import Edit, StoredEdit
from services.store.db import Database
from services.store.tables import RefineEditRow, utcnow

_EDIT: TypeAdapter[Edit] = TypeAdapter(Edit)


class RefineEdits:
    def __init__(self, db: Database) -> None:
        self.db = db

    def all(self, job_id: str) -> list[StoredEdit]:
        with self.db.session() as s:
            rows = s.scalars(select(RefineEditRow).where(RefineEditRow.job_id == job_id).order_by(RefineEditRow.seq))
            return [_stored(r) for r in rows]

    def active(self, job_id: str) -> list[StoredEdit]:
        return [e for e in self.all(job_id) if not e.undone]

    def append(self, job_id: str, actor: str, edit: Edit, seconds: float = 0.0) -> StoredEdit:
        """A new edit ends the redo history (as in every editor)."""
        with self.db.session() as s:
            return append_edit(s, job_id, actor, edit, seconds)

    def undo(self, job_id: str) -> StoredEdit | None:
        """Mark the last edit in effect undone; None when there is none."""
        with self.db.session() as s:
            row = s.scalars(
                select(RefineEditRow)
                .where(RefineEditRow.job_id == job_id, RefineEditRow.undone.is_(False))
                .order_by(RefineEditRow.seq.desc())
                .limit(1)
            ).first()
            if row is None:
                return None
            row.undone = True
            return _stored(row)

    def redo(self, job_id: str) -> StoredEdit | None:
        with self.db.session() as s:
            row = s.scalars(
                select(RefineEditRow)
                .where(RefineEditRow.job_id == job_id, RefineEditRow.undone)
                .order_by(RefineEditRow.seq)
                .limit(1)
            ).first()
            if row is None:
                return None
            row.undone = False
            return _stored(row)

    def counts(self) -> dict[str, int]:
        """Edits made, by kind, all jobs (undone ones too: the artist made them)."""
        with self.db.session() as s:
            rows = s.execute(select(RefineEditRow.kind, func.count()).group_by(RefineEditRow.kind))
            return {kind: n for kind, n in rows}

    def timings(self, limit: int = 5000) -> list[tuple[str, float]]:
        """(kind, seconds) of the latest edits, for /metrics."""
        with self.db.session() as s:
            rows = s.execute(
                select(RefineEditRow.kind, RefineEditRow.seconds).order_by(RefineEditRow.id.desc()).limit(limit)
            )
            return [(kind, seconds) for kind, seconds in rows]


def append_edit(s: Session, job_id: str, actor: str, edit: Edit, seconds: float) -> StoredEdit:
    """Append within the caller's transaction (a propagation stores its edit with its result)."""
    s.execute(delete(RefineEditRow).where(RefineEditRow.job_id == job_id, RefineEditRow.undone))
    seq = (s.scalar(select(func.max(RefineEditRow.seq)).where(RefineEditRow.job_id == job_id)) or 0) + 1
    row = RefineEditRow(
        job_id=job_id,
        seq=seq,
        actor=actor,
        at=utcnow(),
        edit=edit.model_dump(mode="json"),
        kind=edit.kind,
        seconds=round(seconds, 4),
        undone=False,
    )
    s.add(row)
    s.flush()
    return _stored(row)


def _stored(row: RefineEditRow) -> StoredEdit:
    return StoredEdit(
        id=row.id, seq=row.seq, actor=row.actor, at=row.at, edit=_EDIT.validate_python(row.edit), undone=row.undone
    )
