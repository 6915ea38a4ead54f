"""The webhook outbox: owed deliveries, claimed by one sender each (compare-and-set).

A row is added in the same transaction that closes its job (:func:`owe_webhook`), so "the job
finished" and "a webhook is owed" are one fact; :class:`services.farm.webhooks.WebhookSender`
is the only code that delivers them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from services.store.db import Database, rows_changed
from services.store.tables import JobRow, OutboxRow, utcnow

# A sender killed mid-delivery leaves its claim; after this long another sender takes it over.
CLAIM_EXPIRES_S = 300.0


@dataclass(frozen=True)
class OwedWebhook:
    id: int
    job_id: str
    url: str


def owe_webhook(s: Session, job: JobRow) -> None:
    """Within the transaction that closed ``job``: owe its webhook, if it asked for one."""
    url = (job.spec or {}).get("notify_url")
    if url:
        s.add(OutboxRow(job_id=job.id, url=str(url), created_at=utcnow()))


class WebhookOutbox:
    def __init__(self, db: Database) -> None:
        self.db = db

    def claim(self, actor: str, limit: int = 20) -> list[OwedWebhook]:
        """Unsent rows nobody holds (or whose holder went quiet), now held by ``actor``."""
        now = utcnow()
        expired = now - timedelta(seconds=CLAIM_EXPIRES_S)
        claimable = (OutboxRow.sent_at.is_(None), or_(OutboxRow.claimed_at.is_(None), OutboxRow.claimed_at < expired))
        with self.db.session() as s:
            rows = s.execute(select(OutboxRow.id, OutboxRow.job_id, OutboxRow.url).where(*claimable).limit(limit)).all()
            held: list[OwedWebhook] = []
            for row in rows:
                took = rows_changed(
                    s,
                    update(OutboxRow)
                    .where(OutboxRow.id == row.id, *claimable)
                    .values(claimed_by=actor, claimed_at=now),
                )
                if took:
                    held.append(OwedWebhook(row.id, row.job_id, row.url))
            return held

    def settle(self, owed: OwedWebhook, problem: str | None) -> None:
        """Delivered (``problem`` None) or given up: either way it is not sent again."""
        with self.db.session() as s:
            s.execute(update(OutboxRow).where(OutboxRow.id == owed.id).values(sent_at=utcnow(), problem=problem))

    def pending(self) -> int:
        with self.db.session() as s:
            return len(s.scalars(select(OutboxRow.id).where(OutboxRow.sent_at.is_(None))).all())
