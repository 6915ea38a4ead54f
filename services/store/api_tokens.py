"""API tokens kept in the database. Only each token's SHA-256 is stored: a token is 32 random
bytes, so a fast hash is as safe as a slow one (nothing to guess back from) and costs a request
nothing. The plaintext exists once, in what :meth:`ApiTokens.add` returns."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from services.store.db import Database
from services.store.tables import ApiTokenRow, utcnow

TOKEN_PREFIX = "mf_"  # tells a farm token apart in a config file or a leaked log
HINT_CHARS = 8  # of the token after the prefix, shown in lists to tell tokens apart


def digest_of(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class StoredToken:
    id: int
    hint: str
    user: str
    is_admin: bool
    note: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


class UnknownToken(LookupError):
    pass


class ApiTokens:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, user: str, *, is_admin: bool, expires_at: datetime | None, note: str = "") -> tuple[StoredToken, str]:
        """A new token for ``user``; returns its record and the token itself (never kept)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = ApiTokenRow(
            digest=digest_of(token),
            hint=token[: len(TOKEN_PREFIX) + HINT_CHARS],
            user=user,
            is_admin=is_admin,
            note=note,
            created_at=utcnow(),
            expires_at=expires_at,
        )
        with self.db.session() as s:
            s.add(row)
            s.flush()
            return _stored(row), token

    def active(self, token: str, now: datetime) -> StoredToken | None:
        """The token's record if it is known, not revoked and not expired; marks it used."""
        with self.db.session() as s:
            row = s.scalars(select(ApiTokenRow).where(ApiTokenRow.digest == digest_of(token))).first()
            if row is None:
                return None
            found = _stored(row)
            if found.state(now) != "active":
                return None
            row.last_used_at = now
            return found

    def list(self) -> list[StoredToken]:
        with self.db.session() as s:
            return [_stored(r) for r in s.scalars(select(ApiTokenRow).order_by(ApiTokenRow.id))]

    def revoke(self, ref: str) -> StoredToken:
        """Revoke by id or by the hint ``list`` shows; raises UnknownToken naming what matched."""
        with self.db.session() as s:
            if ref.isdigit():
                rows = list(s.scalars(select(ApiTokenRow).where(ApiTokenRow.id == int(ref))))
            else:
                rows = list(s.scalars(select(ApiTokenRow).where(ApiTokenRow.hint.startswith(ref, autoescape=True))))
            if len(rows) != 1:
                found = "no token" if not rows else f"{len(rows)} tokens ({', '.join(r.hint for r in rows)})"
                raise UnknownToken(f"{found} match {ref!r}; give an id or a hint from `mattefarm tokens list`")
            row = rows[0]
            if row.revoked_at is None:
                s.execute(update(ApiTokenRow).where(ApiTokenRow.id == row.id).values(revoked_at=utcnow()))
                s.refresh(row)
            return _stored(row)


def _stored(row: ApiTokenRow) -> StoredToken:
    return StoredToken(
        id=row.id,
        hint=row.hint,
        user=row.user,
        is_admin=row.is_admin,
        note=row.note,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )
