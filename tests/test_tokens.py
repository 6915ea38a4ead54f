"""Tokens kept hashed in the database: `mattefarm tokens add/list/revoke`, expiry, revocation
within the API's trust period, and no plaintext anywhere in the store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import text

from farm_config import Settings
from services.api.app import create_app
from services.cli.main import cli
from services.composition import open_stores
from services.farm.tokens import TokenBook
from services.store.api_tokens import TOKEN_PREFIX
from tests.factories import RecordingQueue


@pytest.fixture
def farm_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The CLI and the API over one database; database tokens are looked up on every request."""
    monkeypatch.setenv("MATTEFARM_DATA_DIR", str(settings.data_dir))
    return settings.model_copy(update={"token_cache_s": 0.0})


def _add(*args: str) -> str:
    result = CliRunner().invoke(cli, ["tokens", "add", *args])
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


def _jobs(api: TestClient, token: str) -> int:
    return api.get("/jobs", headers={"Authorization": f"Bearer {token}"}).status_code


def test_a_token_made_on_the_command_line_signs_in_until_revoked(farm_env: Settings) -> None:
    token = _add("carol", "--note", "comp workstation")
    assert token.startswith(TOKEN_PREFIX) and len(token) > 40
    with TestClient(create_app(farm_env, queue=RecordingQueue())) as api:
        assert _jobs(api, token) == 200
        assert _jobs(api, token + "x") == 401
        listed = CliRunner().invoke(cli, ["tokens", "list", "--json"])
        assert listed.exit_code == 0 and token not in listed.output

        [row] = json.loads(listed.output)
        assert row["user"] == "carol" and row["state"] == "active" and not row["admin"]
        assert token.startswith(row["hint"]) and row["last_used_at"] is not None
        assert row["note"] == "comp workstation"
        revoked = CliRunner().invoke(cli, ["tokens", "revoke", row["hint"]])
        assert revoked.exit_code == 0 and "revoked" in revoked.output
        answer = api.get("/jobs", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401 and "revoked or expired" in answer.json()["message"]
    table = CliRunner().invoke(cli, ["tokens", "list"])
    assert "revoked" in table.output and token not in table.output


def test_the_store_keeps_no_plaintext(farm_env: Settings) -> None:
    token = _add("dave", "--admin", "--expires", "12h")
    stores = open_stores(farm_env)
    try:
        with stores.db.session() as s:
            rows = [" ".join(str(v) for v in r) for r in s.execute(text("SELECT * FROM api_tokens"))]
    finally:
        stores.close()
    assert len(rows) == 1 and token not in rows[0] and token[len(TOKEN_PREFIX) + 8 :] not in rows[0]


def test_an_admin_token_acts_as_admin_and_a_user_token_does_not(farm_env: Settings) -> None:
    admin, user = _add("erin", "--admin"), _add("frank")
    with TestClient(create_app(farm_env, queue=RecordingQueue())) as api:
        # draining a worker is an admin's call
        body = {"reason": "maintenance"}
        as_admin = api.post("/workers/none/drain", json=body, headers={"Authorization": f"Bearer {admin}"})
        as_user = api.post("/workers/none/drain", json=body, headers={"Authorization": f"Bearer {user}"})
    assert as_user.status_code == 403
    assert as_admin.status_code != 403


def test_an_expired_token_is_refused(farm_env: Settings) -> None:
    stores = open_stores(farm_env)
    try:
        _, token = stores.tokens.add("gina", is_admin=False, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    finally:
        stores.close()
    with TestClient(create_app(farm_env, queue=RecordingQueue())) as api:
        assert _jobs(api, token) == 401
    listed = CliRunner().invoke(cli, ["tokens", "list"])
    assert "expired" in listed.output


def test_a_revoked_token_works_only_for_the_trust_period(settings: Settings) -> None:
    now = [0.0]
    stores = open_stores(settings)
    try:
        book = TokenBook(settings.model_copy(update={"token_cache_s": 10.0}), stores.tokens, clock=lambda: now[0])
        record, token = stores.tokens.add("hana", is_admin=False, expires_at=None)
        assert book.cached_grant(token) is None  # not trusted yet: the API looks it up off its event loop
        assert book.grant_for(token) is not None
        assert book.cached_grant(token) == book.grant_for(token)  # now answered without a query
        stores.tokens.revoke(str(record.id))
        now[0] = 9.0
        assert book.grant_for(token) is not None  # trusted for token_cache_s: no query per request
        now[0] = 10.5
        assert book.cached_grant(token) is None and book.grant_for(token) is None
    finally:
        stores.close()


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["add", "bad user"], "USER"),
        (["add", "ivan", "--expires", "forever"], "--expires"),
        (["add", "ivan", "--expires", "0d"], "--expires"),
        (["add", "ivan", "--note", "a\x00b"], "--note"),
    ],
)
def test_bad_token_commands_name_the_argument(farm_env: Settings, args: list[str], hint: str) -> None:
    result = CliRunner().invoke(cli, ["tokens", *args])
    assert result.exit_code == 2 and hint in result.output, result.output


def test_revoking_an_unknown_or_ambiguous_token_says_what_matched(farm_env: Settings, tmp_path: Path) -> None:
    _add("jo")
    _add("jo")
    unknown = CliRunner().invoke(cli, ["tokens", "revoke", "999"])
    assert unknown.exit_code == 1 and "no token match" in unknown.output
    ambiguous = CliRunner().invoke(cli, ["tokens", "revoke", TOKEN_PREFIX])
    assert ambiguous.exit_code == 1 and "2 tokens" in ambiguous.output
