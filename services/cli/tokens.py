"""``mattefarm tokens``: API tokens kept hashed in the farm's database, for the admin on a host
that reaches it (MATTEFARM_DATABASE_URL). A token is printed once, when it is made; lists show
a hint (its first characters), never the token."""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import click
from rich.table import Table

from farm_config import get_settings
from services.cli.common import console, err

if TYPE_CHECKING:  # the database layer loads only when a tokens command runs
    from services.store import FarmStores
    from services.store.api_tokens import StoredToken

USER = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
DURATION = re.compile(r"^(\d{1,5})([hdw])$")
UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def _expiry(value: str) -> datetime | None:
    if value == "never":
        return None
    match = DURATION.match(value)
    if not match or int(match[1]) == 0:
        raise click.BadParameter("give a duration like 12h, 90d or 8w, or 'never'", param_hint="--expires")
    return datetime.now(UTC) + int(match[1]) * UNITS[match[2]]


@click.group()
def tokens() -> None:
    """API tokens: add (printed once), list, revoke."""


@tokens.command("add")
@click.argument("user")
@click.option("--admin", is_flag=True, help="The token may act on every job and on the farm.")
@click.option("--expires", default="90d", show_default=True, help="12h, 90d, 8w, or never.")
@click.option("--note", default="", help="What the token is for (shown in the list).")
def add(user: str, admin: bool, expires: str, note: str) -> None:
    """Make a token for USER and print it (the farm keeps only its hash)."""
    if not USER.match(user):
        raise click.BadParameter("letters, digits and . _ @ - only, at most 64", param_hint="USER")
    if len(note) > 200 or any(ord(c) < 32 for c in note):
        raise click.BadParameter("at most 200 printable characters", param_hint="--note")
    expires_at = _expiry(expires)
    stores = _stores()
    try:
        record, token = stores.tokens.add(user, is_admin=admin, expires_at=expires_at, note=note)
    finally:
        stores.close()
    until = f"until {record.expires_at:%Y-%m-%d %H:%M} UTC" if record.expires_at else "with no expiry"
    err.print(f"token {record.id} for {user}{' (admin)' if admin else ''}, {until}; it is shown only now:")
    click.echo(token)


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """Every token: id, hint, user, state, dates (never the token)."""
    stores = _stores()
    try:
        records = stores.tokens.list()
    finally:
        stores.close()
    now = datetime.now(UTC)
    if as_json:
        click.echo(json.dumps([_row(r, now) for r in records], indent=2))
        return
    table = Table("id", "hint", "user", "admin", "state", "expires", "last used", "note")
    for r in records:
        row = _row(r, now)
        table.add_row(
            str(r.id), r.hint + "…", r.user, "yes" if r.is_admin else "", str(row["state"]),
            _day(r.expires_at) or "never", _day(r.last_used_at) or "-", r.note,
        )  # fmt: skip
    console.print(table)


@tokens.command("revoke")
@click.argument("ref")
def revoke(ref: str) -> None:
    """Revoke a token by its id or hint (as `tokens list` shows); API processes stop accepting
    it within MATTEFARM_TOKEN_CACHE_S seconds."""
    stores = _stores()
    try:
        record = stores.tokens.revoke(ref)
    except LookupError as exc:  # UnknownToken: nothing, or more than one, matched
        err.print(f"[red]error:[/] {exc}")
        sys.exit(1)
    finally:
        stores.close()
    console.print(f"token {record.id} ({record.hint}…, {record.user}) revoked")


def _stores() -> FarmStores:
    from services.composition import open_stores  # the farm's wiring loads only for these commands (as `db`)

    return open_stores(get_settings())


def _row(r: StoredToken, now: datetime) -> dict[str, object]:
    return {
        "id": r.id,
        "hint": r.hint,
        "user": r.user,
        "admin": r.is_admin,
        "state": r.state(now),
        "note": r.note,
        "created_at": r.created_at.isoformat(),
        "expires_at": r.expires_at.isoformat() if r.expires_at else None,
        "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
        "last_used_at": r.last_used_at.isoformat() if r.last_used_at else None,
    }


def _day(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M}" if at else ""
