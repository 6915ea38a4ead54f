"""The store's PostgreSQL connections: a dropped connection is replaced before a request sees it,
without a ping round trip on every request under load, and reads hold no transaction open."""

from __future__ import annotations

import time
from typing import Any

from psycopg import pq
from sqlalchemy import create_engine, text

from services.store import Database


def _counting_pings(db: Database) -> list[int]:
    pings: list[int] = []
    real = db.engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(1)
        return real(dbapi_connection)

    db.engine.dialect.do_ping = counted  # type: ignore[method-assign]
    return pings


def test_a_connection_the_database_dropped_is_replaced_after_it_idled(postgres_server: str, postgres_url: str) -> None:
    db = Database(postgres_url, pool_size=1, ping_idle_s=0.3)
    pings = _counting_pings(db)
    with db.reading() as cx:
        first = cx.scalar(text("SELECT pg_backend_pid()"))
    for _ in range(20):  # back-to-back requests: no round trip spent on pings
        with db.reading() as cx:
            assert cx.scalar(text("SELECT pg_backend_pid()")) == first
    assert len(pings) == 1  # the new connection's first use
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:  # what a database restart or an idle timeout does to it
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
    admin.dispose()
    time.sleep(0.4)
    with db.reading() as cx:  # idle past the limit: pinged, found dead, replaced unseen
        assert cx.scalar(text("SELECT pg_backend_pid()")) != first
    assert len(pings) >= 2
    db.dispose()


def test_reads_run_without_a_transaction_and_writes_in_one(postgres_url: str) -> None:
    db = Database(postgres_url, pool_size=1)
    with db.reading() as cx:
        cx.scalar(text("SELECT 1"))
        dbapi = cx.connection.dbapi_connection
        assert dbapi is not None and dbapi.info.transaction_status == pq.TransactionStatus.IDLE
    with db.session() as s:  # the same pooled connection, back in transactions for writes
        s.execute(text("SELECT 1"))
        dbapi = s.connection().connection.dbapi_connection
        assert dbapi is not None and dbapi.info.transaction_status == pq.TransactionStatus.INTRANS
    db.dispose()


def test_ping_on_every_use_when_the_setting_is_zero(postgres_url: str) -> None:
    db = Database(postgres_url, pool_size=1, ping_idle_s=0)
    pings = _counting_pings(db)
    for _ in range(3):
        with db.reading() as cx:
            cx.scalar(text("SELECT 1"))
    assert len(pings) == 3
    db.dispose()
